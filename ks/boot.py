"""The boot side: endpoints that iPXE and installed systems call (SPEC §4).

Views parse, hand one unit of work to the database, render, and answer.
Checks run in a fixed order: the id (400/404), the bootid (401), the state (409).
"""

import logging
from urllib.parse import urlencode

from flask import Blueprint, request

from ks import booting, files, images, machines, metrics, present, progress, render, states
from ks.errors import BadRequest, Forbidden, UnsupportedMediaType
from ks.identity import MAX_MACS, Identity, normalize_mac, parse_boot_args
from ks.record import HostRecord
from ks.web import one, parse_id, parse_json_object, services, site, step_aside, text

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__)

UPDATE_FIELDS = {"mac", "metadata"}
CONFLICT_MESSAGE = ("the identifiers of this machine point at more than one host, or at a host that has none of "
                    "its MACs; the server's log and the hosts' histories name them")
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


@bp.get("/bootstrap.ipxe")
def bootstrap_ipxe():
    """The chain script that collects a machine's identity."""
    return text(render.plain_script(services().renderer, "bootstrap.ipxe", site()).text)


def poll_url(base_url: str, ident: Identity) -> str:
    """The /bootstrap URL a waiting machine polls, rebuilt from normalised values."""
    query = {f"net{i}": mac.replace(":", "-") for i, mac in enumerate(ident.macs)}
    query.update({k: v for k, v in (("serial", ident.serial), ("uuid", ident.uuid)) if v})
    query["poll"] = "1"
    return f"{base_url}/bootstrap?{urlencode(query)}"


@bp.get("/bootstrap")
def bootstrap():
    """Identify or register the machine, rotate its bootid, answer its state's script."""
    ks = services()
    ident = parse_boot_args(request.args.to_dict(flat=False))
    if not ident.macs:
        raise BadRequest("no MAC given (net0=...); boot through /bootstrap.ipxe, which sends them")
    poll = one("poll") == "1"
    where = site()
    initial = states.parse_chain(ks.settings["INITIAL_CHAIN"])
    outcome = ks.db.write_direct(
        lambda tx: booting.boot(tx, ident, initial, poll=poll, deploy_timeout=ks.deploy_timeout,
                                 may_register=ks.registrations.take, address=request.remote_addr)
    )
    url = poll_url(where.base_url, ident)
    if outcome.busy:
        return text(render.plain_script(ks.renderer, "busy", where, poll_url=url).text)
    if outcome.conflict:
        if not poll:
            log.warning("conflict: %s", outcome.conflict, extra={"event": "conflict", "host_ids": outcome.conflict.host_ids})
            metrics.CONFLICTS.inc()
        # The boot network learns no host ids from a conflict unless the site lists hosts publicly.
        message = str(outcome.conflict) if ks.settings["PUBLIC_HOSTS"] else CONFLICT_MESSAGE
        return text(render.plain_script(ks.renderer, "conflict", where, message=message, poll_url=url).text)
    host, chain = outcome.host, outcome.chain
    if host.failed:
        script = render.failed_script(ks.renderer, host, chain, where, poll_url=url)
    else:
        script = render.host_script(ks.renderer, host, chain, outcome.bootid or "", where, poll_url=url)
    if outcome.bootid:  # polls of a waiting machine are not boot decisions
        state = states.current(chain)
        note = " (new machine)" if outcome.registered else " (failed, waits for a retry)" if host.failed else ""
        log.info(
            "boot host=%d state=%s template=%s%s", host.id, state, script.template, note,
            extra={"event": "boot", "host_id": host.id, "state": state, "template": script.template,
                   "registered": outcome.registered, "failed": host.failed},
        )
        metrics.BOOTS.labels(state=state).inc()
        if outcome.registered:
            metrics.REGISTRATIONS.inc()
    return text(script.text)


@bp.get("/post-install")
def post_install():
    """The post-install script of the machine's current state."""
    ks = services()
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    where = site()
    with ks.db.read() as session:
        host = machines.get_host(session, host_id)
        booting.check_bootid(host, bootid)
        script = render.post_install_script(ks.renderer, HostRecord.of(host), states.parse_chain(host.state), bootid, where)
    # The bootid was checked above: the callback only adds its line to the history.
    chain = host.state
    ks.db.write(lambda session: booting.post_install_fetched(session, host_id, chain, script.template))
    state = states.current(states.parse_chain(host.state))
    log.info(
        "post-install host=%d state=%s template=%s", host.id, state, script.template,
        extra={"event": "post-install", "host_id": host.id, "state": state, "template": script.template},
    )
    return text(script.text)


@bp.get("/finish")
def finish():
    """Advance the machine's chain once for this boot."""
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    host, finished = services().db.write(lambda session: booting.finish(session, host_id, bootid))
    if finished:
        log.info(
            "finish host=%d state=%s now=%s", host.id, finished, host.state,
            extra={"event": "finish", "host_id": host.id, "state": finished, "chain": host.state},
        )
        metrics.FINISHES.labels(state=finished).inc()
        return text(f"host {host.id} finished its step; next state: {host.state}\n")
    return text(f"host {host.id} already finished this boot; state: {host.state}\n")


@bp.get("/state")
def state():
    """The machine's current state, one line; needs its bootid unless the site lists hosts publicly."""
    ks = services()
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    with ks.db.read() as session:
        host = machines.get_host(session, host_id)
        if not ks.settings["PUBLIC_HOSTS"]:
            booting.check_bootid(host, bootid)
        return text(states.current(states.parse_chain(host.state)) + "\n")


@bp.post("/update")
def update():
    """In state ``discover``: add MACs and merge metadata the machine reports."""
    host_id = parse_id(one("id"))
    bootid = one("bootid")
    if request.mimetype not in FORM_TYPES and (request.content_length or request.mimetype):
        # Anything else would read as an empty form: "updated", with nothing stored.
        raise UnsupportedMediaType(
            f"/update takes a form body (application/x-www-form-urlencoded or multipart/form-data) with "
            f"mac= and metadata=<JSON object>, not {request.mimetype or 'a body without Content-Type'}"
        )
    sent = request.get_data(cache=True)  # kept for the form parser below
    if sent and not request.form:
        # Werkzeug drops a form it cannot decode; a silent "updated" would store nothing.
        raise BadRequest("the form body could not be read; send UTF-8, percent-encoded as a browser or curl does")
    unknown = sorted(set(request.form) - UPDATE_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; /update takes mac= and metadata=")
    if len(request.form.getlist("mac")) > MAX_MACS:
        raise BadRequest(f"a host has at most {MAX_MACS} MAC addresses; this request gives more")
    macs = [normalize_mac(m) for m in request.form.getlist("mac")]
    documents = [parse_json_object(m) for m in request.form.getlist("metadata")]
    host = services().db.write(lambda session: booting.apply_update(session, host_id, bootid, macs, documents))
    log.info("update host=%d macs=%d metadata=%d", host.id, len(macs), len(documents))
    return text(f"host {host.id} updated\n")


@bp.get("/hosts")
def hosts():
    """All hosts as the original's text table (no bootids, no MACs), if the site lists them publicly."""
    if not services().settings["PUBLIC_HOSTS"]:
        raise Forbidden(
            "this server does not list its hosts (the listing shows every serial); "
            "`edit-host -l` on the server does, and `kiwispray serve --public-hosts` turns the listing on"
        )
    with services().db.read() as session:
        return text(present.hosts_table(machines.list_hosts(session)))


@bp.route("/images/<path:relpath>", methods=["GET", "HEAD"])
def image_file(relpath: str):
    """Files of image directories: zero-copy, with Range, HEAD and conditional requests."""
    settings = services().settings
    path = images.resolve_file(settings["ROOT"], relpath)
    if settings["X_ACCEL_REDIRECT"]:
        relative = path.relative_to(images.images_dir(settings["ROOT"]).resolve())
        return files.accel_redirect(settings["X_ACCEL_REDIRECT"], relative.as_posix())
    step_aside()  # what is left is sending the file, for as long as the machine takes
    return files.send(request.environ, path, settings["SEND_TIMEOUT"], on_close=_download_recorder(relpath),
                      track=_progress_tracker(relpath))


def _disk_of(relpath: str) -> tuple[str, str] | None:
    """(image, file name) when ``relpath`` is an image's disk (``<image>/<P>.xz``) and the client has an address."""
    image, _, name = relpath.partition("/")
    if not name.endswith(".xz") or "/" in name or not request.remote_addr:
        return None
    return image, name


def _progress_tracker(relpath: str):
    """For an image's disk: what, given its size, counts the bytes sent to the machine that booted into the image.

    Tracked downloads are read and sent in chunks (see ``ks.files.Window``), so that the
    count is known while it runs; a download no booted machine is known for stays zero-copy.
    """
    disk = _disk_of(relpath)
    if disk is None:
        return None
    address, db = request.remote_addr, services().db

    def track(size: int):
        try:
            with db.read() as session:
                found = booting.download_host(session, address, disk[0])
        except Exception:  # counting is a courtesy: the file is sent either way
            log.exception("could not look up the machine downloading %s from %s", relpath, address)
            return None
        if found is None:
            return None
        host_id, boot_at = found

        def write(sent: int) -> None:
            try:
                db.write(lambda session: booting.record_progress(session, host_id, boot_at, sent, size))
            except Exception:
                log.exception("could not record the progress of host %d", host_id)

        return progress.Throttle(size, write)

    return track


def _download_recorder(relpath: str):
    """For an image's disk (``<image>/<P>.xz``): what records its download in the machine's history."""
    disk = _disk_of(relpath)
    if disk is None:
        return None
    (image, name), address = disk, request.remote_addr
    db = services().db

    def recorded(sent: int, size: int, seconds: float) -> None:
        try:
            host_id = db.write(lambda session: booting.record_download(session, address, image, name, sent, size, seconds))
        except Exception:  # the file is sent; a failed note about it must not fail the request
            log.exception("could not record the download of %s by %s", relpath, address)
            return
        if host_id is not None:
            log.info("download host=%d image=%s file=%s bytes=%d/%d seconds=%.1f", host_id, image, name, sent, size,
                     seconds, extra={"event": "download", "host_id": host_id, "image": image, "file": name,
                                     "bytes": sent, "size": size, "seconds": round(seconds, 3)})

    return recorded
