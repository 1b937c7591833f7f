#!/usr/bin/env bash
# Refresh the Swagger UI files the service's /docs page loads (emocare/serving/app.py serves this folder
# at /docs/assets): the swagger-ui-dist package from the npm registry, only the files the page needs.
set -euo pipefail
version=5.35.0
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf "swagger-ui-dist-$version.tgz")
for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE NOTICE; do
  cp "$tmp/package/$f" "$here/$f"
done
echo "copied swagger-ui-dist $version into $here"
