"""Identify, register and move machines through their state chain.

Every function takes a session, or on the boot path (``boot`` and what it
calls) a ``ks.db.Transaction``, and leaves committing to its caller (one unit
of work per request or command, see ``ks.db.Database.write`` and
``write_direct``). Every change is recorded in the host's history.
"""

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, delete, func, or_, select, text
from sqlalchemy.orm import Session

from ks import states
from ks.errors import BadRequest, Conflict, IdentityConflict, NotFound, Unauthorized
from ks.identity import MAX_MACS, Identity, normalize_mac
from ks.values import check_metadata, check_text, load_stored_json
from ks.db import Transaction, mark_changed
from ks.models import Event, Host, HostMac, UTCDateTime, utcnow
from ks.vault import Vault

# Event kinds and sources as they appear in the history.
BOOT, REGISTER, STATE, FINISH, UPDATE, CONFLICT, EDIT = "boot", "register", "state", "finish", "update", "conflict", "edit"
DOWNLOAD, POST_INSTALL = "download", "post-install"


def hash_bootid(bootid: str) -> str:
    """The stored form of a bootid."""
    return hashlib.sha256(bootid.encode("utf-8", "surrogatepass")).hexdigest()


def new_bootid() -> str:
    """A fresh boot secret: 128 random bits from ``secrets``."""
    return secrets.token_hex(16)


# The boot path: SQL run on the driver's connection (``Database.write_direct``),
# plain enough for SQLite and PostgreSQL alike; each lookup goes through an index.
# A boot first finds the ids of the hosts its identifiers belong to, then reads
# the one host (its metadata once) and its MACs (short rows) apart: a join would
# repeat the whole metadata on every MAC's row, while the writer lock is held.
_HOST = "SELECT id, hostname, state, serial, uuid, metadata, failed_at IS NOT NULL FROM hosts WHERE id = :host_id"
_MACS = "SELECT mac FROM host_macs WHERE host_id = :host_id ORDER BY position"
_REGISTER = (
    "INSERT INTO hosts (hostname, serial, uuid, state, metadata, boot_finished, created_at, updated_at)"
    " VALUES ('not-set', :serial, :uuid, :state, '{}', FALSE, :now, :now) RETURNING id"
)
_ADD_MAC = "INSERT INTO host_macs (mac, host_id, position) VALUES (:mac, :host_id, :position)"
_FILL = "UPDATE hosts SET serial = COALESCE(serial, :serial), uuid = COALESCE(uuid, :uuid) WHERE id = :host_id"
_ADD_EVENT = (
    "INSERT INTO events (host_id, at, kind, source, from_state, to_state, detail)"
    " VALUES (:host_id, :at, :kind, :source, :from_state, :to_state, :detail)"
)
_ADD_EVENT_STMT = text(_ADD_EVENT).bindparams(bindparam("at", type_=UTCDateTime()))  # the same, for sessions
# A reboot into the same image keeps its deadline, so a machine that reboots in
# a loop still times out; /finish, a new state and a retry clear it.
_BOOTED = (
    "UPDATE hosts SET bootid_hash = :bootid_hash, boot_finished = FALSE, last_boot_at = :now,"
    " last_seen_at = :now, deadline_at = COALESCE(deadline_at, :deadline), boot_address = :address WHERE id = :host_id"
)
_SEEN = "UPDATE hosts SET last_seen_at = :now WHERE id = :host_id"


@functools.cache
def _host_ids_by_identifiers(mac_count: int) -> str:
    """Ids of the hosts owning any of ``mac_count`` MACs (:mac0, :mac1, ...), the :serial or the :uuid."""
    macs = ", ".join(f":mac{i}" for i in range(mac_count)) or "NULL"
    return (
        f"SELECT host_id FROM host_macs WHERE mac IN ({macs})"
        " UNION SELECT id FROM hosts WHERE serial = :serial UNION SELECT id FROM hosts WHERE uuid = :uuid"
        " ORDER BY 1"
    )



def record(session: Session, host_id: int, kind: str, source: str, before=None, after=None, detail: str = "") -> None:
    """Append one line to the host's history."""
    session.execute(_ADD_EVENT_STMT, _event(host_id, utcnow(), kind, source, before, after, detail))


def _event(host_id: int, at, kind: str, source: str, before, after, detail: str) -> dict:
    return {"host_id": host_id, "at": at, "kind": kind, "source": source, "from_state": before, "to_state": after,
            "detail": detail}


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


def resolve(session: Session, ref: str) -> Host:
    """A host by reference: its id, one of its MACs, or its (unique) hostname."""
    ref = (ref or "").strip()
    if ref.isascii() and ref.isdigit() and len(ref) <= 19:
        return get_host(session, int(ref))
    try:
        return find_by(session, mac=ref)
    except BadRequest:
        pass  # not a MAC: a hostname
    hosts = session.scalars(select(Host).where(Host.hostname == ref).limit(2)).all()
    if not hosts:
        raise NotFound(f"no host with id, MAC or name {ref[:64]!r}")
    if len(hosts) > 1:
        raise Conflict(f"several hosts are called {ref[:64]!r}; use the id or a MAC")
    return hosts[0]


def resolve_many(session: Session, refs: list[str]) -> list[Host]:
    """``resolve`` for many references at once (three queries), each host once, in the order given.

    NotFound names the first reference that matches no host.
    """
    kinds: dict[str, tuple[str, object]] = {}
    for ref in dict.fromkeys((ref or "").strip() for ref in refs):
        if ref.isascii() and ref.isdigit() and len(ref) <= 19:
            kinds[ref] = ("id", int(ref))
            continue
        try:
            kinds[ref] = ("mac", normalize_mac(ref))
        except BadRequest:
            kinds[ref] = ("name", ref)
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
    return list(dict.fromkeys(hosts))


@dataclass(frozen=True)
class HostInfo:
    """What rendering needs of a host, read without the ORM's unit of work (the boot hot path)."""

    id: int
    hostname: str
    state: str
    serial: str | None
    uuid: str | None
    meta: dict
    mac_list: list[str]
    failed: bool


def host_info(tx: Transaction, host_id: int) -> HostInfo:
    """Read one host, then its MACs (two queries through the primary key and the host_id index)."""
    host_id, hostname, state, serial, uuid, meta, failed = tx.execute(_HOST, {"host_id": host_id}).fetchone()
    macs = [mac for (mac,) in tx.execute(_MACS, {"host_id": host_id}).fetchall()]
    # The driver hands JSON over as text (SQLite) or already decoded (PostgreSQL).
    meta = load_stored_json(meta) if isinstance(meta, str) else meta
    return HostInfo(host_id, hostname, state, serial, uuid, meta or {}, macs, bool(failed))


def matching_host_ids(tx: Transaction, ident: Identity) -> list[int]:
    """Ids of all hosts that own any of the identifiers (one query, each lookup indexed)."""
    if not ident:
        return []
    params = {f"mac{i}": mac for i, mac in enumerate(ident.macs)}
    params.update(serial=ident.serial, uuid=ident.uuid)
    return [host_id for (host_id,) in tx.execute(_host_ids_by_identifiers(len(ident.macs)), params).fetchall()]


def identify(tx: Transaction, ident: Identity) -> HostInfo | None:
    """The one host these identifiers belong to, None if unknown; IdentityConflict if several.

    A serial or UUID is printed on the case and shown in listings, so it only
    confirms a machine that also reports one of the host's MACs: a boot that
    matches by serial or UUID alone is a conflict too, and changes nothing.
    """
    ids = matching_host_ids(tx, ident)
    if len(ids) > 1:
        raise IdentityConflict(
            f"identifiers of this machine belong to hosts {', '.join(map(str, ids))}: {ident.describe()}", ids
        )
    if not ids:
        return None
    host = host_info(tx, ids[0])
    if not set(ident.macs) & set(host.mac_list):
        raise IdentityConflict(
            f"the serial or UUID of host {host.id} was reported with none of its MACs ({ident.describe()});"
            f" if this is that machine with new network cards, add one: edit-host -i {host.id} --set-macs",
            [host.id],
        )
    return host


def _record(tx: Transaction, host_id: int, kind: str, source: str, before=None, after=None, detail: str = "") -> None:
    """``record`` for the boot path."""
    tx.execute(_ADD_EVENT, _event(host_id, tx.timestamp(utcnow()), kind, source, before, after, detail))


def register(tx: Transaction, ident: Identity, chain: states.Chain, source: str) -> HostInfo:
    """Create a host for a machine seen for the first time."""
    if not ident.macs:
        raise BadRequest("the machine reported no MAC; boot it through /bootstrap.ipxe, which sends them")
    state = states.format_chain(chain)
    params = {"serial": ident.serial, "uuid": ident.uuid, "state": state, "now": tx.timestamp(utcnow())}
    host_id = tx.execute(_REGISTER, params).fetchone()[0]  # a lost registration race fails here or below
    for position, mac in enumerate(ident.macs):
        tx.execute(_ADD_MAC, {"mac": mac, "host_id": host_id, "position": position})
    tx.mark_changed(host_id)
    _record(tx, host_id, REGISTER, source, None, state, ident.describe())
    return HostInfo(host_id, "not-set", state, ident.serial, ident.uuid, {}, list(ident.macs), False)


def learn(tx: Transaction, host: HostInfo, ident: Identity, source: str) -> HostInfo:
    """Attach identifiers the host reports for the first time (a new NIC, a serial).

    A host keeps at most ``MAX_MACS`` MACs: further new ones are not learned,
    however many boots report them (the history names them when something else
    is learned in the same boot; a boot that brings only such MACs writes nothing).
    """
    new_macs = [mac for mac in ident.macs if mac not in host.mac_list]
    left_out = new_macs[max(0, MAX_MACS - len(host.mac_list)):]
    new_macs = new_macs[: len(new_macs) - len(left_out)]
    fill = {attr: getattr(ident, attr) for attr in ("serial", "uuid") if getattr(ident, attr) and not getattr(host, attr)}
    if not new_macs and not fill:
        return host  # nothing new, or only MACs beyond the limit: no write on every boot for them
    for position, mac in enumerate(new_macs, start=len(host.mac_list)):
        tx.execute(_ADD_MAC, {"mac": mac, "host_id": host.id, "position": position})
    if fill:
        tx.execute(_FILL, {"serial": fill.get("serial"), "uuid": fill.get("uuid"), "host_id": host.id})
    if new_macs:
        tx.mark_changed(host.id)
    added = [f"mac={m}" for m in new_macs] + [f"{k}={v}" for k, v in fill.items()]
    over = f"; not learned (a host has at most {MAX_MACS} MACs): {' '.join(left_out)}" if left_out else ""
    _record(tx, host.id, UPDATE, source, detail="learned " + " ".join(added) + over)
    return host_info(tx, host.id)


@dataclass
class Boot:
    """What /bootstrap decided for one request."""

    host: HostInfo | None
    bootid: str | None = None
    conflict: IdentityConflict | None = None
    registered: bool = False
    # An unknown machine turned away: too many registrations in the last minute.
    busy: bool = False

    @property
    def chain(self) -> states.Chain:
        return states.parse_chain(self.host.state)


def boot(
    tx: Transaction,
    ident: Identity,
    initial_chain: states.Chain,
    poll: bool = False,
    deploy_timeout: Callable[[str], int] | None = None,
    may_register: Callable[[], bool] | None = None,
    address: str | None = None,
) -> Boot:
    """Identify or register a booting machine and rotate its bootid.

    A machine polling while it waits (in ``new``, or failed) only refreshes
    ``last_seen_at``: polls neither rotate its bootid nor fill its history.
    Booting an image starts its deadline: ``deploy_timeout(image)`` seconds,
    0 for none. An unknown machine is registered only if ``may_register()``
    says so; otherwise nothing is stored and the Boot is ``busy``. ``address``
    is the machine's network address, kept so that its installer's image
    download can be told apart. Runs in ``Database.write_direct``: every boot
    of every machine comes through here.
    """
    now = utcnow()
    try:
        host = identify(tx, ident)
    except IdentityConflict as conflict:
        if not poll:
            for other in conflict.host_ids:
                _record(tx, other, CONFLICT, "bootstrap", detail=str(conflict))
        return Boot(host=None, conflict=conflict)
    registered = host is None
    if registered:
        if may_register is not None and not may_register():
            return Boot(host=None, busy=True)
        host = register(tx, ident, initial_chain, "bootstrap")
    else:
        host = learn(tx, host, ident, "bootstrap")
    state = states.current(states.parse_chain(host.state))
    if poll and (host.failed or state == states.NEW):
        tx.execute(_SEEN, {"host_id": host.id, "now": tx.timestamp(now)})
        return Boot(host=host)
    bootid = new_bootid()
    seconds = deploy_timeout(state) if deploy_timeout and states.is_image(state) and not host.failed else 0
    deadline = now + timedelta(seconds=seconds) if seconds else None
    params = {"host_id": host.id, "bootid_hash": hash_bootid(bootid), "now": tx.timestamp(now),
              "deadline": tx.timestamp(deadline), "address": address}
    tx.execute(_BOOTED, params)
    _record(tx, host.id, BOOT, "bootstrap", host.state, host.state, ident.describe())
    return Boot(host=host, bootid=bootid, registered=registered)


def check_bootid(host: Host, bootid: str | None) -> None:
    """Unauthorized unless ``bootid`` is the host's current one (constant-time)."""
    if not bootid or host.bootid_hash is None:
        raise Unauthorized("a valid bootid is required; it changes on every boot")
    if not hmac.compare_digest(hash_bootid(bootid), host.bootid_hash):
        raise Unauthorized("wrong or outdated bootid; it changes on every boot")


def finish(session: Session, host_id: int, bootid: str | None) -> tuple[Host, str | None]:
    """Advance the chain for this boot; a retry with the same bootid advances nothing.

    Returns the host and the state it finished (None if this call advanced nothing).
    A late /finish of a boot flagged failed still counts: the machine did finish.
    """
    host = get_host(session, host_id, lock=True)
    check_bootid(host, bootid)
    if host.boot_finished:
        return host, None
    before = states.parse_chain(host.state)
    late = "after its deadline" if host.failed_at else ""
    host.state = states.format_chain(states.after_finish(before))
    host.boot_finished = True
    host.deadline_at = host.failed_at = None
    host.updated_at = utcnow()
    mark_changed(session, host.id)
    record(session, host.id, FINISH, "finish", states.format_chain(before), host.state, late)
    return host, states.current(before)


def record_download(session: Session, address: str, image: str, name: str, sent: int, size: int,
                    seconds: float) -> int | None:
    """Record an image download in the history of the machine that booted from ``address`` into ``image``.

    The host whose last boot came from this address and whose current state is
    ``image``; None (nothing recorded) when no such host is known.
    """
    candidates = session.scalars(
        select(Host).where(Host.boot_address == address).order_by(Host.last_boot_at.desc()).limit(1)
    ).all()
    if not candidates or states.current(states.parse_chain(candidates[0].state)) != image:
        return None
    host = candidates[0]
    rate = sent / seconds / 1e6 if seconds > 0 else 0.0
    how = "" if sent == size else " (incomplete: the client went away)"
    detail = f"{name}: {sent} of {size} bytes in {seconds:.1f} s ({rate:.1f} MB/s) to {address}{how}"
    record(session, host.id, DOWNLOAD, "images", host.state, host.state, detail)
    return host.id


def apply_update(session: Session, host_id: int, bootid: str | None, macs: list[str], documents: list[dict]) -> Host:
    """In state ``discover``: add reported MACs and merge reported metadata."""
    host = get_host(session, host_id, lock=True)
    check_bootid(host, bootid)
    current = states.current(states.parse_chain(host.state))
    if current != "discover":
        raise Conflict(f"/update is only accepted in state 'discover'; host {host.id} is in '{current}'")
    new_macs = [m for m in dict.fromkeys(macs) if m not in host.mac_list]
    check_mac_count(len(host.mac_list) + len(new_macs))
    meta = dict(host.meta or {})
    for document in documents:
        meta.update(document)
    check_metadata(meta)  # each document was checked on its own; the merge is bounded too
    if new_macs:
        owners = session.scalars(select(HostMac).where(HostMac.mac.in_(new_macs))).all()
        if owners:
            taken = ", ".join(f"{o.mac} (host {o.host_id})" for o in owners)
            raise Conflict(f"MAC already belongs to another host: {taken}")
        for mac in new_macs:
            host.macs.append(HostMac(mac=mac, position=len(host.macs)))
        mark_changed(session, host.id)
    changed = [k for k in meta if (host.meta or {}).get(k) != meta[k]]
    host.meta = meta
    host.updated_at = utcnow()
    detail = " ".join([f"mac={m}" for m in new_macs] + [f"metadata.{k}" for k in sorted(changed)])
    record(session, host.id, UPDATE, "update", detail=detail or "nothing new")
    return host


def check_mac_count(count: int) -> None:
    if count > MAX_MACS:
        raise BadRequest(f"a host has at most {MAX_MACS} MAC addresses; this change would give it {count}")


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
    host.updated_at = utcnow()
    mark_changed(session, host.id)
    record(session, host.id, STATE, source, before, host.state)


def state_counts(session: Session) -> dict[str, tuple[int, int]]:
    """Current state -> (hosts, failed hosts), from one grouped query."""
    counts: dict[str, tuple[int, int]] = {}
    rows = session.execute(select(Host.state, func.count(), func.count(Host.failed_at)).group_by(Host.state))
    for chain, hosts, failed in rows:
        state = chain.split(",", 1)[0]
        before = counts.get(state, (0, 0))
        counts[state] = (before[0] + hosts, before[1] + failed)
    return counts


def set_hostname(session: Session, host: Host, hostname: str, source: str) -> None:
    """Rename a host."""
    check_text("hostname", hostname, 255, spaces=False)
    if not hostname:
        raise BadRequest("the hostname must not be empty")
    before, host.hostname = host.hostname, hostname
    host.updated_at = utcnow()
    record(session, host.id, EDIT, source, detail=f"hostname {before} -> {hostname}")


def set_metadata(session: Session, host: Host, meta: dict, source: str) -> None:
    """Replace a host's metadata object."""
    host.meta = check_metadata(meta)
    host.updated_at = utcnow()
    record(session, host.id, EDIT, source, detail="metadata " + ",".join(sorted(meta)))


def set_bmc(session: Session, host: Host, bmc: dict | None, source: str, vault: Vault) -> None:
    """Set (or with None remove) a host's BMC address and credentials; validated by the caller.

    The password is stored encrypted (see ks.vault).
    """
    bmc = bmc or {}
    host.bmc_address = bmc.get("address")
    host.bmc_username = bmc.get("username")
    host.bmc_password = vault.encrypt(bmc["password"]) if bmc.get("password") else None
    host.updated_at = utcnow()
    record(session, host.id, EDIT, source, detail=f"bmc {host.bmc_address}" if host.bmc_address else "bmc removed")


def set_macs(session: Session, host: Host, macs: list[str], source: str) -> None:
    """Replace a host's MAC addresses; each must not belong to another host."""
    wanted = list(dict.fromkeys(normalize_mac(m) for m in macs))
    check_mac_count(len(wanted))
    others = session.scalars(select(HostMac).where(HostMac.mac.in_(wanted), HostMac.host_id != host.id)).all()
    if others:
        raise Conflict("MAC already belongs to another host: " + ", ".join(f"{o.mac} (host {o.host_id})" for o in others))
    session.execute(delete(HostMac).where(HostMac.host_id == host.id))
    session.flush()
    session.expire(host, ["macs"])
    host.macs = [HostMac(mac=m, position=i) for i, m in enumerate(wanted)]
    host.updated_at = utcnow()
    mark_changed(session, host.id)
    record(session, host.id, EDIT, source, detail="macs " + " ".join(wanted))


def delete_host(session: Session, host: Host) -> None:
    """Delete a host, its MACs and its history; its id is never handed out again."""
    mark_changed(session, host.id)
    session.delete(host)


def list_hosts(session: Session, host_id: int | None = None, state: str | None = None) -> list[Host]:
    """Hosts ordered by id, optionally one id or those whose current state is ``state``."""
    stmt = select(Host).order_by(Host.id)
    if host_id is not None:
        stmt = stmt.where(Host.id == host_id)
    if state:
        stmt = stmt.where(or_(Host.state == state, Host.state.startswith(state + ",", autoescape=True)))
    return list(session.scalars(stmt))


def history(session: Session, host_id: int, limit: int | None = None) -> list[Event]:
    """A host's events, oldest first."""
    stmt = select(Event).where(Event.host_id == host_id).order_by(Event.id.desc())
    if limit:
        stmt = stmt.limit(limit)
    return list(reversed(session.scalars(stmt).all()))
