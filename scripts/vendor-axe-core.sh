#!/usr/bin/env bash
# Vendor axe-core (the accessibility engine the browser tests inject into each
# dashboard page) from the npm registry at a pinned version, into
# tests/vendor/axe-core/: axe.min.js, its licence (MPL-2.0) and VERSION.
# The tests read the committed copy: nothing is downloaded when they run.
# To move to another release: change VERSION below, run this, commit the result.
set -euo pipefail
VERSION=4.14.1
cd "$(dirname "$0")/.."
target=tests/vendor/axe-core
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "axe-core@$VERSION" >/dev/null && tar -xzf "axe-core-$VERSION.tgz")
mkdir -p "$target"
cp "$work/package/axe.min.js" "$work/package/LICENSE" "$target/"
echo "$VERSION" > "$target/VERSION"
echo "axe-core $VERSION in $target"
