"""Engines and sessions: one unit of work per request or command.

Callers never commit inside domain functions; they hand a function to
``Database.write`` which runs it in one transaction, commits once, and retries
the whole unit when a concurrent writer won a race on a unique key.
"""

import contextlib
import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)
_CHANGED = "ks_changed_hosts"

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_RETRIES = 5


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives any process crash (kill -9);
        # only an operating-system crash may lose the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        # IMMEDIATE takes the write lock up front, so two writers queue on the
        # busy timeout instead of failing when a read lock cannot be upgraded.
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """The engines and session factories of one application or command."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
            self.read_engine = _sqlite_engine(url, "BEGIN")
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
            self.read_engine = self.engine
        # SQLite has one writer at a time. Threads of this process queue here, on a
        # lock that wakes the next one at once, rather than in SQLite's busy
        # handler, which sleeps in growing steps (up to 100 ms) between tries.
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._listeners: list[Callable[[set[int]], None]] = []

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in one transaction and commit; retry lost races.

        After the commit, listeners learn which hosts' state or MACs changed
        (see ``mark_changed``).
        """
        for attempt in range(WRITE_RETRIES):
            try:
                with self._write_lock, self._write() as session:
                    with session.begin():
                        result = work(session)
                    changed = session.info.pop(_CHANGED, set())
            except (IntegrityError, OperationalError) as exc:
                if attempt == WRITE_RETRIES - 1 or not _is_transient(exc):
                    raise
                continue
            if changed:
                self._notify(changed)
            return result
        raise AssertionError("unreachable")

    def add_listener(self, listener: Callable[[set[int]], None]) -> None:
        """Call ``listener(host_ids)`` after each commit that changed hosts."""
        self._listeners.append(listener)

    def _notify(self, host_ids: set[int]) -> None:
        for listener in self._listeners:
            try:
                listener(host_ids)
            except Exception:  # the committed change stands; the listener reports its own trouble
                log.exception("after-commit listener %s failed for hosts %s", listener, sorted(host_ids))

    @contextmanager
    def read(self):
        """A session for reading only."""
        with self._read() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close all pooled connections (after fork, at exit)."""
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def mark_changed(session: Session, host_id: int) -> None:
    """Note that a host's state or MACs changed, for the listeners after commit."""
    session.info.setdefault(_CHANGED, set()).add(host_id)


def _is_transient(exc: Exception) -> bool:
    """Unique-key races and serialisation failures are retried; other errors are not."""
    if isinstance(exc, IntegrityError):
        return True
    text = str(exc.orig).lower() if getattr(exc, "orig", None) else str(exc).lower()
    return "deadlock" in text or "could not serialize" in text or "database is locked" in text
