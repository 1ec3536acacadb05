"""Import the original KIWIspray's ``known_hosts.json``, keeping ids and bootids.

The original kept a JSON list of objects with the fields id, hostname, macs
(upper-case, space-separated), serial, uuid, state, metadata and bootid. All
records are checked before anything is written: an invalid record or one that
collides with a host already in the database imports nothing.
"""

import json
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ks.boot import booting
from ks.core import states
from ks.core.errors import BadRequest, Conflict, KSError
from ks.core.identity import normalize_mac, normalize_serial, normalize_uuid
from ks.core.values import check_metadata, check_text
from ks.fleet import machines
from ks.records import events
from ks.records.events import EventKind
from ks.records.models import Host, HostMac


def read(path: Path) -> list[dict]:
    """Parse and validate the file; BadRequest names the first bad record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, list):
        raise BadRequest(f"{path} must hold a JSON list of hosts, as the original KIWIspray wrote it")
    records: list[dict] = []
    seen_ids: set[int] = set()
    seen_macs: set[str] = set()
    for index, raw in enumerate(data):
        try:
            record = _record(raw)
        except KSError as exc:
            raise BadRequest(f"record {index + 1} (id {_id_of(raw)}): {exc}") from None
        if record["id"] in seen_ids:
            raise BadRequest(f"record {index + 1}: id {record['id']} appears twice")
        dup = seen_macs.intersection(record["macs"])
        if dup:
            raise BadRequest(f"record {index + 1}: MAC {sorted(dup)[0]} belongs to two records")
        seen_ids.add(record["id"])
        seen_macs.update(record["macs"])
        records.append(record)
    return records


def _id_of(raw) -> str:
    return str(raw.get("id", "?")) if isinstance(raw, dict) else "?"


def _record(raw) -> dict:
    if not isinstance(raw, dict):
        raise BadRequest("not a JSON object")
    host_id = raw.get("id")
    if not isinstance(host_id, int) or isinstance(host_id, bool) or host_id < 1:
        raise BadRequest("id must be a positive integer")
    metadata = check_metadata(raw.get("metadata") or {})
    macs = list(dict.fromkeys(normalize_mac(m) for m in str(raw.get("macs") or "").split()))
    machines.check_mac_count(len(macs))
    bootid = raw.get("bootid")
    return {
        "id": host_id,
        "hostname": check_text("hostname", str(raw.get("hostname") or "not-set"), 255, spaces=False),
        "macs": macs,
        "serial": normalize_serial(str(raw.get("serial") or "")),
        "uuid": normalize_uuid(str(raw.get("uuid") or "")),
        "state": states.format_chain(states.parse_chain(str(raw.get("state") or "new"))),
        "metadata": metadata,
        "bootid_hash": booting.hash_bootid(bootid) if isinstance(bootid, str) and bootid else None,
    }


def import_hosts(session: Session, records: list[dict], dry_run: bool = False) -> list[int]:
    """Insert the records with their ids; Conflict if any collides with an existing host."""
    _check_collisions(session, records)
    if dry_run:
        return [r["id"] for r in records]
    for r in records:
        host = Host(
            id=r["id"], hostname=r["hostname"], serial=r["serial"], uuid=r["uuid"], state=r["state"],
            meta=r["metadata"], bootid_hash=r["bootid_hash"], boot_finished=False,
        )
        host.macs = [HostMac(mac=m, position=i) for i, m in enumerate(r["macs"])]
        session.add(host)
        session.flush()
        events.record(session, host.id, EventKind.IMPORT, "cli", None, host.state, "imported from known_hosts.json")
    if session.get_bind().dialect.name == "postgresql":
        # Explicit ids do not advance the sequence; new hosts must continue after them.
        session.execute(text("SELECT setval(pg_get_serial_sequence('hosts', 'id'), (SELECT max(id) FROM hosts))"))
    return [r["id"] for r in records]


def _check_collisions(session: Session, records: list[dict]) -> None:
    ids = [r["id"] for r in records]
    taken = session.scalars(select(Host.id).where(Host.id.in_(ids))).all()
    if taken:
        raise Conflict(f"host ids already in the database: {', '.join(map(str, sorted(taken)[:10]))}")
    macs = [m for r in records for m in r["macs"]]
    owned = session.scalars(select(HostMac.mac).where(HostMac.mac.in_(macs))).all() if macs else []
    if owned:
        raise Conflict(f"MACs already belong to hosts in the database: {', '.join(sorted(owned)[:10])}")
    for attr in ("serial", "uuid"):
        values = [r[attr] for r in records if r[attr]]
        if len(values) != len(set(values)):
            raise Conflict(f"two records share a {attr}; fix known_hosts.json first")
        column = getattr(Host, attr)
        clash = session.scalars(select(column).where(column.in_(values))).all() if values else []
        if clash:
            raise Conflict(f"{attr} already in the database: {', '.join(sorted(clash)[:10])}")
