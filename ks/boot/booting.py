"""The boot path: identify, register and boot machines, and what their installers call back.

``boot`` and what it calls run in a ``ks.records.db.Transaction`` (``Database.write_direct``):
every boot of every machine comes through here, so its statements are Core
statements over the model tables, compiled once and run on the driver's
cursor. So do ``finish`` and ``post_install``, which every install calls once;
the other callbacks (/update, downloads) take a session. Nothing
here commits; every change is recorded in the host's history.
"""

import dataclasses
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import JSON, bindparam, false, func, insert, literal_column, null, select, true, union, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from ks.boot.render import Rendered
from ks.core import states
from ks.core.errors import BadRequest, Conflict, IdentityConflict, Unauthorized
from ks.core.identity import BOOT_FACTS, MAX_FACTS, MAX_MACS, Identity
from ks.core.rules import DEFAULT_HOSTNAME, Enrollment, Machine, RuleSet
from ks.core.values import check_metadata
from ks.fleet.machines import check_mac_count, get_host
from ks.records.db import Transaction
from ks.records.events import EventKind, record, record_at_most_once
from ks.records.models import Event, Host, HostMac, RuleSequence, utcnow
from ks.records.record import COLUMNS, HostRecord

_hosts, _macs, _seqs = Host.__table__, HostMac.__table__, RuleSequence.__table__
_HOST_ID: BindParameter[int] = bindparam("host_id")


def hash_bootid(bootid: str) -> str:
    """The stored form of a bootid."""
    return hashlib.sha256(bootid.encode("utf-8", "surrogatepass")).hexdigest()


def new_bootid() -> str:
    """A fresh boot secret: 128 random bits from ``secrets``."""
    return secrets.token_hex(16)


# Each lookup goes through an index. A boot first finds the ids of the hosts its
# identifiers belong to, then reads the one host (its metadata once) and its MACs
# (short rows) apart: a join would repeat the whole metadata on every MAC's row,
# while the writer lock is held.
_HOST = select(*(column for _, column in COLUMNS)).where(_hosts.c.id == _HOST_ID)
_MACS = select(_macs.c.mac).where(_macs.c.host_id == _HOST_ID).order_by(_macs.c.position)
# Every other JSON column of a new host starts as an empty object (the driver's insert knows no Python
# defaults); JSON parameters are given as JSON text.
_REGISTER = insert(_hosts).values({
    **{column.name: literal_column("'{}'") for column in _hosts.c if isinstance(column.type, JSON)},
    "facts": bindparam("facts", type_=JSON), "labels": bindparam("labels", type_=JSON),
    "hostname": bindparam("hostname"), "serial": bindparam("serial"), "uuid": bindparam("uuid"),
    "state": bindparam("state"), "boot_finished": false(), "created_at": bindparam("now"),
    "updated_at": bindparam("now"), "boot_address": bindparam("address"),
}).returning(_hosts.c.id)
# How many of the newest ``newest`` hosts of an address were registered since ``since``: the
# registrations of one source in the last minute, read through the address's index newest first, so
# that it costs the bound, not the hosts the address ever registered. (OFFSET 0 is written out: SQLite's
# dialect would add a bound one of its own, which a boot-path statement is not given.)
_NEWEST_FROM = (select(_hosts.c.created_at).where(_hosts.c.boot_address == bindparam("address"))
                .order_by(_hosts.c.id.desc()).limit(bindparam("newest")).offset(literal_column("0")).subquery())
_REGISTERED_FROM = select(func.count()).select_from(_NEWEST_FROM).where(
    _NEWEST_FROM.c.created_at >= bindparam("since", type_=_hosts.c.created_at.type))
# The window of the bound on registrations from one address.
REGISTRATION_WINDOW = timedelta(minutes=1)
_FACTS = update(_hosts).where(_hosts.c.id == _HOST_ID).values(facts=bindparam("facts", type_=JSON))
# An enrollment rule's counter: counted up in the registering transaction (the row is locked until it
# commits), created at 1 by its first machine; two first machines at once: one insert fails and its unit
# of work is retried.
_NEXT_SEQ = (update(_seqs).where(_seqs.c.rule == bindparam("rule")).values(last=_seqs.c.last + literal_column("1"))
             .returning(_seqs.c.last))
_FIRST_SEQ = insert(_seqs).values(rule=bindparam("rule"), last=literal_column("1"))
_ADD_MAC = insert(_macs).values(mac=bindparam("mac"), host_id=_HOST_ID, position=bindparam("position"))
_FILL = update(_hosts).where(_hosts.c.id == _HOST_ID).values(
    serial=func.coalesce(_hosts.c.serial, bindparam("serial")), uuid=func.coalesce(_hosts.c.uuid, bindparam("uuid"))
)
# A reboot into the same image keeps its deadline, so a machine that reboots in
# a loop still times out; /finish, a new state and a retry clear it.
_BOOTED = update(_hosts).where(_hosts.c.id == _HOST_ID).values(
    bootid_hash=bindparam("bootid_hash"), boot_finished=false(), last_boot_at=bindparam("now"),
    last_seen_at=bindparam("now"), deadline_at=func.coalesce(_hosts.c.deadline_at, bindparam("deadline")),
    boot_address=bindparam("address"), download_sent=literal_column("0"), download_size=null(),
    post_install_at=null(),
)
# Anyone who knows a host's serial can cause a conflict: the host's history gets one conflict line
# per this interval, which counts the others (``events.record_at_most_once``).
CONFLICT_INTERVAL = timedelta(minutes=1)
# A history line of a download since the boot at :since (the line its end writes).
_DOWNLOAD_RECORDED = select(Event.__table__.c.id).where(
    Event.__table__.c.host_id == _HOST_ID, Event.__table__.c.kind == bindparam("kind"),
    Event.__table__.c.at >= bindparam("since"),
)
_SEEN = update(_hosts).where(_hosts.c.id == _HOST_ID).values(last_seen_at=bindparam("now"))


@functools.cache
def _host_ids_by_identifiers(mac_count: int):
    """Ids of the hosts owning any of ``mac_count`` MACs (:mac0, :mac1, ...), the :serial or the :uuid."""
    by_serial = select(_hosts.c.id).where(_hosts.c.serial == bindparam("serial"))
    by_uuid = select(_hosts.c.id).where(_hosts.c.uuid == bindparam("uuid"))
    found = [by_serial, by_uuid]
    if mac_count:
        macs = [bindparam(f"mac{i}", type_=_macs.c.mac.type) for i in range(mac_count)]
        found.insert(0, select(_macs.c.host_id).where(_macs.c.mac.in_(macs)))
    return union(*found).order_by(literal_column("1"))


def host_record(tx: Transaction, host_id: int) -> HostRecord:
    """Read one host, then its MACs (two queries through the primary key and the host_id index)."""
    row = tx.execute(_HOST, {"host_id": host_id}).fetchone()
    macs = tuple(mac for (mac,) in tx.execute(_MACS, {"host_id": host_id}).fetchall())
    return HostRecord.from_row(row, macs)


def matching_host_ids(tx: Transaction, ident: Identity) -> list[int]:
    """Ids of all hosts that own any of the identifiers (one query, each lookup indexed)."""
    if not ident:
        return []
    params: dict[str, str | None] = {f"mac{i}": mac for i, mac in enumerate(ident.macs)}
    params.update(serial=ident.serial, uuid=ident.uuid)
    return [host_id for (host_id,) in tx.execute(_host_ids_by_identifiers(len(ident.macs)), params).fetchall()]


def identify(tx: Transaction, ident: Identity) -> HostRecord | None:
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
    host = host_record(tx, ids[0])
    if not set(ident.macs) & set(host.macs):
        raise IdentityConflict(
            f"the serial or UUID of host {host.id} was reported with none of its MACs ({ident.describe()});"
            f" if this is that machine with new network cards, add one: edit-host -i {host.id} --set-macs",
            [host.id],
        )
    return host


def _json(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def machine_of(ident: Identity) -> Machine:
    """What enrollment rules see of a booting machine."""
    return Machine(macs=ident.macs, serial=ident.serial, uuid=ident.uuid, facts=ident.facts)


def next_seq(tx: Transaction, rule: str) -> int:
    """The rule's next ``seq``: one more than the last it gave, 1 for its first machine; never the same twice."""
    row = tx.execute(_NEXT_SEQ, {"rule": rule}).fetchone()
    if row is not None:
        return int(row[0])
    tx.execute(_FIRST_SEQ, {"rule": rule})
    return 1


def peek_seq(session: Session, rule: str) -> int:
    """The ``seq`` the rule's next machine would get, changing nothing."""
    last = session.scalar(select(RuleSequence.last).where(RuleSequence.rule == rule))
    return (last or 0) + 1


def enroll(tx: Transaction, ident: Identity, rules: RuleSet) -> Enrollment | None:
    """What the first matching rule gives a machine seen for the first time (taking its seq); None if none matches."""
    machine = machine_of(ident)
    rule = rules.first_match(machine)
    return rule.enroll(machine, next_seq(tx, rule.name)) if rule is not None else None


def register(tx: Transaction, ident: Identity, chain: states.Chain, source: str,
             enrollment: Enrollment | None = None, address: str | None = None) -> HostRecord:
    """Create a host for a machine seen for the first time, with its facts, as an enrollment rule says if one does.

    The rule's chain replaces ``chain`` (when it gives one); its hostname and
    labels are the host's. The history's ``register`` line names the rule and seq.
    ``address`` is where the machine booted from (``registered_from`` counts it).
    """
    if not ident.macs:
        raise BadRequest("the machine reported no MAC; boot it through /bootstrap.ipxe, which sends them")
    hostname, labels, detail = DEFAULT_HOSTNAME, {}, ident.describe()
    if enrollment is not None:
        chain = enrollment.chain or chain
        hostname, labels = enrollment.hostname, enrollment.labels
        detail += f"; rule {enrollment.rule} (seq {enrollment.seq})"
        if enrollment.problem:
            detail += f"; {enrollment.problem}, hostname left {DEFAULT_HOSTNAME}"
    state = states.format_chain(chain)
    params = {"serial": ident.serial, "uuid": ident.uuid, "state": state, "now": utcnow(), "hostname": hostname,
              "facts": _json(ident.facts), "labels": _json(labels), "address": address}
    host_id = tx.execute(_REGISTER, params).fetchone()[0]  # a lost registration race fails here or below
    for position, mac in enumerate(ident.macs):
        tx.execute(_ADD_MAC, {"mac": mac, "host_id": host_id, "position": position})
    record(tx, host_id, EventKind.REGISTER, source, None, state, detail)
    return host_record(tx, host_id)


def registered_from(tx: Transaction, address: str, since: datetime, newest: int) -> int:
    """How many hosts were registered from ``address`` since ``since``, counting at most ``newest``."""
    return tx.execute(_REGISTERED_FROM, {"address": address, "since": since, "newest": newest}).fetchone()[0]


def refresh_facts(tx: Transaction, host: HostRecord, ident: Identity) -> HostRecord:
    """Keep the facts this boot reported (written only when they changed).

    The boot's facts replace those of ``BOOT_FACTS`` (one it no longer reports
    is removed); facts a discover image reported stay. A boot that reports no
    facts at all (a poll, an older bootstrap script) leaves them as they are.
    """
    if not ident.facts:
        return host
    stored = host.facts if isinstance(host.facts, dict) else {}
    facts = {key: value for key, value in stored.items() if key not in BOOT_FACTS}
    facts = dict(list(facts.items())[: MAX_FACTS - len(ident.facts)]) | ident.facts
    if facts == stored:
        return host
    tx.execute(_FACTS, {"host_id": host.id, "facts": _json(facts)})
    return dataclasses.replace(host, facts=facts)


def learn(tx: Transaction, host: HostRecord, ident: Identity, source: str) -> HostRecord:
    """Attach identifiers the host reports for the first time (a new NIC, a serial).

    A host keeps at most ``MAX_MACS`` MACs: further new ones are not learned,
    however many boots report them (the history names them when something else
    is learned in the same boot; a boot that brings only such MACs writes nothing).
    """
    new_macs = [mac for mac in ident.macs if mac not in host.macs]
    left_out = new_macs[max(0, MAX_MACS - len(host.macs)):]
    new_macs = new_macs[: len(new_macs) - len(left_out)]
    fill = {
        attr: getattr(ident, attr) for attr in ("serial", "uuid") if getattr(ident, attr) and not getattr(host, attr)
    }
    if not new_macs and not fill:
        return host  # nothing new, or only MACs beyond the limit: no write on every boot for them
    for position, mac in enumerate(new_macs, start=len(host.macs)):
        tx.execute(_ADD_MAC, {"mac": mac, "host_id": host.id, "position": position})
    if fill:
        tx.execute(_FILL, {"serial": fill.get("serial"), "uuid": fill.get("uuid"), "host_id": host.id})
    added = [f"mac={m}" for m in new_macs] + [f"{k}={v}" for k, v in fill.items()]
    over = f"; not learned (a host has at most {MAX_MACS} MACs): {' '.join(left_out)}" if left_out else ""
    record(tx, host.id, EventKind.UPDATE, source, detail="learned " + " ".join(added) + over)
    return host_record(tx, host.id)


@dataclass
class Boot:
    """What /bootstrap decided for one request."""

    host: HostRecord | None
    bootid: str | None = None
    conflict: IdentityConflict | None = None
    registered: bool = False
    # An unknown machine turned away: too many registrations in the last minute.
    busy: bool = False
    # What an enrollment rule gave a machine registered now; None: no rule matched.
    enrollment: Enrollment | None = None


def boot(
    tx: Transaction,
    ident: Identity,
    initial_chain: states.Chain,
    poll: bool = False,
    deploy_timeout: Callable[[str], int] | None = None,
    may_register: Callable[[], bool] | None = None,
    address: str | None = None,
    rules: Callable[[], RuleSet] | None = None,
    per_source: int = 0,
) -> Boot:
    """Identify or register a booting machine and rotate its bootid.

    A machine polling while it waits (in ``new``, or failed) only refreshes
    ``last_seen_at``: polls neither rotate its bootid nor fill its history.
    Booting an image starts its deadline: ``deploy_timeout(image)`` seconds,
    0 for none. An unknown machine is registered only if fewer than
    ``per_source`` hosts were registered from its ``address`` in the last
    minute (0: no such bound), counted in this transaction, and then only if
    ``may_register()`` says so; otherwise nothing is stored and the Boot is
    ``busy``. ``address`` is the machine's network address, kept so that its
    installer's image download can be told apart. ``rules()`` gives the enrollment rules in force
    (asked only when a machine registers). The facts a boot reports are kept
    (``refresh_facts``). Runs in ``Database.write_direct``: every boot of every
    machine comes through here.
    """
    now = utcnow()
    try:
        host = identify(tx, ident)
    except IdentityConflict as conflict:
        if not poll:
            for other in conflict.host_ids:
                record_at_most_once(tx, other, EventKind.CONFLICT, "bootstrap", str(conflict), CONFLICT_INTERVAL)
        return Boot(host=None, conflict=conflict)
    registered, enrollment = host is None, None
    if host is None:
        # The source's own bound first: a flood from one address takes nothing from the global ceiling.
        if per_source and address and registered_from(tx, address, now - REGISTRATION_WINDOW, per_source) >= per_source:
            return Boot(host=None, busy=True)
        if may_register is not None and not may_register():
            return Boot(host=None, busy=True)
        enrollment = enroll(tx, ident, rules()) if rules is not None and ident.macs else None
        host = register(tx, ident, initial_chain, "bootstrap", enrollment, address)
    else:
        host = learn(tx, host, ident, "bootstrap")
        host = refresh_facts(tx, host, ident)
    state = host.current
    if poll and (host.failed or state == states.NEW):
        tx.execute(_SEEN, {"host_id": host.id, "now": now})
        return Boot(host=host)
    note_unended_download(tx, host)
    bootid = new_bootid()
    seconds = deploy_timeout(state) if deploy_timeout and states.is_image(state) and not host.failed else 0
    deadline = now + timedelta(seconds=seconds) if seconds else None
    params = {"host_id": host.id, "bootid_hash": hash_bootid(bootid), "now": now,
              "deadline": deadline, "address": address}
    tx.execute(_BOOTED, params)
    record(tx, host.id, EventKind.BOOT, "bootstrap", host.state, host.state, ident.describe())
    return Boot(host=host, bootid=bootid, registered=registered, enrollment=enrollment)


# Compared against when the id names no host, so that a missing host costs what a wrong bootid does.
_NO_HASH = hash_bootid("")


# What /finish and /post-install check and change of the host's current boot, row-locked for the change
# (SQLite's writer lock is one already).
_BOOT_OF = select(_hosts.c.state, _hosts.c.bootid_hash, _hosts.c.boot_finished, _hosts.c.failed_at).where(
    _hosts.c.id == _HOST_ID).with_for_update()
_FINISHED = update(_hosts).where(_hosts.c.id == _HOST_ID).values(
    state=bindparam("state"), boot_finished=true(), deadline_at=null(), failed_at=null(), updated_at=bindparam("now"))
_POST_INSTALL_AT = update(_hosts).where(_hosts.c.id == _HOST_ID).values(post_install_at=bindparam("now"))


def booted_host(session: Session, host_id: int, bootid: str | None, lock: bool = False) -> Host:
    """The host of ``host_id`` if ``bootid`` is its current one (row-locked if asked); else Unauthorized.

    An id that no host has gets the same answer as a wrong bootid, so the boot
    network cannot learn which hosts exist by asking.
    """
    stmt = select(Host).where(Host.id == host_id)
    host = session.scalars(stmt.with_for_update() if lock else stmt).first()
    check_bootid(host.bootid_hash if host is not None else None, bootid)
    assert host is not None, "check_bootid refuses a missing host"
    return host


def note_unended_download(tx: Transaction, host: HostRecord) -> None:
    """Before a boot starts the count again: a history line for a download of the last boot that never ended.

    The end of a download writes its own line (``record_download``); a process that
    died while sending (killed, out of memory) wrote none, and its count (``download_sent``,
    written every few seconds or 10 %) is all that is left of how far the download got.
    """
    sent, size = host.download_sent, host.download_size
    if not size or sent >= size or host.last_boot_at is None:
        return
    if tx.execute(_DOWNLOAD_RECORDED, {"host_id": host.id, "kind": str(EventKind.DOWNLOAD),
                                       "since": host.last_boot_at}).fetchone() is not None:
        return
    record(tx, host.id, EventKind.DOWNLOAD, "images", host.state, host.state,
           f"at least {sent} of {size} bytes, then the server stopped sending: the process serving it ended "
           "before the download did")


def check_bootid(bootid_hash: str | None, bootid: str | None) -> str:
    """The bootid, checked: Unauthorized unless its hash is the host's ``bootid_hash`` (constant-time).

    One message for a wrong bootid, a host that never booted and no host at all (both: no hash).
    """
    if not bootid:
        raise Unauthorized("a valid bootid is required; it changes on every boot")
    expected = bootid_hash or _NO_HASH
    if not hmac.compare_digest(hash_bootid(bootid), expected) or expected is _NO_HASH:
        raise Unauthorized("wrong or outdated bootid; it changes on every boot")
    return bootid


def finish(tx: Transaction, host_id: int, bootid: str | None) -> tuple[str, str | None]:
    """Advance the chain for this boot; a retry with the same bootid advances nothing.

    Returns the host's chain after the call and the state it finished (None if
    this call advanced nothing). A late /finish of a boot flagged failed still
    counts: the machine did finish. Runs in ``Database.write_direct``, as boots do.
    """
    row = tx.execute(_BOOT_OF, {"host_id": host_id}).fetchone()
    check_bootid(row[1] if row is not None else None, bootid)
    chain, finished, failed_at = row[0], row[2], row[3]
    if finished:
        return chain, None
    before = states.parse_chain(chain)
    after = states.format_chain(states.after_finish(before))
    tx.execute(_FINISHED, {"host_id": host_id, "state": after, "now": utcnow()})
    late = "after its deadline" if failed_at else ""
    record(tx, host_id, EventKind.FINISH, "finish", states.format_chain(before), after, late)
    return after, states.current(before)


def download_host(session: Session, address: str, image: str) -> tuple[int, datetime] | None:
    """The host downloading ``image`` from ``address``, with the time of the boot it belongs to; None if none.

    The host whose last boot came from this address and whose current state is ``image``.
    """
    found = session.execute(
        select(Host.id, Host.state, Host.last_boot_at).where(Host.boot_address == address)
        .order_by(Host.last_boot_at.desc()).limit(1)
    ).first()
    if found is None or found.last_boot_at is None or states.current(states.parse_chain(found.state)) != image:
        return None
    return found.id, found.last_boot_at


def record_progress(session: Session, host_id: int, boot_at: datetime, sent: int, size: int) -> None:
    """How far the download of the boot at ``boot_at`` got; nothing if the host booted again meanwhile."""
    session.execute(update(Host).where(Host.id == host_id, Host.last_boot_at == boot_at)
                    .values(download_sent=sent, download_size=size))


def record_download(session: Session, address: str, image: str, name: str, sent: int, size: int,
                    seconds: float) -> int | None:
    """Record an image download in the history of the machine that booted from ``address`` into ``image``.

    The host whose last boot came from this address and whose current state is
    ``image``; None (nothing recorded) when no such host is known. Its progress
    gets the final count.
    """
    found = download_host(session, address, image)
    if found is None:
        return None
    host = get_host(session, found[0])
    host.download_sent, host.download_size = sent, size
    rate = sent / seconds / 1e6 if seconds > 0 else 0.0
    how = "" if sent == size else " (incomplete: the client went away)"
    detail = f"{name}: {sent} of {size} bytes in {seconds:.1f} s ({rate:.1f} MB/s) to {address}{how}"
    record(session, host.id, EventKind.DOWNLOAD, "images", host.state, host.state, detail)
    return host.id


def post_install(tx: Transaction, host_id: int, bootid: str | None,
                 script_of: Callable[[HostRecord], Rendered]) -> tuple[HostRecord, Rendered]:
    """The post-install script of this boot (``script_of`` the host), with a history line and the host's progress.

    The line names the template, so the script is made in the transaction: a
    script that fails to render leaves no line. Runs in ``Database.write_direct``.
    """
    row = tx.execute(_BOOT_OF, {"host_id": host_id}).fetchone()
    check_bootid(row[1] if row is not None else None, bootid)
    host = host_record(tx, host_id)
    script = script_of(host)
    tx.execute(_POST_INSTALL_AT, {"host_id": host_id, "now": utcnow()})
    record(tx, host_id, EventKind.POST_INSTALL, "post-install", host.state, host.state, f"template {script.template}")
    return host, script


def reported_metadata(stored: dict, documents: list[dict]) -> tuple[dict, list[str]]:
    """The metadata after a machine's report, and the reported keys left as they were (sorted).

    A machine adds metadata, it never changes it: a top-level key the host
    has already keeps its value, whoever set it (an operator's, an earlier
    report's), so a machine cannot replace what user-data is made of, such as
    ``ssh_authorized_keys``. What changes from one report to the next is a fact.
    """
    meta = dict(stored)
    for document in documents:
        meta.update({key: value for key, value in document.items() if key not in stored})
    kept = sorted({key for document in documents for key in document if key in stored})
    return meta, kept


def apply_update(session: Session, host_id: int, bootid: str | None, macs: list[str], documents: list[dict],
                 facts: dict[str, str | None] | None = None) -> Host:
    """In state ``discover``: add reported MACs, metadata keys the host lacks (``reported_metadata``) and facts.

    A fact reported as None is removed.
    """
    host = booted_host(session, host_id, bootid, lock=True)
    current = states.current(states.parse_chain(host.state))
    if current != states.DISCOVER:
        raise Conflict(f"/update is only accepted in state 'discover'; host {host.id} is in '{current}'")
    new_macs = [m for m in dict.fromkeys(macs) if m not in host.mac_list]
    check_mac_count(len(host.mac_list) + len(new_macs))
    meta, kept = reported_metadata(host.meta or {}, documents)
    check_metadata(meta)  # each document was checked on its own; the merge is bounded too
    known = dict(host.facts) if isinstance(host.facts, dict) else {}
    merged = {k: v for k, v in (known | (facts or {})).items() if v is not None}
    if len(merged) > MAX_FACTS:
        raise BadRequest(f"a host has at most {MAX_FACTS} facts; this report would give it {len(merged)}")
    if new_macs:
        owners = session.scalars(select(HostMac).where(HostMac.mac.in_(new_macs))).all()
        if owners:
            taken = ", ".join(f"{o.mac} (host {o.host_id})" for o in owners)
            raise Conflict(f"MAC already belongs to another host: {taken}")
        for mac in new_macs:
            host.macs.append(HostMac(mac=mac, position=len(host.macs)))
    changed = [k for k in meta if (host.meta or {}).get(k) != meta[k]]
    changed_facts = sorted(k for k in set(known) | set(merged) if known.get(k) != merged.get(k))
    host.meta = meta
    if changed_facts:
        host.facts = merged
    host.updated_at = utcnow()
    detail = " ".join([f"mac={m}" for m in new_macs] + [f"metadata.{k}" for k in sorted(changed)]
                      + [f"fact.{k}" for k in changed_facts])
    if kept:
        detail = f"{detail or 'nothing new'}; kept as set: " + " ".join(f"metadata.{k}" for k in kept)
    record(session, host.id, EventKind.UPDATE, "update", detail=detail or "nothing new")
    return host
