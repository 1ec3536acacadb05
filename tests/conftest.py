"""Shared fixtures: a site root per test, the app, its client and CLI runners."""

import contextlib
import dataclasses
import itertools
from pathlib import Path

import pytest
from click.testing import CliRunner

from ks.app import create_app
from ks.fleet import tokens
from ks.records import migrate

from bmc import IpmiSim, RedfishSim
from helpers import MAC1, MAC2, MAC3, boot, free_port, make_image


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
    runtime = app.extensions["kiwispray"]
    runtime.settings = dataclasses.replace(runtime.settings, public_hosts=True)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    return app.extensions["kiwispray"].db


@pytest.fixture
def cli_runner():
    return CliRunner()


@pytest.fixture
def hosts(client):
    """Two booted hosts: 1 (MAC1, serial SER1) and 2 (MAC2 and MAC3, serial SER2)."""
    boot(client, MAC1, serial="SER1")
    boot(client, MAC2, MAC3, serial="SER2")


@pytest.fixture
def api(client, token):
    """The test client with the token on every /api/v1 request: ``api.get("/hosts")``, ``api.patch(…, json=…)``."""

    class Api:
        def __getattr__(self, method):
            def call(path, **kwargs):
                headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
                return client.open("/api/v1" + path, method=method.upper(), headers=headers, **kwargs)

            return call

    return Api()


@pytest.fixture
def token(db):
    """An API token of the app's database."""
    return db.write(lambda session: tokens.create(session, "tests"))


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for the whole test session."""
    from pg import PostgresServer

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
