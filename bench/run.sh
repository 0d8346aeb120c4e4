#!/usr/bin/env bash
# Gateway vs plain nginx proxy_pass, same machine, same upstream, one run.
#
#   bench/run.sh [seconds per round, default 10] [rounds, default 3]
#
# Four nginx front ends, each one worker, in front of the same upstream
# (an nginx answering 200 from memory):
#   plain     proxy_pass only
#   gateway   tenant_gateway on, reused token (token cache hit), cached tenant
#   fresh     the same without tenant_token_cache: every request verifies
#             its RS256 signature (what a never-seen token costs)
#   feature   like gateway, on a location with tenant_require_feature
#   limited   like gateway, with a per-tenant rate limit (high enough
#             never to refuse: what counting costs)
#   redis     like limited, counted in Redis (tenant_redis, issue 14): one
#             EVALSHA per admitted request to a redis-server on this host,
#             started here; its /metrics on a second port give the Redis
#             commands per request and the fallbacks (none expected)
# wrk (-t1 -c32) runs against each in turn, rounds interleaved so that
# machine noise hits all alike; ratios are to plain of the same round.
# Only 127.0.0.1 is targeted.
set -euo pipefail

secs=${1:-10}
rounds=${2:-3}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
module=$root/build/nginx/objs/ngx_tenant_module.so
[ -f "$module" ] || { echo "bench: build the module first (make)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk is missing (scripts/deps.sh)" >&2; exit 1; }
command -v redis-server >/dev/null \
    || { echo "bench: redis-server is missing (scripts/deps.sh)" >&2; exit 1; }

dir=$(mktemp -d /tmp/tenant-bench.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" stop "$dir/pg" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

pgport=$((20000 + $$ % 10000))
PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" start "$dir/pg" >/dev/null
db=$(PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" url "$dir/pg")
DATABASE_URL=$db "$root/scripts/migrate.sh" >/dev/null
psql -q "$db" -c "SELECT public.create_tenant('Bench', 'bench', 'org_bench',
                  'professional', 'bench@example.com');
                  UPDATE public.tenants SET subscription_status = 'active';" >/dev/null

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$dir/rsa.pem" 2>/dev/null
openssl pkey -in "$dir/rsa.pem" -pubout -out "$dir/rsa.pub"
token=$("$root/scripts/mint-token.pl" --key "$dir/rsa.pem" --org org_bench \
        --ttl 3600)

# below the ephemeral range (32768-60999): a client socket cannot hold them
base=$((21000 + $$ % 9000))
up=$base
rport=$((base + 9))
mport=$((base + 8))

# Redis for the redis front end: no persistence, 127.0.0.1 only
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --daemonize no --protected-mode no > "$dir/redis.log" 2>&1 &
rpid=$!
pids+=("$rpid")
for _ in $(seq 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$rport" ping 2>/dev/null)" = PONG ] && break
    sleep 0.05
done

conf() { # name port body
    mkdir -p "$dir/$1"
    cat > "$dir/$1/nginx.conf" <<CONF
load_module $module;
worker_processes 1;
pid $dir/$1/nginx.pid;
error_log $dir/$1/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/$1/body;
    proxy_temp_path $dir/$1/proxy;
    fastcgi_temp_path $dir/$1/fcgi;
    uwsgi_temp_path $dir/$1/uwsgi;
    scgi_temp_path $dir/$1/scgi;
    upstream backend { server 127.0.0.1:$up; keepalive 64; }
    $3
    server {
        listen 127.0.0.1:$2 reuseport;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
}
CONF
    nginx -p "$dir/$1" -c "$dir/$1/nginx.conf"
    pids+=("$(cat "$dir/$1/nginx.pid")")
}

gw="tenant_database \"$db\";
    tenant_cache zone=tenants:10m;
    tenant_jwt_key $dir/rsa.pub;
    tenant_signing_key $(openssl rand -hex 32);
    tenant_tier starter features=dashboard;
    tenant_tier professional features=dashboard,ai_forecasting;
    tenant_gateway on;"

# the upstream: no module directives, answers from memory
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
nginx -p "$dir/up" -c "$dir/up/nginx.conf"
pids+=("$(cat "$dir/up/nginx.pid")")

conf plain   $((base + 1)) ""
conf gateway $((base + 2)) "$gw tenant_token_cache zone=tokens:10m;"
conf fresh   $((base + 3)) "$gw"
conf feature $((base + 4)) "$gw tenant_token_cache zone=tokens:10m;
    tenant_require_feature ai_forecasting;"
conf limited $((base + 5)) "$gw tenant_token_cache zone=tokens:10m;
    tenant_rate_limit zone=ratelimit:10m rate=60000000/60s;"
conf redis   $((base + 6)) "$gw tenant_token_cache zone=tokens:10m;
    tenant_rate_limit zone=ratelimit:10m rate=60000000/60s;
    tenant_redis redis://127.0.0.1:$rport;
    server {
        listen 127.0.0.1:$mport;
        location = /metrics { tenant_gateway off; tenant_metrics; }
    }"

sleep 0.5

names=(plain gateway fresh feature limited redis)
declare -A port=([plain]=$((base + 1)) [gateway]=$((base + 2))
                 [fresh]=$((base + 3)) [feature]=$((base + 4))
                 [limited]=$((base + 5)) [redis]=$((base + 6)))

# the redis front end's counters: the sum of the series named $1
redis_metric() {
    curl -s "http://127.0.0.1:$mport/metrics" \
        | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {n += $2} END {printf "%d\n", n}'
}
# redis-server's CPU time (utime + stime, clock ticks)
redis_ticks() { awk '{print $14 + $15}' "/proc/$rpid/stat"; }

# warm up, and check that each front end answers 200
for n in "${names[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' \
           -H "Authorization: Bearer $token" "http://127.0.0.1:${port[$n]}/api/x")
    [ "$code" = 200 ] || { echo "bench: $n answered $code" >&2; exit 1; }
    wrk -t1 -c32 -d2s -H "Authorization: Bearer $token" \
        "http://127.0.0.1:${port[$n]}/api/x" >/dev/null
done

# CPU time of a front end's worker (utime + stime, clock ticks): work per
# request is far less sensitive to the machine's other load than requests
# per second, which a busy neighbour halves.
worker_ticks() {
    local master w
    master=$(cat "$dir/$1/nginx.pid")
    w=$(grep -l "^PPid:[[:space:]]*$master\$" /proc/[0-9]*/status 2>/dev/null \
        | head -1 | cut -d/ -f3)
    awk '{print $14 + $15}' "/proc/$w/stat"
}

hz=$(getconf CLK_TCK)

declare -A rps p99 cpu ratio
cmds=() fbs=() rcpu=()
for ((i = 1; i <= rounds; i++)); do
    for n in "${names[@]}"; do
        if [ "$n" = redis ]; then
            c0=$(redis_metric tenant_redis_commands_total)
            f0=$(redis_metric tenant_redis_fallbacks_total)
            r0=$(redis_ticks)
        fi
        t0=$(worker_ticks "$n")
        out=$(wrk -t1 -c32 -d"${secs}s" --latency \
              -H "Authorization: Bearer $token" \
              "http://127.0.0.1:${port[$n]}/api/x")
        t1=$(worker_ticks "$n")
        non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
        [ -z "$non2xx" ] || { echo "bench: $n had $non2xx non-2xx" >&2; exit 1; }
        r=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        l=$(echo "$out" | awk '$1 == "99%" {print $2}')
        total=$(echo "$out" | awk '/requests in/ {print $1}')
        if [ "$n" = redis ]; then
            c1=$(redis_metric tenant_redis_commands_total)
            f1=$(redis_metric tenant_redis_fallbacks_total)
            r1=$(redis_ticks)
            cmds+=("$(awk -v c=$((c1 - c0)) -v n="$total" 'BEGIN {printf "%.3f", c / n}')")
            fbs+=("$((f1 - f0))")
            rcpu+=("$(awk -v d=$((r1 - r0)) -v hz="$hz" -v n="$total" \
                          'BEGIN {printf "%.2f", d * 1e6 / hz / n}')")
        fi
        rps[$n]="${rps[$n]:-} $r"
        p99[$n]="${p99[$n]:-} $l"
        # microseconds of worker CPU per request
        cpu[$n]="${cpu[$n]:-} $(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$total" \
                                 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')"
        # throughput relative to plain nginx of the same round
        if [ "$n" = plain ]; then
            plain_r=$r
        fi
        ratio[$n]="${ratio[$n]:-} $(awk -v a="$r" -v b="$plain_r" 'BEGIN {printf "%.3f", a / b}')"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

date -u +"bench: %Y-%m-%d %H:%M UTC, $(nproc) cores, ${rounds}x${secs}s per front end, wrk -t1 -c32"
plain_cpu=$(echo ${cpu[plain]} | median)
printf '%-8s %11s %10s %12s %10s   %s\n' "front" "req/s(med)" "ratio(med)" \
    "cpu us/req" "cpu ratio" "p99 per round"
for n in "${names[@]}"; do
    c=$(echo ${cpu[$n]} | median)
    printf '%-8s %11s %10s %12s %10s   %s\n' "$n" "$(echo ${rps[$n]} | median)" \
        "$(echo ${ratio[$n]} | median)" "$c" \
        "$(awk -v a="$plain_cpu" -v b="$c" 'BEGIN {printf "%.2f", a / b}')" \
        "${p99[$n]}"
done
echo "ratio: requests/s over plain nginx's of the same round (median of rounds);"
echo "cpu ratio: plain's worker CPU per request over this front end's (1.00 = as cheap)."
echo "redis: Redis commands per request $(echo "${cmds[*]}" | median)" \
     "(per round: ${cmds[*]}), fallbacks per round: ${fbs[*]}," \
     "redis-server CPU us/request $(echo "${rcpu[*]}" | median)" \
     "(not in the worker's figure)"
