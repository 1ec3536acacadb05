"""The history as a stream: every event after a cursor, for Server-Sent Events and webhooks.

The ``events`` table is durable and its ids only grow, so a reader that keeps
the last id it saw (an SSE client's ``Last-Event-ID``, a webhook's cursor)
misses nothing across restarts and sees every server's writes. One ``Poller``
per process reads new events for all of its waiting streams, so the cost of
open streams is one small query per interval, not one per stream.

Ids are handed out when an event is written, not when its transaction
commits. On PostgreSQL, with concurrent writers, event 8 may become visible
before event 7 commits; a reader that moved its cursor to 8 would never see
7. A ``Cursor`` therefore stops before a gap in the ids and waits until the
gap has lasted ``SETTLE`` seconds (by the reader's own clock) before it
passes it: a transaction that writes events commits within milliseconds, and
a gap that lasts is an id that was never committed (a rolled-back or retried
transaction). SQLite commits one writer after another, so a visible id there
means every lower one is committed or never will be: no waiting.
"""

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ks.core import progress
from ks.fleet import machines
from ks.records.models import Event

BATCH = 500
# Seconds a gap in the event ids is waited out on PostgreSQL before a reader passes it.
SETTLE = 5.0


def settle_time(dialect: str) -> float:
    """How long a reader of a database of ``dialect`` waits out a gap in the ids (see the module)."""
    return 0.0 if dialect == "sqlite" else SETTLE


class Cursor:
    """The last event id a reader passed on, moved only past gaps that lasted ``settle`` seconds."""

    def __init__(self, after: int, settle: float, clock: Callable[[], float] = time.monotonic):
        self.after = after
        self.settle = settle
        self._clock = clock
        self._gaps: dict[int, float] = {}  # first missing id of a gap -> when this reader first saw it

    def take(self, batch: list[dict]) -> list[dict]:
        """What of ``batch`` (events after ``after``, oldest first) may be passed on now; moves past it."""
        now = self._clock()
        if self.settle > 0:
            expected = self.after + 1
            for document in batch:
                if document["id"] > expected:
                    self._gaps.setdefault(expected, now)
                expected = max(expected, document["id"] + 1)
        taken = []
        for document in batch:
            if document["id"] <= self.after:
                continue
            missing = self.after + 1
            if document["id"] > missing and self.settle > 0 and now - self._gaps.get(missing, now) < self.settle:
                break
            taken.append(document)
            self.after = document["id"]
        self._gaps = {start: seen for start, seen in self._gaps.items() if start > self.after}
        return taken


_EVENTS = Event.__table__


def events_after(session: Session, after: int, limit: int = BATCH) -> list[dict]:
    """The events with an id above ``after``, oldest first, as JSON documents (``ks.fleet.present.event_dict``'s).

    Plain rows, not ORM objects: every open stream's poller reads each event once per process.
    """
    stmt = select(_EVENTS).where(_EVENTS.c.id > after).order_by(_EVENTS.c.id).limit(limit)
    return [{"id": row.id, "host_id": row.host_id, "at": row.at.isoformat() if row.at else None, "kind": row.kind,
             "from": row.from_state, "to": row.to_state, "source": row.source, "detail": row.detail}
            for row in session.execute(stmt)]


def last_id(session: Session) -> int:
    """The id of the newest event (0 with none)."""
    return session.scalar(select(func.max(Event.id))) or 0


def reader(db) -> "Poller":
    """A poller of ``db``'s history (a ``ks.records.db.Database``), waiting out gaps as its dialect needs."""

    def read(after: int) -> list[dict]:
        with db.read() as session:
            return events_after(session, after)

    def newest() -> int:
        with db.read() as session:
            return last_id(session)

    return Poller(read, newest, settle=settle_time(db.engine.dialect.name))


def sse_frame(document: dict) -> str:
    """One Server-Sent Event: the event's id (for Last-Event-ID), its kind, its JSON."""
    return f"id: {document['id']}\nevent: {document['kind']}\ndata: {json.dumps(document)}\n\n"


class Poller:
    """Reads new events every ``interval`` seconds while someone waits for them, and wakes the waiting."""

    def __init__(self, read: Callable[[int], list[dict]], newest: Callable[[], int], interval: float = 1.0,
                 settle: float = 0.0):
        self._read = read
        self._newest = newest
        self.interval = interval
        self.settle = settle
        self._changed = threading.Condition()
        self._recent: list[dict] = []  # the last batches read, oldest first
        self._recent_ids: list[int] = []
        self._frames: dict[int, str] = {}  # the SSE frame of each event in _recent, made once
        self._chunks: dict[tuple[int, int], bytes] = {}
        self._trimmed = 0  # the newest id dropped from _recent
        self._cursor = Cursor(0, settle)
        self._waiting = 0
        self._thread: threading.Thread | None = None

    def start_cursor(self) -> int:
        """The id a new stream starts after: the newest event now."""
        return self._newest()

    def follow_frames(self, after: int, stop: Callable[[], bool] = lambda: False,
                      wake: float = 1.0) -> Iterator[bytes]:
        """What an SSE stream sends: each batch of events' frames as one chunk; ``b""`` after ``wake`` s of silence.

        A frame is made once per event, and the chunk of a batch once for all the streams that get the same
        batch (those that keep up); it leaves in one write, not one per event. The empty chunk lets the
        stream (``ks.sse``) look at its reader and decide what silence sends.
        """
        for batch in self._batches(after, stop, wake):
            if not batch:
                yield b""
                continue
            key = (batch[0]["id"], batch[-1]["id"])
            chunk = self._chunks.get(key)
            if chunk is None:
                frames = self._frames
                chunk = "".join(frames.get(d["id"]) or sse_frame(d) for d in batch).encode()
                self._chunks = {key: chunk}  # only the newest: what streams that keep up share
            yield chunk

    def _batches(self, after: int, stop: Callable[[], bool], heartbeat: float) -> Iterator[list[dict]]:
        """Lists of the events after ``after`` as they arrive; an empty list after ``heartbeat`` seconds of silence."""
        with self._changed:
            self._waiting += 1
            if self._thread is None or not self._thread.is_alive():
                self._cursor = Cursor(self._newest(), self.settle)
                self._thread = threading.Thread(target=self._run, name="kiwispray-feed", daemon=True)
                self._thread.start()
            joined = self._cursor.after
        try:
            # What came before the poller's cursor when this stream joined is read directly.
            while after < joined:
                batch = [d for d in self._read(after) if d["id"] <= joined]
                if not batch:
                    break
                after = batch[-1]["id"]
                yield batch
            while not stop():
                with self._changed:
                    if after < self._trimmed:  # fell behind what the poller keeps
                        fresh = None
                    else:
                        fresh = self._recent_after(after)
                        if not fresh:
                            self._changed.wait(heartbeat)
                            fresh = self._recent_after(after)
                if fresh is None:  # what the poller passed on is settled: read up to its cursor
                    fresh = [d for d in self._read(after) if d["id"] <= self._cursor.after]
                if fresh:
                    after = fresh[-1]["id"]
                yield fresh
        finally:
            with self._changed:
                self._waiting -= 1

    def _recent_after(self, after: int) -> list[dict]:
        start = bisect.bisect_right(self._recent_ids, after)
        return self._recent[start:]

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._waiting == 0:
                    self._thread = None
                    return
            try:
                read = self._read(self._cursor.after)
                batch = self._cursor.take(read)
            except Exception:  # the database is away for a moment: the streams wait, the next round retries
                read = batch = []
            if batch:
                frames = {d["id"]: sse_frame(d) for d in batch}
                with self._changed:
                    kept = (self._recent + batch)[-4 * BATCH:]
                    dropped = len(self._recent) + len(batch) - len(kept)
                    if dropped:
                        self._trimmed = (self._recent + batch)[dropped - 1]["id"]
                    self._recent = kept
                    self._recent_ids = [d["id"] for d in kept]
                    self._frames = {**{i: f for i, f in self._frames.items() if i > self._trimmed}, **frames}
                    self._changed.notify_all()
            if len(read) < BATCH or len(batch) < len(read):  # caught up (or waiting out a gap): rest a while
                threading.Event().wait(self.interval)


class Downloads:
    """The progress of the hosts downloading now, read at most once per ``interval`` for all of a process's streams.

    The dashboard's stream adds it to the history (``event: progress``); ``now`` is ``[{"id", "phase", "percent"}]``.
    """

    def __init__(self, db, interval: float = 1.0):
        self.db = db
        self.interval = interval
        self.lock = threading.Lock()
        self.read_at = float("-inf")
        self.found: list[dict] = []

    def now(self) -> list[dict]:
        with self.lock:
            if time.monotonic() - self.read_at >= self.interval:
                with self.db.read() as unit:
                    self.found = [{"id": h.id, **progress.phase(h)} for h in machines.downloading(unit)]
                self.read_at = time.monotonic()
            return self.found
