"""PXE Pilot's REST API, so that its client (``pxe-pilot``) and its users' scripts work unchanged.

An adapter at the edge: PXE Pilot's paths (0.4.0's under ``/v1``, and its first
releases' without), shapes, status codes and ``{"Message": ...}`` errors, over
KIWIspray's hosts, states, deploys (``ks.fleet.deploys``) and power (``ks.power.hosts``).
PXE Pilot's configuration ``local`` (boot from disk) is the state ``finished``; a
host in ``new`` has no configuration (``null``). Served only with
``KS_PXEPILOT_API`` on (``ks.app`` registers the blueprint).

Who may call it (docs/pxepilot.md): everything but the healthcheck needs an API
token, given as ``Authorization: Bearer <token>`` or as Basic auth's password
(``http://pxepilot:<token>@server:5000``, which PXE Pilot's client sends from its
``--server`` URL). Without a token one call is accepted: a deploy of ``local`` to
hosts that each last booted from the address asking, which is what an installed
system's post-install script sends to end its reinstall loop.
"""

import base64
import binascii
import json
from collections.abc import Callable

from flask import Blueprint, Response, g, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from ks import power
from ks.api import require, sign_in
from ks.core import states
from ks.core.errors import BadRequest, Conflict, Forbidden, KSError, NotFound, Unauthorized
from ks.core.identity import MacError, normalize_mac
from ks.core.roles import Action
from ks.core.values import load_json_object
from ks.fleet import deploys, machines, operations
from ks.power import hosts as host_power
from ks.records.models import Host
from ks.records.record import HostRecord
from ks.web import ADMIN, LISTENER, runtime, step_aside

bp = Blueprint("pxepilot", __name__)
LOCAL = "local"  # PXE Pilot's configuration that boots the local disk
SOURCE = "pxepilot"  # how the history records changes made here
PREFIXES = ("/healthcheck", "/configurations", "/hosts", "/discovery")
PUBLIC = {"pxepilot.healthcheck"}
POWER = {"on": "On", "off": "Off"}  # PXE Pilot's words for the chassis power state; anything else is Unknown


def serves(path: str) -> bool:
    """Whether ``path`` is one of PXE Pilot's (with or without ``/v1``)."""
    path = path.removeprefix("/v1")
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


def route(rule: str, method: str) -> Callable:
    """A view at ``rule`` and at ``/v1`` + ``rule``: PXE Pilot 0.4.0's paths, and its first releases'."""

    def register(view: Callable) -> Callable:
        bp.add_url_rule(rule, view_func=view, methods=[method])
        bp.add_url_rule("/v1" + rule, view_func=view, methods=[method])
        return view

    return register


def message(text: str, status: int) -> Response:
    """PXE Pilot's error body: ``{"Message": ...}``, which its client prints."""
    return Response(json.dumps({"Message": text}) + "\n", status=status, mimetype="application/json")


def answer(document) -> Response:
    return Response(json.dumps(document, indent=1) + "\n", status=200, mimetype="application/json")


def presented_token() -> str | None:
    """``Authorization: Bearer <token>``, or Basic auth with the token as password (any user name)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


@bp.before_request
def authenticate():
    """A live token for every route but the healthcheck; the deploy view decides about a call without one."""
    if request.endpoint in PUBLIC:
        return None
    token = presented_token()
    settings = runtime().settings
    if token is not None and settings.admin_port and request.environ.get(LISTENER) != ADMIN:
        raise Forbidden(f"send API tokens over HTTPS to port {settings.admin_port}; this port takes no token "
                        "(revoke one sent here: `kiwispray token revoke NAME`)")
    if sign_in(token):
        return None
    if token is None and request.endpoint == "pxepilot.deploy":
        g.token_role = None  # a machine's own 'local' deploy, checked by the view
        return None
    raise Unauthorized("a valid API token is required: Authorization: Bearer <token>, or the token as the "
                       "password of the server URL (http://pxepilot:<token>@server:5000); kiwispray token create NAME")


@bp.errorhandler(KSError)
def ks_error(exc: KSError):
    response = message(str(exc), exc.status)
    response.headers.update(exc.headers())
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return message(exc.description or exc.name, exc.code or 500)


def configuration_of(state: str) -> str:
    """PXE Pilot's name of a state."""
    return LOCAL if state == states.FINISHED else state


def state_of(configuration: str) -> str:
    """The state a PXE Pilot configuration names."""
    return states.FINISHED if configuration == LOCAL else configuration


@route("/healthcheck", "GET")
def healthcheck():
    return "", 204


@route("/configurations", "GET")
def list_configurations():
    """A bare array ``[{"name": ...}]`` of the images and ``local``, sorted (PXE Pilot lists a directory)."""
    require(Action.READ)
    names = [configuration_of(c["name"]) for c in deploys.configurations(runtime().settings.root)]
    return answer([{"name": name} for name in sorted(names) if name != states.NEW])


def host_document(host: HostRecord, power_state: str | None) -> dict:
    """PXE Pilot's host: name, macAddresses, configuration (null in ``new``), ipmi (null without a BMC)."""
    current = states.current(states.stored_chain(host.state))
    ipmi = None
    if host.bmc_address:
        try:
            bmc = power.parse_bmc_address(host.bmc_address)
            mac, where, scheme = bmc.mac or "", "" if bmc.mac else bmc.host, bmc.scheme
        except KSError:  # stored before a stricter parser: shown without its parts
            mac, where, scheme = "", "", ""
        ipmi = {"macAddress": mac, "username": host.bmc_username or "", "password": "",
                "interface": "lanplus" if scheme == "ipmi" else scheme,
                "status": POWER.get(power_state or "", "Unknown"), "hostname": where, "subnet": ""}
    return {"name": host.hostname, "macAddresses": list(host.macs),
            "configuration": None if current == states.NEW else {"name": configuration_of(current)}, "ipmi": ipmi}


@route("/hosts", "GET")
def list_hosts():
    """A bare array of every host, with the power state of those with a BMC (queried in parallel)."""
    require(Action.READ)
    ks = runtime()
    with ks.db.read() as session:
        hosts = machines.list_hosts(session)
    step_aside()  # BMCs may take seconds to answer; boots go on meanwhile
    power_states = host_power.power_states(hosts, ks.settings)
    return answer([host_document(h, power_states[h.id]) for h in hosts])


def parse_entries(data: bytes) -> list[tuple[str, str]]:
    """``{"hosts": [{"name", "macAddress", "configuration"}]}`` as (name, MAC) pairs, whatever the Content-Type.

    As PXE Pilot's server (Go's JSON decoding) reads it: field names in any case,
    unknown fields and empty strings ignored, ``"hosts": null`` or none at all an
    empty list. README's ``mac_address`` counts as ``macAddress``.
    """
    document = load_json_object(data or b"null", "the body", ' like {"hosts": [{"name": "h1"}]}')
    fields = {key.lower(): value for key, value in document.items()}
    entries = fields.get("hosts")
    if entries is None:
        return []
    if not isinstance(entries, list) or len(entries) > deploys.MAX_DEPLOY_HOSTS:
        raise BadRequest(f"hosts must be a list of at most {deploys.MAX_DEPLOY_HOSTS} hosts like "
                         '[{"name": "h1"}, {"macAddress": "00:00:00:00:00:01"}]')
    pairs = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise BadRequest('each host must be an object like {"name": "h1"} or {"macAddress": "00:00:00:00:00:01"}')
        given = {key.lower().replace("_", ""): value for key, value in entry.items()}
        name, mac, configuration = (given.get(key) or "" for key in ("name", "macaddress", "configuration"))
        if not all(isinstance(value, str) for value in (name, mac, configuration)):
            raise BadRequest("name, macAddress and configuration of a host must be strings")
        if configuration:
            raise Conflict("Configuration attribute for a host in this context is not allowed")
        if not name and not mac:
            raise BadRequest("Either Name or MACAddress must be provided for each Host")
        pairs.append((name, mac.strip().lower()))
    return pairs


def by_mac(session: Session, mac: str) -> Host | None:
    """The host owning ``mac``; None for a MAC no host has, a malformed one too (PXE Pilot: not declared)."""
    try:
        return machines.find_by(session, mac=normalize_mac(mac))
    except (MacError, NotFound):
        return None


def chosen_hosts(session: Session, pairs: list[tuple[str, str]]) -> list[Host]:
    """The host of each (name, MAC), as PXE Pilot decides: a MAC must be the named host's, no host twice."""
    chosen: list[Host] = []
    for name, mac in pairs:
        owner = by_mac(session, mac) if mac else None
        if not name:
            if owner is None:
                raise NotFound(f"No host declared with MAC address <{mac[:64]}>")
            host = owner
        else:
            try:
                host = machines.resolve(session, name)
            except NotFound:
                raise NotFound(f"No host declared for name <{name[:64]}>") from None
            if mac and owner is None:
                raise Conflict(f"MAC address <{mac[:64]}> does not match host <{name[:64]}>")
            if owner is not None and owner.id != host.id:
                raise Conflict(f"Host <{name[:64]}> does not match MAC address <{mac}>")
        if host in chosen:
            raise Conflict(f"Host <{host.hostname}> appears several times in query")
        chosen.append(host)
    return chosen


@route("/configurations/<name>/deploy", "PUT")
def deploy(name: str):
    """Give the hosts the configuration, all or nothing: 200 (the only success PXE Pilot's client knows)."""
    ks = runtime()
    state = state_of(name)
    if g.token_role is not None:
        require(Action.OPERATE)
        if state not in {c["name"] for c in deploys.configurations(ks.settings.root)}:
            raise NotFound(f"Configuration '{name[:64]}' does not exists")
    elif state != states.FINISHED:
        raise Unauthorized(f"deploying {name[:64]!r} needs an API token; without one a machine may only deploy "
                           f"'{LOCAL}' to itself")
    pairs = parse_entries(request.get_data(cache=True))
    try:
        with ks.db.read() as session:
            hosts = chosen_hosts(session, pairs)
            own = all(host.boot_address == request.remote_addr for host in hosts)
            host_ids = [str(host.id) for host in hosts]
    except KSError:
        if g.token_role is None:  # without a token, nothing tells which hosts exist
            raise own_machine_only() from None
        raise
    if g.token_role is None and not own:
        raise own_machine_only()
    operations.deploy(ks.db, ks.settings.root, state, host_ids, SOURCE)
    done = Response(status=200)
    done.headers.pop("Content-Type", None)  # as PXE Pilot: a status, no body
    return done


def own_machine_only() -> Unauthorized:
    return Unauthorized(f"without an API token a machine may deploy '{LOCAL}' only to itself, from the address "
                        "it last booted from")


@route("/hosts/<name>/reboot", "PATCH")
def reboot(name: str):
    """Power-cycle the host through its BMC: 204, 404 for an unknown host, 409 when it did not work."""
    require(Action.OPERATE)
    ks = runtime()
    host_id = operations.resolve_id(ks.db, name)
    step_aside()
    failures = operations.power_many(ks.db, [host_id], "cycle", SOURCE, ks.settings)
    if failures:
        raise Conflict(f"Reboot host '{name[:64]}' : {failures[0][1]}")
    return "", 204


@route("/discovery", "PATCH")
def discovery():
    """Sweep KS_BMC_SUBNETS so that BMCs given by MAC are found: 204, 409 without subnets."""
    require(Action.OPERATE)
    ks = runtime()
    step_aside()
    operations.discover(ks.db, ks.settings, sweep=True)
    return "", 204
