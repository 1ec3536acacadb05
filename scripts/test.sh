#!/usr/bin/env bash
# Install what the tests need (Debian packages, the project with its test
# extras), run the static checks (ruff, mypy), build the test machine and the
# KIWI image (cached), and run the whole suite: unit, request, CLI, real-server,
# PostgreSQL, BMC-simulator and QEMU real-boot tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check ks tests scripts migrations
python3 -m mypy ks
# The manual (docs/, MkDocs): a broken link or anchor is an error.
python3 -m mkdocs build --strict --site-dir "$(mktemp -d)"
# The test machine and the real KIWI image that tests/e2e boot; both cached,
# so this takes seconds unless their inputs changed (the image: 5-20 min then).
sh scripts/build-test-guest.sh >/dev/null
bash scripts/build-kiwi-image.sh >/dev/null
exec python3 -m pytest "$@"
