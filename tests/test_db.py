"""The unit of work on the driver's connection (Database.write_direct) and the SQLite writer lock."""

import fcntl
import os
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from ks.boot import booting
from ks.core.identity import Identity
from ks.records.models import Event, Host, utcnow
from ks.records.record import HostRecord

MACHINE = Identity(macs=("52:54:00:12:34:56",), serial="SER-1")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_lost_registration_race_is_retried_and_finds_the_winner(db):
    db.write_direct(lambda tx: booting.register(tx, MACHINE, ("new",), "bootstrap"))
    attempts = []

    def register_again(tx):
        attempts.append(1)
        if len(attempts) == 1:  # as if another server registered it since our lookup
            booting.register(tx, MACHINE, ("new",), "bootstrap")
        return booting.identify(tx, MACHINE)

    host = db.write_direct(register_again)
    assert len(attempts) == 2 and host.id == 1 and host.macs == ("52:54:00:12:34:56",)
    with db.read() as session:
        assert session.scalars(select(Host.id)).all() == [1]
        assert [e.kind for e in session.scalars(select(Event))] == ["register"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_an_error_in_the_work_rolls_back_everything_it_wrote(db):
    def half(tx):
        booting.register(tx, MACHINE, ("new",), "bootstrap")
        raise ValueError("stop")

    with pytest.raises(ValueError):
        db.write_direct(half)
    with db.read() as session:
        assert session.scalars(select(Host)).all() == [] and session.scalars(select(Event)).all() == []
    assert db.write_direct(lambda tx: booting.identify(tx, MACHINE)) is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_direct_writes_store_what_the_orm_reads(db):
    when = datetime(2026, 11, 22, 3, 4, 5, 600, tzinfo=UTC)

    def boot(tx):
        host = booting.register(tx, MACHINE, ("wipe", "image1"), "bootstrap")
        tx.execute(booting._BOOTED, {"host_id": host.id, "bootid_hash": "ab" * 32, "now": when,
                                     "deadline": when, "address": "192.0.2.7"})
        return host

    db.write_direct(boot)
    with db.read() as session:
        host = session.get(Host, 1)
        assert (host.state, host.serial, host.meta, host.boot_finished) == ("wipe,image1", "SER-1", {}, False)
        assert host.last_boot_at == when and host.deadline_at == when and host.mac_list == ["52:54:00:12:34:56"]
        assert host.boot_address == "192.0.2.7"
        assert host.created_at.tzinfo is not None


def test_sqlite_writers_queue_on_the_lock_file(db, root):
    """A writer waits while another process holds the lock file, and goes on once it is released."""
    lock = os.open(f"{root / 'kiwispray.db'}-writer", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = threading.Event()
    writer = threading.Thread(
        target=lambda: (db.write_direct(lambda tx: booting.register(tx, MACHINE, ("new",), "cli")), done.set())
    )
    writer.start()
    try:
        assert not done.wait(0.5), "the write went ahead while another process held the writer lock"
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    assert done.wait(10)
    writer.join()
    assert db.write_direct(lambda tx: booting.identify(tx, MACHINE)).id == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_the_boot_path_reads_the_record_the_orm_reads(db):
    def boot(tx):
        host = booting.register(tx, MACHINE, ("wipe", "image1"), "bootstrap")
        tx.execute(booting._BOOTED, {"host_id": host.id, "bootid_hash": "ab" * 32, "now": utcnow(),
                                     "deadline": utcnow(), "address": "192.0.2.7"})
        return booting.host_record(tx, host.id)

    direct = db.write_direct(boot)
    with db.read() as session:
        assert HostRecord.of(session.get(Host, 1)) == direct
    assert direct.macs == ("52:54:00:12:34:56",) and direct.last_boot_at.tzinfo is not None


def test_a_full_disk_is_said_once_a_while_and_nothing_is_written(db, monkeypatch, caplog):
    import sqlite3

    import psycopg

    from ks.core.errors import DiskFull

    def full(session):
        session.add(Host(state="new", hostname="x"))
        raise sqlite3.OperationalError("database or disk is full")

    with caplog.at_level("ERROR", logger="ks.records.db"):
        for _ in range(3):
            with pytest.raises(DiskFull):
                db.write(full)
        monkeypatch.setattr(db._refusals, "seconds", 0.0)  # the next refusal is said again
        with pytest.raises(DiskFull):
            db.write(full)
    reports = [r.getMessage() for r in caplog.records if "refuses work" in r.getMessage()]
    assert len(reports) == 2 and "(2 more since the last report)" in reports[1], reports
    with db.read() as session:
        assert session.scalars(select(Host)).all() == []
    # PostgreSQL's disk_full is the same refusal.
    assert isinstance(db._unavailable(psycopg.errors.DiskFull("could not extend file")), DiskFull)
