"""Scripts for machines: template lookup, Jinja2 rendering and the original's ``@VAR@``.

Lookup for a state ``X`` (first hit wins), see ``candidates``; for iPXE:

    images/X/host.ipxe (Jinja2)   images/X/host.tmpl (legacy)
    templates/X.ipxe   (Jinja2)   templates/X.tmpl   (legacy)      <- site overrides
    shipped X.ipxe     (new, finished)
    templates/known_host.tmpl (the original's fallback, if the site has one)
    templates/kiwi.ipxe, then shipped kiwi.ipxe: the generic KIWI template

and the same for GRUB (``ks.boot.loaders``) with ``.grub`` for ``.ipxe`` and
``.grub.tmpl`` for ``.tmpl`` (the original had no GRUB and no ``known_host`` for it).

Files ending in ``.tmpl`` are legacy templates, rendered the original's way; everything
else is Jinja2, but for a site's ``templates/bootstrap.ipxe``: the original's file of that
name is rendered its way, a copy of the shipped one (Jinja2 markup, ``{{`` or ``{%``) as
Jinja2 — a checkout of this project is a site whose templates are the shipped ones.

What the installed system reads on its first boot — cloud-init's ``user-data``,
``vendor-data``, ``network-config`` (see ``ks.boot.nocloud``) and Ignition's
``config.ign`` (``ks.boot.ignition``) — is Jinja2, looked up for a state ``X`` as

    images/X/<file>   templates/<file>   shipped <file> (user-data only)
"""

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ks.boot import images
from ks.boot.loaders import IPXE, Loader
from ks.core import states, values
from ks.core.errors import KSError
from ks.records.record import TEMPLATE_FIELDS
from ks.records.record import HostRecord as Host

# The original's ``@NAME@`` replacements, in its order: (name, value) pairs.
Replacements = Sequence[tuple[str, object]]

log = logging.getLogger(__name__)

JINJA, LEGACY = "jinja", "legacy"
# A file that is Jinja2 if it holds Jinja2 markup, legacy otherwise (see ``engine_of``).
EITHER = "either"
JINJA_MARKUP = ("{{", "{%")


class TemplateError(KSError):
    """A template that cannot be read or rendered; the operator must fix it."""

    status = 500


@dataclass(frozen=True)
class Origin:
    """Where machines reach this server (its URL, address and port), as the current request sees it."""

    base_url: str
    server_ip: str
    server_port: int
    poll_interval: int = 30


@dataclass(frozen=True)
class Rendered:
    """A rendered script and the template it came from (for logs)."""

    text: str
    template: str


class Renderer:
    """Finds and renders templates of one site root."""

    def __init__(self, root: str | Path, shipped: str | Path, check_interval: float = 0.0):
        self.root = Path(root)
        # Every boot renders a template; looking at up to six files each time costs
        # more than the rest of the rendering. Results are trusted this many seconds.
        self.check_interval = check_interval
        self.site_dir = self.root / "templates"
        self.shipped_dir = Path(shipped)
        self.env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.Undefined)
        # One word of a boot script, iPXE's or GRUB's (see ks.boot.loaders).
        self.env.filters.update(shell=values.shell_quote, ipxe=values.ipxe_text, grub=values.ipxe_text,
                                yaml=values.yaml_text)
        self._cache: dict[Path, tuple[float, tuple, jinja2.Template | bytes]] = {}
        self._blank: dict[Path, bool] = {}  # Jinja2 templates holding only whitespace
        self._found: dict[tuple[str, str | None, str], tuple[float, tuple[Path, str, str]]] = {}

    # -- lookup -----------------------------------------------------------------

    def candidates(self, kind: str, state: str | None = None, loader: Loader = IPXE) -> list[tuple[Path, str]]:
        """Where a template of ``kind`` ('host', 'post_install', or a builtin name) is looked for."""
        site, shipped, suffix = self.site_dir, self.shipped_dir, loader.suffix
        if kind in ("host", "post_install") and state is None:
            raise ValueError(f"a {kind} template is looked up for a state")
        if kind == "host" and state is not None:
            found = [(path, LEGACY if path.suffix == ".tmpl" else JINJA)
                     for path in images.own_templates(self.root, state, loader)]
            if not states.is_image(state):
                return found + [(shipped / f"{state}{suffix}", JINJA)]
            original = [(site / "known_host.tmpl", LEGACY)] if loader is IPXE else []
            return found + original + [(site / f"kiwi{suffix}", JINJA), (shipped / f"kiwi{suffix}", JINJA)]
        if kind == "post_install" and state is not None:
            image_dir = images.images_dir(self.root) / state
            return [
                (image_dir / "post_install.sh", JINJA),
                (image_dir / "post_install.tmpl", LEGACY),
                (site / "post_install.sh", JINJA),
                (site / "post_install.tmpl", LEGACY),
                (shipped / "post_install.sh", JINJA),
            ]
        if kind in images.FIRST_BOOT_FILES and state is not None:
            found = [(images.images_dir(self.root) / state / kind, JINJA), (site / kind, JINJA)]
            return found + [(shipped / kind, JINJA)] if kind == "user-data" else found
        if kind == "bootstrap" and loader is IPXE:
            return [(site / "bootstrap.ipxe", EITHER), (shipped / "bootstrap.ipxe", JINJA)]
        return [(site / f"{kind}{suffix}", JINJA), (shipped / f"{kind}{suffix}", JINJA)]

    def find(self, kind: str, state: str | None = None, loader: Loader = IPXE) -> tuple[Path, str, str]:
        """The first existing template for ``kind``: its path, engine and short name.

        A template added or removed takes effect within ``check_interval`` seconds.
        """
        now = time.monotonic()
        found = self._found.get((kind, state, loader.name))
        if found and now < found[0]:
            return found[1]
        for path, engine in self.candidates(kind, state, loader):
            if path.is_file():
                result = path, engine, self.display(path)
                self._found[(kind, state, loader.name)] = (now + self.check_interval, result)
                return result
        raise TemplateError(f"no template for {kind} {state or ''}; the shipped templates are missing")

    def find_optional(self, kind: str, state: str | None = None) -> Path | None:
        """The template for ``kind``, None if there is none or it holds nothing but whitespace.

        A template that cannot be read or compiled counts as present: rendering
        it fails where it is used, with its name, not here (a machine's boot).
        """
        try:
            path, engine, _ = self.find(kind, state)
        except TemplateError:
            return None
        try:
            self._load(path, engine)
        except (OSError, UnicodeDecodeError, jinja2.TemplateError):
            pass
        return None if self._blank.get(path) else path

    def display(self, path: Path) -> str:
        """A short name for logs: relative to the site root, or 'shipped:NAME'."""
        if path.is_relative_to(self.root):
            return str(path.relative_to(self.root))
        return f"shipped:{path.name}"

    # -- rendering --------------------------------------------------------------

    def render(self, kind: str, state: str | None, context: dict, legacy: Callable[[], Replacements],
               loader: Loader = IPXE) -> Rendered:
        """Render ``loader``'s template for ``kind``/``state`` with Jinja2 ``context`` or the ``legacy()`` values."""
        path, engine, name = self.find(kind, state, loader)
        try:
            template = self._load(path, engine)
            if isinstance(template, bytes):
                text = render_legacy(template, legacy(), ipxe=kind != "post_install")
            else:
                text = template.render(context)
        except (OSError, UnicodeDecodeError, jinja2.TemplateError) as exc:
            log.error("template %s failed: %s", name, exc)
            raise TemplateError(f"template {name} failed: {exc}") from exc
        return Rendered(text=text, template=name)

    def _load(self, path: Path, engine: str) -> jinja2.Template | bytes:
        """The compiled Jinja2 template or the legacy template's bytes, read again when the file changed."""
        now = time.monotonic()
        cached = self._cache.get(path)
        if cached and now < cached[0]:
            return cached[2]
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size)
        if cached and cached[1] == key:
            template = cached[2]
        elif engine_of(data := path.read_bytes(), engine) == LEGACY:
            template = data
        else:
            source = data.decode("utf-8")
            self._blank[path] = not source.strip()
            template = self.env.from_string(source)
        self._cache[path] = (now + self.check_interval, key, template)
        return template


# Placeholders whose text is several words by design: ``@HOST_DATA@``'s ``echo`` lines, the list of MACs.
_WORDS = frozenset({"HOST_DATA", "macs"})
_ECHO = re.compile(rb"[ \t]*echo(?:[ \t]|$)")


def engine_of(data: bytes, engine: str) -> str:
    """How a template's bytes are rendered: ``engine``, or for ``EITHER`` Jinja2 when they hold its markup.

    The original's templates never do: iPXE writes ``${name}``, the original ``@NAME@``.
    """
    if engine != EITHER:
        return engine
    return JINJA if any(mark.encode() in data for mark in JINJA_MARKUP) else LEGACY


def render_legacy(data: bytes, replacements: Replacements, ipxe: bool = False) -> str:
    """Replace ``@NAME@`` in the original's order; unknown names stay as written.

    The original replaced in the whole text each time, so a value holding
    ``@bootid@`` was expanded by a later step. Here text that came from a value
    is never searched again: for ordinary values the output is the original's,
    byte for byte, and a value is only ever text. In an iPXE script (``ipxe``)
    a value stays one argument, as the ``ipxe`` filter makes it: its spaces
    become ``_`` (``values.ipxe_text``), except on an ``echo`` line, which only
    shows its words.
    """
    parts: list = [data]  # alternately template text (still searched) and (name, substituted value)
    for name, value in replacements:
        token, text = f"@{name}@".encode(), str(value).encode("utf-8", "replace")
        out: list = []
        for index, part in enumerate(parts):
            if index % 2:
                out.append(part)
                continue
            pieces = part.split(token)
            out.append(pieces[0])
            for piece in pieces[1:]:
                out += [(name, text), piece]
        parts = out
    result, line = [], b""  # the output, and its last line so far
    for index, part in enumerate(parts):
        if index % 2:
            name, part = part
            if ipxe and name not in _WORDS and not _ECHO.match(line):
                part = part.replace(b" ", values.REPLACEMENT.encode())
        result.append(part)
        line = (line + part).rpartition(b"\n")[2]
    return b"".join(result).decode("utf-8", errors="replace")


def host_view(host: Host) -> dict:
    """The ``host`` variable of templates (never the bootid); every value script-safe (see ``safe_host``)."""
    safe = safe_host(host)
    return {key: safe[key] for key in _VIEW_KEYS}


# The keys of ``host_view``, in its order: the original's, then the record's fields declared ``template``.
_VIEW_KEYS = ("id", "hostname", "macs", "serial", "uuid", "metadata", *(key for key, _ in TEMPLATE_FIELDS))


def safe_host(host: Host) -> dict:
    """What scripts may show of a host, keys sorted as the original's JSON file held them.

    Everything accepted today is in ``ks.core.values``' alphabet already; a value
    stored before (or written into the database directly) has each character
    outside it replaced by ``_`` rather than reaching a script raw or failing
    the machine's boot, and the log says which host and field to fix.
    """
    repaired: list[str] = []
    view = {
        "hostname": values.script_safe(host.hostname, "hostname", repaired),
        "id": host.id,
        "macs": [values.script_safe(m, "macs", repaired) for m in host.macs],
        "metadata": values.script_safe(host.meta if isinstance(host.meta, dict) else {}, "metadata", repaired),
        "serial": values.script_safe(host.serial or "", "serial", repaired),
        "uuid": values.script_safe(host.uuid or "", "uuid", repaired),
    }
    for key, value in host.template_values():
        view[key] = values.script_safe(value if value is not None else "", key, repaired)
    if repaired:
        log.warning(
            "host %d holds values that scripts cannot carry, rendered with '_': %s; correct them with edit-host",
            host.id, ", ".join(repaired[:10]), extra={"event": "repaired", "host_id": host.id},
        )
    return view


def legacy_host(host: Host, bootid: str | None) -> dict:
    """The host record as the original kept it in known_hosts.json (keys sorted), for ``@VAR@``."""
    safe = safe_host(host)
    return {
        "bootid": bootid or "",
        "hostname": safe["hostname"],
        "id": host.id,
        "macs": " ".join(m.upper() for m in safe["macs"]),
        "metadata": safe["metadata"],
        "serial": safe["serial"],
        "state": host.state,
        "uuid": safe["uuid"],
    }


def host_data(record: dict) -> str:
    """The original's ``@HOST_DATA@``: an iPXE ``echo`` per field (the bootid left out)."""
    return "".join(
        f'echo * {key}: "{values.legacy_text(record[key])}"\n' for key in sorted(record) if key != "bootid"
    )


def legacy_values(
    host: Host, state: str, origin: Origin, bootid: str | None, with_host_data: bool
) -> list[tuple[str, object]]:
    """The original's replacements, in the original's order.

    ``@HOST_DATA@`` describes the stored record (the whole chain); ``@state@``
    is the current state only. Without a bootid, ``@bootid@`` stays as written.
    """
    record = legacy_host(host, bootid)
    found: list[tuple[str, object]] = []
    if with_host_data:
        found.append(("HOST_DATA", host_data(record)))
    found += [("HOST", host.id), ("SERVER_IP", origin.server_ip), ("SERVER_PORT", origin.server_port)]
    record["state"] = state
    found += [(key, values.legacy_text(value)) for key, value in record.items() if not (key == "bootid" and not bootid)]
    found += [(f"metadata.{key}", values.legacy_text(value)) for key, value in record["metadata"].items()]
    return found


def urls(origin: Origin, host_id: int, bootid: str) -> dict:
    """The URLs a booted system calls back, with its bootid."""
    query = f"id={host_id}&bootid={bootid}"
    return {
        "post_install_url": f"{origin.base_url}/post-install?{query}",
        "finish_url": f"{origin.base_url}/finish?{query}",
        "update_url": f"{origin.base_url}/update?{query}",
        # cloud-init appends the file names: the seed URL ends with '/' (see ks.boot.nocloud).
        "nocloud_url": f"{origin.base_url}/nocloud/{host_id}/{bootid}/",
        "ignition_url": f"{origin.base_url}/ignition/{host_id}/{bootid}/{images.IGNITION_FILE}",
    }


def nocloud_argument(renderer: Renderer, state: str, origin: Origin, host_id: int, bootid: str) -> str:
    """``ds=nocloud-net;s=<seed URL>`` when image ``state`` has user-data and the boot a bootid; else empty.

    The argument holds no space, ``?``, ``&``, ``*`` or ``[``: iPXE keeps it one word
    of the kernel line, and KIWI's installer hands it on to the installed system unchanged.
    """
    if not bootid or not states.is_image(state) or renderer.find_optional("user-data", state) is None:
        return ""
    return f"ds=nocloud-net;s={urls(origin, host_id, bootid)['nocloud_url']}"


def ignition_argument(renderer: Renderer, state: str, origin: Origin, host_id: int, bootid: str) -> str:
    """``ignition.config.url=<URL>`` when image ``state`` has an Ignition template and the boot a bootid; else empty."""
    if not bootid or not states.is_image(state) or renderer.find_optional(images.IGNITION_FILE, state) is None:
        return ""
    return f"ignition.config.url={urls(origin, host_id, bootid)['ignition_url']}"


def context(
    renderer: Renderer, host: Host, chain: states.Chain, bootid: str, origin: Origin, poll_url: str = ""
) -> dict:
    """Everything a Jinja2 template may use."""
    state = states.current(chain)
    image = images.load(renderer.root, state) if states.is_image(state) else None
    return {
        "host": host_view(host),
        "state": state,
        "chain": list(chain),
        "bootid": bootid,
        "base_url": origin.base_url,
        "server_ip": origin.server_ip,
        "server_port": origin.server_port,
        "poll_url": poll_url,
        "poll_interval": origin.poll_interval,
        "image": image.context(origin.base_url) if image else None,
        "nocloud": nocloud_argument(renderer, state, origin, host.id, bootid) if image else "",
        "ignition": ignition_argument(renderer, state, origin, host.id, bootid) if image else "",
        **urls(origin, host.id, bootid),
    }


def host_script(
    renderer: Renderer, host: Host, chain: states.Chain, bootid: str, origin: Origin, poll_url: str = "",
    loader: Loader = IPXE,
) -> Rendered:
    """``loader``'s script for the machine's current state."""
    state = states.current(chain)
    ctx = context(renderer, host, chain, bootid, origin, poll_url)
    return renderer.render("host", state, ctx, lambda: legacy_values(host, state, origin, bootid, with_host_data=True),
                           loader)


def post_install_script(renderer: Renderer, host: Host, chain: states.Chain, bootid: str, origin: Origin) -> Rendered:
    """The post-install script of the machine's current state."""
    state = states.current(chain)
    ctx = context(renderer, host, chain, bootid, origin)
    return renderer.render(
        "post_install", state, ctx, lambda: legacy_values(host, state, origin, bootid, with_host_data=False)
    )


def failed_script(renderer: Renderer, host: Host, chain: states.Chain, origin: Origin, poll_url: str,
                  loader: Loader = IPXE) -> Rendered:
    """The script of a machine flagged failed: it says why and waits for a retry."""
    return renderer.render("failed", None, context(renderer, host, chain, "", origin, poll_url), list, loader)


def plain_script(renderer: Renderer, kind: str, origin: Origin, loader: Loader = IPXE, **extra) -> Rendered:
    """A script that belongs to no host: ``bootstrap``, ``busy``, ``conflict``."""
    ctx = {
        "base_url": origin.base_url,
        "server_ip": origin.server_ip,
        "server_port": origin.server_port,
        "poll_interval": origin.poll_interval,
        **extra,
    }
    legacy = [("SERVER_IP", origin.server_ip), ("SERVER_PORT", origin.server_port)]
    return renderer.render(kind, None, ctx, lambda: legacy, loader)


# Where a script shown to an operator says the server is when no base URL is configured.
PLACEHOLDER_URL = "http://SERVER:5000"


def script_now(renderer: Renderer, host: Host, origin: Origin, state: str | None = None,
               post_install: bool = False, loader: Loader = IPXE) -> Rendered:
    """The script the machine would get now (or in ``state``) from ``loader``, changing nothing.

    The bootid shows as BOOTID.
    """
    chain = states.parse_chain(state or host.state)
    if host.failed_at and not (state or post_install):
        return failed_script(renderer, host, chain, origin, poll_url="", loader=loader)
    if post_install:
        return post_install_script(renderer, host, chain, "BOOTID", origin)
    return host_script(renderer, host, chain, "BOOTID", origin, loader=loader)
