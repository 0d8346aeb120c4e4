#!/usr/bin/env bash
# Builds the Dockerfile with buildah, without a Docker engine or a
# registry: the base images from scripts/image-base.sh, then
#
#   buildah bud --isolation chroot --pull=never --format docker --layers
#
# (docker format: HEALTHCHECK is kept; --layers: unchanged steps come from
# the cache of earlier builds).  Prints the image ID on stdout.
#
#   scripts/image-build.sh [TAG]      default localhost/ngx-tenant-gateway:latest
#
# Environment: those of scripts/image-base.sh (IMAGE_CACHE, IMAGE_STORAGE,
# ...) and IMAGE_STORAGE_MAX_MB (below).  The build log goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/image-lib.sh"

tag=${1:-localhost/ngx-tenant-gateway:latest}
[ "$(id -u)" -eq 0 ] || die "needs root (buildah's storage, chroot isolation)"

"$root/scripts/image-base.sh"

log "buildah bud $tag"
# Each line of the build's log with the seconds since the start: where
# the time goes (t/160-image.t reports the slow steps).
"${buildah[@]}" bud --isolation chroot --pull=never --format docker --layers \
    --iidfile "$cache/.iid.$$" -t "$tag" -f "$root/Dockerfile" "$root" 2>&1 \
    | while IFS= read -r line; do printf '[%4ds] %s\n' "$SECONDS" "$line"; done >&2 \
    || { rm -f "$cache/.iid.$$"; die "buildah bud failed (see above)"; }
iid=$(cat "$cache/.iid.$$")
rm -f "$cache/.iid.$$"

# Each build leaves its layers as untagged images (the --layers cache):
# past IMAGE_STORAGE_MAX_MB (4096) they go, the next build starts again
# from the base images.
if [ "$storage" != default ]; then
    used=$(du -sm "$storage" 2>/dev/null | cut -f1)
    if (( ${used:-0} > ${IMAGE_STORAGE_MAX_MB:-4096} )); then
        log "storage ${used} MB: removing the untagged images (the layer cache)"
        "${buildah[@]}" rmi --prune >/dev/null 2>&1 || true
    fi
fi
log "built $tag ${iid#sha256:}"
echo "${iid#sha256:}"
