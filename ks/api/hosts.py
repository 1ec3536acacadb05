"""Hosts: list, get, patch, delete, history."""

from collections.abc import Mapping

from flask import Response, request

from ks.api import SOURCE, answer, body, bp, needs, require
from ks.boot import ignition, images, nocloud
from ks.core import selectors, states, vault
from ks.core.errors import BadRequest
from ks.core.identity import normalize_mac
from ks.core.roles import Action
from ks.core.values import is_decimal
from ks.fleet import machines, operations, present
from ks.fleet.change import UNCHANGED, HostChange
from ks.power import hosts as host_power
from ks.records.record import HostRecord
from ks.web import one, origin, runtime, step_aside, text

PATCH_FIELDS = {"hostname", "metadata", "state", "force", "bmc", "labels"}
MAX_LIMIT = 10_000


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not is_decimal(value) or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(value)


def _selector() -> selectors.Selector | None:
    """The ``selector`` parameter, parsed (BadSelector, a 400, names the position of a mistake)."""
    text = one("selector")
    return None if text is None else selectors.parse(text)


def _flag(name: str) -> bool:
    value = one(name)
    if value not in (None, "", "0", "1", "true", "false"):
        raise BadRequest(f"{name} must be 1 or 0 (true or false)")
    return value in ("1", "true")


@bp.get("/hosts")
@needs(Action.READ)
def list_hosts():
    """Hosts ordered by id; filters: state (current state), mac, serial, selector; paging: limit, offset."""
    limit = _int_arg("limit", 1000, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 2**62)
    state = request.args.get("state")
    if state is not None:
        states.parse_chain(state)
    selector = _selector()
    if selector is not None and (request.args.get("mac") or request.args.get("serial")):
        raise BadRequest("give either selector or mac/serial (a selector takes mac= and serial= terms)")
    with runtime().db.read() as session:
        if request.args.get("mac") or request.args.get("serial"):
            found = machines.find_by(session, mac=request.args.get("mac"), serial=request.args.get("serial"))
            wanted = state is None or states.current(states.parse_chain(found.state)) == state
            hosts = [HostRecord.of(found)] if wanted else []
            total, page = len(hosts), hosts[offset : offset + limit]
        else:  # one page read, however many hosts match
            total = machines.count_hosts(session, state=state, selector=selector)
            page = machines.list_hosts(session, state=state, selector=selector, limit=limit, offset=offset)
        documents = [h.document() for h in page]
    if request.args.get("power") == "1":
        step_aside()  # BMCs may take seconds to answer; boots go on meanwhile
        power = host_power.power_states(page, runtime().settings)
        for document in documents:
            document["power"] = power[document["id"]]
    return answer({"hosts": documents, "total": total, "limit": limit, "offset": offset})


@bp.get("/hosts/<ref>")
@needs(Action.READ)
def get_host(ref: str):
    """One host by id, MAC or unique hostname."""
    with runtime().db.read() as session:
        return answer(HostRecord.of(machines.resolve(session, ref)).document())


def parse_patch(document: dict, known_images: Mapping[str, str]) -> HostChange:
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
        metadata=document.get("metadata"), bmc=document.get("bmc", UNCHANGED), force=force,
        how_to_force=states.FORCE_IN_API, labels=document.get("labels"),
    )


@bp.patch("/hosts")
@needs(Action.OPERATE)
def patch_selected():
    """The same change for every host ``selector`` matches, all or nothing; ``dry_run=1`` changes nothing."""
    selector = _selector()
    if selector is None:
        raise BadRequest("selector is required, e.g. ?selector=rack%3D4 (to change every host: selector=id=*)")
    dry_run = _flag("dry_run")
    change = parse_patch(body(), images.catalog(runtime().settings.root))
    change.check_many()
    hosts = operations.change_selected(runtime().db, selector, change, SOURCE, vault.of(runtime().settings),
                                       dry_run=dry_run)
    return answer({"hosts": [h.document() for h in hosts], "total": len(hosts), "dry_run": dry_run})


@bp.patch("/hosts/<ref>")
@needs(Action.OPERATE)
def patch_host(ref: str):
    """Change hostname, metadata, state chain and BMC in one step: all or nothing."""
    change = parse_patch(body(), images.catalog(runtime().settings.root))
    require(change.needs)  # BMC credentials need an admin
    return answer(operations.change_host(runtime().db, ref, change, SOURCE, vault.of(runtime().settings)).document())


@bp.delete("/hosts/<ref>")
@needs(Action.ADMINISTER)
def delete_host(ref: str):
    """Delete a host; its id is never reused."""
    operations.change_host(runtime().db, ref, HostChange(delete=True), SOURCE)
    return "", 204


@bp.get("/hosts/<ref>/history")
@needs(Action.READ)
def host_history(ref: str):
    """The host's events, oldest first."""
    with runtime().db.read() as session:
        host = machines.resolve(session, ref)
        return answer({"host": host.id, "events": [present.event_dict(e) for e in machines.history(session, host.id)]})


# What a machine's first boot reads may carry credentials (a cluster's join token, a password
# hash): operators, who set up installs, may read it; viewers may not.
@bp.get("/hosts/<ref>/nocloud/<file>")
@needs(Action.OPERATE)
def host_nocloud(ref: str, file: str):
    """A file of the host's cloud-init NoCloud seed as its current boot reads it (text, not JSON)."""
    with runtime().db.read() as session:
        host = machines.resolve(session, ref)
        served = nocloud.serve(runtime().renderer, HostRecord.of(host), host.bootid_hash, file, origin())
    return text(served.text)


@bp.get("/hosts/<ref>/ignition")
@needs(Action.OPERATE)
def host_ignition(ref: str):
    """The host's Ignition config as its current boot reads it."""
    with runtime().db.read() as session:
        host = machines.resolve(session, ref)
        rendered = ignition.config(runtime().renderer, HostRecord.of(host), origin())
    return Response(rendered.text, mimetype="application/json")


def entry_ref(entry) -> str:
    """A host reference from a PXE Pilot host entry: {"name"} | {"macAddress"} | {"mac_address"}."""
    if isinstance(entry, dict) and len(entry) == 1:
        (key, value), = entry.items()
        if key == "name" and isinstance(value, str):
            return value
        if key in ("macAddress", "mac_address") and isinstance(value, str):
            return normalize_mac(value)
    raise BadRequest('each host must be one of {"name": ...}, {"macAddress": ...}, {"mac_address": ...}')
