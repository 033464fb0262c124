#!/usr/bin/env bash
# Full-page screenshots of every page of a built book, offline, in headless Chromium.
#
#   book/screenshots.sh [HTML_DIR] [OUT_DIR]     (defaults: _build/html, _build/screenshots)
#
# Needs Debian's chromium (apt-get install chromium). The browser gets no network: a proxy that
# does not exist is set, so a page that still tried to fetch a script would show it (raw TeX, no
# styles). Each page is drawn 1280 px wide and 4000 px tall (longer pages are cut there; pass
# HEIGHT=... to change it). MathJax typesets after the page loads: --virtual-time-budget lets it finish.
set -euo pipefail
html_dir=$(realpath "${1:-_build/html}")
out_dir=$(realpath -m "${2:-_build/screenshots}")
height=${HEIGHT:-4000}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
mkdir -p "$out_dir"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
find "$html_dir" -name "*.html" ! -path "*/_static/*" ! -name "genindex.html" ! -name "search.html" | sort | while read -r page; do
    rel=${page#"$html_dir"/}
    png="$out_dir/${rel//\//_}"
    png="${png%.html}.png"
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --proxy-server="http://127.0.0.1:9" --user-data-dir="$profile" --hide-scrollbars \
        --virtual-time-budget=15000 --window-size=1280,"$height" --screenshot="$png" "file://$page" \
        >/dev/null 2>&1 || echo "failed: $rel" >&2
    echo "$png"
done
