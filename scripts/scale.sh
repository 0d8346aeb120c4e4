#!/usr/bin/env bash
# `make scale`: three gateways on this machine sharing one PostgreSQL and
# one Redis, as three Render instances share them, and a short report.
#
#   scripts/scale.sh
#
# Starts, in a temp dir, on 127.0.0.1 only: an embedded PostgreSQL
# (scripts/pg-local.sh, migrated, one tenant), a redis-server, and three
# gateways (two workers each, own ports) from the shipped template
# rendered by scripts/render-conf.sh with REDIS_URL set (REDIS_FALLBACK
# local, REDIS_INSTANCES 3).  The tenant's limit is RATE_LIMIT_MAX
# requests per RATE_LIMIT_WINDOW (SCALE_LIMIT, default 300, per
# SCALE_WINDOW seconds, default 5; burst = limit).  Then:
#
#   1  propagation: the tenant's rateLimitOverride changed 10 times
#      through instance 1's admin API; how long until instances 2 and 3
#      answer with it (RateLimit-Policy), p50 / p99
#   2  global limit: wrk on each instance at once (-c2), the tenant's
#      admitted requests per window summed over the three instances'
#      /metrics, once the burst is spent, against the limit
#   3  Redis stopped under that load: how soon the instances fall back
#      (tenant_redis_fallbacks_total), the admitted requests per window of
#      each (the fallback's share: ceil(limit / 3)); Redis started again:
#      how soon the fallbacks stop; no 5xx over the whole run (wrk)
#
# SCALE_REDIS=off: the same without REDIS_URL (each instance limits alone,
# about three times the limit; part 3 skipped).  REDIS_TIMEOUT (ms,
# default 5, the shipped default) is passed on.  Everything it started is
# stopped by PID at the end, also on Ctrl-C or a failure; it takes under
# a minute.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
limit=${SCALE_LIMIT:-300}
window=${SCALE_WINDOW:-5}
use_redis=${SCALE_REDIS:-on}
changes=10

say() { printf 'scale: %s\n' "$*"; }
die() { printf 'scale: %s\n' "$*" >&2; exit 1; }

[[ $limit =~ ^[0-9]+$ ]] && (( limit >= 30 && limit <= 100000 )) \
    || die "SCALE_LIMIT: a number 30-100000 (got \"$limit\")"
[[ $window =~ ^[0-9]+$ ]] && (( window >= 2 && window <= 10 )) \
    || die "SCALE_WINDOW: seconds, 2-10 (got \"$window\")"
case $use_redis in on|off) ;; *) die "SCALE_REDIS: on or off (got \"$use_redis\")" ;; esac

module=${TENANT_MODULE:-$root/build/nginx/objs/ngx_tenant_module.so}
[ -f "$module" ] || die "build the module first (make)"
for tool in nginx redis-server wrk curl psql perl openssl; do
    command -v "$tool" >/dev/null || die "$tool not found (make deps)"
done

dir=$(mktemp -d /tmp/tenant-scale.XXXXXX)
chmod 755 "$dir"
nginx_pids=()
wrk_pids=()
redis_pid=
pgport=$((20000 + $$ % 10000))
pg_started=

stop_redis() {
    [ -n "$redis_pid" ] || return 0
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=
}

cleanup() {
    local p
    for p in "${wrk_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${nginx_pids[@]}"; do kill -QUIT "$p" 2>/dev/null || true; done
    for p in "${nginx_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    stop_redis
    [ -z "$pg_started" ] || PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" stop "$dir/pg" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }


# ---- PostgreSQL, the tenant, keys ------------------------------------------

PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" start "$dir/pg" >/dev/null
pg_started=1
db=$(PGPORT_LOCAL=$pgport "$root/scripts/pg-local.sh" url "$dir/pg")
DATABASE_URL=$db "$root/scripts/migrate.sh" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT public.create_tenant('Scale', 'scale', 'org_scale', 'starter', 'scale@example.com');
UPDATE public.tenants SET subscription_status = 'active';
SQL
tenant_id=$(psql -X -q -At -d "$db" -c "SELECT id FROM public.tenants WHERE slug = 'scale'")

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/rsa.pem" 2>/dev/null
openssl pkey -in "$dir/rsa.pem" -pubout -out "$dir/rsa.pub"
token=$("$root/scripts/mint-token.pl" --key "$dir/rsa.pem" --org org_scale --ttl 600)
admin=$("$root/scripts/mint-token.pl" --key "$dir/rsa.pem" --sub user_scale_admin \
        --metadata-role admin --ttl 600)


# ---- Redis -----------------------------------------------------------------

# below the ephemeral range (32768-60999): a client socket cannot hold them
base=$((21000 + $$ % 9000))
redis_port=$((base + 9))

start_redis() {
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --daemonize no --protected-mode no >> "$dir/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    die "redis-server did not answer on 127.0.0.1:$redis_port (see $dir/redis.log)"
}
if [ "$use_redis" = on ]; then
    start_redis
fi


# ---- three gateways --------------------------------------------------------

ports=()
encryption_key=$(openssl rand -hex 32)
cron_secret=$(openssl rand -hex 32)
for i in 1 2 3; do
    run=$dir/gw$i
    port=$((base + i))
    ports+=("$port")
    mkdir -p "$run"
    # only these variables (none of the caller's BACKEND_URL, ...)
    env -i PATH="$PATH" HOME="${HOME:-/}" \
        DATABASE_URL="$db" CLERK_JWT_KEY="$(cat "$dir/rsa.pub")" \
        ENCRYPTION_KEY="$encryption_key" CRON_SECRET="$cron_secret" \
        RATE_LIMIT_MAX="$limit" RATE_LIMIT_WINDOW="$((window * 1000))" \
        WORKER_PROCESSES=2 PORT="$port" DEMO_PORT="$((base + 10 + i))" \
        RUN_DIR="$run" TENANT_MODULE="$module" LOG_LEVEL=warn \
        ${REDIS_TIMEOUT:+REDIS_TIMEOUT="$REDIS_TIMEOUT"} \
        $([ "$use_redis" = on ] && echo REDIS_URL="redis://127.0.0.1:$redis_port" \
              REDIS_FALLBACK=local REDIS_INSTANCES=3) \
        "$root/scripts/render-conf.sh" --access-log /dev/null "$run/nginx.conf" \
        2> "$run/render.log" || { cat "$run/render.log" >&2; die "render-conf.sh refused (above)"; }
    if [ "$use_redis" = on ]; then
        grep -Eq '^ *tenant_redis +"?redis://' "$run/nginx.conf" \
            || die "render-conf.sh rendered no tenant_redis line from REDIS_URL"
    fi
    # the template listens on every address: here, 127.0.0.1 only
    sed -i "s/^\( *listen  *\)$port;/\1127.0.0.1:$port;/" "$run/nginx.conf"
    grep -q "listen  *127.0.0.1:$port;" "$run/nginx.conf" || die "gw$i: no listen line to bind"
    nginx -p "$run" -c "$run/nginx.conf" -e "$run/error.log" -g 'daemon off;' \
        2>> "$run/error.log" &
    nginx_pids+=("$!")
done

for i in 0 1 2; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:${ports[i]}/api/health/live" && break
        kill -0 "${nginx_pids[i]}" 2>/dev/null || { cat "$dir/gw$((i + 1))/error.log" >&2; die "gw$((i + 1)) exited"; }
        sleep 0.05
    done
done

say "three gateways (2 workers each) on 127.0.0.1:${ports[0]}, ${ports[1]}, ${ports[2]};" \
    "PostgreSQL (unix socket); $([ "$use_redis" = on ] \
        && echo "Redis 127.0.0.1:$redis_port (REDIS_TIMEOUT ${REDIS_TIMEOUT:-5} ms, fallback local / 3)" \
        || echo "no Redis (SCALE_REDIS=off)")"
say "tenant org_scale: $limit requests per $window s, burst $limit"

api() { # port path: the status and the RateLimit-Policy quota of a tenant request
    curl -s -o /dev/null -D - -H "Authorization: Bearer $token" "http://127.0.0.1:$1$2" \
        | awk 'NR == 1 {s = $2} tolower($1) == "ratelimit-policy:" {
                   if (match($0, /q=[0-9]+/)) q = substr($0, RSTART + 2, RLENGTH - 2) }
               END {print s, q}'
}

# /metrics of instance $1 (0..2): the sum of the series matching $2 (awk regex)
metric() {
    curl -s "http://127.0.0.1:${ports[$1]}/metrics" \
        | awk -v re="$2" '$0 !~ /^#/ && $1 ~ re {n += $2} END {printf "%d\n", n}'
}
admitted() {
    curl -s "http://127.0.0.1:${ports[$1]}/metrics" | awk '/^tenant_requests_total\{/ &&
        /outcome="admitted"/ && /tier="starter"/ {n += $2} END {printf "%d\n", n}'
}
fallbacks() { local n=0 i; for i in 0 1 2; do n=$((n + $(metric $i '^tenant_redis_fallbacks_total'))); done; echo $n; }
commands()  { local n=0 i; for i in 0 1 2; do n=$((n + $(metric $i '^tenant_redis_commands_total'))); done; echo $n; }


# ---- 1. propagation --------------------------------------------------------

for i in 0 1 2; do api "${ports[i]}" /api/products >/dev/null; done   # cached
# In one process (HTTP::Tiny, keep-alive): a curl per poll would measure
# process starts.  Prints "p50 p99 max PATCH-p50" in ms, or dies.
read -r p50 p99 pmax patch50 < <(
    TOKEN=$token ADMIN=$admin perl -MHTTP::Tiny -MTime::HiRes=time -e '
        my ($changes, $limit, $id, @port) = @ARGV;
        my $http = HTTP::Tiny->new(timeout => 5);
        my (@delay, @patch);
        for my $c (1 .. $changes) {
            my $want = $limit + $c;
            my $t0 = time;
            my $r = $http->request("PATCH",
                "http://127.0.0.1:$port[0]/api/admin/tenants/$id",
                { headers => { Authorization => "Bearer $ENV{ADMIN}",
                               "Content-Type" => "application/json" },
                  content => qq({"rateLimitOverride":$want}) });
            $r->{status} == 200 or die "PATCH rateLimitOverride: $r->{status}\n";
            push @patch, time - $t0;
            for my $p (@port[1, 2]) {
                while (1) {
                    my $g = $http->get("http://127.0.0.1:$p/api/products",
                        { headers => { Authorization => "Bearer $ENV{TOKEN}" } });
                    last if $g->{status} == 200
                        && ($g->{headers}{"ratelimit-policy"} // "") =~ /;q=$want;/;
                    die "127.0.0.1:$p did not see change $c within 5 s\n"
                        if time - $t0 > 5;
                }
                push @delay, time - $t0;
            }
        }
        my $pct = sub { my ($q, @v) = sort { $a <=> $b } @_;
                        $v[int($q * @v + 0.999) - 1] * 1000 };
        printf "%.0f %.0f %.0f %.1f\n", $pct->(0.5, @delay), $pct->(0.99, @delay),
               $pct->(1, @delay), $pct->(0.5, @patch);
    ' "$changes" "$limit" "$tenant_id" "${ports[@]}"
) || die "propagation: see above"
[ -n "${p50:-}" ] || die "propagation: no figures"
say "1. propagation: $changes changes through instance 1's admin API, seen by instances 2 and 3 after p50 $p50 ms, p99 $p99 ms (max $pmax), counted from the PATCH sent (its answer: p50 $patch50 ms)"
# back to the limit of RATE_LIMIT_MAX for the load
curl -s -o /dev/null -X PATCH -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    -d '{"rateLimitOverride":null}' "http://127.0.0.1:${ports[0]}/api/admin/tenants/$tenant_id"
for i in 1 2; do
    until [ "$(api "${ports[i]}" /api/products)" = "200 $limit" ]; do sleep 0.02; done
done


# ---- 2. global limit under load ----------------------------------------------

# wrk: each connection waits 1 ms between requests (about 2,000 requests/s
# per instance, 30 times the tenant's rate), so that the machine is not
# saturated and its /metrics reads stay prompt; the answers counted by
# status, printed at the end as "status N COUNT".
cat > "$dir/load.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function delay() return 1 end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
    for _, t in ipairs(threads) do
        for s, n in pairs(t:get("counts")) do io.write(string.format("status %d %d\n", s, n)) end
    end
end
LUA

if [ "$use_redis" = on ]; then
    c0=$(commands)
    fb0=$(fallbacks)
fi
t_load=$(now)
for i in 0 1 2; do
    # stopped with SIGINT below (it then prints its summary); -d bounds it
    wrk -t1 -c2 -d60s -s "$dir/load.lua" -H "Authorization: Bearer $token" \
        "http://127.0.0.1:${ports[i]}/api/products" > "$dir/wrk$i.out" 2>&1 &
    wrk_pids+=("$!")
done

until_t() { # sleep until the time $1 (seconds since the epoch)
    local d
    d=$(awk -v t="$1" -v n="$(now)" 'BEGIN {d = t - n; print (d > 0 ? d : 0)}')
    sleep "$d"
}
plus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a + b}'; }

# sample NAME: NAME := the three instances' admitted counts, read at the
# same time, and NAME_t := when
sample() {
    local i p=() t1 t2
    t1=$(now)
    for i in 0 1 2; do admitted $i > "$dir/sample$i" & p+=("$!"); done
    wait "${p[@]}"
    t2=$(now)
    printf -v "$1" '%s' "$(cat "$dir"/sample[012] | paste -sd' ')"
    printf -v "$1_t" '%s' "$(plus "$t1" "$(awk -v a="$t1" -v b="$t2" 'BEGIN {print (b - a) / 2}')")"
}

# window_report A B: what was admitted between samples A and B, in all and
# per instance, scaled to one window (the samples are about a window
# apart), against the limit
window_report() {
    local a=$1 b=$2 ta=${1}_t tb=${2}_t
    awk -v a="${!a}" -v b="${!b}" -v ta="${!ta}" -v tb="${!tb}" -v w="$window" \
        -v lim="$limit" 'BEGIN {
        split(a, x, " "); split(b, y, " "); k = w / (tb - ta);
        for (i = 1; i <= 3; i++) { d[i] = y[i] - x[i]; t += d[i] }
        printf "%.0f (%.0f + %.0f + %.0f), %+.1f %% of %d (%d in %.2f s)", t * k,
               d[1] * k, d[2] * k, d[3] * k, (t * k - lim) * 100 / lim, lim, t, tb - ta }'
}

until_t "$(plus "$t_load" 1)"
sample s0
until_t "$(plus "$t_load" $((1 + window)))"
sample s1
until_t "$(plus "$t_load" $((1 + 2 * window)))"
sample s2
say "2. global limit, wrk -c2 on each instance, admitted per window of $window s (/metrics, once the burst is spent):"
say "   window 1: $(window_report s0 s1)"
say "   window 2: $(window_report s1 s2)"
if [ "$use_redis" = on ]; then
    c1=$(commands)
    fb1=$(fallbacks)
    say "   Redis commands $((c1 - c0)) (the others refused from the local hold), fallbacks $((fb1 - fb0))"
else
    say "   (no Redis: each instance counts alone)"
fi


# ---- 3. Redis stopped, started again -------------------------------------------

if [ "$use_redis" = on ]; then
    fb_stop=$(fallbacks)
    t_stop=$(now)
    stop_redis
    until (( $(fallbacks) > fb_stop )); do
        (( $(ms_since "$t_stop") < 5000 )) || die "no fallback counted within 5 s of Redis stopping"
    done
    fb_ms=$(ms_since "$t_stop")
    # a second for the instances' local bursts, then one window
    until_t "$(plus "$t_stop" 1)"
    sample s3
    until_t "$(plus "$t_stop" $((1 + window)))"
    sample s4
    say "3. Redis stopped (SIGTERM): fallbacks counted within $fb_ms ms; admitted in a window of the outage:"
    say "   $(window_report s3 s4); each instance's share: $(( (limit + 2) / 3 ))"
    start_redis
    t_back=$(now)
    # back when the fallback count stands still for 200 ms on all three
    prev=$(fallbacks)
    while :; do
        t_prev=$(now)
        sleep 0.2
        cur=$(fallbacks)
        [ "$cur" != "$prev" ] || break
        prev=$cur
        (( $(ms_since "$t_back") < 10000 )) || die "the fallbacks went on 10 s after Redis came back"
    done
    say "   Redis started again: no fallback after $(awk -v a="$t_back" -v b="$t_prev" \
        'BEGIN {printf "%.0f", (b - a) * 1000}') ms (counting in Redis again); $((cur - fb_stop)) fallbacks in all"
fi

for p in "${wrk_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${wrk_pids[@]}"; do wait "$p" || true; done
wrk_pids=()
statuses=$(cat "$dir"/wrk?.out | awk '$1 == "status" {n[$2] += $3} END {for (s in n) printf "%s:%d ", s, n[s]}')
rps=$(cat "$dir"/wrk?.out | awk '/Requests\/sec/ {r += $2} END {printf "%.0f", r}')
fivexx=$(cat "$dir"/wrk?.out | awk '$1 == "status" && $2 >= 500 {n += $3} END {print n + 0}')
say "over the run: ${rps} requests/s in all, answers by status: ${statuses% }; 5xx: $fivexx"
(( fivexx == 0 )) || die "5xx answers (see $dir/gw*/error.log)"
