"""What an operator does, as the API, ``kiwispray``, ``edit-host`` and the dashboard ask for it.

Each operation opens its own units of work (``Database.write``); the callers only
parse their input, call one operation and present its answer. One locking rule:
the hosts a change touches are locked before the change is checked against them
and applied (``SELECT … FOR UPDATE`` on PostgreSQL, in id order; SQLite has one
writer at a time), so two changes of one host queue and neither is lost.
A BMC is never asked inside a unit of work: it may take seconds.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ks.core.config import Settings
from ks.core.errors import ChangeFailed, KSError
from ks.core.selectors import Selector
from ks.core.vault import Vault
from ks.fleet import deploys, machines, timeouts
from ks.fleet.change import HostChange
from ks.power import hosts as host_power
from ks.records.db import Database
from ks.records.events import EventKind
from ks.records.models import utcnow
from ks.records.record import HostRecord


def change_host(db: Database, ref: str, change: HostChange, source: str, vault: Vault | None = None) -> HostRecord:
    """Make ``change`` to host ``ref`` (id, MAC or name); the host as it is now (as it was, once deleted)."""

    def work(session: Session) -> HostRecord:
        host = machines.resolve(session, ref, lock=True)
        if change.delete:
            deleted = HostRecord.of(host)
            change.apply(session, host, source, vault)
            return deleted
        change.apply(session, host, source, vault)
        session.flush()
        return HostRecord.of(host)

    return db.write(work)


def change_hosts(db: Database, refs: list[str], change: HostChange, source: str,
                 vault: Vault | None = None) -> list[int]:
    """Make ``change`` to every host in ``refs`` (ids, MACs, names), all or nothing; the host ids, each once."""
    return db.write(lambda session: _apply(session, machines.resolve_many(session, refs, lock=True), change, source,
                                           vault))


def change_selected(db: Database, selector: Selector, change: HostChange, source: str, vault: Vault | None = None,
                    dry_run: bool = False) -> list[HostRecord]:
    """Apply ``change`` to every host ``selector`` matches, in one unit of work: all or nothing.

    Returns the hosts as they are after the change (with ``dry_run``: as they are
    now, nothing written). BadRequest for a change that belongs to one host or a
    selector matching more than ``deploys.MAX_SELECTED_HOSTS``; ChangeFailed when
    the database refuses part of it (nothing of the change is written then).
    """
    change.check_many()
    if dry_run:
        with db.read() as session:
            return [HostRecord.of(host) for host in deploys.select_hosts(session, selector)]

    def work(session: Session) -> list[HostRecord]:
        hosts = deploys.select_hosts(session, selector, lock=True)
        _apply(session, hosts, change, source, vault)
        session.flush()
        return [HostRecord.of(host) for host in hosts]

    return _refused_as_change_failed(db, work)


def deploy(db: Database, root: str, config: str, refs: list[str] | None, source: str,
           selector: Selector | None = None) -> list[int]:
    """Give every host in ``refs`` (ids, MACs, names), or every one ``selector`` matches, the configuration.

    All or nothing; the host ids, each once. NotFound for an unknown configuration
    or host, BadRequest for too many hosts (``ks.fleet.deploys.deploy_change``), before
    anything changes.
    """
    change = deploys.deploy_change(root, config, len(refs or []))
    if selector is None:
        return change_hosts(db, refs or [], change, source)
    return _refused_as_change_failed(
        db, lambda session: _apply(session, deploys.select_hosts(session, selector, lock=True), change, source))


def _apply(session: Session, hosts: list, change: HostChange, source: str, vault: Vault | None = None) -> list[int]:
    # The hosts' rows are written in one flush at the end (the history lines as they come):
    # no flush per host before each history line. A refusal anywhere still undoes everything.
    with session.no_autoflush:
        for host in hosts:
            change.apply(session, host, source, vault)
    return [h.id for h in hosts]


def _refused_as_change_failed(db: Database, work):
    """``db.write(work)``, a refusal by the database (a constraint, a trigger) as one ChangeFailed line."""
    try:
        return db.write(work)
    except sa_exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
        raise ChangeFailed(f"the database refused the change ({reason}); nothing was changed") from None


def resolve_id(db: Database, ref: str) -> int:
    """The id of host ``ref`` (id, MAC or name), or NotFound: before a BMC is asked."""
    with db.read() as session:
        return machines.resolve(session, ref).id


def power(db: Database, ref: str, action: str, source: str, settings: Settings) -> tuple[int, str]:
    """Run ``action`` on the BMC of host ``ref``; its id and the power state reached (or asked for).

    The attempt is recorded in the host's history whether it worked or not
    (a status query only when it failed).
    """
    with db.read() as session:
        host = machines.resolve(session, ref)
        host_id, bmc = host.id, host_power.credentials(host, settings)
    host_power.check_bmc(host_id, bmc, source)
    try:
        result = host_power.run(bmc, action, settings)
    except KSError as exc:
        _record_power(db, host_id, source, f"{action} failed: {exc}")
        raise
    if action != "status":
        _record_power(db, host_id, source, f"{result} sent")
    return host_id, host_power.reached(action, result)


def _record_power(db: Database, host_id: int, source: str, detail: str) -> None:
    db.write(lambda session: host_power.record(session, host_id, source, detail))


def power_many(db: Database, host_ids: list[int], action: str, source: str,
               settings: Settings) -> list[tuple[int, str]]:
    """Run ``action`` on the hosts' BMCs in parallel; (host id, reason) for each that failed, in order."""

    def one(host_id: int) -> tuple[int, str] | None:
        try:
            power(db, str(host_id), action, source, settings)
        except KSError as exc:
            return host_id, str(exc)
        return None

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(host_ids)))) as pool:
        return [failure for failure in pool.map(one, host_ids) if failure]


def discover(db: Database, settings: Settings, sweep: bool) -> dict:
    """Where the BMCs that hosts give by MAC are (see ``ks.power.hosts.locate``); ``sweep`` sweeps first."""
    subnets = host_power.sweep_subnets(settings, sweep)
    with db.read() as session:
        hosts = machines.list_hosts(session)
    return host_power.locate(hosts, subnets, sweep)


def check_timeouts(db: Database, source: str, now: datetime | None = None) -> list[tuple[int, str]]:
    """Flag every host past its deadline (``ks.fleet.timeouts``); (host id, state) of those this call flagged.

    It reads first, so that a check with nothing to do never takes SQLite's write lock.
    """
    now = now or utcnow()
    with db.read() as session:
        if not timeouts.overdue(session, now):
            return []
    flagged = db.write(lambda session: timeouts.flag_overdue(session, now, source))
    for host_id, state in flagged:
        timeouts.log.warning(
            "timeout host=%d state=%s: no /finish in time, flagged failed", host_id, state,
            extra={"event": EventKind.TIMEOUT.value, "host_id": host_id, "state": state},
        )
    return flagged
