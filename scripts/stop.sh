#!/usr/bin/env bash
# `make stop`: stops what scripts/run.sh left running: a gateway still
# running from RUN_DIR (default .local/run; normally Ctrl-C ended it) and
# the embedded PostgreSQL (scripts/pg-local.sh, .local/pg).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${RUN_DIR:-$root/.local/run}
pid_file=$run_dir/nginx.pid

if [ -s "$pid_file" ]; then
    pid=$(cat "$pid_file")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
       && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
        # QUIT: graceful, in-flight requests finish.
        kill -QUIT "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop: the gateway (pid $pid) is still shutting down" >&2
        else
            echo "stop: gateway stopped (pid $pid)"
        fi
    fi
fi

"$root/scripts/pg-local.sh" stop
