"""The boot side: endpoints that iPXE and installed systems call (SPEC §4).

Views parse, hand one unit of work to the database, render, and answer.
Checks run in a fixed order: the id (400), the bootid (401, also for an id that no host has:
the boot network learns nothing of which hosts exist), the state (409).
"""

import logging
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from ks.boot import booting, files, ignition, images, loaders, nocloud, render
from ks.core import progress, states
from ks.core.errors import BadRequest, Forbidden, Unavailable, UnsupportedMediaType
from ks.core.identity import (
    MAX_FACTS,
    MAX_MACS,
    check_fact_key,
    normalize_fact,
    normalize_mac,
    parse_boot_args,
)
from ks.fleet import machines, present
from ks.records import events
from ks.records.events import EventKind
from ks.records.record import HostRecord
from ks.web import LISTENER, TFTP, one, origin, parse_id, parse_json_object, runtime, step_aside, text

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__)

UPDATE_FIELDS = {"mac", "metadata"}
FACT_FIELD = "fact."  # fact.KEY=value: a fact the discover image reports
CONFLICT_MESSAGE = ("the identifiers of this machine point at more than one host, or at a host that has none of "
                    "its MACs; the server's log and the hosts' histories name them")
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}
REGISTRATIONS_BUSY = "too many new machines in the last minute, this one is not registered yet."


@bp.get("/bootstrap.ipxe")
def bootstrap_ipxe():
    """iPXE's first script: it collects the machine's identity and asks /bootstrap."""
    return text(render.plain_script(runtime().renderer, "bootstrap", origin()).text)


@bp.get("/bootstrap.grub")
def bootstrap_grub():
    """GRUB's first configuration (its grub/grub.cfg over TFTP): it asks /bootstrap, and again while it waits."""
    return text(render.plain_script(runtime().renderer, "bootstrap", origin(), loaders.GRUB).text)


@bp.get("/bootstrap")
def bootstrap():
    """Identify or register the machine, rotate its bootid, answer its state's script in its loader's language."""
    ks = runtime()
    loader = loaders.named(one("loader"))
    ident = parse_boot_args(request.args.to_dict(flat=False))
    if not ident.macs:
        raise BadRequest("no MAC given (net0=...); boot through /bootstrap.ipxe, which sends them")
    poll = one("poll") == "1"
    where = origin()
    initial = states.parse_chain(ks.settings.initial_chain)
    try:
        outcome = ks.db.write_direct(
            lambda tx: booting.boot(tx, ident, initial, poll=poll, deploy_timeout=ks.deploy_timeout,
                                     may_register=ks.registrations.take, address=request.remote_addr,
                                     rules=ks.rules.current, per_source=ks.settings.registrations_per_source)
        )
    except Unavailable as exc:
        # Nothing was written: the machine asks again, with everything it sent, until the database takes it.
        again = f"{where.base_url}/bootstrap?{urlencode(list(request.args.items(multi=True)))}"
        return text(render.plain_script(ks.renderer, "busy", where, loader, poll_url=again, reason=str(exc)).text)
    url = loader.poll_url(where.base_url, ident)
    if outcome.busy:
        return text(render.plain_script(ks.renderer, "busy", where, loader, poll_url=url,
                                        reason=REGISTRATIONS_BUSY).text)
    if outcome.conflict:
        if not poll:
            log.warning(
                "conflict: %s", outcome.conflict, extra={"event": "conflict", "host_ids": outcome.conflict.host_ids}
            )
            ks.metrics.conflicts.inc()
        # The boot network learns no host ids from a conflict unless the site lists hosts publicly.
        message = str(outcome.conflict) if ks.settings.public_hosts else CONFLICT_MESSAGE
        return text(render.plain_script(ks.renderer, "conflict", where, loader, message=message, poll_url=url).text)
    host = outcome.host
    if host is None:  # neither busy nor a conflict: booting.boot found or registered the machine
        raise RuntimeError("the boot path returned no host")
    chain = host.chain
    if host.failed:
        script = render.failed_script(ks.renderer, host, chain, where, poll_url=url, loader=loader)
    else:
        script = render.host_script(ks.renderer, host, chain, outcome.bootid or "", where, poll_url=url,
                                    loader=loader)
    if outcome.bootid:  # polls of a waiting machine are not boot decisions
        state = states.current(chain)
        enrolled = outcome.enrollment
        note = " (failed, waits for a retry)" if host.failed else ""
        if outcome.registered:
            note = f" (new machine, rule {enrolled.rule} seq {enrolled.seq})" if enrolled else " (new machine)"
        log.info(
            "boot host=%d state=%s template=%s%s", host.id, state, script.template, note,
            extra={"event": "boot", "host_id": host.id, "state": state, "template": script.template,
                   "loader": loader.name,
                   "registered": outcome.registered, "failed": host.failed,
                   **({"rule": enrolled.rule, "seq": enrolled.seq} if enrolled else {})},
        )
        if states.is_image(state) and not host.failed and (reason := images.unbootable(ks.settings.root, state)):
            log.error("host %d boots into state %s, which cannot boot: %s; it reboots and asks again until its "
                      "chain changes", host.id, state, reason,
                      extra={"event": "unbootable", "host_id": host.id, "state": state})
        if enrolled and enrolled.problem:
            log.warning("host %d enrolled by rule %s: %s; its hostname stays %s", host.id, enrolled.rule,
                        enrolled.problem, host.hostname, extra={"event": "rules", "host_id": host.id})
        ks.metrics.boots.labels(state=state).inc()
        if outcome.registered:
            ks.metrics.registrations.inc()
    return text(script.text)


@bp.get("/post-install")
def post_install():
    """The post-install script of the machine's current state."""
    ks = runtime()
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    where = origin()
    host, script = ks.db.write_direct(lambda tx: booting.post_install(
        tx, host_id, bootid,
        lambda record: render.post_install_script(ks.renderer, record, record.chain, bootid or "", where)))
    state = host.current
    log.info(
        "post-install host=%d state=%s template=%s", host.id, state, script.template,
        extra={"event": "post-install", "host_id": host.id, "state": state, "template": script.template},
    )
    return text(script.text)


def _current_boot(host_id: str, bootid: str) -> tuple[HostRecord, str | None]:
    """The host of ``host_id`` and its bootid's hash, if ``bootid`` is its current one (400, 401 otherwise)."""
    number = parse_id(host_id)
    with runtime().db.read() as session:
        host = booting.booted_host(session, number, bootid)
        return HostRecord.of(host), host.bootid_hash


@bp.get("/nocloud/<host_id>/<bootid>/<name>")
def nocloud_file(host_id: str, bootid: str, name: str):
    """A file of the machine's cloud-init NoCloud seed, for its current boot only (see ks.boot.nocloud)."""
    ks = runtime()
    record, bootid_hash = _current_boot(host_id, bootid)
    served = nocloud.serve(ks.renderer, record, bootid_hash, name, origin())
    if name == "user-data":  # once per boot, unless cloud-init is run again by hand
        chain = record.state
        ks.db.write(lambda session: events.record(session, record.id, EventKind.NOCLOUD, "nocloud", chain, chain,
                                                    f"user-data from {served.template}"))
    log.info(
        "nocloud host=%d state=%s file=%s template=%s", record.id, record.current, name, served.template or "-",
        extra={"event": "nocloud", "host_id": record.id, "state": record.current, "file": name,
               "template": served.template},
    )
    return text(served.text)


@bp.get(f"/ignition/<host_id>/<bootid>/{images.IGNITION_FILE}")
def ignition_config(host_id: str, bootid: str):
    """The machine's Ignition config, for its current boot only (see ks.boot.ignition)."""
    ks = runtime()
    record, _ = _current_boot(host_id, bootid)
    rendered = ignition.config(ks.renderer, record, origin())
    chain = record.state
    ks.db.write(lambda session: events.record(session, record.id, EventKind.IGNITION, "ignition", chain, chain,
                                                f"config from {rendered.template}"))
    log.info(
        "ignition host=%d state=%s template=%s", record.id, record.current, rendered.template,
        extra={"event": "ignition", "host_id": record.id, "state": record.current, "template": rendered.template},
    )
    return Response(rendered.text, mimetype="application/json")


@bp.get("/finish")
def finish():
    """Advance the machine's chain once for this boot."""
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    chain, finished = runtime().db.write_direct(lambda tx: booting.finish(tx, host_id, bootid))
    if finished:
        log.info(
            "finish host=%d state=%s now=%s", host_id, finished, chain,
            extra={"event": "finish", "host_id": host_id, "state": finished, "chain": chain},
        )
        runtime().metrics.finishes.labels(state=finished).inc()
        return text(f"host {host_id} finished its step; next state: {chain}\n")
    return text(f"host {host_id} already finished this boot; state: {chain}\n")


@bp.get("/state")
def state():
    """The machine's current state, one line; needs its bootid unless the site lists hosts publicly."""
    ks = runtime()
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    with ks.db.read() as session:
        # A public listing names every host anyway; otherwise an unknown id answers as a wrong bootid does.
        host = (machines.get_host(session, host_id) if ks.settings.public_hosts
                else booting.booted_host(session, host_id, bootid))
        return text(states.current(states.parse_chain(host.state)) + "\n")


@bp.post("/update")
def update():
    """In state ``discover``: add MACs, merge metadata and facts the machine reports."""
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    if request.mimetype not in FORM_TYPES and (request.content_length or request.mimetype):
        # Anything else would read as an empty form: "updated", with nothing stored.
        raise UnsupportedMediaType(
            f"/update takes a form body (application/x-www-form-urlencoded or multipart/form-data) with "
            f"mac=, metadata=<JSON object> and fact.KEY=, not {request.mimetype or 'a body without Content-Type'}"
        )
    sent = request.get_data(cache=True)  # kept for the form parser below
    if sent and not request.form:
        # Werkzeug drops a form it cannot decode; a silent "updated" would store nothing.
        raise BadRequest("the form body could not be read; send UTF-8, percent-encoded as a browser or curl does")
    unknown = sorted(key for key in set(request.form) - UPDATE_FIELDS if not key.startswith(FACT_FIELD))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:40]!r}; /update takes mac=, metadata= and fact.KEY=")
    if len(request.form.getlist("mac")) > MAX_MACS:
        raise BadRequest(f"a host has at most {MAX_MACS} MAC addresses; this request gives more")
    macs = [normalize_mac(m) for m in request.form.getlist("mac")]
    documents = [parse_json_object(m) for m in request.form.getlist("metadata")]
    facts = _reported_facts()
    host = runtime().db.write(lambda session: booting.apply_update(session, host_id, bootid, macs, documents, facts))
    log.info("update host=%d macs=%d metadata=%d facts=%d", host.id, len(macs), len(documents), len(facts))
    return text(f"host {host.id} updated\n")


def _reported_facts() -> dict[str, str | None]:
    """The form's ``fact.KEY=value`` fields, checked; a placeholder or empty value (None) removes the fact."""
    fields = [key for key in request.form if key.startswith(FACT_FIELD)]
    if len(fields) > MAX_FACTS:
        raise BadRequest(f"a host has at most {MAX_FACTS} facts; this request gives {len(fields)}")
    facts: dict[str, str | None] = {}
    for field in fields:
        key = check_fact_key(field[len(FACT_FIELD):])
        facts[key] = normalize_fact(key, one(field, request.form) or "")
    return facts


@bp.get("/hosts")
def hosts():
    """All hosts as the original's text table (no bootids, no MACs), if the site lists them publicly."""
    if not runtime().settings.public_hosts:
        raise Forbidden(
            "this server does not list its hosts (the listing shows every serial); "
            "`edit-host -l` on the server does, and `kiwispray serve --public-hosts` turns the listing on"
        )
    with runtime().db.read() as session:
        return text(present.hosts_table(machines.list_hosts(session)))


@bp.route("/images/<path:relpath>", methods=["GET", "HEAD"])
def image_file(relpath: str):
    """Files of image directories: zero-copy, with Range, HEAD and conditional requests."""
    settings = runtime().settings
    path = images.resolve_file(settings.root, relpath)
    if settings.x_accel_redirect and request.environ.get(LISTENER) != TFTP:  # nginx speaks no TFTP
        relative = path.relative_to(images.images_dir(settings.root).resolve())
        return files.accel_redirect(settings.x_accel_redirect, relative.as_posix())
    step_aside()  # what is left is sending the file, for as long as the machine takes
    return files.send(request.environ, path, settings.send_timeout, on_close=_download_recorder(relpath),
                      track=_progress_tracker(relpath))


@bp.route("/boot-files/<name>", methods=["GET", "HEAD"])
def boot_file(name: str):
    """An EFI boot file by name (shim, GRUB, iPXE's .efi): what UEFI HTTP Boot and TFTP clients start with."""
    settings = runtime().settings
    path = images.resolve_boot_file(settings.boot_files, name)
    step_aside()
    return files.send(request.environ, path, settings.send_timeout)


def _disk_of(relpath: str) -> tuple[str, str] | None:
    """(image, file name) when ``relpath`` is an image's disk (``<image>/<P>.xz``) and the client has an address.

    Only the disk: an initrd compressed with xz (``pxeboot.initrd.xz``) ends in ``.xz`` too, and is
    neither a download of the image worth a history line nor worth giving up zero-copy for.
    """
    image, _, name = relpath.partition("/")
    if not name.endswith(".xz") or "/" in name or not request.remote_addr:
        return None
    found = images.load(runtime().settings.root, image)
    if found is None or found.disk != name:
        return None
    return image, name


def _progress_tracker(relpath: str):
    """For an image's disk: what, given its size, counts the bytes sent to the machine that booted into the image.

    Tracked downloads are read and sent in chunks (see ``ks.boot.files.Window``), so that the
    count is known while it runs; a download no booted machine is known for stays zero-copy.
    """
    disk = _disk_of(relpath)
    if disk is None:
        return None
    address, db = request.remote_addr or "", runtime().db

    def track(size: int):
        try:
            with db.read() as session:
                found = booting.download_host(session, address, disk[0])
        except Unavailable:  # the database reports it, once a while
            return None
        except Exception:  # counting is a courtesy: the file is sent either way
            log.exception("could not look up the machine downloading %s from %s", relpath, address)
            return None
        if found is None:
            return None
        host_id, boot_at = found

        def write(sent: int) -> None:
            try:
                db.write(lambda session: booting.record_progress(session, host_id, boot_at, sent, size))
            except Unavailable:
                pass
            except Exception:
                log.exception("could not record the progress of host %d", host_id)

        return progress.Throttle(size, write)

    return track


def _download_recorder(relpath: str):
    """For an image's disk (``<image>/<P>.xz``): what records its download in the machine's history."""
    disk = _disk_of(relpath)
    if disk is None:
        return None
    (image, name), address = disk, request.remote_addr or ""
    db = runtime().db

    def recorded(sent: int, size: int, seconds: float) -> None:
        try:
            host_id = db.write(
                lambda session: booting.record_download(session, address, image, name, sent, size, seconds)
            )
        except Unavailable:
            return
        except Exception:  # the file is sent; a failed note about it must not fail the request
            log.exception("could not record the download of %s by %s", relpath, address)
            return
        if host_id is not None:
            log.info("download host=%d image=%s file=%s bytes=%d/%d seconds=%.1f", host_id, image, name, sent, size,
                     seconds, extra={"event": "download", "host_id": host_id, "image": image, "file": name,
                                     "bytes": sent, "size": size, "seconds": round(seconds, 3)})

    return recorded
