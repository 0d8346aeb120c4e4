#!/usr/bin/env bash
# Installs the Debian packages the build, `make run` and the test suite
# need, when any is missing.  Idempotent; needs root (or sudo) only when
# something is missing.
#
#   scripts/deps.sh [--build]
#
#   --build   only the packages `make module` needs (the Dockerfile's
#             build stage, through scripts/build-module.sh)
set -euo pipefail

build_pkgs=(
    build-essential nginx-dev libpq-dev libjansson-dev libssl-dev
    zlib1g-dev libpcre3-dev
)

pkgs=(
    "${build_pkgs[@]}"
    nginx-core
    clang libclang-rt-14-dev valgrind lcov
    postgresql postgresql-client pgbouncer
    redis-server                # t/unit/test_ratelimit_redis
    libcrypt-jwt-perl libdbd-pg-perl libjson-xs-perl libcryptx-perl
    libcrypt-openssl-rsa-perl
    libyaml-libyaml-perl
    python3 python3-prometheus-client
    curl wrk openssl ca-certificates
    faketime
    nodejs
    prometheus
    buildah debootstrap         # make image-test (t/160-image.t)
)

case ${1:-} in
    --build) pkgs=("${build_pkgs[@]}") ;;
    "") ;;
    *) echo "usage: scripts/deps.sh [--build]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
