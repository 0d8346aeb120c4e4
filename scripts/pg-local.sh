#!/usr/bin/env bash
# An embedded local PostgreSQL cluster, for `make run` and the tests.
#
#   scripts/pg-local.sh start|stop|status|url|kill [DIR]
#
#   start   initdb (first time), start, create the database; prints the URL.
#           Already running: just prints the URL.
#   stop    fast shutdown.            kill    immediate shutdown (outage).
#   status  "running <url>" (exit 0) or "stopped" (exit 3).
#   url     a libpq URL usable by psql and libpq, e.g.
#           postgresql://postgres@/capliquify?host=/abs/DIR/socket&port=54329
#
# DIR defaults to .local/pg in the project: DIR/data (cluster),
# DIR/socket (unix socket), DIR/postgres.log.  The server listens on the
# unix socket only; PG_LOCAL_TCP=1 adds 127.0.0.1.  The port
# (PGPORT_LOCAL, default 54329) names the socket and, with TCP, is the TCP
# port.  Authentication is trust for local connections, superuser
# "postgres", database PG_LOCAL_DB (default capliquify).  fsync is off:
# this is for development and tests, never for data you want to keep.
#
# initdb refuses to run as root: as root, the cluster runs as the system
# user postgres (DIR is chowned to it; when postgres cannot reach DIR, a
# directory under /tmp is used instead, and a line says so).  As any other
# user, the cluster runs as that user, who must be able to create DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)

port=${PGPORT_LOCAL:-54329}
db=${PG_LOCAL_DB:-capliquify}
tcp=${PG_LOCAL_TCP:-0}

die() {
    echo "pg-local: $1" >&2
    exit "${2:-1}"
}

usage() {
    die "usage: $0 start|stop|status|url|kill [DIR]" 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
cmd=$1
dir=${2:-$project/.local/pg}

[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
    die "PGPORT_LOCAL must be a port number, not \"$port\"" 2
[[ $db =~ ^[a-z_][a-z0-9_]*$ ]] ||
    die "PG_LOCAL_DB must be a plain lowercase name, not \"$db\"" 2

bin=${PG_BIN:-}
if [ -z "$bin" ]; then
    for b in /usr/lib/postgresql/*/bin; do
        [ -x "$b/initdb" ] && bin=$b      # the last (highest) version wins
    done
fi
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] ||
    die "PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)"

root=0
[ "$(id -u)" -eq 0 ] && root=1
if [ $root -eq 1 ]; then
    id postgres >/dev/null 2>&1 ||
        die "running as root needs the system user postgres (apt-get install postgresql)"
fi


# Runs a command as the cluster's owner, from / (postgres may not be able
# to read the current directory).
as_owner() {
    if [ $root -eq 1 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

owner_can_use() {
    as_owner test -d "$1" -a -w "$1" -a -x "$1" 2>/dev/null
}

fallback_dir() {
    echo "/tmp/pg-local-$(id -u)-$(printf '%s' "$1" | sha256sum | cut -c1-12)"
}

# Sets $dir to the directory actually used.  For start, creates it and
# hands it to the owner; otherwise only looks for an existing cluster.
resolve_dir() {
    local want fb reason=""

    case $dir in
    /*) want=$dir ;;
    *)  want=$PWD/$dir ;;
    esac
    fb=$(fallback_dir "$want")

    if [ "$cmd" != start ]; then
        if [ ! -d "$want/data" ] && [ -d "$fb/data" ]; then
            dir=$fb
        else
            dir=$want
        fi
        return
    fi

    mkdir -p "$want"
    want=$(cd "$want" && pwd -P)
    if [ $root -eq 1 ]; then
        chown postgres: "$want"
        chmod 0755 "$want"
    fi

    # sockaddr_un.sun_path holds 107 bytes.
    if ! owner_can_use "$want"; then
        reason="postgres cannot reach $want (a parent directory is not traversable)"
    elif [ ${#want} -gt $((107 - ${#port} - 17)) ]; then
        reason="$want is too long for a unix socket path"
    fi

    dir=$want
    if [ -n "$reason" ]; then
        echo "pg-local: $reason; using $fb instead" >&2
        mkdir -p "$fb"
        [ $root -eq 1 ] && chown postgres: "$fb"
        chmod 0755 "$fb"
        dir=$fb
    fi
}

# Percent-encodes a path for a URL query value.
urlencode() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [A-Za-z0-9/._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

running() {
    as_owner "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1
}

# The port of the running server (postmaster.pid line 4), else $port.
current_port() {
    local p
    if running && p=$(sed -n 4p "$dir/data/postmaster.pid" 2>/dev/null) &&
       [[ $p =~ ^[0-9]+$ ]]; then
        echo "$p"
    else
        echo "$port"
    fi
}

url() {
    echo "postgresql://postgres@/$db?host=$(urlencode "$dir/socket")&port=$(current_port)"
}

write_conf() {
    local listen=""
    [ "$tcp" = 1 ] && listen=127.0.0.1

    as_owner tee "$dir/data/pg-local.conf" >/dev/null <<EOF
# Written by scripts/pg-local.sh at every start; edit postgresql.conf for
# lasting changes (this file is included last and wins).
listen_addresses = '$listen'
port = $port
unix_socket_directories = '$dir/socket'
# Committed data survives a crash of the server (pg-local.sh kill), not
# of the machine: no synchronous_commit = off here.
fsync = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 100
EOF
}

start() {
    local out

    if running; then
        url
        return
    fi

    if [ ! -s "$dir/data/PG_VERSION" ]; then
        as_owner mkdir -p "$dir/data" "$dir/socket"
        as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
            -E UTF8 --locale=C --no-sync --no-instructions \
            >"$dir/initdb.log" 2>&1 ||
            die "initdb failed, see $dir/initdb.log"
        echo "include_if_exists = 'pg-local.conf'" |
            as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    as_owner mkdir -p "$dir/socket"
    as_owner chmod 0755 "$dir/socket"
    write_conf

    [ $root -eq 1 ] && { touch "$dir/postgres.log"; chown postgres: "$dir/postgres.log"; }
    if ! out=$(as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
                   -w -t 60 start 2>&1); then
        echo "$out" >&2
        tail -5 "$dir/postgres.log" >&2 || true
        die "could not start PostgreSQL in $dir"
    fi

    if ! "$bin/psql" -X -q -At -h "$dir/socket" -p "$port" -U postgres \
             -d postgres \
             -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1
    then
        "$bin/psql" -X -q -h "$dir/socket" -p "$port" -U postgres \
            -d postgres -c "CREATE DATABASE $db" >/dev/null
    fi
    url
}

stop() {
    local mode=$1

    if ! running; then
        echo "pg-local: not running ($dir)"
        return
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null
    echo "pg-local: stopped ($dir)"
}


resolve_dir

case $cmd in
start)  start ;;
stop)   stop fast ;;
kill)   stop immediate ;;
status) if running; then
            echo "running $(url)"
        else
            echo "stopped ($dir)"
            exit 3
        fi ;;
url)    url ;;
*)      usage ;;
esac
