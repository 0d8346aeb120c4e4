#!/usr/bin/env bash
# What the Dockerfile's build stage runs: the packages of the build
# (scripts/deps.sh --build), then `make module`, the target CI builds, and prints
# the path of the module on the last line of stdout.
#
#   scripts/build-module.sh [--no-deps] [--if-up-to-date] [DEST_DIR]
#
#   --no-deps         skip scripts/deps.sh --build (the packages are there)
#   --if-up-to-date   build nothing: exit 1 unless the module is up to
#                     date with its sources (make -q), for the tests
#   DEST_DIR          also copy the module there (printing that path)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
module=$root/build/nginx/objs/ngx_tenant_module.so

die() {
    printf 'build-module: %s\n' "$*" >&2
    exit 1
}

deps=1 question= dest=
for arg in "$@"; do
    case $arg in
        --no-deps)         deps= ;;
        --if-up-to-date)   question=1 ;;
        -*) echo "usage: scripts/build-module.sh [--no-deps] [--if-up-to-date] [DEST_DIR]" >&2; exit 2 ;;
        *)  dest=$arg ;;
    esac
done

cd "$root"
[ -z "$deps" ] || scripts/deps.sh --build || die "scripts/deps.sh --build failed"

if [ -n "$question" ]; then
    make -s -q module || die "$module is missing or older than its sources (make module)"
else
    make module >&2 || die "make module failed"
fi
[ -f "$module" ] || die "make module did not produce $module"

if [ -n "$dest" ]; then
    mkdir -p "$dest"
    cp -f "$module" "$dest/" || die "cannot copy the module to $dest"
    module=$(cd "$dest" && pwd)/ngx_tenant_module.so
fi
echo "$module"
