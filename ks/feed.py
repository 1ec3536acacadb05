"""The history as a stream: every event after a cursor, for Server-Sent Events and webhooks.

The ``events`` table is durable and its ids only grow, so a reader that keeps
the last id it saw (an SSE client's ``Last-Event-ID``, a webhook's cursor)
misses nothing across restarts and sees every server's writes. One ``Poller``
per process reads new events for all of its waiting streams, so the cost of
open streams is one small query per interval, not one per stream.
"""

import json
import threading
from collections.abc import Callable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ks.models import Event
from ks.present import event_dict

BATCH = 500


def events_after(session: Session, after: int, limit: int = BATCH) -> list[dict]:
    """The events with an id above ``after``, oldest first, as JSON documents."""
    stmt = select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
    return [event_dict(event) for event in session.scalars(stmt)]


def last_id(session: Session) -> int:
    """The id of the newest event (0 with none)."""
    return session.scalar(select(func.max(Event.id))) or 0


def sse_frame(document: dict) -> str:
    """One Server-Sent Event: the event's id (for Last-Event-ID), its kind, its JSON."""
    return f"id: {document['id']}\nevent: {document['kind']}\ndata: {json.dumps(document)}\n\n"


class Poller:
    """Reads new events every ``interval`` seconds while someone waits for them, and wakes the waiting."""

    def __init__(self, read: Callable[[int], list[dict]], newest: Callable[[], int], interval: float = 1.0):
        self._read = read
        self._newest = newest
        self.interval = interval
        self._changed = threading.Condition()
        self._recent: list[dict] = []  # the last batches read, oldest first
        self._trimmed = 0  # the newest id dropped from _recent
        self._cursor = 0
        self._waiting = 0
        self._thread: threading.Thread | None = None

    def start_cursor(self) -> int:
        """The id a new stream starts after: the newest event now."""
        return self._newest()

    def follow(self, after: int, stop: Callable[[], bool] = lambda: False,
               heartbeat: float = 15.0) -> Iterator[dict | None]:
        """Yield every event after ``after`` as it arrives; None every ``heartbeat`` seconds of silence."""
        with self._changed:
            self._waiting += 1
            if self._thread is None or not self._thread.is_alive():
                self._cursor = self._newest()
                self._thread = threading.Thread(target=self._run, name="kiwispray-feed", daemon=True)
                self._thread.start()
            joined = self._cursor
        try:
            # What came before the poller's cursor when this stream joined is read directly.
            while after < joined:
                batch = [d for d in self._read(after) if d["id"] <= joined]
                if not batch:
                    break
                for document in batch:
                    after = document["id"]
                    yield document
            while not stop():
                with self._changed:
                    if after < self._trimmed:  # fell behind what the poller keeps
                        fresh = None
                    else:
                        fresh = [d for d in self._recent if d["id"] > after]
                        if not fresh:
                            self._changed.wait(heartbeat)
                            fresh = [d for d in self._recent if d["id"] > after]
                if fresh is None:
                    fresh = self._read(after)
                if not fresh:
                    yield None
                    continue
                for document in fresh:
                    after = document["id"]
                    yield document
        finally:
            with self._changed:
                self._waiting -= 1

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._waiting == 0:
                    self._thread = None
                    return
            try:
                batch = self._read(self._cursor)
            except Exception:  # the database is away for a moment: the streams wait, the next round retries
                batch = []
            if batch:
                self._cursor = batch[-1]["id"]
                with self._changed:
                    kept = (self._recent + batch)[-4 * BATCH:]
                    dropped = len(self._recent) + len(batch) - len(kept)
                    if dropped:
                        self._trimmed = (self._recent + batch)[dropped - 1]["id"]
                    self._recent = kept
                    self._changed.notify_all()
            threading.Event().wait(self.interval)
