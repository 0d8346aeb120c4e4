#!/usr/bin/env bash
# The container's entrypoint (Dockerfile); also runs from a checkout.
#
#   scripts/entrypoint.sh [--check]
#
# 1. scripts/render-conf.sh --deploy validates the environment (see its
#    header) and renders RUN_DIR/nginx.conf; a missing or malformed
#    variable is one line naming it, and exit 1.  Secret values are never
#    printed.  --deploy: BACKEND_URL and MCP_URL are required whatever
#    NODE_ENV says (the demo upstream of make run echoes the signed tenant
#    headers to clients) and the TEST_ONLY_* switches are refused.
# 2. nginx -t on the rendered file: one line and exit 1 when refused.
#    --check stops here (exit 0): `docker run IMAGE --check`, the tests.
# 3. MIGRATE_ON_START=1: scripts/migrate.sh (default 0: migrations are a
#    release step, e.g. `make migrate` or a pre-deploy command).
# 4. exec nginx in the foreground (PID 1 in a container; SIGQUIT stops it
#    gracefully, SIGTERM fast).
#
#   RUN_DIR        /run/gateway (nginx.conf, pid, temp files, key file)
#   TENANT_MODULE  /usr/lib/nginx/modules/ngx_tenant_module.so
#   NGINX          nginx (from PATH)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
    printf 'entrypoint: %s\n' "$*" >&2
    exit 1
}

check=
case ${1:-} in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: scripts/entrypoint.sh [--check]" >&2; exit 2 ;;
esac

export RUN_DIR=${RUN_DIR:-/run/gateway}
case $RUN_DIR in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
RUN_DIR=${RUN_DIR%/}
export TENANT_MODULE=${TENANT_MODULE:-/usr/lib/nginx/modules/ngx_tenant_module.so}
nginx=${NGINX:-nginx}
# nginx itself reads NGINX: inherited listening sockets (binary upgrade)
unset NGINX
conf=$RUN_DIR/nginx.conf

# The container never writes nginx's debug log: it records every request
# header (tokens, cookies, CRON_SECRET, CLERK_SECRET_KEY), and its logs go
# to the platform's dashboard and log drains.
case ${UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS:-0} in
    0) ;;
    *) die "UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS: refused in the container (nginx's debug log records tokens, cookies and secrets); use LOG_LEVEL" ;;
esac

case ${MIGRATE_ON_START:-0} in
    0|1|"") ;;
    *) die "MIGRATE_ON_START: must be 0 or 1" ;;
esac

command -v "$nginx" >/dev/null 2>&1 || die "nginx not found ($nginx)"
[ -r "$TENANT_MODULE" ] \
    || die "TENANT_MODULE: $TENANT_MODULE is not a readable file"

# render-conf.sh prints its own one line on failure.
"$here/render-conf.sh" --deploy "$conf" || exit 1

# Left over by a previous run in the same RUN_DIR (a restarted container).
pid_file=$RUN_DIR/nginx.pid
if [ -s "$pid_file" ]; then
    pid=$(cat "$pid_file" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
       && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
        die "an nginx is already running with RUN_DIR $RUN_DIR (pid $pid)"
    fi
    rm -f "$pid_file"
fi

# -e stderr: the built-in /var/log/nginx/error.log is not writable by a
# non-root user.  nginx's own messages name files and directives, never
# the values of the secrets.
if ! out=$("$nginx" -t -q -p "$RUN_DIR/" -e stderr -c "$conf" -g 'daemon off;' 2>&1); then
    reason=$(grep -m1 -E '\[(emerg|alert|crit)\]' <<< "$out" \
             | sed -E 's/^.*\[(emerg|alert|crit)\] [0-9]+#[0-9]+: //' || true)
    die "nginx -t refused $conf: ${reason:-${out%%$'\n'*}}"
fi

if [ -n "$check" ]; then
    echo "entrypoint: $conf is valid (nginx -t)"
    exit 0
fi

if [ "${MIGRATE_ON_START:-0}" = 1 ]; then
    "$here/migrate.sh" || die "migrations failed (see above)"
fi

exec "$nginx" -p "$RUN_DIR/" -e stderr -c "$conf" -g 'daemon off;'
