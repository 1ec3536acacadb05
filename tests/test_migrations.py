"""Migrations bring an empty SQLite and an empty PostgreSQL to head, with no drift from the models."""

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from ks.records import migrate
from ks.records.db import Database
from ks.records.models import Host


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


def test_0002_keeps_existing_hosts_and_goes_back_down(empty_db):
    migrate.upgrade(empty_db, "0001")
    with empty_db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO hosts (hostname, state, metadata, boot_finished, created_at, updated_at) "
            "VALUES ('node1', 'image1', '{}', false, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"
        ))
    migrate.upgrade(empty_db)
    with empty_db.read() as session:
        host = session.scalars(select(Host)).one()
        assert (host.hostname, host.state, host.deadline_at, host.failed_at) == ("node1", "image1", None, None)
    with empty_db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(empty_db, conn), "0001")
    assert migrate.current(empty_db) == "0001"
    columns = {c["name"] for c in inspect(empty_db.engine).get_columns("hosts")}
    assert "deadline_at" not in columns and "hostname" in columns


LONG_PASSWORD = "P" * 255


def test_0005_encrypts_stored_bmc_passwords_and_decrypts_them_going_down(empty_db, tmp_path):
    from ks.core.vault import Vault

    migrate.upgrade(empty_db, "0004")
    with empty_db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO hosts (hostname, state, metadata, boot_finished, created_at, updated_at, bmc_address,"
            " bmc_username, bmc_password) VALUES ('node1', 'image1', '{}', false, '2026-01-01 00:00:00+00:00',"
            " '2026-01-01 00:00:00+00:00', 'ipmi://10.0.0.9', 'admin', 'Clear-Pw-1'),"
            " ('node2', 'image1', '{}', false, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00',"
            " 'ipmi://10.0.0.8', 'admin', :long)"
        ), {"long": LONG_PASSWORD})
    with pytest.raises(RuntimeError, match="db upgrade"):  # no key, no encryption: nothing half done
        migrate.upgrade(empty_db)
    assert migrate.current(empty_db) == "0004"
    vault = Vault("", tmp_path / "kiwispray.key")
    migrate.upgrade(empty_db, vault=vault)
    with empty_db.read() as session:
        stored, long = (h.bmc_password for h in session.scalars(select(Host).order_by(Host.id)))
    assert "Clear-Pw-1" not in stored and vault.decrypt(stored) == "Clear-Pw-1"
    assert vault.decrypt(long) == LONG_PASSWORD  # the longest the old column held still fits
    with empty_db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(empty_db, conn, vault), "0004")
        passwords = conn.execute(text("SELECT bmc_password FROM hosts ORDER BY id")).scalars().all()
        assert passwords == ["Clear-Pw-1", LONG_PASSWORD]
