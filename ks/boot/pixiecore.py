"""Pixiecore's API mode: ``pixiecore api http://<server>:5000/pixiecore``.

Pixiecore asks ``GET /pixiecore/v1/boot/<mac>`` whether and how to boot a
machine, several times per boot. The answer only reads the database, so any
number of identical calls changes nothing:

* a ``finished`` machine: 404, so Pixiecore ignores it and the firmware boots the disk;
* any other machine, known or not: 200 with an ``ipxe-script`` that chains into
  ``/bootstrap.ipxe``. The machine then reports its serial and UUID, and the one
  ``/bootstrap`` request its iPXE makes per boot registers it, rotates its bootid,
  records the boot and answers its state's script — the same path as without Pixiecore.
"""

import json

from flask import Blueprint, Response

from ks.core import states
from ks.core.errors import KSError, NotFound
from ks.core.identity import normalize_mac
from ks.fleet import machines
from ks.web import origin, runtime

bp = Blueprint("pixiecore", __name__, url_prefix="/pixiecore")


def _json(document: dict, status: int = 200) -> Response:
    return Response(json.dumps(document) + "\n", status=status, mimetype="application/json")


@bp.errorhandler(KSError)
def refused(exc: KSError):
    # Any non-200 answer makes Pixiecore leave the machine alone.
    return _json({"error": str(exc)}, exc.status)


@bp.get("/v1/boot/<mac>")
def boot(mac: str):
    """Pixiecore's boot question for one MAC."""
    mac = normalize_mac(mac)
    with runtime().db.read() as session:
        try:
            host = machines.find_by(session, mac=mac)
        except NotFound:
            host = None
        if host is not None and states.current(states.parse_chain(host.state)) == states.FINISHED:
            raise NotFound(f"host {host.id} is finished: it boots from its disk")
    script = f"#!ipxe\nchain {origin().base_url}/bootstrap.ipxe\n"
    return _json({"ipxe-script": script})
