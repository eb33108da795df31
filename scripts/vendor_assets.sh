#!/usr/bin/env bash
# Vendor the dashboard's chart library from the npm registry into the package (run by hand when
# upgrading; the result is committed, so serving and installing need no network).
#   scripts/vendor_assets.sh            # the pinned version below
# Writes src/modelport/api/static/uPlot.iife.min.js, uPlot.min.css, uPlot.LICENSE and ASSETS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=uplot
VERSION=1.6.32
DEST=src/modelport/api/static

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$NAME@$VERSION" >/dev/null && tar -xzf "$NAME-$VERSION.tgz")
pkg="$tmp/package"
test "$(node -p "require('$pkg/package.json').version")" = "$VERSION"
license=$(node -p "require('$pkg/package.json').license")

cp "$pkg/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$pkg/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$pkg/LICENSE" "$DEST/uPlot.LICENSE"

cat > "$DEST/ASSETS.md" <<MD
# Vendored assets

Written by \`scripts/vendor_assets.sh\`; do not edit by hand.

| file | package | version | licence | source |
| --- | --- | --- | --- | --- |
| uPlot.iife.min.js | $NAME | $VERSION | $license (uPlot.LICENSE) | npm registry, \`npm pack $NAME@$VERSION\`, dist/uPlot.iife.min.js |
| uPlot.min.css | $NAME | $VERSION | $license (uPlot.LICENSE) | npm registry, \`npm pack $NAME@$VERSION\`, dist/uPlot.min.css |

Every other file in this folder (dashboard.js, dashboard.css) is modelport's own, under the
project's licence.
MD
echo "vendored $NAME $VERSION ($license) into $DEST"
