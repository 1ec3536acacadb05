"""Host edits: an operator's changes, finding hosts by reference, listings and history.

Every function takes a session and leaves committing to its caller (one unit
of work per request or command, see ``ks.records.db.Database.write``). Every change is
recorded in the host's history. The boot path is ``ks.boot.booting``.
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ks.core import states
from ks.core.errors import BadRequest, Conflict, NotFound
from ks.core.identity import MAX_MACS, normalize_mac
from ks.core.selectors import Selector
from ks.core.values import MAX_LABELS, is_decimal
from ks.core.vault import Vault
from ks.fleet import select_sql
from ks.records.events import EventKind, record
from ks.records.models import Event, Host, HostMac, utcnow
from ks.records.record import COLUMNS, HostRecord


def get_host(session: Session, host_id: int, lock: bool = False) -> Host:
    """The host with this id (row-locked for update if asked), or NotFound."""
    stmt = select(Host).where(Host.id == host_id)
    if lock:
        stmt = stmt.with_for_update()
    host = session.scalars(stmt).first()
    if host is None:
        raise NotFound(f"no host with id {host_id}")
    return host


def find_by(session: Session, mac: str | None = None, serial: str | None = None) -> Host:
    """The host owning a MAC or serial, or NotFound."""
    if mac:
        mac = normalize_mac(mac)
        host = session.scalars(select(Host).join(HostMac).where(HostMac.mac == mac)).first()
        what = f"MAC {mac}"
    else:
        serial = (serial or "").strip().upper()
        host = session.scalars(select(Host).where(Host.serial == serial)).first()
        what = f"serial {serial!r}"
    if host is None:
        raise NotFound(f"no host with {what}")
    return host


def parse_ref(ref: str) -> tuple[str, object]:
    """What a host reference names: ("id", int), ("mac", normalised MAC) or ("name", hostname)."""
    if is_decimal(ref):
        return "id", int(ref)
    try:
        return "mac", normalize_mac(ref)
    except BadRequest:
        return "name", ref  # not a MAC: a hostname


def resolve(session: Session, ref: str, lock: bool = False) -> Host:
    """A host by reference: its id, one of its MACs, or its (unique) hostname (row-locked if asked)."""
    return resolve_many(session, [ref], lock)[0]


def resolve_many(session: Session, refs: list[str], lock: bool = False) -> list[Host]:
    """Hosts by reference (at most three queries), each host once, in the order given.

    NotFound names the first reference that matches no host; Conflict a name several hosts share.
    ``lock``: see ``lock_hosts``.
    """
    kinds = {ref: parse_ref(ref) for ref in dict.fromkeys((ref or "").strip() for ref in refs)}
    wanted = {kind: [v for k, v in kinds.values() if k == kind] for kind in ("id", "mac", "name")}
    found: dict[tuple[str, object], Host] = {}
    for host in session.scalars(select(Host).where(Host.id.in_(wanted["id"]))) if wanted["id"] else ():
        found["id", host.id] = host
    if wanted["mac"]:
        rows = session.execute(select(HostMac.mac, Host).join(Host).where(HostMac.mac.in_(wanted["mac"])))
        for mac, host in rows:
            found["mac", mac] = host
    if wanted["name"]:
        for host in session.scalars(select(Host).where(Host.hostname.in_(wanted["name"]))):
            if ("name", host.hostname) in found:
                raise Conflict(f"several hosts are called {host.hostname[:64]!r}; use the id or a MAC")
            found["name", host.hostname] = host
    missing = {"id": "no host with id {}", "mac": "no host with MAC {}", "name": "no host with id, MAC or name {!r}"}
    hosts = []
    for ref, key in kinds.items():
        if key not in found:
            raise NotFound(missing[key[0]].format(key[1] if key[0] != "name" else ref[:64]))
        hosts.append(found[key])
    hosts = list(dict.fromkeys(hosts))
    if lock:
        lock_hosts(session, hosts)
    return hosts


def lock_hosts(session: Session, hosts: list[Host]) -> None:
    """Lock the hosts' rows until the unit of work ends, and read them again as they are now.

    ``SELECT … FOR UPDATE`` in id order, so that two changes of the same hosts
    queue rather than deadlock (SQLite has one writer at a time anyway); a change
    made meanwhile is what the caller now sees and builds on. NotFound for a host
    deleted meanwhile.
    """
    ids = [host.id for host in hosts]
    for host in hosts:
        session.expire(host)  # the query below fills them in again, from the locked rows
    locked = {host.id for host in session.scalars(select(Host).where(Host.id.in_(ids)).order_by(Host.id)
                                                  .with_for_update())}
    for host_id in ids:
        if host_id not in locked:
            raise NotFound(f"no host with id {host_id}")


def set_state(session: Session, host: Host, chain: states.Chain, source: str) -> None:
    """Replace the host's whole chain (an operator's decision).

    The bootid handed out before is void: a late /finish of the boot that ran
    before the change must not pop a step of the new chain, which never ran.
    """
    before = host.state
    host.state = states.format_chain(chain)
    host.bootid_hash = None
    # A new chain is a fresh start: its first boot sets a new deadline.
    host.deadline_at = host.failed_at = None
    # ... and the progress of the boot before it is over.
    host.boot_finished = False
    host.download_sent, host.download_size, host.post_install_at = 0, None, None
    host.updated_at = host.chain_set_at = utcnow()
    record(session, host.id, EventKind.STATE, source, before, host.state)


def state_counts(session: Session) -> dict[str, tuple[int, int]]:
    """Current state -> (hosts, failed hosts), from one grouped query."""
    counts: dict[str, tuple[int, int]] = {}
    rows = session.execute(select(Host.state, func.count(), func.count(Host.failed_at)).group_by(Host.state))
    for chain, hosts, failed in rows:
        state = states.stored_chain(chain)[0]
        before = counts.get(state, (0, 0))
        counts[state] = (before[0] + hosts, before[1] + failed)
    return counts


def set_hostname(session: Session, host: Host, hostname: str, source: str) -> None:
    """Rename a host (validated by ``ks.fleet.change.HostChange``)."""
    before, host.hostname = host.hostname, hostname
    host.updated_at = utcnow()
    record(session, host.id, EventKind.EDIT, source, detail=f"hostname {before} -> {hostname}")


def set_metadata(session: Session, host: Host, meta: dict, source: str) -> None:
    """Replace a host's metadata object (validated by ``ks.fleet.change.HostChange``)."""
    host.meta = meta
    host.updated_at = utcnow()
    record(session, host.id, EventKind.EDIT, source, detail="metadata " + ",".join(sorted(meta)))


def set_labels(session: Session, host: Host, updates: dict[str, str | None], source: str) -> None:
    """Set (value) or remove (None) some labels of a host; one ``label`` history line says which.

    Nothing is written when the host already carries exactly these labels.
    BadRequest when the host would hold more than ``MAX_LABELS``.
    """
    before = dict(host.labels or {})
    after = {**before, **{k: v for k, v in updates.items() if v is not None}}
    for key, value in updates.items():
        if value is None:
            after.pop(key, None)
    if after == before:
        return
    if len(after) > MAX_LABELS:
        raise BadRequest(f"host {host.id} would hold {len(after)} labels; a host has at most {MAX_LABELS}")
    host.labels = after
    host.updated_at = utcnow()
    changed = [f"{k}={after[k]}" for k in sorted(after) if before.get(k) != after[k]]
    changed += [f"-{k}" for k in sorted(before) if k not in after]
    record(session, host.id, EventKind.LABEL, source, detail="labels " + " ".join(changed))


def set_bmc(session: Session, host: Host, bmc: dict | None, source: str, vault: Vault) -> None:
    """Set (or with None remove) a host's BMC address and credentials; validated by the caller.

    The password is stored encrypted (see ks.core.vault).
    """
    bmc = bmc or {}
    host.bmc_address = bmc.get("address")
    host.bmc_username = bmc.get("username")
    host.bmc_password = vault.encrypt(bmc["password"]) if bmc.get("password") else None
    host.updated_at = utcnow()
    record(
        session,
        host.id,
        EventKind.EDIT,
        source,
        detail=f"bmc {host.bmc_address}" if host.bmc_address else "bmc removed",
    )


def set_macs(session: Session, host: Host, macs: list[str], source: str) -> None:
    """Replace a host's MACs (normalised, see ``ks.fleet.change.HostChange``); each must not belong to another host."""
    wanted = list(macs)
    others = session.scalars(select(HostMac).where(HostMac.mac.in_(wanted), HostMac.host_id != host.id)).all()
    if others:
        raise Conflict(
            "MAC already belongs to another host: " + ", ".join(f"{o.mac} (host {o.host_id})" for o in others)
        )
    host.macs.clear()
    session.flush()  # the old MACs go first: one of them may come back at another position
    host.macs = [HostMac(mac=m, position=i) for i, m in enumerate(wanted)]
    host.updated_at = utcnow()
    record(session, host.id, EventKind.EDIT, source, detail="macs " + " ".join(wanted))


def delete_host(session: Session, host: Host) -> None:
    """Delete a host, its MACs and its history; its id is never handed out again."""
    session.delete(host)


# The record's columns, in its order (``HostRecord.from_row``).
_LISTED: list[Any] = [column for _, column in COLUMNS]


def _conditions(session: Session, host_id: int | None, state: str | None, selector: Selector | None) -> list:
    conditions = []
    if host_id is not None:
        conditions.append(Host.id == host_id)
    if state:
        conditions.append(or_(Host.state == state, Host.state.startswith(state + ",", autoescape=True)))
    if selector is not None:
        conditions.append(select_sql.where(selector, session.get_bind().dialect.name))
    return conditions


def count_hosts(session: Session, state: str | None = None, selector: Selector | None = None) -> int:
    """How many hosts ``list_hosts`` would list without ``limit``."""
    condition = _conditions(session, None, state, selector)
    return session.scalar(select(func.count()).select_from(Host).where(*condition)) or 0


def list_hosts(session: Session, host_id: int | None = None, state: str | None = None,
               selector: Selector | None = None, limit: int | None = None, offset: int = 0) -> list[HostRecord]:
    """Hosts ordered by id, optionally one id, those whose current state is ``state``, those ``selector`` matches.

    ``limit``/``offset``: one page of them. Read as rows rather than ORM objects
    (two queries: the hosts, their MACs), so that listing tens of thousands of
    hosts takes a fraction of a second.
    """
    conditions = _conditions(session, host_id, state, selector)
    ids = select(Host.id).where(*conditions).order_by(Host.id)
    paged = limit is not None or offset
    if paged:
        ids = ids.limit(limit).offset(offset)
    rows = session.execute(select(*_LISTED).where(Host.id.in_(ids)).order_by(Host.id) if paged
                           else select(*_LISTED).where(*conditions).order_by(Host.id)).all()
    macs: dict[int, list[str]] = {}
    if rows:
        stmt = select(HostMac.host_id, HostMac.mac).order_by(HostMac.host_id, HostMac.position)
        if conditions or paged:
            stmt = stmt.where(HostMac.host_id.in_(ids))
        for owner, mac in session.execute(stmt):
            macs.setdefault(owner, []).append(mac)
    return [HostRecord.from_row(row, tuple(macs.get(row.id, ()))) for row in rows]


# How a listing page may be ordered: name -> the columns it sorts by.
SORTS = {
    "id": (Host.id,),
    "hostname": (Host.hostname, Host.id),
    "state": (Host.state, Host.id),
    "last_boot": (Host.last_boot_at, Host.id),
    "failed": (Host.failed_at.is_(None), Host.id),  # failed hosts first
}


@dataclass(frozen=True)
class Selection:
    """Which hosts a listing page shows: current state, one label ``key=value``, free text (id, name, serial, MAC)."""

    state: str | None = None
    label: tuple[str, str] | None = None
    text: str | None = None

    def conditions(self) -> list:
        found = []
        if self.state:
            found.append(or_(Host.state == self.state, Host.state.startswith(self.state + ",", autoescape=True)))
        if self.label:
            key, value = self.label
            found.append(Host.labels[key].as_string() == value)
        if self.text:
            text = self.text.lower()
            by_mac = select(HostMac.host_id).where(HostMac.mac.contains(normalize_partial_mac(text), autoescape=True))
            alternatives = [func.lower(Host.hostname).contains(text, autoescape=True),
                            func.lower(Host.serial).contains(text, autoescape=True), Host.id.in_(by_mac)]
            if is_decimal(self.text) and len(self.text) < 19:
                alternatives.append(Host.id == int(self.text))
            found.append(or_(*alternatives))
        return found


def normalize_partial_mac(text: str) -> str:
    """A piece of a MAC as stored: lower case, ``:`` between octets (``52-54-00`` finds ``52:54:00:..``)."""
    return text.lower().replace("-", ":")


def page_hosts(session: Session, selection: Selection, sort: str = "failed", descending: bool = False,
               offset: int = 0, limit: int = 50) -> tuple[list[HostRecord], int]:
    """One page of the hosts ``selection`` picks, ordered by ``sort`` (a key of ``SORTS``), and how many it picks.

    Two queries (the page, the count) and one for the page's MACs, whatever the size of the fleet.
    """
    conditions = selection.conditions()
    order = [c.desc() if descending else c for c in SORTS[sort]]
    stmt = select(Host).where(*conditions).order_by(*order).offset(offset).limit(limit)
    total = session.scalar(select(func.count()).select_from(Host).where(*conditions)) or 0
    return [HostRecord.of(host) for host in session.scalars(stmt)], total


def downloading(session: Session, limit: int = 1000) -> list[HostRecord]:
    """Hosts whose current boot is downloading its image now (started, not complete, not failed)."""
    stmt = select(Host).where(Host.download_size.is_not(None), Host.download_sent < Host.download_size,
                              Host.failed_at.is_(None)).order_by(Host.id).limit(limit)
    return [HostRecord.of(host) for host in session.scalars(stmt)]


def history(session: Session, host_id: int, limit: int | None = None) -> list[Event]:
    """A host's events, oldest first."""
    stmt = select(Event).where(Event.host_id == host_id).order_by(Event.id.desc())
    if limit:
        stmt = stmt.limit(limit)
    return list(reversed(session.scalars(stmt).all()))


def check_mac_count(count: int) -> None:
    """BadRequest if a host would hold more than ``MAX_MACS`` MACs."""
    if count > MAX_MACS:
        raise BadRequest(f"a host has at most {MAX_MACS} MAC addresses; this change would give it {count}")
