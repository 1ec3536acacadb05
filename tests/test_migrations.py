"""Migrations bring an empty SQLite and an empty PostgreSQL to head, with no drift from the models."""

import pytest
from sqlalchemy import inspect

from ks import migrate
from ks.db import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = Database(url)
    yield db
    db.dispose()


def test_upgrade_from_empty_and_no_drift(empty_db):
    assert migrate.current(empty_db) is None
    migrate.upgrade(empty_db)
    assert migrate.current(empty_db) == migrate.head()
    migrate.check(empty_db)  # raises if models and migrations disagree
    tables = set(inspect(empty_db.engine).get_table_names())
    assert {"hosts", "host_macs", "events", "alembic_version"} <= tables
    migrate.upgrade(empty_db)  # a second run is a no-op
    assert migrate.current(empty_db) == migrate.head()
