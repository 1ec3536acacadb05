"""The test tools are the pinned ones, here and in a fresh install.

pytest, its plugins and schemathesis/hypothesis hook into one another; a new
release of one has broken another before. pyproject's ``test`` extra pins them
exactly, and these tests fail when the suite runs with other versions or when a
fresh ``pip install '.[test]'`` would resolve other ones.
"""

import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CHECKOUT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    """Name -> version of every requirement of the ``test`` extra pinned with ``==``."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    pinned = {}
    for line in project["optional-dependencies"]["test"]:
        requirement = Requirement(line)
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            pinned[canonicalize_name(requirement.name)] = exact[0]
    return pinned


def test_the_test_tools_are_pinned():
    assert {"pytest", "pytest-timeout", "schemathesis", "hypothesis", "ruff", "mypy"} <= set(pins())


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_this_run_uses_the_pinned_versions():
    assert {name: installed(name) for name in pins()} == pins(), "install the pinned tools: pip install -e '.[test]'"


def test_a_fresh_install_resolves_the_pinned_versions():
    # Needs the package index (as ./scripts/test.sh does); the resolver ignores what is installed.
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", "-", ".[test]"]
    done = subprocess.run(command, cwd=CHECKOUT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    assert {name: resolved.get(name) for name in pins()} == pins()
