#!/usr/bin/env bash
# The container's entrypoint (Dockerfile); also runs from a checkout.
#
#   scripts/entrypoint.sh [--check]
#   scripts/entrypoint.sh migrate | /path/to/command [args]
#
# migrate runs scripts/migrate.sh, an absolute path runs that command
# (exec, nothing else): the image's pre-deploy command
# (/srv/gateway/scripts/migrate.sh in render.yaml) works whether the
# platform passes it to this entrypoint or runs it instead.
#
# 1. scripts/render-conf.sh --deploy validates the environment (see its
#    header) and renders RUN_DIR/nginx.conf; a missing or malformed
#    variable is one line naming it, and exit 1.  Secret values are never
#    printed.  --deploy: BACKEND_URL and MCP_URL are required whatever
#    NODE_ENV says (the demo upstream of make run echoes the signed tenant
#    headers to clients) and the TEST_ONLY_* switches are refused.
# 2. nginx's access log: RUN_DIR/access-log.fifo, copied to stdout by a
#    cat (below).
#    nginx -t on the rendered file: one line and exit 1 when refused.
#    --check stops here (exit 0): `docker run IMAGE --check`, the tests.
# 3. MIGRATE_ON_START=1: scripts/migrate.sh (default 0: migrations are a
#    release step, e.g. `make migrate` or a pre-deploy command).
# 4. nginx in the foreground as this script's child, not exec'd: nginx
#    takes SIGTERM as a fast stop (in-flight requests cut), and a deploy
#    on Render sends SIGTERM to the container's main process, whatever
#    the Dockerfile's STOPSIGNAL says.  So the script stays, as PID 1:
#      SIGTERM, SIGQUIT, SIGINT  nginx's graceful stop (SIGQUIT): it
#                  closes its listening sockets (new connections are
#                  refused), closes idle keep-alive connections, lets
#                  the requests in flight finish, bounded by
#                  worker_shutdown_timeout (SHUTDOWN_TIMEOUT, 25 s, below
#                  Render's maxShutdownDelaySeconds), and exits 0.  A
#                  second signal changes nothing: the drain goes on
#                  within that bound (a fast stop: SIGTERM to nginx's
#                  own pid, RUN_DIR/nginx.pid; the platform's SIGKILL at
#                  its deadline ends everything anyway).
#      SIGHUP      forwarded: nginx reloads (the same rendered file).
#    The script exits with nginx's status: 0 after a graceful stop; 128+N
#    when nginx dies of signal N by itself.  It reaps every child (bash
#    does), so orphans never pile up under PID 1.  A stop signal before
#    nginx starts (during migrations): exit 0 without starting it.
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
    # A command for the image: Render's preDeployCommand
    # (/srv/gateway/scripts/migrate.sh), whether the platform runs it
    # through this entrypoint or instead of it; `docker run IMAGE
    # /srv/gateway/scripts/migrate.sh`.
    migrate) shift; exec "$here/migrate.sh" "$@" ;;
    /*) exec "$@" ;;
    *) echo "usage: scripts/entrypoint.sh [--check | migrate | /path/to/command [args]]" >&2; exit 2 ;;
esac

export RUN_DIR=${RUN_DIR:-/run/gateway}
case $RUN_DIR in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
RUN_DIR=${RUN_DIR%/}
export TENANT_MODULE=${TENANT_MODULE:-/usr/lib/nginx/modules/ngx_tenant_module.so}
nginx=${NGINX:-nginx}
# nginx itself reads NGINX: inherited listening sockets (binary upgrade)
unset NGINX
conf=$RUN_DIR/nginx.conf

# The stop signals (step 4).  Traps, not exec: bash as PID 1 gets only
# the signals it traps (the kernel drops the others).  Set now, so that a
# deploy's SIGTERM during the steps before nginx is not lost: a
# foreground step (render-conf.sh, migrate.sh) finishes, then the script
# exits 0 instead of starting nginx.  Not for --check (unchanged).
nginx_pid=
stopping=
pid_file=$RUN_DIR/nginx.pid

# Whether nginx has installed its signal handlers: it does so before it
# writes its pid file (and before it starts any worker).
nginx_ready() {
    local p
    read -r p 2>/dev/null < "$pid_file" && [ "$p" = "$nginx_pid" ]
}

# nginx's graceful stop.  Not before its handlers are installed: bash
# starts a background command with SIGQUIT ignored, so an early SIGQUIT
# would be lost (no worker serves before then, nothing to drain).
quit_nginx() {
    local i
    for ((i = 0; i < 100; i++)); do
        nginx_ready && break
        kill -0 "$nginx_pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -QUIT "$nginx_pid" 2>/dev/null || true
}

on_signal() {
    case $1 in
        HUP)
            # reload; never before nginx's handlers are installed (SIGHUP
            # would kill it) nor while it stops
            if [ -n "$nginx_pid" ] && [ -z "$stopping" ] && nginx_ready; then
                kill -HUP "$nginx_pid" 2>/dev/null || true
            fi
            return 0 ;;
    esac
    if [ -n "$stopping" ]; then
        printf 'entrypoint: SIG%s: already stopping gracefully\n' "$1" >&2
    elif [ -z "$nginx_pid" ]; then
        stopping=1
        printf 'entrypoint: SIG%s: stopping before nginx starts\n' "$1" >&2
    else
        stopping=1
        printf 'entrypoint: SIG%s: graceful stop (nginx SIGQUIT: requests in flight finish, new connections refused)\n' "$1" >&2
    fi
    # again on a second signal: harmless to an nginx that is stopping
    [ -z "$nginx_pid" ] || quit_nginx
}

if [ -z "$check" ]; then
    trap 'on_signal TERM' TERM
    trap 'on_signal QUIT' QUIT
    trap 'on_signal INT'  INT
    trap 'on_signal HUP'  HUP
fi

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

access_fifo=$RUN_DIR/access-log.fifo

# render-conf.sh prints its own one line on failure.
"$here/render-conf.sh" --deploy --access-log "$access_fifo" "$conf" || exit 1

# Left over by a previous run in the same RUN_DIR (a restarted container).
if [ -s "$pid_file" ]; then
    pid=$(cat "$pid_file" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
       && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
        die "an nginx is already running with RUN_DIR $RUN_DIR (pid $pid)"
    fi
    rm -f "$pid_file"
fi

# The access log.  nginx opens it by name, and open("/dev/stdout") fails
# when stdout is a pipe, file or terminal that the (non-root) user does
# not own (13: Permission denied) or a socket (6: No such device or
# address), as container runtimes hand them out; the inherited descriptor
# itself is writable.  So nginx writes to a FIFO and a cat copies it to
# our stdout.  This script's descriptor 4, a write end, keeps the copier
# reading until nginx has exited (nginx -t closing the FIFO is no end);
# then the script closes it and waits for the copier to copy the last
# lines (step 4).  The copier ignores the stop signals.
rm -f "$access_fifo"
mkfifo -m 0600 "$access_fifo" || die "cannot create the FIFO $access_fifo"
exec 3<>"$access_fifo"              # read-write: opens without waiting
( trap '' HUP INT QUIT TERM USR1 USR2 WINCH; exec cat <"$access_fifo" 3<&- ) &
copier=$!
exec 4>"$access_fifo" 3<&-

# -e stderr: the built-in /var/log/nginx/error.log is not writable by a
# non-root user.  nginx's own messages name files and directives, never
# the values of the secrets.
if ! out=$("$nginx" -t -q -p "$RUN_DIR/" -e stderr -c "$conf" -g 'daemon off;' 2>&1); then
    reason=$(grep -m1 -E '\[(emerg|alert|crit)\]' <<< "$out" \
             | sed -E 's/^.*\[(emerg|alert|crit)\] [0-9]+#[0-9]+: //' || true)
    die "nginx -t refused $conf: ${reason:-${out%%$'\n'*}}"
fi

if [ -n "$check" ]; then
    exec 4>&-
    wait "$copier" || true          # the copier, at the FIFO's end
    echo "entrypoint: $conf is valid (nginx -t)"
    exit 0
fi
[ -z "$stopping" ] || exit 0

if [ "${MIGRATE_ON_START:-0}" = 1 ]; then
    "$here/migrate.sh" || die "migrations failed (see above)"
fi
[ -z "$stopping" ] || exit 0

(( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 501 )) \
    || die "bash 5.1 or later needed (wait -p), this is $BASH_VERSION"
"$nginx" -p "$RUN_DIR/" -e stderr -c "$conf" -g 'daemon off;' 4>&- &
nginx_pid=$!
# a signal between the two lines above found no pid
[ -z "$stopping" ] || quit_nginx

# A trapped signal ends `wait` early (status > 128, done_pid unset): wait
# again until nginx itself has exited.  wait -p: bash 5.1 or later.
while :; do
    status=0 done_pid=
    wait -p done_pid "$nginx_pid" || status=$?
    [ -z "${done_pid:-}" ] && (( status > 128 )) || break
done
if [ -z "$stopping" ]; then
    printf 'entrypoint: nginx exited by itself (status %s)\n' "$status" >&2
fi

# The access log's last lines: the copier ends once nginx's processes and
# this script have closed the FIFO.  Bounded: the workers of a killed
# master would keep it open.
exec 4>&-
for ((i = 0; i < 20; i++)); do
    kill -0 "$copier" 2>/dev/null || break
    sleep 0.1
done
exit "$status"
