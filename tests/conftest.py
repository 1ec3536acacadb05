"""Shared fixtures: a site root per test, the app, its client and CLI runners."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ks import migrate
from ks.app import create_app

REPO = Path(__file__).resolve().parent.parent
MAC1 = "52-54-00-00-00-01"
MAC2 = "52-54-00-00-00-02"
MAC3 = "52-54-00-00-00-03"


def make_image(root: Path, name: str, product: str = "Image1") -> Path:
    """An image directory laid out like a KIWI oem PXE build."""
    d = root / "images" / name
    d.mkdir(parents=True)
    (d / "pxeboot.kernel").write_bytes(b"kernel-" + name.encode())
    (d / "pxeboot.initrd.xz").write_bytes(b"initrd-" + name.encode())
    (d / f"{product}.xz").write_bytes(b"disk-" + name.encode())
    (d / f"{product}.append").write_text("rd.kiwi.install.pxe rd.kiwi.install.image=http://example.com/image.xz console=ttyS0\n")
    (d / f"{product}.kernel").symlink_to("pxeboot.kernel")
    return d


@pytest.fixture
def root(tmp_path) -> Path:
    """A site root with two images, 'wipe' and 'image1'."""
    site = tmp_path / "site"
    site.mkdir()
    make_image(site, "wipe", "Wipe")
    make_image(site, "image1")
    return site


@pytest.fixture
def app(root):
    app = create_app({"ROOT": str(root)})
    migrate.upgrade(app.extensions["kiwispray"].db)
    yield app
    app.extensions["kiwispray"].db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    return app.extensions["kiwispray"].db


@pytest.fixture
def cli_runner():
    return CliRunner()


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


def cli_env(root: Path) -> dict:
    """Environment for running the commands as separate processes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["KS_ROOT"] = str(root)
    return env


def run_edit_host(root: Path, *args, check=True) -> subprocess.CompletedProcess:
    """``edit-host`` as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "ks.cli.edit_host", *args], env=cli_env(root), capture_output=True, text=True, check=check
    )
