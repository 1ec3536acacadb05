#!/usr/bin/env bash
# Install what the tests need (Debian packages, the project with its test
# extras), run the static checks (ruff, mypy) and the whole suite: unit, request, CLI, real-server,
# PostgreSQL, BMC-simulator and QEMU real-boot tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check ks tests scripts migrations
python3 -m mypy ks
exec python3 -m pytest "$@"
