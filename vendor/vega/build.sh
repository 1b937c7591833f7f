#!/usr/bin/env bash
# Rebuild ../../.dvc/plots/offline.html: DVC's plot page with vega, vega-lite and vega-embed inline
# (the versions DVC's own renderer loads from a CDN), so `dvc plots show` draws with no network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../.dvc/plots/offline.html"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null)
{
  printf '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n<title>EmoCare plots</title>\n'
  for pkg in vega-5.20.2:vega.min.js vega-lite-5.2.0:vega-lite.min.js vega-embed-6.18.2:vega-embed.min.js; do
    name="${pkg%%:*}"; file="${pkg##*:}"
    mkdir -p "$tmp/$name" && tar xzf "$tmp/$name.tgz" -C "$tmp/$name"
    printf '<!-- %s (BSD-3-Clause, vendor/vega/LICENSE-%s) -->\n<script>\n' "$name" "${name%-*}"
    cat "$tmp/$name/package/build/$file"
    printf '\n</script>\n'
  done
  printf '<style>body { font-family: system-ui, sans-serif; } table { border-spacing: 15px; }</style>\n'
  printf '</head>\n<body>\n{plot_divs}\n</body>\n</html>\n'
} > "$out"
echo "wrote $out ($(wc -c < "$out") bytes)"
