#!/usr/bin/env bash
# Validates the gateway's environment and renders conf/nginx.conf.template
# into OUT_FILE (mode 0600: it holds the database password and the
# signing key).
#
#   scripts/render-conf.sh [--deploy] [--access-log PATH] OUT_FILE
#
# --deploy (scripts/entrypoint.sh, so the image): the demo upstream and the
# TEST_ONLY_* switches are refused.
# --access-log PATH: nginx's access log (default /dev/stdout);
# scripts/entrypoint.sh gives its FIFO, RUN_DIR/access.log.
#
# A missing or malformed required variable: exit 1 and one line on stderr
# naming the variable and what is wrong.  Secret values are never printed.
# On success, two lines on stderr say the workers and the database
# connections chosen, and why:
#
#   render-conf: worker_processes 2 (least of: cgroup v2 cpu.max
#       200000/100000 = 2 CPUs; cpuset 0-15 = 16 CPUs; nproc 16)
#   render-conf: database connections: 2 workers × 4 + 1 listener = 9
#       of DATABASE_POOL_SIZE=10
#
# (one line each), then any warnings.
#
# Variables (empty counts as unset; surrounding blanks are ignored):
#
#   DATABASE_URL             required: postgresql://... URL or libpq
#                            key=value string
#   CLERK_JWT_KEY            PEM public key text (RSA >= 2048 or EC P-256),
#                            written to RUN_DIR/clerk-jwt-key.pem (0600);
#   CLERK_JWKS_FILE          or a JWKS JSON file;
#   CLERK_JWKS_URL           or a JWKS URL fetched at run time (https://;
#                            http:// only for localhost); default
#                            https://api.clerk.com/v1/jwks when
#                            CLERK_SECRET_KEY is set.  At least one of
#                            the four is required.
#   CLERK_SECRET_KEY         optional: sent as "Authorization: Bearer" to
#                            CLERK_JWKS_URL, which must then be on Clerk's
#                            Backend API, https://api.clerk.com
#   TEST_ONLY_CLERK_SECRET_TO_LOOPBACK
#                            1: tests only, CLERK_SECRET_KEY may also go
#                            to a CLERK_JWKS_URL on 127.0.0.1, [::1] or
#                            localhost (a fake Clerk)
#   RESOLVER                 DNS servers for CLERK_JWKS_URL (nginx's
#                            resolver); default: /etc/resolv.conf's
#   CLERK_ISSUER             optional: https:// URL (http:// for localhost)
#   CLERK_AUTHORIZED_PARTIES optional: comma-separated origins
#   ENCRYPTION_KEY           required: 64 hex digits (signs tenant headers)
#   CRON_SECRET              required: at least 32 characters
#   BACKEND_URL, MCP_URL     http(s)://host[:port]; unset: the demo
#                            upstream on 127.0.0.1:DEMO_PORT (refused with
#                            --deploy and when NODE_ENV=production)
#   DEMO_PORT                8081
#   CORS_ORIGIN              "" (no CORS), "*", or comma-separated origins
#   RATE_LIMIT_MAX           100 (requests per window)
#   RATE_LIMIT_WINDOW        60000 (milliseconds)
#   REDIS_URL                "" (each instance limits alone); Render Key
#                            Value's internal redis://[user:password@]
#                            host[:port][/db]: every rate limit is counted
#                            there, one limit across all instances
#                            (tenant_redis).  rediss:// (TLS) is refused.
#                            Secret: never printed (it holds the password)
#   REDIS_TIMEOUT            5 (milliseconds, 1-1000): one Redis command's
#                            budget; without an answer, REDIS_FALLBACK
#   REDIS_FALLBACK           local: without Redis, each instance limits
#                            alone at limit / REDIS_INSTANCES (rounded
#                            up); open: admitted without any limit
#   REDIS_INSTANCES          1 (1-1000): the instances sharing the limit
#                            (numInstances, or the autoscaling maximum):
#                            the divisor of REDIS_FALLBACK=local
#   MAX_REQUEST_SIZE         10mb (N, Nk, Nkb, Nm, Nmb, Ng, Ngb)
#   LOG_LEVEL                info (debug, info, notice, warn, error, crit;
#                            also warning, fatal, trace, verbose, http);
#                            debug, trace, verbose: info (nginx's debug
#                            log holds tokens and secrets)
#   UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS
#                            0; 1: nginx's debug log, every request header
#                            in it (refused with NODE_ENV=production and
#                            by the container's entrypoint)
#   UPGRADE_URL              https://app.capliquify.com/settings/billing?...
#   METRICS_TOKEN            "" (no token); secret: at least 32 letters,
#                            digits or -._~+/ (trailing =): every request
#                            to /metrics but this machine's must send
#                            "Authorization: Bearer METRICS_TOKEN"
#   METRICS_ALLOW            "": only 127.0.0.1 and ::1 may read /metrics,
#                            or, with METRICS_TOKEN, every address (with
#                            the token); addresses or CIDRs of the
#                            Prometheus scrapers, which also need the
#                            token when it is set.  A /0 needs
#                            METRICS_TOKEN; so does any METRICS_ALLOW on
#                            Render (RENDER=true): public requests reach
#                            the instance from Render's proxy on a private
#                            address
#   WORKER_PROCESSES         auto: the container's CPUs (cgroup quota,
#                            cpuset, affinity, RENDER_CPU_COUNT: see
#                            scripts/cpu-count.sh); or a number 1-64
#   DATABASE_POOL_SIZE       the connections one instance opens to
#                            PostgreSQL in all: 1 for the listener, and
#                            each worker's pool gets
#                            (DATABASE_POOL_SIZE - 1) / workers, refused
#                            when that is 0; default: 4 per worker + 1
#   SHUTDOWN_TIMEOUT         25 (seconds, 1-295): nginx's
#                            worker_shutdown_timeout, the bound of a
#                            graceful stop (a deploy): requests and
#                            streams still running then are cut; keep it
#                            below the platform's kill delay (Render's
#                            maxShutdownDelaySeconds, 30 by default)
#   PORT                     8080 (Render sets 10000; with RENDER=true
#                            its reserved 18012, 18013, 19099 are refused)
#   RUN_DIR                  .local/run (pid, temp files, key file, socket)
#   TENANT_MODULE            build/nginx/objs/ngx_tenant_module.so
#   UPSTREAM_CA_FILE         /etc/ssl/certs/ca-certificates.crt (used when
#                            an upstream is https)
set -euo pipefail
umask 077

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
template=$root/conf/nginx.conf.template

die() {
    printf 'render-conf: %s\n' "$*" >&2
    exit 1
}

# Warnings are printed at the end, on success only: a failure is one line.
warnings=()
warn() {
    warnings+=("render-conf: warning: $*")
}

# ' (got "VALUE")' for a non-secret value that prints on one short line
# (not when it might hold URL credentials).
got() {
    if [[ $1 =~ ^[[:print:]]{1,80}$ && $1 != *@* ]]; then
        printf ' (got "%s")' "$1"
    fi
}

# get TARGET NAME [DEFAULT]: TARGET := the value of variable NAME without
# surrounding blanks, or DEFAULT when that is empty.  (Assignments, not
# $(...): forks are slow on some machines and this runs for every variable.)
get() {
    trim "$1" "${!2:-}"
    [ -n "${!1}" ] || printf -v "$1" '%s' "${3:-}"
}

# trim TARGET VALUE
trim() {
    local _v=$2
    _v=${_v#"${_v%%[![:space:]]*}"}
    _v=${_v%"${_v##*[![:space:]]}"}
    printf -v "$1" '%s' "$_v"
}

# Characters that would end or change an unquoted nginx parameter.
unsafe_path() {
    [[ $1 =~ [[:space:][:cntrl:]\"\'\;\{\}\$\#\\] ]]
}

# abs TARGET PATH: TARGET := PATH made absolute (relative to $PWD).
abs() {
    case $2 in
        /*) printf -v "$1" '%s' "$2" ;;
        *)  printf -v "$1" '%s/%s' "$PWD" "$2" ;;
    esac
}

# A string as the inside of an nginx "..." parameter.
nginx_quote() {
    local v=${1//\\/\\\\}
    printf '%s' "${v//\"/\\\"}"
}

port_ok() {
    [[ $1 =~ ^[0-9]{1,5}$ ]] && (( 10#$1 >= 1 && 10#$1 <= 65535 ))
}

# scheme://host[:port], as a browser sends it in Origin and Clerk in azp.
origin_ok() {
    [[ $1 =~ ^https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$ ]]
}


usage() {
    echo "usage: scripts/render-conf.sh [--deploy] [--access-log PATH] OUT_FILE" >&2
    exit 2
}

deploy= access_log=/dev/stdout
while [ $# -gt 1 ]; do
    case $1 in
        --deploy)     deploy=1; shift ;;
        --access-log) [ $# -ge 3 ] && [ -n "$2" ] || usage
                      access_log=$2; shift 2 ;;
        *)            usage ;;
    esac
done
[ $# -eq 1 ] && [[ $1 != -* ]] || usage
abs out "$1"
abs access_log "$access_log"
unsafe_path "$access_log" \
    && die "--access-log: must be a path without spaces, quotes or any of ;{}\$#\\"

[ -r "$template" ] || die "template $template is missing"


# ---- required secrets ------------------------------------------------------

get database_url DATABASE_URL
[ -n "$database_url" ] \
    || die "DATABASE_URL: required (postgresql://user:password@host:5432/db)"
if [[ $database_url =~ [[:cntrl:]] ]]; then
    die "DATABASE_URL: contains control characters"
fi
if [[ ! $database_url =~ ^postgres(ql)?://[^[:space:]]+$ \
      && ! $database_url =~ ^[a-z_]+[[:space:]]*= ]]; then
    die "DATABASE_URL: must be a postgresql:// URL or a libpq key=value string"
fi

get encryption_key ENCRYPTION_KEY
[ -n "$encryption_key" ] \
    || die "ENCRYPTION_KEY: required, 64 hex digits (openssl rand -hex 32)"
[[ $encryption_key =~ ^[0-9A-Fa-f]{64}$ ]] \
    || die "ENCRYPTION_KEY: must be exactly 64 hex digits (openssl rand -hex 32)"

get cron_secret CRON_SECRET
[ -n "$cron_secret" ] \
    || die "CRON_SECRET: required, at least 32 characters (openssl rand -hex 32)"
(( ${#cron_secret} >= 32 )) \
    || die "CRON_SECRET: too short, at least 32 characters (openssl rand -hex 32)"
[[ $cron_secret =~ ^[A-Za-z0-9._~+/-]+=*$ ]] \
    || die "CRON_SECRET: only letters, digits and -._~+/ (a bearer token), e.g. openssl rand -hex 32"


# ---- plain settings --------------------------------------------------------

get port PORT 8080
port_ok "$port" || die "PORT: must be a port number 1-65535$(got "$port")"
# Render reserves these for its own processes in the instance.
if [ "${RENDER:-}" = true ]; then
    case $((10#$port)) in
        18012|18013|19099)
            die "PORT: $port is reserved by Render (18012, 18013, 19099); leave PORT unset (Render sets 10000) or choose another" ;;
    esac
fi
port=$((10#$port))

get demo_port DEMO_PORT 8081
port_ok "$demo_port" \
    || die "DEMO_PORT: must be a port number 1-65535$(got "$demo_port")"
demo_port=$((10#$demo_port))

# No LOG_LEVEL puts a secret into the log.  nginx's debug log records
# every request header (session tokens, cookies, the cron job's bearer,
# the JWKS fetch's CLERK_SECRET_KEY): the verbose names are info, the
# level of the module's refusal lines.
get log_level LOG_LEVEL info
case ${log_level,,} in
    debug|trace|verbose|silly)  log_level=info ;;
    info|http)                  log_level=info ;;
    notice)                     log_level=notice ;;
    warn|warning)               log_level=warn ;;
    error)                      log_level=error ;;
    crit|fatal)                 log_level=crit ;;
    alert)                      log_level=alert ;;
    emerg)                      log_level=emerg ;;
    *) die "LOG_LEVEL: must be one of debug, info, notice, warn, error$(got "$log_level")" ;;
esac

# nginx's own info lines about a malformed request quote its header lines
# ("client sent invalid header line", "too long header line": a token, a
# cookie): until a location is chosen, notice at least.
header_log_level=$log_level
[ "$log_level" = info ] && header_log_level=notice

# nginx's debug log, headers and all: for a developer's machine only.
get unsafe_debug UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS 0
get node_env NODE_ENV
case $unsafe_debug in
    0)  ;;
    1)  [ "$node_env" != production ] \
            || die "UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS: refused with NODE_ENV=production (nginx's debug log records tokens, cookies and secrets)"
        [ -z "$deploy" ] \
            || die "UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS: refused by scripts/entrypoint.sh (the image): nginx's debug log records tokens, cookies and secrets"
        log_level=debug header_log_level=debug
        warn "UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS=1: nginx's debug log records every request header (session tokens, cookies, CRON_SECRET, CLERK_SECRET_KEY); local debugging only" ;;
    *)  die "UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS: must be 0 or 1 (1: nginx's debug log, with secrets, local only)" ;;
esac

get size MAX_REQUEST_SIZE 10mb
if [[ ${size,,} =~ ^([0-9]{1,9})[[:space:]]*(b|k|kb|m|mb|g|gb)?$ ]]; then
    n=$((10#${BASH_REMATCH[1]}))
    unit=${BASH_REMATCH[2]:0:1}
    [ "$unit" = b ] && unit=
    (( n > 0 )) || die "MAX_REQUEST_SIZE: must be greater than 0$(got "$size")"
    max_request_size=$n$unit
else
    die "MAX_REQUEST_SIZE: must be a size like 10mb, 512kb, 1m or 4096$(got "$size")"
fi

# posint TARGET VALUE: TARGET := the value of a positive integer (leading
# zeros allowed), capped at 1000000000, over every limit below (bash's
# arithmetic would wrap a long one); false when VALUE is not one.
posint() {
    [[ $2 =~ ^0*([1-9][0-9]*)$ ]] || return 1
    if (( ${#BASH_REMATCH[1]} > 9 )); then
        printf -v "$1" '%s' 1000000000
    else
        printf -v "$1" '%s' "$((10#${BASH_REMATCH[1]}))"
    fi
}

get rate_max_env RATE_LIMIT_MAX 100
posint rate_max "$rate_max_env" \
    || die "RATE_LIMIT_MAX: must be a positive integer (requests per window)$(got "$rate_max_env")"

get rate_window_env RATE_LIMIT_WINDOW 60000
posint rate_window "$rate_window_env" \
    || die "RATE_LIMIT_WINDOW: must be a positive integer (milliseconds)$(got "$rate_window_env")"
(( rate_window <= 86400000 )) \
    || die "RATE_LIMIT_WINDOW: at most 86400000 (one day)$(got "$rate_window_env")"
(( rate_max <= 100000000 && rate_window * 1000 >= rate_max )) \
    || die "RATE_LIMIT_MAX: at most 100000000, and at most one request per microsecond of RATE_LIMIT_WINDOW$(got "$rate_max_env")"

# Global limits (tenant_redis): REDIS_URL holds the Key Value instance's
# password (Render's internal URL has one when internal authentication is
# on), so no line below prints it, nor any part of it.  The URL's details
# (user, password, host, port, /db) are what tenant_redis_url_parse()
# accepts; this check is no stricter, and nginx -t names anything else.
get redis_url REDIS_URL
if [ -n "$redis_url" ]; then
    [[ ! $redis_url =~ [[:cntrl:][:space:]] ]] \
        || die "REDIS_URL: contains spaces or control characters (a line break at its end?)"
    [[ $redis_url != *[![:ascii:]]* ]] \
        || die "REDIS_URL: contains a non-ASCII character; percent-encode it"
    case ${redis_url,,} in
        rediss://*)
            die "REDIS_URL: rediss:// (TLS) is not supported by the gateway; use the Key Value instance's internal redis:// URL" ;;
        redis://*) ;;
        *://*)
            die "REDIS_URL: must be a redis:// URL (redis://[user:password@]host[:port][/db]); other schemes are not supported" ;;
        *)
            die "REDIS_URL: must be a redis:// URL (redis://[user:password@]host[:port][/db])" ;;
    esac
    # redis://[userinfo@]host[:port][/db]: userinfo RFC 3986's characters
    # (others percent-encoded), a password required; host a name or an
    # [IPv6] address; port 1-65535, db 0-15, without leading zeros.
    rest=${redis_url:8}
    [[ $rest != *[?#]* ]] \
        || die "REDIS_URL: a query or fragment ('?' or '#') is not allowed; percent-encode them in the password"
    authority=${rest%%/*}
    path=${rest:${#authority}}
    [[ $path != *@* ]] \
        || die "REDIS_URL: an '@' after the host; percent-encode '/', '?', '#' and '@' in the user and password"
    [[ -z $path || $path = / || $path =~ ^/(0|[1-9][0-9]?)$ && ${BASH_REMATCH[1]} -le 15 ]] \
        || die "REDIS_URL: the path must be a database number /0 to /15"
    if [[ $authority = *@* ]]; then
        userinfo=${authority%@*}
        authority=${authority##*@}
        [[ $userinfo != *@* ]] \
            || die "REDIS_URL: more than one '@'; percent-encode '@' in the password as %40"
        userinfo_re='^[A-Za-z0-9._~%!$&'\''()*+,;=:-]*$'
        [[ $userinfo =~ $userinfo_re ]] \
            || die "REDIS_URL: a character in the user or password must be percent-encoded"
        [[ $userinfo = *:* ]] \
            || die "REDIS_URL: a user without a password (a password alone: redis://:PASSWORD@host)"
        [ -n "${userinfo#*:}" ] \
            || die "REDIS_URL: an empty password"
    fi
    [[ $authority =~ ^([A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]+\])(:([0-9]{1,5}))?$ ]] \
        || die "REDIS_URL: the host must be a name or an [IPv6] address, with an optional :port"
    redis_port=${BASH_REMATCH[3]}
    [[ -z $redis_port ]] || { [[ $redis_port != 0* ]] && (( 10#$redis_port <= 65535 )); } \
        || die "REDIS_URL: the port must be 1-65535"
fi

get redis_timeout_env REDIS_TIMEOUT 5
posint redis_timeout "$redis_timeout_env" && (( redis_timeout <= 1000 )) \
    || die "REDIS_TIMEOUT: must be 1-1000 milliseconds, one Redis command's budget (default 5)$(got "$redis_timeout_env")"

get redis_fallback REDIS_FALLBACK local
case ${redis_fallback,,} in
    local|open) redis_fallback=${redis_fallback,,} ;;
    *) die "REDIS_FALLBACK: must be local (each instance limits alone at limit / REDIS_INSTANCES) or open (no limit) while Redis does not answer$(got "$redis_fallback")" ;;
esac

get redis_instances_env REDIS_INSTANCES 1
posint redis_instances "$redis_instances_env" && (( redis_instances <= 1000 )) \
    || die "REDIS_INSTANCES: must be 1-1000, the instances sharing the limit (REDIS_FALLBACK=local's divisor)$(got "$redis_instances_env")"

if [ -z "$redis_url" ]; then
    for v in REDIS_TIMEOUT REDIS_FALLBACK REDIS_INSTANCES; do
        get value "$v"
        [ -z "$value" ] || warn "$v is set but not used (REDIS_URL is empty: each instance limits alone)"
    done
fi

# SHUTDOWN_TIMEOUT: worker_shutdown_timeout, seconds.  At most 295: Render
# kills a stopping instance after maxShutdownDelaySeconds (at most 300),
# and nginx needs a moment after the timeout to close and exit.
get shutdown_timeout_env SHUTDOWN_TIMEOUT 25
posint shutdown_timeout "$shutdown_timeout_env" && (( shutdown_timeout <= 295 )) \
    || die "SHUTDOWN_TIMEOUT: must be 1-295 seconds, a few below the platform's kill delay (Render: maxShutdownDelaySeconds, 30 by default)$(got "$shutdown_timeout_env")"

# ---- workers and database connections --------------------------------------

# worker_processes from the container's CPUs (scripts/cpu-count.sh), not
# nginx's "auto", which counts the host's.
. "$root/scripts/cpu-count.sh"
cpu_count_workers || die "$cpu_count_error"
workers=$cpu_count
for w in "${cpu_count_warnings[@]}"; do
    warn "$w"
done
infos=("render-conf: worker_processes $workers ($cpu_count_why)")
wn="$workers workers"
(( workers == 1 )) && wn="1 worker"

# DATABASE_POOL_SIZE: every connection one instance opens to PostgreSQL.
# The listener (tenant_database_listen: one per instance, in the first
# worker) takes one; each worker's pool (lookups, refreshes, the health
# ping, the admin API, the trial job) an equal share of the rest.
get pool_env DATABASE_POOL_SIZE
if [ -z "$pool_env" ]; then
    db_per_worker=4
    db_pool_size=$(( workers * db_per_worker + 1 ))
    pool_note=" (the default: 4 per worker + 1 listener)"
else
    posint db_pool_size "$pool_env" \
        || die "DATABASE_POOL_SIZE: must be a positive integer, the connections one instance opens to PostgreSQL$(got "$pool_env")"
    db_per_worker=$(( (db_pool_size - 1) / workers ))
    if (( db_per_worker < 1 )); then
        fewer=
        (( workers > 1 )) && fewer=", or a lower WORKER_PROCESSES"
        die "DATABASE_POOL_SIZE: $db_pool_size leaves no connection for each of the $wn: ($db_pool_size - 1 listener) / $wn = 0 per worker; set at least $(( workers + 1 ))$fewer"
    fi
    pool_note=
    if (( db_per_worker > 256 )); then
        db_per_worker=256
        pool_note=" (at most 256 per worker)"
    fi
fi
infos+=("render-conf: database connections: $wn × $db_per_worker + 1 listener = $(( workers * db_per_worker + 1 )) of DATABASE_POOL_SIZE=$db_pool_size$pool_note")

# METRICS_TOKEN: the bearer token of the Prometheus scrapers (secret).
get metrics_token METRICS_TOKEN
if [ -n "$metrics_token" ]; then
    (( ${#metrics_token} >= 32 )) \
        || die "METRICS_TOKEN: too short, at least 32 characters (openssl rand -hex 32)"
    [[ $metrics_token =~ ^[A-Za-z0-9._~+/-]+=*$ ]] \
        || die "METRICS_TOKEN: only letters, digits and -._~+/ (a bearer token), e.g. openssl rand -hex 32"
fi

# METRICS_ALLOW: who may scrape /metrics besides the machine itself
# (nginx "allow" addresses or CIDRs, comma- or space-separated).  nginx's
# allow sees the connection's address: behind a proxy, the proxy's, so
# an address cannot tell the internet from the private network there.
get metrics_allow METRICS_ALLOW ""
metrics_allow_lines=""
for a in ${metrics_allow//,/ }; do
    [[ $a =~ ^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$ ]] \
        || die "METRICS_ALLOW: \"$a\" is not an address or CIDR"
    [[ -n $metrics_token || ! $a =~ /0+$ ]] \
        || die "METRICS_ALLOW: $a opens /metrics to every address; set METRICS_TOKEN (Prometheus sends it as a bearer token)"
    metrics_allow_lines+="${metrics_allow_lines:+$'\n'            }allow $a;"
done
if [ "${RENDER:-}" = true ] && [ -n "$metrics_allow" ] && [ -z "$metrics_token" ]; then
    die "METRICS_TOKEN: required on Render with METRICS_ALLOW: public requests reach the instance from Render's proxy on a private address, which METRICS_ALLOW cannot tell from a scraper's"
fi
# With a token and no addresses, any address may try: the token decides.
if [ -n "$metrics_token" ] && [ -z "$metrics_allow_lines" ]; then
    metrics_allow_lines="allow all;"
fi

get upgrade_url UPGRADE_URL \
    'https://app.capliquify.com/settings/billing?plan=$tenant_required_tier&org=$tenant_org_id'
[[ $upgrade_url =~ ^https?://[^[:space:][:cntrl:]\"\'\\]+$ ]] \
    || die "UPGRADE_URL: must be an http(s):// URL without spaces, quotes or backslashes"
# nginx variables: the module's own only (tenant_upgrade_url refuses any
# other; $http_cookie would put the session cookie into 403 bodies)
v=${upgrade_url,,}
while [[ $v =~ ^(.*)\$(tenant_[a-z0-9_]+|\{tenant_[a-z0-9_]+\})(.*)$ ]]; do
    v=${BASH_REMATCH[1]}${BASH_REMATCH[3]}
done
[[ $v != *'$'* ]] \
    || die "UPGRADE_URL: only the gateway's \$tenant_* variables may be used (\$tenant_required_tier, \$tenant_org_id, ...); write a literal \$ as %24"


# ---- paths -----------------------------------------------------------------

get run_dir RUN_DIR "$root/.local/run"
abs run_dir "$run_dir"
run_dir=${run_dir%/}
unsafe_path "$run_dir" \
    && die "RUN_DIR: must be a path without spaces, quotes or any of ;{}\$#\\"
# 0755: nginx workers (nobody, when the master runs as root) use the temp
# directories.  Secrets in it are 0600 files.
(umask 022 && mkdir -p "$run_dir/tmp") 2>/dev/null \
    || die "RUN_DIR: cannot create $run_dir"

get module TENANT_MODULE "$root/build/nginx/objs/ngx_tenant_module.so"
abs module "$module"
unsafe_path "$module" \
    && die "TENANT_MODULE: must be a path without spaces, quotes or any of ;{}\$#\\"
[ -e "$module" ] || warn "TENANT_MODULE $module does not exist yet (make module)"


# ---- Clerk keys ------------------------------------------------------------

get jwt_key CLERK_JWT_KEY
get jwks_file CLERK_JWKS_FILE
get clerk_secret CLERK_SECRET_KEY
jwks_url_default=
[ -n "$clerk_secret" ] && jwks_url_default=https://api.clerk.com/v1/jwks
get jwks_url CLERK_JWKS_URL "$jwks_url_default"
get test_loopback TEST_ONLY_CLERK_SECRET_TO_LOOPBACK
case $test_loopback in
    ""|0|1) ;;
    *) die "TEST_ONLY_CLERK_SECRET_TO_LOOPBACK: must be 0 or 1$(got "$test_loopback")" ;;
esac
[ "$test_loopback" = 1 ] && [ -n "$deploy" ] \
    && die "TEST_ONLY_CLERK_SECRET_TO_LOOPBACK: a switch for tests, refused by scripts/entrypoint.sh (the image)"
key_file=
jwks_tls=
resolver=

[ -n "$jwt_key$jwks_file$jwks_url" ] \
    || die "CLERK_JWT_KEY: required (Clerk's PEM public key), or set CLERK_SECRET_KEY (keys fetched from Clerk), CLERK_JWKS_URL or CLERK_JWKS_FILE"

if [ -n "$clerk_secret" ]; then
    # it goes into the configuration inside "...": token68 only
    [[ $clerk_secret =~ ^[A-Za-z0-9._~+/-]+=*$ ]] \
        || die "CLERK_SECRET_KEY: must be letters, digits and -._~+/ (Clerk's sk_live_... or sk_test_...)"
    [[ $clerk_secret == sk_* ]] \
        || warn "CLERK_SECRET_KEY does not start with sk_: is it Clerk's secret key?"
fi

if [ -n "$jwks_url" ]; then
    [[ $jwks_url =~ ^(https?)://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/%+=-]*)?$ ]] \
        || die "CLERK_JWKS_URL: must be an https:// URL of a JWKS, e.g. https://api.clerk.com/v1/jwks$(got "$jwks_url")"
    jwks_scheme=${BASH_REMATCH[1]}
    jwks_host=${BASH_REMATCH[2]}
    jwks_port=${BASH_REMATCH[4]}
    jwks_loopback=
    [[ $jwks_host =~ ^(localhost|127\.0\.0\.1|\[::1\])$ ]] && jwks_loopback=1
    if [ "$jwks_scheme" = https ]; then
        jwks_tls=1
    elif [ -z "$jwks_loopback" ]; then
        die "CLERK_JWKS_URL: must be https:// (http:// only for localhost)$(got "$jwks_url")"
    fi

    # The secret key is the Backend API's credential: it goes to that
    # host only, never to whatever the URL names (the Frontend API's
    # /.well-known/jwks.json needs no secret).
    if [ -n "$clerk_secret" ] \
        && ! [[ $jwks_scheme = https && ${jwks_host,,} = api.clerk.com \
                && ( -z $jwks_port || $jwks_port = :443 ) ]] \
        && ! [[ $test_loopback = 1 && -n $jwks_loopback ]]
    then
        die "CLERK_JWKS_URL: CLERK_SECRET_KEY is sent only to Clerk's Backend API (https://api.clerk.com/v1/jwks); for another JWKS URL, such as the Frontend API's /.well-known/jwks.json, unset CLERK_SECRET_KEY$(got "$jwks_url")"
    fi

    # A host name is resolved when the keys are fetched, by nginx's
    # resolver: RESOLVER, else the name servers of /etc/resolv.conf.
    get resolver RESOLVER
    if [ -z "$resolver" ] && [ -r /etc/resolv.conf ]; then
        while read -r word addr _; do
            [ "$word" = nameserver ] && [ -n "$addr" ] || continue
            [[ $addr == *%* ]] && continue          # link-local with a zone
            [[ $addr == *:* ]] && addr="[$addr]"
            resolver+="${resolver:+ }$addr"
        done < /etc/resolv.conf
    fi
    for a in $resolver; do
        [[ $a =~ ^([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$ ]] \
            || die "RESOLVER: \"$a\" is not an address (IPv4, [IPv6] or a name, optional :port)"
    done
    if [ -z "$resolver" ] \
        && ! [[ $jwks_host =~ ^([0-9.]+|\[[0-9A-Fa-f:.]+\]|localhost)$ ]]
    then
        die "RESOLVER: required to resolve $jwks_host (CLERK_JWKS_URL): no nameserver in /etc/resolv.conf"
    fi
    [ "$jwks_host" = localhost ] \
        && jwks_url=${jwks_url/\/\/localhost/\/\/127.0.0.1}
fi

if [ -n "$clerk_secret" ] && [ -z "$jwks_url" ]; then
    warn "CLERK_SECRET_KEY is set but not used (CLERK_JWKS_URL is empty)"
fi

if [ -n "$jwt_key" ]; then
    # Dashboards and .env files often hold the PEM on one line with "\n".
    if [[ $jwt_key != *$'\n'* && $jwt_key == *'\n'* ]]; then
        jwt_key=${jwt_key//\\n/$'\n'}
    fi
    jwt_key=${jwt_key//$'\r'/}
    trim jwt_key "$jwt_key"
    case $jwt_key in
        *"PRIVATE KEY-----"*)
            die "CLERK_JWT_KEY: is a private key; set the public key (-----BEGIN PUBLIC KEY-----)" ;;
        "-----BEGIN RSA PUBLIC KEY-----"*)
            die "CLERK_JWT_KEY: PKCS#1 (BEGIN RSA PUBLIC KEY) is not supported; convert it: openssl rsa -RSAPublicKey_in -pubout" ;;
        "-----BEGIN PUBLIC KEY-----"$'\n'*"-----END PUBLIC KEY-----") ;;
        *)
            die "CLERK_JWT_KEY: not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)" ;;
    esac

    key_file=$run_dir/clerk-jwt-key.pem
    tmp_key=$(mktemp "$run_dir/.clerk-jwt-key.XXXXXX")
    printf '%s\n' "$jwt_key" > "$tmp_key"

    if command -v openssl >/dev/null 2>&1; then
        if ! text=$(openssl pkey -pubin -in "$tmp_key" -noout -text 2>/dev/null); then
            rm -f "$tmp_key"
            die "CLERK_JWT_KEY: the PEM does not parse as a public key"
        fi
        bits=$(sed -n 's/.*Public-Key: (\([0-9]*\) bit).*/\1/p' <<< "$text" | head -1)
        if grep -q '^Modulus:' <<< "$text"; then
            if (( ${bits:-0} < 2048 || ${bits:-0} > 8192 )); then
                rm -f "$tmp_key"
                die "CLERK_JWT_KEY: RSA key of ${bits:-?} bits, 2048 to 8192 needed"
            fi
        elif grep -q '^Field Type:' <<< "$text"; then
            rm -f "$tmp_key"
            die "CLERK_JWT_KEY: EC key with explicit curve parameters; export it with the named curve P-256 (openssl pkey -pubin -ec_param_enc named_curve)"
        elif ! grep -Eq 'ASN1 OID: prime256v1|NIST CURVE: P-256' <<< "$text"; then
            rm -f "$tmp_key"
            die "CLERK_JWT_KEY: must be an RSA (RS256) or EC P-256 (ES256) public key"
        fi
    fi
    mv -f "$tmp_key" "$key_file"
fi

if [ -n "$jwks_file" ]; then
    abs jwks_file "$jwks_file"
    unsafe_path "$jwks_file" \
        && die "CLERK_JWKS_FILE: must be a path without spaces, quotes or any of ;{}\$#\\"
    [ -f "$jwks_file" ] && [ -r "$jwks_file" ] \
        || die "CLERK_JWKS_FILE: $jwks_file is not a readable file"
    perl -MJSON::PP -e '
        local $/; open my $f, "<", $ARGV[0] or exit 1;
        my $d = eval { JSON::PP->new->decode(<$f>) } or exit 1;
        exit(ref $d eq "HASH" && ref $d->{keys} eq "ARRAY" && @{$d->{keys}}
             ? 0 : 1);
    ' "$jwks_file" \
        || die "CLERK_JWKS_FILE: $jwks_file is not a JWKS document ({\"keys\":[...]})"
fi

get issuer CLERK_ISSUER
if [ -n "$issuer" ]; then
    [[ $issuer =~ ^https://[^[:space:][:cntrl:]\"\'\\]+$ \
       || $issuer =~ ^http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?(/[^[:space:][:cntrl:]\"\'\\]*)?$ ]] \
        || die "CLERK_ISSUER: must be an https:// URL (http:// only for localhost)$(got "$issuer")"
fi

parties=
get parties_in CLERK_AUTHORIZED_PARTIES
IFS=, read -r -a items <<< "$parties_in"
for p in "${items[@]}"; do
    trim p "$p"
    [ -n "$p" ] || continue
    origin_ok "$p" \
        || die "CLERK_AUTHORIZED_PARTIES: \"$p\" is not an origin (scheme://host[:port], no path)"
    parties+="${parties:+ }\"$p\""
done


# ---- upstreams -------------------------------------------------------------

demo=
get node_env NODE_ENV
ca_file=

# upstream NAME VAR: sets <NAME>_scheme, _server, _host, _host_header.
upstream() {
    local name=$1 var=$2 url scheme host port
    get url "$var"
    if [ -z "$url" ]; then
        [ -n "$deploy" ] \
            && die "$var: required (scripts/entrypoint.sh, so the image, never serves the demo upstream of make run)"
        [ "$node_env" = production ] \
            && die "$var: required when NODE_ENV=production (the demo upstream is for local runs)"
        demo=1
        scheme=http host=127.0.0.1 port=$demo_port
    elif [[ $url =~ ^(https?)://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:([0-9]{1,5}))?/?$ ]]; then
        scheme=${BASH_REMATCH[1]} host=${BASH_REMATCH[2]} port=${BASH_REMATCH[5]}
        if [ -z "$port" ]; then
            [ "$scheme" = https ] && port=443 || port=80
        fi
        port_ok "$port" || die "$var: port must be 1-65535$(got "$url")"
        port=$((10#$port))
    elif [[ $url =~ ^https?://[^/]+/. ]]; then
        die "$var: must be scheme://host[:port] without a path$(got "$url")"
    else
        die "$var: must be an http:// or https:// URL (scheme://host[:port])$(got "$url")"
    fi

    printf -v "${name}_scheme" '%s' "$scheme"
    printf -v "${name}_server" '%s' "$host:$port"
    printf -v "${name}_host" '%s' "$host"
    if [[ ( $scheme = http && $port = 80 ) || ( $scheme = https && $port = 443 ) ]]; then
        printf -v "${name}_host_header" '%s' "$host"
    else
        printf -v "${name}_host_header" '%s' "$host:$port"
    fi
    [ "$scheme" = https ] && ca_file=1
    return 0
}

upstream backend BACKEND_URL
upstream mcp MCP_URL

if [ -n "$demo" ]; then
    (( demo_port != port )) || die "DEMO_PORT: must differ from PORT ($port)"
    get v BACKEND_URL
    [ -n "$v" ] \
        || warn "BACKEND_URL unset: /api/ goes to the demo upstream on 127.0.0.1:$demo_port"
    get v MCP_URL
    [ -n "$v" ] \
        || warn "MCP_URL unset: /mcp/ goes to the demo upstream on 127.0.0.1:$demo_port"
fi

[ -n "$jwks_tls" ] && ca_file=1

if [ -n "$ca_file" ]; then
    get ca_file UPSTREAM_CA_FILE /etc/ssl/certs/ca-certificates.crt
    abs ca_file "$ca_file"
    unsafe_path "$ca_file" \
        && die "UPSTREAM_CA_FILE: must be a path without spaces, quotes or any of ;{}\$#\\"
    [ -r "$ca_file" ] \
        || die "UPSTREAM_CA_FILE: $ca_file is not readable (needed for https upstreams and CLERK_JWKS_URL)"
fi


# ---- CORS ------------------------------------------------------------------

get cors CORS_ORIGIN
cors_map=
if [ "$cors" = "*" ]; then
    cors_map='"~."  "*";'
elif [ -n "$cors" ]; then
    IFS=, read -r -a items <<< "$cors"
    for o in "${items[@]}"; do
        trim o "$o"
        [ -n "$o" ] || continue
        origin_ok "$o" \
            || die "CORS_ORIGIN: \"$o\" is not an origin (scheme://host[:port], no path), nor \"*\""
        cors_map+="${cors_map:+$'\n        '}\"$o\"  \$http_origin;"
    done
fi


# ---- render ----------------------------------------------------------------

# Values reach perl through the environment, never through argv (ps).
export RC_TENANT_MODULE=$module
export RC_RUN_DIR=$run_dir
export RC_ACCESS_LOG=$access_log
export RC_LOG_LEVEL=$log_level
export RC_HEADER_LOG_LEVEL=$header_log_level
export RC_MAX_REQUEST_SIZE=$max_request_size
export RC_DATABASE_URL=$(nginx_quote "$database_url")
export RC_TENANT_JWT_KEY_FILE=$key_file
export RC_CLERK_JWKS_FILE=$jwks_file
export RC_CLERK_JWKS_URL=$jwks_url
export RC_CLERK_SECRET_KEY=$clerk_secret
export RC_RESOLVER=$resolver
export RC_CLERK_ISSUER=$issuer
export RC_CLERK_AUTHORIZED_PARTIES=$parties
export RC_ENCRYPTION_KEY=$encryption_key
export RC_CRON_SECRET=$cron_secret
export RC_UPGRADE_URL=$upgrade_url
export RC_RATE_LIMIT_MAX=$rate_max
export RC_RATE_LIMIT_WINDOW=$rate_window
export RC_REDIS_URL=$(nginx_quote "$redis_url")
export RC_REDIS_TIMEOUT=$redis_timeout
export RC_REDIS_FALLBACK=$redis_fallback
export RC_REDIS_INSTANCES=$redis_instances
export RC_METRICS_ALLOW=$metrics_allow_lines
export RC_METRICS_TOKEN=$metrics_token
export RC_BACKEND_SCHEME=$backend_scheme
export RC_BACKEND_SERVER=$backend_server
export RC_BACKEND_HOST=$backend_host
export RC_BACKEND_HOST_HEADER=$backend_host_header
export RC_MCP_SCHEME=$mcp_scheme
export RC_MCP_SERVER=$mcp_server
export RC_MCP_HOST=$mcp_host
export RC_MCP_HOST_HEADER=$mcp_host_header
export RC_UPSTREAM_CA_FILE=$ca_file
export RC_CORS_ORIGIN_MAP=$cors_map
export RC_PORT=$port
export RC_SHUTDOWN_TIMEOUT=$shutdown_timeout
export RC_WORKER_PROCESSES=$workers
export RC_DATABASE_POOL_PER_WORKER=$db_per_worker
export RC_DEMO_PORT=$demo_port
export RC_DEMO_UPSTREAM=$demo

mkdir -p "$(dirname "$out")" || die "cannot create the directory of $out"
tmp_out=$(mktemp "$(dirname "$out")/.nginx.conf.XXXXXX")
trap 'rm -f "$tmp_out"' EXIT

if ! err=$(perl -e '
    use strict;
    use warnings;

    my ($template, $out) = @ARGV;
    my %v = map { substr($_, 3) => $ENV{$_} } grep { /^RC_/ } keys %ENV;
    (my $dir = $template) =~ s{/[^/]*$}{};

    open my $in, "<", $template or die "cannot read $template: $!\n";
    my ($keep, $section, @lines) = (1, undef);
    my (@inc, $inc, $inc_no, $at);

    while (1) {
        my $line;
        if (@inc) {
            $line = shift @inc;
            $at = "$inc line " . ++$inc_no;
        } else {
            defined($line = <$in>) or last;
            ($inc, $at) = (undef, "line $.");
        }
        if (defined $inc && $line =~ /^\s*#%(if|endif|include)\b/) {
            die "$at: #%$1 in an included file\n";
        }
        if ($line =~ /^\s*#%include\s+([A-Za-z0-9_.-]+)\s*$/) {
            next unless $keep;
            my $name = $1;
            open my $f, "<", "$dir/$name"
                or die "$at: cannot read $dir/$name: $!\n";
            @inc = <$f>;
            close $f;
            ($inc, $inc_no) = ($name, 0);
            next;
        }
        if ($line =~ /^\s*#%if\s+([A-Z][A-Z0-9_]*)\s*$/) {
            die "$at: #%if inside #%if $section\n" if defined $section;
            die "$at: unknown name $1\n" unless exists $v{$1};
            ($section, $keep) = ($1, $v{$1} ne "");
            next;
        }
        if ($line =~ /^\s*#%endif\s*$/) {
            die "$at: #%endif without #%if\n" unless defined $section;
            ($section, $keep) = (undef, 1);
            next;
        }
        next unless $keep;
        next if $line =~ /^##/;

        my $empty = 0;
        $line =~ s{\$\{([A-Z][A-Z0-9_]*)\}}{
            die "$at: unknown name \${$1}\n" unless exists $v{$1};
            $empty ||= $v{$1} eq "";
            $v{$1};
        }ge;
        push @lines, $line unless $empty;
    }
    die "#%if $section without #%endif\n" if defined $section;

    open my $o, ">", $out or die "cannot write $out: $!\n";
    print $o @lines or die "cannot write $out: $!\n";
    close $o or die "cannot write $out: $!\n";
' "$template" "$tmp_out" 2>&1); then
    die "template: ${err%%$'\n'*}"
fi

chmod 0600 "$tmp_out"
mv -f "$tmp_out" "$out"
trap - EXIT

printf '%s\n' "${infos[@]}" >&2
if (( ${#warnings[@]} )); then
    printf '%s\n' "${warnings[@]}" >&2
fi
