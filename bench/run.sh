#!/usr/bin/env bash
# The gateway against plain nginx proxy_pass, same machine, same upstream,
# one run, scenarios as users meet them.
#
#   bench/run.sh [seconds per round, default 4] [rounds, default 3] [scenario ...]
#   make bench BENCH_ARGS="10 5"          (longer: 5 rounds of 10 s)
#   make bench BENCH_ARGS="10 5 fresh"    (plain and fresh only)
#
# About 3 minutes with the defaults on 2 cores.
#
# Scenarios (plain always runs: every ratio is to plain of the same round):
#   plain     nginx proxy_pass only, the same requests as hot-many
#   hot-one   the gateway with the shipped policy, one session token
#   hot-many  the shipped policy (issuer, authorized party, per-tenant
#             rate limit high enough never to refuse, signed headers),
#             BENCH_TENANTS (1,000) session tokens, one per tenant,
#             round-robin: every token and tenant cached after the warm-up
#   fresh     BENCH_FRESH (40,000) distinct tokens over the same tenants,
#             more than the token cache holds, in order, continued from
#             round to round: every request verifies an RS256 signature
#             (the token cache's hits per request are checked and shown)
#   denied    100 starter tenants on a feature-gated path: 403 with the
#             upgrade URL
#   limited   a tenant over its tier's limit (1r/h): 429, answered locally
#   global    hot-many with the limits counted in Redis (tenant_redis): one
#             EVALSHA per request to a redis-server started here
# One nginx front end per scenario (one worker each, pinned to CPU 1), in
# front of one upstream answering 200 from memory; wrk -t1 -c32, the
# upstream and redis-server on CPU 0; rounds interleaved so that noise
# from the rest of the machine hits all alike.  Per scenario: requests/s,
# p99 latency, the worker's CPU time per request (utime + stime from
# /proc/<pid>/stat over the round), instructions per request, and each
# over plain's.  Instructions come from `perf stat -e instructions` on the
# worker over each round where the machine has hardware counters, else
# from callgrind on a short run of each front end after the rounds
# (BENCH_CG_SECS, 2 s; user-space instructions only; BENCH_CG=0 skips it).
# Only 127.0.0.1 is targeted.  Environment: BENCH_TENANTS (1000),
# BENCH_FRESH (40000), BENCH_CONNS (32), BENCH_CG, BENCH_CG_SECS.
set -euo pipefail

secs=${1:-4}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
ntenants=${BENCH_TENANTS:-1000}
nfresh=${BENCH_FRESH:-40000}
conns=${BENCH_CONNS:-32}
cg=${BENCH_CG:-1}
cg_secs=${BENCH_CG_SECS:-2}
nstarter=100

all=(plain hot-one hot-many fresh denied limited global)
if [ $# -gt 0 ]; then
    names=(plain)
    for s in "$@"; do
        case " ${all[*]} " in
        *" $s "*) [ "$s" = plain ] || names+=("$s") ;;
        *) echo "bench: no scenario $s (${all[*]})" >&2; exit 2 ;;
        esac
    done
else
    names=("${all[@]}")
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
module=$root/build/nginx/objs/ngx_tenant_module.so
[ -f "$module" ] || { echo "bench: build the module first (make)" >&2; exit 1; }
for c in wrk redis-server node curl taskset; do
    command -v $c >/dev/null || { echo "bench: $c is missing (scripts/deps.sh)" >&2; exit 1; }
done

# one worker on CPU 1, the load and the upstream on CPU 0
if [ "$(nproc)" -ge 2 ]; then
    front=(taskset -c 1) load=(taskset -c 0) pinned="one worker pinned to CPU 1; wrk, the upstream and redis-server on CPU 0"
else
    front=() load=() pinned="one CPU: nothing pinned"
fi

# instructions: perf where the machine counts them, else callgrind
if perf stat -e instructions -x, -- true 2>&1 >/dev/null | grep -q '^[0-9]'; then
    imode=perf
elif [ "$cg" = 1 ] && command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    imode=callgrind
else
    imode=none
fi

dir=$(mktemp -d /tmp/tenant-bench.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" stop "$dir/pg" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

start=$(date +%s)
note() { printf 'bench: [%3ds] %s\n' $(($(date +%s) - start)) "$*" >&2; }

# ---- keys and tokens (minted while PostgreSQL starts) ----------------------

iss=https://clerk.bench.example.test
azp=https://app.bench.example.test
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$dir/rsa.pem" 2>/dev/null
openssl pkey -in "$dir/rsa.pem" -pubout -out "$dir/rsa.pub"

mint() { node "$here/mint.js" "$dir/rsa.pem" "$@" "$iss" "$azp" 7200; }
# fresh's tokens only when fresh runs (most of the minting time)
case " ${names[*]} " in *" fresh "*) ;; *) nfresh=0 ;; esac
half=$((nfresh / 2))
mint "$ntenants" 0 "$ntenants" org_bench_ > "$dir/hot.txt" &
m1=$!
mint "$half" "$ntenants" "$ntenants" org_bench_ > "$dir/fresh.1" &
m2=$!
mint $((nfresh - half)) $((ntenants + half)) "$ntenants" org_bench_ > "$dir/fresh.2" &
m3=$!
mint "$nstarter" 0 "$nstarter" org_starter_ > "$dir/starter.txt" &
m4=$!
mint 1 0 1 org_capped_ > "$dir/capped.txt" &
m5=$!

pgport=$((20000 + $$ % 10000))
PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" start "$dir/pg" >/dev/null
db=$(PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" url "$dir/pg")
DATABASE_URL=$db "$root/scripts/migrate.sh" >/dev/null
# the tenants in one statement per tier (t/060 does the same): the gateway
# reads the row, not the schema
psql -q "$db" <<SQL >/dev/null
INSERT INTO public.tenants (name, slug, clerk_organization_id, schema_name,
                            subscription_tier, subscription_status, owner_email)
SELECT 'Bench ' || i, 'bench-' || i, 'org_bench_' || i, 'tenant_bench_' || i,
       'professional', 'active', 'bench' || i || '@example.test'
  FROM generate_series(0, $ntenants - 1) AS i
UNION ALL
SELECT 'Starter ' || i, 'starter-' || i, 'org_starter_' || i, 'tenant_starter_' || i,
       'starter', 'active', 'starter' || i || '@example.test'
  FROM generate_series(0, $nstarter - 1) AS i
UNION ALL
SELECT 'Capped', 'capped-0', 'org_capped_0', 'tenant_capped_0',
       'capped', 'active', 'capped@example.test';
SQL

wait $m1 $m2 $m3 $m4 $m5
cat "$dir/fresh.1" "$dir/fresh.2" > "$dir/fresh.txt"
head -1 "$dir/hot.txt" > "$dir/one.txt"
[ "$(wc -l < "$dir/hot.txt")" = "$ntenants" ] \
    && [ "$(wc -l < "$dir/fresh.txt")" = "$nfresh" ] \
    || { echo "bench: minting failed" >&2; exit 1; }
note "$ntenants tenants + $nstarter starter + 1 capped inserted; $((ntenants + nfresh + nstarter + 1)) tokens minted"

# ---- the servers ------------------------------------------------------------

# below the ephemeral range (32768-60999): a client socket cannot hold them
base=$((21000 + $$ % 9000))
up=$base
rport=$((base + 30))

# Redis for the global scenario: no persistence, 127.0.0.1 only
"${load[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$dir" --daemonize no --protected-mode no \
    > "$dir/redis.log" 2>&1 &
rpid=$!
pids+=("$rpid")
for _ in $(seq 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$rport" ping 2>/dev/null)" = PONG ] && break
    sleep 0.05
done

# the shipped policy (conf/nginx.conf.template), with a rate limit high
# enough never to refuse, and one bench tier for the limited scenario
policy="tenant_database \"$db\" timeout=5s;
    tenant_cache zone=tenants:10m ttl=30s negative_ttl=5s stale=5m;
    tenant_token_cache zone=tokens:10m;
    tenant_jwt_key $dir/rsa.pub;
    tenant_jwt_algorithms RS256 ES256;
    tenant_jwt_leeway 5s;
    tenant_jwt_issuer \"$iss\";
    tenant_jwt_authorized_parties $azp;
    tenant_tier starter features=dashboard,inventory,basic_forecasting;
    tenant_tier professional features=dashboard,inventory,basic_forecasting,ai_forecasting,working_capital,integrations;
    tenant_tier enterprise features=*,sso,audit_log,white_label;
    tenant_tier capped features=dashboard rate=1r/h;
    tenant_signing_key $(openssl rand -hex 32);
    tenant_upgrade_url \"https://app.bench.example.test/upgrade\";
    tenant_rate_limit zone=ratelimit:10m rate=60000000/60s;"

declare -A port sport tokens path want
i=1
for n in "${all[@]}"; do
    port[$n]=$((base + i))
    sport[$n]=$((base + 10 + i))
    i=$((i + 1))
    tokens[$n]=$dir/hot.txt path[$n]=/api/x want[$n]=200
done
tokens[hot-one]=$dir/one.txt
tokens[fresh]=$dir/fresh.txt
tokens[denied]=$dir/starter.txt path[denied]=/api/forecasts/ai want[denied]=403
tokens[limited]=$dir/capped.txt want[limited]=429

conf() { # scenario
    local n=$1 http="" gw="" stats=""
    if [ "$n" != plain ]; then
        http=$policy
        gw="tenant_gateway on;
            tenant_feature_route /api/forecasts/ai ai_forecasting;"
        stats="location = /metrics { tenant_metrics; }"
    fi
    [ "$n" = global ] && http="$http
    tenant_redis redis://127.0.0.1:$rport;"
    # a token entry is 264 bytes: 10m would hold all the fresh tokens
    # (about 40,000); 1m holds about 4,000, so the rotation never hits
    [ "$n" = fresh ] && http=${http/zone=tokens:10m/zone=tokens:1m}
    mkdir -p "$dir/$n"
    cat > "$dir/$n/nginx.conf" <<CONF
load_module $module;
worker_processes 1;
pid $dir/$n/nginx.pid;
error_log $dir/$n/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/$n/body;
    proxy_temp_path $dir/$n/proxy;
    fastcgi_temp_path $dir/$n/fcgi;
    uwsgi_temp_path $dir/$n/uwsgi;
    scgi_temp_path $dir/$n/scgi;
    upstream backend { server 127.0.0.1:$up; keepalive 64; }
    $http
    server {
        listen 127.0.0.1:${port[$n]} reuseport;
        location / {
            $gw
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
    server {
        listen 127.0.0.1:${sport[$n]};
        location = /status { stub_status; }
        $stats
    }
}
CONF
}

# starts a scenario's front end; $1: the scenario, then the command's prefix
declare -A master worker
start_front() {
    local n=$1 p
    shift
    rm -f "$dir/$n/nginx.pid"
    "$@" nginx -p "$dir/$n" -c "$dir/$n/nginx.conf"
    master[$n]=$(cat "$dir/$n/nginx.pid")
    pids+=("${master[$n]}")
    for _ in $(seq 100); do
        p=$(pgrep -P "${master[$n]}" | head -1) && [ -n "$p" ] && break
        sleep 0.05
    done
    worker[$n]=$p
}

# the upstream: no module, answers from memory
mkdir -p "$dir/up"
cat > "$dir/up/nginx.conf" <<CONF
worker_processes 1;
pid $dir/up/nginx.pid;
error_log $dir/up/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/up/body;
    proxy_temp_path $dir/up/proxy;
    fastcgi_temp_path $dir/up/fcgi;
    uwsgi_temp_path $dir/up/uwsgi;
    scgi_temp_path $dir/up/scgi;
    keepalive_requests 100000;
    server { listen 127.0.0.1:$up; location / { return 200 "ok\n"; } }
}
CONF
"${load[@]}" nginx -p "$dir/up" -c "$dir/up/nginx.conf"
pids+=("$(cat "$dir/up/nginx.pid")")

for n in "${names[@]}"; do
    conf "$n"
    start_front "$n" "${front[@]}"
done
sleep 0.3

# ---- load -------------------------------------------------------------------

# next token of each scenario: fresh continues where its last run stopped
declare -A offset
for n in "${names[@]}"; do offset[$n]=0; done

wrk_cmd() { # scenario seconds: the command line, for running and printing
    echo "BENCH_TOKENS=${tokens[$1]} BENCH_PATH=${path[$1]} BENCH_OFFSET=${offset[$1]}" \
         "${load[*]} wrk -t1 -c$conns -d${2}s --latency -s $here/rotate.lua" \
         "http://127.0.0.1:${port[$1]}${path[$1]}"
}
run_wrk() { # scenario seconds [extra environment]
    local n=$1 s=$2
    shift 2
    env "$@" BENCH_TOKENS="${tokens[$n]}" BENCH_PATH="${path[$n]}" \
        BENCH_OFFSET="${offset[$n]}" "${load[@]}" \
        wrk -t1 -c"$conns" -d"${s}s" --latency -s "$here/rotate.lua" \
        "http://127.0.0.1:${port[$n]}${path[$n]}"
}
advance() { # scenario wrk-output
    local done
    done=$(echo "$2" | awk '/requests in/ {print $1}')
    offset[$1]=$(( (offset[$1] + done) % $(wc -l < "${tokens[$1]}") ))
}

# sum of the series named $2 on scenario $1's /metrics, labels matching $3
metric() {
    curl -s "http://127.0.0.1:${sport[$1]}/metrics" \
        | awk -v m="$2" -v l="${3:-}" '($1 == m || index($1, m "{") == 1) && index($1, l) {n += $2}
                                       END {printf "%d\n", n}'
}
handled() { # requests the front end has read (stub_status), this one too
    curl -s "http://127.0.0.1:${sport[$1]}/status" | awk 'NR == 3 {print $3}'
}

# warms scenario $1: runs of 1 s until it has answered $2 requests
# (wrk cannot stop after a count), the rotation continuing from run to run
warm() {
    local k0 out
    k0=$(handled "$1")
    for _ in $(seq 60); do
        out=$(run_wrk "$1" 1)
        advance "$1" "$out"
        [ $(( $(handled "$1") - k0 )) -lt "$2" ] || break
    done
}
# every token and tenant of hot-many and global seen, fresh's tenants
# cached (from hot-many's tokens), 2,000 requests at least
warm_all() { # scenario
    local t o n=$1
    if [ "$n" = fresh ]; then
        t=${tokens[fresh]} o=${offset[fresh]}
        tokens[fresh]=$dir/hot.txt offset[fresh]=0
        warm fresh "$ntenants"
        tokens[fresh]=$t offset[fresh]=$o
        warm fresh 2000
    else
        t=$(wc -l < "${tokens[$n]}")
        warm "$n" $((t > 2000 ? t : 2000))
    fi
}

# check each front end's answer, then warm it
for n in "${names[@]}"; do
    line=$(head -1 "${tokens[$n]}")
    [ "$n" = limited ] && curl -s -o /dev/null -H "Authorization: Bearer ${line% *}" \
        "http://127.0.0.1:${port[$n]}${path[$n]}"
    body=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer ${line% *}" \
           -H "X-Organization-ID: ${line#* }" "http://127.0.0.1:${port[$n]}${path[$n]}")
    code=${body##*$'\n'}
    [ "$code" = "${want[$n]}" ] \
        || { echo "bench: $n answered $code, not ${want[$n]}: ${body%$'\n'*}" >&2; exit 1; }
    [ "$n" != denied ] || echo "$body" | grep -q '"upgradeUrl"' \
        || { echo "bench: denied without an upgrade URL: $body" >&2; exit 1; }
    warm_all "$n"
done
note "front ends answer as expected and are warm; $rounds rounds of ${secs}s over ${#names[@]} scenarios"

# ---- rounds -----------------------------------------------------------------

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ms() { # wrk's latency (e.g. 812.00us, 2.31ms, 1.02s) in ms
    awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); x = v + 0;
        if (u == "us") x /= 1000; else if (u == "s") x *= 1000; else if (u == "m") x *= 60000;
        printf "%.2f", x }'
}
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN {printf f, b ? a / b : 0}'; }

declare -A rps p99 cpu ins r_rps r_p99 r_cpu r_ins extra
tokhit=() dbq=() cmds=() fbs=() rcpu=()
for ((round = 1; round <= rounds; round++)); do
    for n in "${names[@]}"; do
        w=${worker[$n]}
        case $n in
        fresh) h0=$(metric fresh tenant_cache_hits_total 'cache="token"') ;;
        global) c0=$(metric global tenant_redis_commands_total)
                f0=$(metric global tenant_redis_fallbacks_total)
                rt0=$(ticks "$rpid") ;;
        esac
        [ "$n" = plain ] || q0=$(metric "$n" tenant_db_queries_total)
        if [ $imode = perf ]; then
            perf stat -e instructions -x, -p "$w" -o "$dir/perf.out" &
            pp=$!
        fi
        t0=$(ticks "$w")
        out=$(run_wrk "$n" "$secs")
        t1=$(ticks "$w")
        if [ $imode = perf ]; then
            kill -INT $pp; wait $pp || true
            icount=$(awk -F, '$3 ~ /^instructions/ {print $1}' "$dir/perf.out")
        fi
        total=$(echo "$out" | awk '/requests in/ {print $1}')
        bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
        if [ "${want[$n]}" = 200 ]; then
            [ -z "$bad" ] || { echo "bench: $n had $bad non-2xx answers" >&2; exit 1; }
        else
            [ "${bad:-0}" = "$total" ] \
                || { echo "bench: $n had $((total - ${bad:-0})) 2xx answers" >&2; exit 1; }
        fi
        advance "$n" "$out"
        r=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        l=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
        c=$(div "$(((t1 - t0) * 1000000))" "$((hz * total))")
        rps[$n]="${rps[$n]:-} $r" p99[$n]="${p99[$n]:-} $l" cpu[$n]="${cpu[$n]:-} $c"
        if [ $imode = perf ]; then
            ins[$n]="${ins[$n]:-} $(div "$icount" "$total" %.0f)"
        fi
        if [ "$n" = plain ]; then
            pr=$r pl=$l pc=$c pi=$(div "${icount:-0}" "$total" %.0f)
        fi
        # every ratio: 1.00 as good as plain of the same round, below worse
        r_rps[$n]="${r_rps[$n]:-} $(div "$r" "$pr" %.3f)"
        r_p99[$n]="${r_p99[$n]:-} $(div "$pl" "$l" %.3f)"
        r_cpu[$n]="${r_cpu[$n]:-} $(div "$pc" "$c" %.3f)"
        [ $imode != perf ] || r_ins[$n]="${r_ins[$n]:-} $(div "$pi" "$(div "$icount" "$total" %.0f)" %.3f)"
        [ "$n" = plain ] || extra[$n]="${extra[$n]:-} $(div "$(( $(metric "$n" tenant_db_queries_total) - q0 ))000" "$total" %.2f)"
        case $n in
        fresh) tokhit+=("$(div "$(( $(metric fresh tenant_cache_hits_total 'cache="token"') - h0 ))" "$total" %.4f)") ;;
        global) cmds+=("$(div "$(( $(metric global tenant_redis_commands_total) - c0 ))" "$total" %.3f)")
                fbs+=("$(( $(metric global tenant_redis_fallbacks_total) - f0 ))")
                rcpu+=("$(div "$(( ($(ticks "$rpid") - rt0) * 1000000 ))" "$((hz * total))")") ;;
        esac
    done
    note "round $round of $rounds done"
done

# ---- instructions by callgrind ---------------------------------------------

cg_ir() { # the Ir total of a callgrind dump
    awk '/^(summary|totals):/ {print $2; exit}' "$1"
}
if [ $imode = callgrind ]; then
    for n in "${names[@]}"; do
        kill "${master[$n]}"
        for _ in $(seq 100); do kill -0 "${master[$n]}" 2>/dev/null || break; sleep 0.05; done
        rm -f "$dir/$n/nginx.pid"
        "${front[@]}" valgrind -q --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/$n/cg.out" \
            nginx -p "$dir/$n" -c "$dir/$n/nginx.conf" -g 'daemon off; master_process off;' \
            > "$dir/$n/cg.log" 2>&1 &
        vg=$!
        pids+=("$vg")
        for _ in $(seq 300); do
            curl -s -o /dev/null "http://127.0.0.1:${sport[$n]}/status" && break
            sleep 0.1
        done
        warm_all "$n"
        callgrind_control -i on "$vg" >/dev/null 2>&1
        callgrind_control -z "$vg" >/dev/null 2>&1
        k0=$(handled "$n")
        run_wrk "$n" "$cg_secs" >/dev/null
        k1=$(handled "$n")
        callgrind_control -d "$vg" >/dev/null 2>&1
        dump=$(ls -t "$dir/$n"/cg.out.* 2>/dev/null | head -1)
        kill "$vg"; wait "$vg" 2>/dev/null || true
        # the requests between the two status requests (theirs are in the
        # count too: a few thousand instructions, against millions)
        k=$((k1 - k0 - 1))
        ins[$n]=$(div "$(cg_ir "$dump")" "$k" %.0f)
        note "callgrind: $n ${ins[$n]} instructions/request over $k requests"
    done
    for n in "${names[@]}"; do
        r_ins[$n]=$(div "${ins[plain]}" "${ins[$n]}" %.3f)
    done
fi

# ---- the table --------------------------------------------------------------

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med() { echo $* | median; }
commas() { echo "${1%.*}" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }

insn() { # instructions per request, and how many more than plain's
    local a b
    a=$(med ${ins[$1]:-0}) b=$(med ${ins[plain]:-0})
    [ "$a" != 0 ] || { echo "-"; return; }
    if [ "$1" = plain ]; then commas "$a"; else
        echo "$(commas "$a") ($( [ $((a - b)) -lt 0 ] && echo "-" || echo "+")$(commas "$(( a > b ? a - b : b - a ))"))"
    fi
}

declare -A label=(
    [plain]="plain nginx proxy_pass"
    [hot-one]="hot-one: 1 token, 1 tenant"
    [hot-many]="hot-many: $ntenants tokens, $ntenants tenants"
    [fresh]="fresh: $nfresh never-seen tokens"
    [denied]="denied: 403 feature, $nstarter tenants"
    [limited]="limited: 429, 1 tenant over"
    [global]="global: hot-many, limits in Redis")

echo
date -u +"bench: %Y-%m-%d %H:%M UTC, $(nproc) cores, $(. /etc/os-release; echo "$PRETTY_NAME"), nginx $(nginx -v 2>&1 | sed 's/.*\///')"
echo "$pinned; wrk -t1 -c$conns; $rounds rounds x ${secs}s per scenario, interleaved; medians of the rounds"
case $imode in
perf) echo "instructions: perf stat -e instructions on the worker over each round" ;;
callgrind) echo "instructions: user space, callgrind on the worker over a ${cg_secs}s run after the rounds (perf stat: no hardware counters here);"
           echo "  plain nginx spends most of its CPU in the kernel, which callgrind does not count: (+n) is the gateway's own work" ;;
none) echo "instructions: not measured (no hardware counters for perf, BENCH_CG=0 or no valgrind)" ;;
esac
echo "ratio: plain's figure of the same round in this one's terms: 1.00 = as good as plain nginx, 0.50 = half the requests/s or twice the cost"
echo
echo "| scenario | answer | requests/s | ratio | p99 ms | ratio | CPU µs/request | ratio | instructions/request | ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in "${names[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${label[$n]}" "${want[$n]}" \
        "$(commas "$(med ${rps[$n]})")" "$(med ${r_rps[$n]})" \
        "$(med ${p99[$n]})" "$(med ${r_p99[$n]})" \
        "$(med ${cpu[$n]})" "$(med ${r_cpu[$n]})" \
        "$(insn "$n")" "$(med ${r_ins[$n]:--})"
done
echo
for n in "${names[@]}"; do
    [ "$n" = plain ] && continue
    printf '%-9s PostgreSQL queries per 1,000 requests: %s (per round)\n' "$n:" "${extra[$n]}"
done
case " ${names[*]} " in *" fresh "*)
    echo "fresh:    token cache hits per request: ${tokhit[*]} (per round; 0 = every token verified)"
    echo "${tokhit[*]}" | tr ' ' '\n' | awk '$1 > 0.05 {f = 1} END {exit !f}' \
        && echo "fresh:    WARNING: tokens came back from the cache; it holds more than $nfresh: raise BENCH_FRESH" || true ;;
esac
case " ${names[*]} " in *" global "*)
    echo "global:   Redis commands per request: ${cmds[*]}; fallbacks: ${fbs[*]};" \
         "redis-server CPU µs/request: ${rcpu[*]} (per round; not in the worker's figure)" ;;
esac
echo
echo "reproduce a scenario (plain runs too, for the ratios), and the load each round ran"
echo "(its token files and front ends go with the run):"
for n in "${names[@]}"; do
    offset[$n]=0
    cmd="bench/run.sh $secs $rounds"
    [ "$n" = plain ] || cmd="$cmd $n"
    printf '  %-9s %s\n' "$n:" "$cmd"
    printf '             %s\n' "$(wrk_cmd "$n" "$secs" | sed "s|$dir/||; s|$here/|bench/|")"
done
note "done"
