#!/usr/bin/env bash
# The base images the Dockerfile's FROM lines name (debian:bookworm,
# debian:bookworm-slim), made without a registry: debootstrap from
# Debian's archive, imported into buildah's storage under those names so
# that `buildah bud --pull=never` finds them.  Needs root, debootstrap and
# buildah (scripts/deps.sh).
#
#   scripts/image-base.sh
#
# The tree is shaped as Debian's official images are (debuerreotype):
# minbase, the SUITE, SUITE-updates and SUITE-security sources, dpkg's
# force-unsafe-io, apt's docker-clean; -slim also leaves out
# documentation, manual pages and translations.
#
# Cache: IMAGE_CACHE/debian-SUITE-YYYYMMDD.tar (the debootstrap tree, by
# suite and the day it was made), reused while younger than
# IMAGE_BASE_MAX_AGE days; the images are imported again only when the
# storage does not hold the ones made from that tarball.
#
#   IMAGE_CACHE         /var/cache/ngx-tenant-image
#   IMAGE_STORAGE       buildah's storage root (IMAGE_STORAGE/root,
#                       IMAGE_STORAGE/runroot); default IMAGE_CACHE/storage;
#                       "default": buildah's own (/var/lib/containers)
#   IMAGE_BASE_MAX_AGE  30 (days)
#   IMAGE_MIRROR        Debian's archive: default the host's apt source of
#                       SUITE, else http://deb.debian.org/debian
#   IMAGE_SECURITY_MIRROR  the same for SUITE-security
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/image-lib.sh"

# The FROM lines: debian:SUITE and debian:SUITE-slim, one suite.
mapfile -t tags < <(sed -nE 's/^FROM[[:space:]]+debian:([a-z0-9.-]+).*/\1/ip' \
                        "$root/Dockerfile" | sort -u)
[ ${#tags[@]} -gt 0 ] || die "no FROM debian:TAG line in the Dockerfile"
suite=${tags[0]%-slim}
for t in "${tags[@]}"; do
    [ "$t" = "$suite" ] || [ "$t" = "$suite-slim" ] \
        || die "FROM debian:$t: only debian:SUITE and debian:SUITE-slim of one suite"
done

max_age=${IMAGE_BASE_MAX_AGE:-30}
[[ $max_age =~ ^[0-9]+$ ]] || die "IMAGE_BASE_MAX_AGE: a number of days"
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, buildah's storage)"
command -v debootstrap >/dev/null || die "debootstrap missing (scripts/deps.sh)"

mkdir -p "$cache"

# host_uri SUITE: the URI of the host's first apt source for SUITE.
host_uri() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$1" '
            function flush() {
                if (deb && uri != "" && (" " suites " ") ~ (" " suite " "))
                    { print uri; found = 1; exit }
                deb = 0; uri = ""; suites = ""
            }
            /^[[:space:]]*$/      { flush(); next }
            /^Types:/             { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
            /^URIs:/              { uri = $2 }
            /^Suites:/            { $1 = ""; suites = $0 }
            END                   { if (!found) flush() }' "$f"
    done | head -1
    if [ -r /etc/apt/sources.list ]; then
        awk -v suite="$1" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }' \
            /etc/apt/sources.list
    fi
}

mirror=${IMAGE_MIRROR:-$(host_uri "$suite" | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${IMAGE_SECURITY_MIRROR:-$(host_uri "$suite-security" | head -1)}
security=${security:-http://deb.debian.org/debian-security}

# ---- the tarball ------------------------------------------------------------

tar_file=
newest=
for f in "$cache"/debian-"$suite"-[0-9]*.tar; do    # sorted: the last is the newest
    [ -e "$f" ] && newest=$f
done
if [ -n "$newest" ] && [ -n "$(find "$newest" -mtime -"$max_age" 2>/dev/null)" ]; then
    tar_file=$newest
    log "cached $tar_file"
else
    tar_file=$cache/debian-$suite-$(date -u +%Y%m%d).tar
    tree=$(mktemp -d "$cache/.tree.XXXXXX")
    trap 'rm -rf "$tree"' EXIT
    log "debootstrap --variant=minbase $suite from $mirror"
    debootstrap --variant=minbase --components=main "$suite" "$tree" "$mirror" \
        > "$cache/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $cache/debootstrap.log"

    # As Debian's official images (debuerreotype).
    rm -f "$tree/etc/apt/sources.list"
    cat > "$tree/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    echo 'force-unsafe-io' > "$tree/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    cat > "$tree/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' > "$tree/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' \
        > "$tree/etc/apt/apt.conf.d/docker-autoremove-suggests"
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin \
           "$tree"/var/cache/apt/archives/*.deb "$tree"/var/log/*.log
    : > "$tree/etc/machine-id"
    echo localhost > "$tree/etc/hostname"
    : > "$tree/etc/resolv.conf"

    tar -C "$tree" --numeric-owner --xattrs -cf "$tar_file.part" . \
        || die "cannot write $tar_file"
    mv -f "$tar_file.part" "$tar_file"
    rm -rf "$tree"
    trap - EXIT
    # older ones of this suite
    for f in "$cache"/debian-"$suite"-[0-9]*.tar; do
        [ "$f" = "$tar_file" ] || rm -f "$f" "$f.ids"
    done
    log "made $tar_file"
fi

# ---- the images ---------------------------------------------------------------

image_id() {
    "${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null
}

ids=$tar_file.ids       # "TAG IMAGE_ID" lines: imported from this tarball
if [ -s "$ids" ]; then
    ok=1
    while read -r tag id; do
        [ "$(image_id "localhost/debian:$tag")" = "$id" ] || ok=
    done < "$ids"
    if [ -n "$ok" ] && [ "$(wc -l < "$ids")" -eq 2 ]; then
        log "debian:$suite, debian:$suite-slim in the storage"
        exit 0
    fi
fi

log "importing debian:$suite, debian:$suite-slim"
ctr=$("${buildah[@]}" from --pull=never scratch)
trap '"${buildah[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$("${buildah[@]}" mount "$ctr")
tar -C "$mnt" --numeric-owner --xattrs -xpf "$tar_file"
"${buildah[@]}" config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
"${buildah[@]}" commit -q --format docker "$ctr" "localhost/debian:$suite" >/dev/null

# -slim: no documentation, manual pages nor translations (dpkg excludes
# them from every package installed later, as in the official image).
cat > "$mnt/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
find "$mnt/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$mnt/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$mnt"/usr/share/man/* "$mnt"/usr/share/groff/* "$mnt"/usr/share/info/* \
       "$mnt"/usr/share/lintian/* "$mnt"/usr/share/linda/*
find "$mnt/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
     -exec rm -rf {} +
"${buildah[@]}" commit -q --format docker "$ctr" "localhost/debian:$suite-slim" >/dev/null
"${buildah[@]}" umount "$ctr" >/dev/null

{
    echo "$suite $(image_id "localhost/debian:$suite")"
    echo "$suite-slim $(image_id "localhost/debian:$suite-slim")"
} > "$ids"
log "imported localhost/debian:$suite, localhost/debian:$suite-slim"
