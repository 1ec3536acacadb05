"""Plain helpers the tests share: the test machines' MACs, a fake image, booting, ports, polling, metrics.

Fixtures live in conftest.py; what is not a fixture lives here and is imported as
an ordinary module (conftest is pytest's plugin, not a module to import from).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAC1 = "52-54-00-00-00-01"
MAC2 = "52-54-00-00-00-02"
MAC3 = "52-54-00-00-00-03"
# The enrollment rule of the README's example: rack 4's Dell machines install image1 after a wipe.
RACK4_RULES = """\
[[rule]]
name = "rack4"
match = { mac = "52:54:00:04:*", product = "PowerEdge*" }
chain = "wipe,image1"
hostname = "rack4-{{ seq }}"
labels = { rack = "4" }
"""


def make_image(root: Path, name: str, product: str = "Image1") -> Path:
    """An image directory laid out like a KIWI oem PXE build."""
    d = root / "images" / name
    d.mkdir(parents=True)
    (d / "pxeboot.kernel").write_bytes(b"kernel-" + name.encode())
    (d / "pxeboot.initrd.xz").write_bytes(b"initrd-" + name.encode())
    (d / f"{product}.xz").write_bytes(b"disk-" + name.encode())
    (d / f"{product}.append").write_text(
        "rd.kiwi.install.pxe rd.kiwi.install.image=http://example.com/image.xz console=ttyS0\n"
    )
    (d / f"{product}.kernel").symlink_to("pxeboot.kernel")
    return d


def boot(client, *macs, serial="", uuid="", poll=False):
    """GET /bootstrap as iPXE sends it; returns the response."""
    query = {f"net{i}": mac for i, mac in enumerate(macs)}
    query.update(serial=serial, uuid=uuid)
    if poll:
        query["poll"] = "1"
    return client.get("/bootstrap", query_string=query)


def bootid_of(script: str) -> str:
    """The bootid a rendered script carries in its razorurl=/finish URL."""
    marker = "bootid="
    start = script.index(marker) + len(marker)
    end = start
    while end < len(script) and script[end] in "0123456789abcdef":
        end += 1
    return script[start:end]


def cli_env(root: Path, extra: dict | None = None) -> dict:
    """Environment for running the commands as separate processes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["KS_ROOT"] = str(root)
    env.update(extra or {})
    return env


def run_edit_host(root: Path, *args, check=True, env: dict | None = None) -> subprocess.CompletedProcess:
    """``edit-host`` as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "ks.cli.edit_host", *args],
        env=cli_env(root, env),
        capture_output=True,
        text=True,
        check=check,
    )


def eh(runner, root, *args, env=None):
    """``edit-host --root root …`` through click's CliRunner."""
    from ks.cli.edit_host import edit_host

    return runner.invoke(edit_host, ["--root", str(root), *args], env=env)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port that nothing uses right now."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, timeout: float = 30, what: str = "condition"):
    """Poll ``check()`` until it returns something true, and return that; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"{what}: not within {timeout} s"
            return result
        time.sleep(0.1)


def metric_samples(text: str) -> dict:
    """A Prometheus exposition as (sample name, sorted label items) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def require_command(command: str, package: str) -> str:
    """The path of ``command``; fails the test, naming the package to install, when it is missing."""
    path = shutil.which(command) or next(
        (p for p in (f"/usr/sbin/{command}", f"/sbin/{command}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        import pytest

        pytest.fail(f"{command} is missing: install the Debian package {package} (scripts/install-system-deps.sh)")
    return path


def _json_schema(node):
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable`` becomes a "null" type, $refs point into urn:openapi."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        schema["$ref"] = "urn:openapi" + schema["$ref"]
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    elif node.get("nullable"):
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def schema_errors(openapi: dict, method: str, path: str, status: int, body) -> list[str]:
    """How ``body`` differs from what ``openapi`` documents for ``method path`` answering ``status``."""
    import re

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    templates = [t for t in openapi["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path)]
    assert templates, f"{path} is not documented"
    responses = openapi["paths"][templates[0]][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not a documented status"
    content = responses[str(status)].get("content")
    if content is None:
        return [] if body in (None, b"", "") else [f"{status} documents no body, got {body!r}"]
    document = _json_schema(openapi)
    registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    schema = _json_schema(content["application/json"]["schema"])
    validator = Draft202012Validator(schema, registry=registry)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
