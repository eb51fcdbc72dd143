#!/usr/bin/env bash
# get-kjv.sh — writes the King James Bible as plain text to OUT: what
# Debian's `bible` program (packages bible-kjv, bible-kjv-text; installed by
# scripts/install-deps.sh) prints for `bible -l0 Ge1:1-Re22:21`, 4,298,239
# bytes of ASCII, the same on every run. The same file bg_text_load_kjv
# (io/text.h) keeps in its cache; for programs outside C (reference scripts).
#
#   bash scripts/get-kjv.sh OUT
set -euo pipefail

want=4298239
usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    usage >&2
    exit 2
fi
out=$1
if ! command -v bible >/dev/null 2>&1; then
    echo "get-kjv.sh: the program bible was not found; install the Debian packages bible-kjv and bible-kjv-text (scripts/install-deps.sh)" >&2
    exit 1
fi
# Written next to OUT, renamed into place once complete.
tmp=$(mktemp "$out.tmp-XXXXXX")
trap 'rm -f "$tmp"' EXIT
bible -l0 Ge1:1-Re22:21 </dev/null >"$tmp"
size=$(wc -c <"$tmp")
if [ "$size" -ne "$want" ]; then
    echo "get-kjv.sh: bible -l0 Ge1:1-Re22:21 wrote $size bytes, want $want" >&2
    exit 1
fi
chmod 644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "get-kjv.sh: $out ($want bytes)"
