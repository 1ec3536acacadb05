"""Data for the installed system, the Ignition way: one config per machine and boot.

An image whose first boot runs Ignition (Fedora CoreOS, Flatcar, openSUSE
MicroOS) reads ``ignition.config.url=<base>/ignition/<id>/<bootid>/config.ign``
from its kernel line; the generic KIWI template adds it when the image has a
``config.ign`` template (``images/<state>/config.ign``, then the site's
``templates/config.ign``; nothing is shipped: users and paths differ by
system). The template is Jinja2 with the variables of the NoCloud templates
(``ks.boot.nocloud.context``); values go in with Jinja2's ``tojson``. What it
renders must be one JSON object, or the answer is a 500 naming the template.
Who may read it, and for which boot, is as for the NoCloud seed.
"""

import json

from ks.boot import images, nocloud, render
from ks.core import states
from ks.core.errors import Conflict, NotFound
from ks.records.record import HostRecord

TEMPLATE = images.IGNITION_FILE


def config(renderer: render.Renderer, host: HostRecord, origin: render.Origin) -> render.Rendered:
    """The host's Ignition config for its current state; NotFound without a template, Conflict for a builtin."""
    state = host.current
    if not states.is_image(state):
        raise Conflict(f"host {host.id} is in state '{state}', which boots no image and has no Ignition config")
    if renderer.find_optional(TEMPLATE, state) is None:
        raise NotFound(f"state '{state}' has no Ignition config (images/{state}/{TEMPLATE}, templates/{TEMPLATE})")
    rendered = renderer.render(TEMPLATE, state, nocloud.context(renderer, host, state, origin), list)
    try:
        document = json.loads(rendered.text)
    except ValueError as exc:
        raise render.TemplateError(f"template {rendered.template} did not render JSON: {exc}") from None
    if not isinstance(document, dict):
        raise render.TemplateError(f"template {rendered.template} did not render a JSON object")
    return rendered
