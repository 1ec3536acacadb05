"""Data for the installed system: a cloud-init NoCloud seed per machine.

cloud-init's ``ds=nocloud-net;s=<seed URL>`` (on the kernel line of the
installed system's first boot: the generic KIWI template adds
``ks.boot.render.nocloud_argument``) fetches
``<seed URL>meta-data``, ``user-data`` and ``vendor-data`` (newer releases
also ``network-config``) by appending the name to the URL, so the seed URL
ends with ``/``:

    <base>/nocloud/<id>/<bootid>/

``meta-data`` is written here: the ``instance-id`` and, once the host has a
name, ``local-hostname``. The others are Jinja2 templates of the machine's
current state (lookup in ``ks.boot.render``); a state has NoCloud data when a
``user-data`` template is found for it that holds more than whitespace.
Templates see ``host`` (script-safe, as every template), ``state``, ``chain``,
``base_url``, ``image`` and ``ssh_authorized_keys``; never the bootid, so the
machine and an operator read the same text. Templates write values with the
``yaml`` filter (``ks.core.values.yaml_text``), which keeps each one YAML value.

The instance-id belongs to one boot through ``/bootstrap``: the installer's
boot and the installed system's first boot (a kexec, no new ``/bootstrap``)
share it, every later boot has a new one. It is derived from the stored hash
of the bootid, which it does not reveal.
"""

import hashlib
from dataclasses import dataclass

from ks.boot import images, render
from ks.core import states, values
from ks.core.errors import Conflict, NotFound
from ks.records.record import HostRecord

FILES = ("meta-data", *images.CLOUD_FILES)
# The metadata key whose value (one key, or an object of named keys) becomes ``ssh_authorized_keys``.
SSH_KEYS = "ssh_authorized_keys"
UNNAMED = "not-set"  # a new host's hostname: no local-hostname for it


@dataclass(frozen=True)
class Served:
    """One file of the seed and the template it came from (None for meta-data and an absent optional file)."""

    text: str
    template: str | None


def instance_id(host_id: int, bootid_hash: str) -> str:
    """The instance-id of the boot whose bootid has this stored hash."""
    digest = hashlib.sha256(f"kiwispray instance-id {bootid_hash}".encode()).hexdigest()
    return f"ks-{host_id}-{digest[:16]}"


def ssh_keys(metadata: dict) -> list[str]:
    """The keys under ``metadata['ssh_authorized_keys']``: a string is one key, an object's values are keys."""
    found = metadata.get(SSH_KEYS)
    if isinstance(found, str):
        found = {"": found}
    if not isinstance(found, dict):
        return []
    return [key.strip() for _, key in sorted(found.items()) if isinstance(key, str) and key.strip()]


def meta_data(host: HostRecord, bootid_hash: str | None) -> str:
    """The ``meta-data`` file: instance-id and local-hostname, as YAML."""
    if bootid_hash is None:
        raise Conflict(f"host {host.id} has not booted since its state was set: it has no instance-id yet")
    lines = [f"instance-id: {values.yaml_text(instance_id(host.id, bootid_hash))}"]
    hostname = render.safe_host(host)["hostname"]
    if hostname and hostname != UNNAMED:
        lines.append(f"local-hostname: {values.yaml_text(hostname)}")
    return "\n".join(lines) + "\n"


def serve(renderer: render.Renderer, host: HostRecord, bootid_hash: str | None, name: str,
          origin: render.Origin) -> Served:
    """One file of the host's seed for its current state.

    NotFound for an unknown file name or a state without user-data; Conflict
    for a builtin state. A missing ``vendor-data`` or ``network-config`` is an
    empty file: cloud-init retries a 404 ten times, a second apart, on every boot.
    """
    if name not in FILES:
        raise NotFound(f"no NoCloud file {name[:40]!r}; there are {', '.join(FILES)}")
    state = host.current
    if not states.is_image(state):
        raise Conflict(f"host {host.id} is in state '{state}', which boots no image and has no NoCloud data")
    if renderer.find_optional("user-data", state) is None:
        raise NotFound(f"state '{state}' has no user-data (images/{state}/user-data, templates/user-data)")
    if name == "meta-data":
        return Served(meta_data(host, bootid_hash), None)
    if renderer.find_optional(name, state) is None:
        return Served("", None)
    rendered = renderer.render(name, state, context(renderer, host, state, origin), list)
    return Served(rendered.text, rendered.template)


def context(renderer: render.Renderer, host: HostRecord, state: str, origin: render.Origin) -> dict:
    """What the seed's templates may use (no bootid: the machine and an operator read the same)."""
    view = render.host_view(host)
    image = images.load(renderer.root, state)
    return {
        "host": view,
        "state": state,
        "chain": list(host.chain),
        "base_url": origin.base_url,
        "server_ip": origin.server_ip,
        "server_port": origin.server_port,
        "image": image.context(origin.base_url) if image else None,
        SSH_KEYS: ssh_keys(view["metadata"]),
    }
