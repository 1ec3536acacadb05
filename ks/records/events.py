"""A host's history: the kinds of events and the one writer of its lines."""

import re
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, func, insert, select, update

from ks.records.models import Event, Host, utcnow


class EventKind(StrEnum):
    """What a line of the history records, as it is stored and shown."""

    REGISTER = "register"
    BOOT = "boot"
    STATE = "state"
    FINISH = "finish"
    UPDATE = "update"
    CONFLICT = "conflict"
    EDIT = "edit"
    DOWNLOAD = "download"
    POST_INSTALL = "post-install"
    IMPORT = "import"
    RETRY = "retry"
    TIMEOUT = "timeout"
    POWER = "power"
    NOCLOUD = "nocloud"
    IGNITION = "ignition"
    LABEL = "label"


_COLUMNS = ("host_id", "at", "kind", "source", "from_state", "to_state", "detail")
_ADD_EVENT = insert(Event.__table__).values({name: bindparam(name) for name in _COLUMNS})


def record(unit, host_id: int, kind: EventKind, source: str, before: str | None = None, after: str | None = None,
           detail: str = "") -> None:
    """Append one line to the host's history, in a session or a boot-path ``ks.records.db.Transaction``."""
    unit.execute(_ADD_EVENT, {"host_id": host_id, "at": utcnow(), "kind": str(kind), "source": source,
                              "from_state": before, "to_state": after, "detail": detail})


_events = Event.__table__
_LOCK_HOST = select(Host.__table__.c.id).where(Host.__table__.c.id == bindparam("host_id")).with_for_update()
_LAST_OF_KIND = select(_events.c.id, _events.c.detail).where(_events.c.id == (
    select(func.max(_events.c.id))
    .where(_events.c.host_id == bindparam("host_id"), _events.c.kind == bindparam("kind"),
           _events.c.at >= bindparam("since"))
    .scalar_subquery()
))
_SET_DETAIL = update(_events).where(_events.c.id == bindparam("event_id")).values(detail=bindparam("detail"))
# What ``counted`` appends; a detail's own text never holds parentheses at its end (values cannot).
_MORE = re.compile(r" \(and (\d+) more by (\d\d:\d\d:\d\d) UTC\)\Z")


def record_at_most_once(unit, host_id: int, kind: EventKind, source: str, detail: str, interval: timedelta) -> None:
    """Append a line unless the host has a line of ``kind`` from the last ``interval``; count this one in it then.

    For lines that anyone on the boot network can cause (a conflict): whatever
    the rate, a host gets at most one such line per interval, the one that
    webhooks and streams deliver, and its detail counts the others
    (``counted``). The history itself tells whether that line exists, so the
    bound holds across worker processes and servers: the host's row is locked
    first, so that concurrent writers on PostgreSQL take turns (SQLite's
    writer lock does that already).
    """
    now = utcnow()
    unit.execute(_LOCK_HOST, {"host_id": host_id}).fetchall()
    last = unit.execute(_LAST_OF_KIND, {"host_id": host_id, "kind": str(kind), "since": now - interval}).fetchone()
    if last is None:
        record(unit, host_id, kind, source, detail=detail)
    else:
        unit.execute(_SET_DETAIL, {"event_id": last[0], "detail": counted(last[1], now)})


def counted(detail: str, at: datetime) -> str:
    """A line's detail with one more occurrence at ``at`` counted in it: ``… (and 3 more by 01:02:03 UTC)``."""
    return f"{_MORE.sub('', detail)} (and {more_of(detail) + 1} more by {at:%H:%M:%S} UTC)"


def more_of(detail: str) -> int:
    """How many more occurrences a line's detail counts (``counted``); 0 for a line written once."""
    found = _MORE.search(detail)
    return int(found[1]) if found else 0
