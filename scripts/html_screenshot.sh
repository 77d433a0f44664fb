#!/usr/bin/env bash
# The HTML report as a person sees it: headless Chromium renders PAGE.html and saves a PNG screenshot.
#
#     cee-bench report --format html --output report.html
#     scripts/html_screenshot.sh report.html report.png [WIDTH HEIGHT]
#
# Chromium comes from Debian's package (`apt-get install -y chromium`). The page is self-contained, so the browser
# runs with every network feature off; a throw-away profile keeps nothing between runs.
set -euo pipefail
page=${1:?usage: scripts/html_screenshot.sh PAGE.html OUT.png [WIDTH HEIGHT]}
out=${2:?usage: scripts/html_screenshot.sh PAGE.html OUT.png [WIDTH HEIGHT]}
width=${3:-1400}
height=${4:-2400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "no Chromium found: install it with \`apt-get install -y chromium\`" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars --window-size="$width,$height" \
    --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" >/dev/null 2>&1
test -s "$out" || { echo "Chromium wrote no screenshot to $out" >&2; exit 1; }
echo "wrote $out" >&2
