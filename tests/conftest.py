"""Shared fixtures: a site root per test, the app, its client and CLI runners."""

import contextlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmc import IpmiSim, RedfishSim
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
def backend(request) -> str:
    """The database backend; modules parametrize it indirectly to run on both."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(backend, root, request) -> str:
    if backend == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{root / 'kiwispray.db'}"


@pytest.fixture
def app(root, database_url):
    app = create_app({"ROOT": str(root), "DATABASE_URL": database_url})
    migrate.upgrade(app.extensions["kiwispray"].db)
    yield app
    app.extensions["kiwispray"].db.dispose()


@pytest.fixture
def public_hosts(app):
    """The original's public listing: GET /hosts lists hosts, /state answers without a bootid."""
    app.extensions["kiwispray"].settings["PUBLIC_HOSTS"] = True


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
        [sys.executable, "-m", "ks.cli.edit_host", *args], env=cli_env(root, env), capture_output=True, text=True, check=check
    )


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for the whole test session."""
    from pg import PostgresServer
    from server import free_port

    server = PostgresServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """The URL of a fresh, empty PostgreSQL database."""
    return postgres.new_database()


SIMULATORS = {"ipmi": IpmiSim, "redfish": RedfishSim}


@pytest.fixture
def start_bmc(tmp_path):
    """Start a simulated BMC: ``start_bmc("ipmi"|"redfish", power=False, **options)``."""
    numbers = itertools.count()
    with contextlib.ExitStack() as running:

        def start(kind: str, power: bool = False, **options):
            workdir = tmp_path / f"{kind}-{next(numbers)}"
            return running.enter_context(SIMULATORS[kind](workdir, power=power, **options))

        yield start
