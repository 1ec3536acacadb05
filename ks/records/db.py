"""Engines and sessions: one unit of work per request or command.

Callers never commit inside domain functions; they hand a function to
``Database.write`` which runs it in one transaction, commits once, and retries
the whole unit when a concurrent writer won a race on a unique key.
``Database.write_direct`` does the same on the driver's own connection, for the
boot path, where SQLAlchemy's work per statement costs more than the database's.
"""

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Delete, Insert, Update, create_engine, event, inspect, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ks.core.errors import DatabaseUnreachable, DiskFull, Unavailable
from ks.core.logs import Throttle
from ks.core.values import load_stored_json
from ks.records.models import Host, HostMac, UTCDateTime

T = TypeVar("T")
log = logging.getLogger(__name__)
_CHANGED = "ks_changed_hosts"

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_RETRIES = 5
# How often the log says that the database refuses work (a full disk, a restarting server).
UNAVAILABLE_REPORT_SECONDS = 60.0
SQLITE_FULL = 13  # sqlite3's sqlite_errorcode of "database or disk is full"
PG_DISK_FULL = "53100"
# PostgreSQL's SQLSTATEs of a server that went away or does not take connections yet:
# connection exceptions (class 08), admin_shutdown, crash_shutdown, cannot_connect_now.
PG_GONE = ("08", "57P01", "57P02", "57P03")


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, json_deserializer=load_stored_json
    )

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
        self._write_lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if url.startswith("sqlite"):
            path = make_url(url).database or ""  # empty for sqlite:// (in memory)
            file = path and path != ":memory:" and not path.startswith("file:")
            if file:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # Created 0600 before SQLite opens it: the database holds the site's hosts and
                # BMC credentials. SQLite gives its -wal and -shm files the database's mode.
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self.engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
            self.read_engine = _sqlite_engine(url, "BEGIN")
            self._write_lock = WriterLock(f"{path}-writer" if file else None)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, json_deserializer=load_stored_json)
            self.read_engine = self.engine
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._write, "after_flush", _note_changed_hosts)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        # The boot path's statements, compiled once for the driver (named placeholders on SQLite).
        self._direct_dialect = sqlite_dialect(paramstyle="named") if self.is_sqlite else self.engine.dialect
        self._compiled: dict = {}
        self._listeners: list[Callable[[set[int]], object]] = []
        # The boot path's own SQLite connection, with the pid of the process that opened it.
        self._writer: tuple[int, Any] | None = None
        # What a unit of work may fail with and be retried for, as SQLAlchemy or the driver raises it.
        dbapi = self.engine.dialect.dbapi
        assert dbapi is not None, "an engine made by create_engine has its driver loaded"
        self._driver_integrity_error = dbapi.IntegrityError
        self._driver_operational_error = dbapi.OperationalError
        # Per kind of refusal: how many went unreported since it was last logged, and when that was.
        self._refusals = Throttle(UNAVAILABLE_REPORT_SECONDS)
        self._retried = (sa_exc.IntegrityError, sa_exc.OperationalError, dbapi.IntegrityError, dbapi.OperationalError)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in one transaction and commit; retry lost races.

        After the commit, listeners learn which hosts' state or MACs changed
        (the session notes them as it flushes, see ``_note_changed_hosts``).
        """

        def once() -> tuple[T, set[int]]:
            with self._write() as session:
                with session.begin():
                    result = work(session)
                return result, session.info.pop(_CHANGED, set())

        return self._retrying(once)

    def write_direct(self, work: Callable[["Transaction"], T]) -> T:
        """Run ``work(tx)`` on a driver connection in one transaction and commit; retry lost races.

        The same unit of work as ``write`` without the ORM and SQLAlchemy's
        statement machinery: for the few statements every boot runs.
        """

        def once() -> tuple[T, set[int]]:
            connection = self._sqlite_writer() if self.is_sqlite else self.engine.raw_connection()
            broken = False
            try:
                cursor = connection.cursor()
                if self.is_sqlite:  # the driver runs in autocommit mode (see _sqlite_engine)
                    if connection.in_transaction:  # left open by a failure to roll back: start clean
                        connection.rollback()
                    cursor.execute("BEGIN IMMEDIATE")
                tx = Transaction(cursor, self._direct_dialect, self._compiled)
                try:
                    result = work(tx)
                    connection.commit()
                except BaseException as exc:
                    broken = isinstance(self._unavailable(exc), DatabaseUnreachable)
                    if not broken:  # a connection the server closed has nothing to roll back
                        connection.rollback()
                    raise
                finally:
                    cursor.close()
                return result, tx.changed
            finally:
                if broken:
                    connection.invalidate()  # never back to the pool: the next checkout connects anew
                elif not self.is_sqlite:
                    connection.close()  # back to the pool

        return self._retrying(once)

    def _sqlite_writer(self):
        """This process's one SQLite connection for ``write_direct``, used under the writer lock only.

        SQLite writers take turns anyway; one connection kept open saves the
        pool's checkout and checkin on every boot.
        """
        if self._writer is None or self._writer[0] != os.getpid():
            fairy = self.engine.raw_connection()
            fairy.detach()  # ours from now on; the pool keeps no claim on it
            self._writer = (os.getpid(), fairy.dbapi_connection)
        return self._writer[1]

    def _retrying(self, once: Callable[[], tuple[T, set[int]]]) -> T:
        for attempt in range(WRITE_RETRIES):
            try:
                with self._write_lock:
                    result, changed = once()
            except self._retried as exc:
                refused = self._unavailable(exc)
                # A connection the server closed is replaced on the next checkout (pool_pre_ping): try again.
                if refused is not None and (attempt == WRITE_RETRIES - 1 or isinstance(refused, DiskFull)):
                    raise self._report(refused) from exc
                if refused is None and (attempt == WRITE_RETRIES - 1
                                        or not _is_transient(exc, self._driver_integrity_error)):
                    raise
                continue
            if changed:
                self._notify(changed)
            return result
        raise AssertionError("unreachable")

    def add_listener(self, listener: Callable[[set[int]], object]) -> None:
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
        with self.refusals(), self._read() as session, session.begin():
            yield session

    @contextmanager
    def refusals(self):
        """Say ``Unavailable`` (reported in the log) where the database refuses work, for code that connects itself."""
        try:
            yield
        except self._retried as exc:
            refused = self._unavailable(exc)
            if refused is None:
                raise
            raise self._report(refused) from exc

    def _unavailable(self, exc: BaseException) -> Unavailable | None:
        """The database refusing work for now (its disk full, its server gone), or None for any other error."""
        driver_exc = getattr(exc, "orig", None) or exc
        sqlstate = getattr(driver_exc, "sqlstate", None) or ""
        if (getattr(driver_exc, "sqlite_errorcode", None) == SQLITE_FULL or sqlstate == PG_DISK_FULL
                or "database or disk is full" in str(driver_exc)):
            return DiskFull("the disk under the database is full, nothing was written: free space there, "
                            "the server goes on by itself, and try again")
        if self.is_sqlite or not isinstance(driver_exc, self._driver_operational_error):
            return None
        # psycopg gives no SQLSTATE for a connection that failed or broke on the client's side.
        if getattr(exc, "connection_invalidated", False) or not sqlstate or sqlstate.startswith(PG_GONE):
            return DatabaseUnreachable("the database server is unreachable or restarting, nothing was written: "
                                       "the server reconnects by itself, try again")
        return None

    def _report(self, refused: Unavailable) -> Unavailable:
        """Log that the database refuses work, once per ``UNAVAILABLE_REPORT_SECONDS`` and kind, with a count."""
        kind = type(refused).__name__
        held = self._refusals.due(kind)
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            log.error("database refuses work: %s%s", refused, more, extra={"event": "database", "refused": kind})
        return refused

    def dispose(self) -> None:
        """Close all pooled connections (after fork, at exit)."""
        if self._writer is not None and self._writer[0] == os.getpid():
            self._writer[1].close()
        self._writer = None
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


class WriterLock:
    """SQLite's one writer at a time, taken before SQLite is asked.

    Writers queue here rather than in SQLite's busy handler, which sleeps in
    growing steps (up to 100 ms) between tries, whoever released the database
    meanwhile. Threads of one process queue on a thread lock; processes (the
    server's workers, ``edit-host``, other servers on the same file) on
    ``flock`` of the file ``path``. Both wake the next writer at once. SQLite's
    own locking still guarantees one writer: without the file (no permission),
    writers simply queue in SQLite again.
    """

    def __init__(self, path: str | None):
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        # A descriptor inherited across fork shares its lock with the parent: open our own.
        if self.path is not None and self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.warning("cannot open %s (%s); writers wait in SQLite's busy handler instead", self.path, exc)
                self._fd = None
        return self._fd

    def __enter__(self):
        self._thread_lock.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc_info):
        try:
            fd = self._fd if self._pid == os.getpid() else None
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


def _note_changed_hosts(session: Session, _flush_context) -> None:
    """Note the hosts whose state or MACs a flush changes, for the listeners after commit.

    Run after each flush, while the session still holds what the flush wrote:
    new and deleted hosts and MACs, and hosts whose state or MAC list changed.
    """
    changed = session.info.setdefault(_CHANGED, set())
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Host):
            changed.add(obj.id)
        elif isinstance(obj, HostMac):
            changed.add(obj.host_id)
    for obj in session.dirty:
        if isinstance(obj, Host):
            attrs = inspect(obj).attrs
            if attrs.state.history.has_changes() or attrs.macs.history.has_changes():
                changed.add(obj.id)


def _is_transient(exc: Exception, driver_integrity_error: type) -> bool:
    """Unique-key races and serialisation failures are retried; other errors are not."""
    driver_exc = getattr(exc, "orig", None) or exc
    if isinstance(driver_exc, driver_integrity_error) or isinstance(exc, sa_exc.IntegrityError):
        return True
    text = str(driver_exc).lower()
    return "deadlock" in text or "could not serialize" in text or "database is locked" in text


class Transaction:
    """One transaction on a driver connection (see ``Database.write_direct``).

    Statements are SQLAlchemy Core statements over the model tables, compiled
    once per database to the driver's SQL and run on the driver's cursor: no
    SQLAlchemy work per execution. Times are converted as the column stores
    them; statements that write a host's MACs or state note the host
    (``changed``) for the listeners after commit.
    """

    def __init__(self, cursor, dialect, compiled: dict):
        self.cursor = cursor
        self._dialect = dialect
        self._compiled = compiled
        self.changed: set[int] = set()

    def execute(self, stmt, params: dict | None = None):
        """Run one statement; returns the cursor, to fetch from."""
        params = params or {}
        compiled = self._compiled.get(stmt)
        if compiled is None:
            compiled = self._compiled[stmt] = self._compile(stmt)
        sql, times, noted = compiled
        if times:
            params = params.copy()  # the caller's stay as given
            for name in times:
                params[name] = _sqlite_time(params[name])
        self.cursor.execute(sql, params)
        if noted and params.get("host_id") is not None:
            self.changed.add(params["host_id"])
        return self.cursor

    def _compile(self, stmt) -> tuple[str, tuple[str, ...], bool]:
        compiled = stmt.compile(dialect=self._dialect)
        times = tuple(name for name, bind in compiled.binds.items() if isinstance(bind.type, UTCDateTime))
        table = getattr(stmt, "table", None) if isinstance(stmt, (Insert, Update, Delete)) else None
        noted = table is HostMac.__table__ or (table is Host.__table__ and "state" in compiled.binds)
        # SQLite stores times as text; psycopg takes timezone-aware datetimes as they are.
        return compiled.string, times if self._dialect.name == "sqlite" else (), noted


def _sqlite_time(value: datetime | None) -> str | None:
    """A timezone-aware time as SQLAlchemy's SQLite DATETIME stores it."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
