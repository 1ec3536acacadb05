#!/usr/bin/env bash
# Install what the tests need (Debian packages, the project with its test
# extras) and run the whole suite: unit, request, CLI, real-server,
# PostgreSQL, BMC-simulator and QEMU real-boot tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check ks tests scripts migrations
exec python3 -m pytest "$@"
