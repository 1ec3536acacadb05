"""Hosts: list, get, patch, delete, history."""

from flask import request

from ks import images, machines, present, states, vault
from ks.api import SOURCE, answer, body, bp, needs, require
from ks.change import UNCHANGED, HostChange
from ks.errors import BadRequest
from ks.identity import normalize_mac
from ks.power import hosts as host_power
from ks.record import HostRecord
from ks.roles import Action
from ks.values import is_decimal
from ks.web import services, step_aside

PATCH_FIELDS = {"hostname", "metadata", "state", "force", "bmc"}
MAX_LIMIT = 10_000


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not is_decimal(value) or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(value)


@bp.get("/hosts")
@needs(Action.READ)
def list_hosts():
    """Hosts ordered by id; filters: state (current state), mac, serial; paging: limit, offset."""
    limit = _int_arg("limit", 1000, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 2**62)
    state = request.args.get("state")
    if state is not None:
        states.parse_chain(state)
    with services().db.read() as session:
        if request.args.get("mac") or request.args.get("serial"):
            found = machines.find_by(session, mac=request.args.get("mac"), serial=request.args.get("serial"))
            hosts = [HostRecord.of(found)] if state is None or states.current(states.parse_chain(found.state)) == state else []
        else:
            hosts = machines.list_hosts(session, state=state)
        page = hosts[offset : offset + limit]
        documents = [h.document() for h in page]
    if request.args.get("power") == "1":
        step_aside()  # BMCs may take seconds to answer; boots go on meanwhile
        found = host_power.power_states(page, services().settings)
        for document in documents:
            document["power"] = found[document["id"]]
    return answer({"hosts": documents, "total": len(hosts), "limit": limit, "offset": offset})


@bp.get("/hosts/<ref>")
@needs(Action.READ)
def get_host(ref: str):
    """One host by id, MAC or unique hostname."""
    with services().db.read() as session:
        return answer(HostRecord.of(machines.resolve(session, ref)).document())


def parse_patch(document: dict, known_images: set[str]) -> HostChange:
    """Validate a PATCH body completely before anything changes."""
    unknown = sorted(set(document) - PATCH_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; a host takes {', '.join(sorted(PATCH_FIELDS))}")
    force = document.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("force must be true or false")
    if "state" in document and document["state"] is None:
        raise BadRequest("state must be a chain like 'wipe,image1' or a list of state names")
    if "hostname" in document and not isinstance(document["hostname"], str):
        raise BadRequest("hostname must be a string")
    if "metadata" in document and not isinstance(document["metadata"], dict):
        raise BadRequest("metadata must be a JSON object")
    return HostChange.parse(
        known_images, state=document.get("state"), hostname=document.get("hostname"),
        metadata=document.get("metadata"), bmc=document.get("bmc", UNCHANGED), force=force, how_to_force='"force": true',
    )


@bp.patch("/hosts/<ref>")
@needs(Action.OPERATE)
def patch_host(ref: str):
    """Change hostname, metadata, state chain and BMC in one step: all or nothing."""
    change = parse_patch(body(), images.image_names(services().settings["ROOT"]))
    require(change.needs)  # BMC credentials need an admin

    def work(session):
        host = machines.resolve(session, ref)
        change.apply(session, host, SOURCE, vault.of(services().settings))
        session.flush()
        return HostRecord.of(host).document()

    return answer(services().db.write(work))


@bp.delete("/hosts/<ref>")
@needs(Action.ADMINISTER)
def delete_host(ref: str):
    """Delete a host; its id is never reused."""
    services().db.write(lambda session: machines.delete_host(session, machines.resolve(session, ref)))
    return "", 204


@bp.get("/hosts/<ref>/history")
@needs(Action.READ)
def host_history(ref: str):
    """The host's events, oldest first."""
    with services().db.read() as session:
        host = machines.resolve(session, ref)
        return answer({"host": host.id, "events": [present.event_dict(e) for e in machines.history(session, host.id)]})


def entry_ref(entry) -> str:
    """A host reference from a PXE Pilot host entry: {"name"} | {"macAddress"} | {"mac_address"}."""
    if isinstance(entry, dict) and len(entry) == 1:
        (key, value), = entry.items()
        if key == "name" and isinstance(value, str):
            return value
        if key in ("macAddress", "mac_address") and isinstance(value, str):
            return normalize_mac(value)
    raise BadRequest('each host must be one of {"name": ...}, {"macAddress": ...}, {"mac_address": ...}')
