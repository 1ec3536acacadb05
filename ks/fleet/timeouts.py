"""Provisioning timeouts, in the manner of Ironic's deploy timeout.

A machine's first boot into an image starts a deadline: ``DEPLOY_TIMEOUT``
seconds, or the image's own ``deploy_timeout`` (see ``images.deploy_timeout``).
/finish, a new state and a retry clear it; a reboot into the same image keeps
it (see ``booting.boot``). When the deadline passes without a /finish, the
check flags the host failed: ``edit-host -l`` shows it, its history records a
``timeout``, and the machine, should it boot again, waits until an operator
retries it (``edit-host -i N --retry``) or gives it a new state.

Every server worker runs the check (``ks.fleet.operations.check_timeouts``) in a
thread (see ``ks.server``), and ``kiwispray timeouts check`` runs it from cron;
the database makes sure each timeout is flagged and recorded once, however many
check at the same time. The functions here take a session and never commit.
"""

import logging
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from ks.core import states
from ks.core.errors import Conflict
from ks.records.events import EventKind, record
from ks.records.models import Host, utcnow

log = logging.getLogger(__name__)

def retry(session: Session, host: Host, source: str) -> None:
    """Clear a host's failure: its next boot starts the current state again."""
    if host.failed_at is None:
        raise Conflict(f"host {host.id} has not failed; nothing to retry")
    host.deadline_at = host.failed_at = None
    host.updated_at = utcnow()
    current = states.current(states.parse_chain(host.state))
    record(
        session,
        host.id,
        EventKind.RETRY,
        source,
        host.state,
        host.state,
        f"failure cleared; the next boot starts '{current}' again",
    )


def _overdue(now: datetime) -> tuple:
    """Past its deadline and not flagged yet (the deadline column is indexed)."""
    return Host.deadline_at < now, Host.failed_at.is_(None)


def overdue(session: Session, now: datetime) -> list[int]:
    """Ids of hosts past their deadline and not flagged yet."""
    return list(session.scalars(select(Host.id).where(*_overdue(now)).order_by(Host.id)))


def flag_overdue(session: Session, now: datetime, source: str) -> list[tuple[int, str]]:
    """Flag hosts past their deadline as failed; returns (host id, state) of each one flagged.

    The update repeats the condition, so a host that finished, or that another
    process flagged, since it was read is left alone: on PostgreSQL the second
    writer waits for the first and then finds nothing to change; SQLite has one
    writer at a time.
    """
    flagged = []
    rows = session.execute(select(Host.id, Host.state, Host.deadline_at).where(*_overdue(now)).order_by(Host.id)).all()
    for host_id, chain, deadline in rows:
        # An UPDATE's result is a cursor result: it has the count of rows it matched.
        changed = cast(CursorResult[Any], session.execute(
            update(Host)
            .where(Host.id == host_id, *_overdue(now))
            .values(failed_at=now, deadline_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        ))
        if changed.rowcount != 1:
            continue
        state = states.current(states.parse_chain(chain))
        detail = f"no /finish from '{state}' by {deadline:%Y-%m-%d %H:%M:%S} UTC; retry: edit-host -i {host_id} --retry"
        record(session, host_id, EventKind.TIMEOUT, source, chain, chain, detail)
        flagged.append((host_id, state))
    return flagged
