#!/usr/bin/env bash
# Unpacks the full nginx source of the installed nginx's version into DIR,
# for builds of nginx itself (make test-asan).  Debian's nginx-dev has the
# headers only; the upstream tarball comes from Debian's source archive
# (nginx_<version>.orig.tar.gz, checked by apt against the signed Sources
# index), fetched with a private apt state: the machine's sources are not
# changed.
#
#   scripts/nginx-source.sh DIR
set -euo pipefail

dir=${1:?usage: nginx-source.sh DIR}
version=$(/usr/sbin/nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9.]*\).*|\1|p')
[ -n "$version" ] || { echo "nginx-source: cannot read nginx -v" >&2; exit 1; }

if [ -f "$dir/src/core/nginx.c" ]; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/dl"

cat > "$work/parts/src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/parts"
          -o Dir::State::Lists="$work/lists" -q)

apt-get "${apt_opts[@]}" update >/dev/null 2>&1 \
    || { echo "nginx-source: apt-get update of the source index failed" >&2; exit 1; }

# Only the upstream tarball is needed; the Debian part of the newest
# source package may be missing from a mirror, which is not an error here.
(cd "$work/dl" && apt-get "${apt_opts[@]}" source --download-only nginx \
    >/dev/null 2>&1) || true

tarball=$work/dl/nginx_$version.orig.tar.gz
[ -f "$tarball" ] \
    || { echo "nginx-source: nginx_$version.orig.tar.gz not downloaded" >&2; exit 1; }

mkdir -p "$dir"
tar -xzf "$tarball" -C "$dir" --strip-components=1
cp /usr/share/nginx/src/conf_flags "$dir/conf_flags"
echo "nginx-source: nginx $version in $dir"
