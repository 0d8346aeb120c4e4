# Sourced by scripts/image-base.sh and scripts/image-build.sh: the cache
# directory and the buildah command with its storage (see image-base.sh).
# shellcheck shell=bash

me=$(basename "$0" .sh)

die() {
    printf '%s: %s\n' "$me" "$*" >&2
    exit 1
}

# Progress on stderr, with the seconds since the script started.
log() {
    printf '%s: [%3ds] %s\n' "$me" "$SECONDS" "$*" >&2
}

cache=${IMAGE_CACHE:-/var/cache/ngx-tenant-image}
case $cache in /*) ;; *) die "IMAGE_CACHE: an absolute path" ;; esac

command -v buildah >/dev/null || die "buildah missing (scripts/deps.sh)"
storage=${IMAGE_STORAGE:-$cache/storage}
# shellcheck disable=SC2034  # used by the scripts that source this one
if [ "$storage" = default ]; then
    buildah=(buildah)
else
    buildah=(buildah --root "$storage/root" --runroot "$storage/runroot")
fi
