"""A host's history: the kinds of events and the one writer of its lines."""

from enum import StrEnum

from sqlalchemy import bindparam, insert

from ks.models import Event, utcnow


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
    """Append one line to the host's history, in a session or a boot-path ``ks.db.Transaction``."""
    unit.execute(_ADD_EVENT, {"host_id": host_id, "at": utcnow(), "kind": str(kind), "source": source,
                              "from_state": before, "to_state": after, "detail": detail})
