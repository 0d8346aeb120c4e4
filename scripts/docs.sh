#!/usr/bin/env bash
# Regenerates docs/request-flow.svg from docs/request-flow.dot (Graphviz).
# Exits 0 with a message when Graphviz is not installed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/docs/request-flow.dot
out=$root/docs/request-flow.svg

if ! command -v dot >/dev/null 2>&1; then
    echo "docs: Graphviz 'dot' not found (apt-get install graphviz); $out left as is"
    exit 0
fi

dot -Tsvg "$src" -o "$out.tmp"
mv "$out.tmp" "$out"
echo "docs: wrote ${out#"$root"/}"
