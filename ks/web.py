"""Request helpers shared by blueprints: parameters, where machines reach the server (Origin), text answers."""

import functools
import ipaddress
import logging
import math
import re
from typing import TYPE_CHECKING

from flask import Response, current_app, request

from ks.boot.render import Origin
from ks.core.errors import BadRequest, ConfigError, TooManyLogins
from ks.core.values import check_metadata, is_decimal, load_json_object, single

if TYPE_CHECKING:  # ks.runtime builds on the views' modules, which import this one
    from ks.runtime import Runtime

log = logging.getLogger(__name__)

# The longest request body the application accepts (Flask's MAX_CONTENT_LENGTH); the server
# answers a longer one 413 before reading it (ks.server).
MAX_BODY_BYTES = 1024 * 1024
# Host ids are 64-bit integers in the database (ks.records.models.Id).
MAX_ID = 2**63 - 1
# A metadata parameter as sent (whitespace and all); what is kept is bounded by ks.core.values.
MAX_METADATA_PARAMETER = 64 * 1024
# What ``kiwispray serve`` (ks.server) puts in the WSGI environment of each request;
# absent under any other server, where both are no-ops:
# - STEP_ASIDE: a call without arguments, "this request from now on only waits on the network";
# - SEND_TIMEOUT: a call with seconds, "from now on, a send that makes no progress for this long ends the connection".
STEP_ASIDE = "kiwispray.step_aside"
SEND_TIMEOUT = "kiwispray.send_timeout"
# Which of the server's listeners a request came through: BOOT (plain HTTP, --port),
# ADMIN (HTTPS, --admin-port) or TFTP (a TFTP read asked as a GET, see ks.tftp). Absent under any other server.
LISTENER = "kiwispray.listener"
BOOT, ADMIN, TFTP = "boot", "admin", "tftp"
# Paths of the operator side: with TLS configured, served on the HTTPS port only.
OPERATOR_PREFIXES = ("/api/", "/ui/")


def operator_side(path: str) -> bool:
    """Whether ``path`` belongs to the operator side (the admin API, the dashboard), not to booting machines."""
    return path in ("/", "/ui") or path.startswith(OPERATOR_PREFIXES)


def runtime() -> "Runtime":
    """What the application's views reach: its settings, database, renderer, metrics (see ks.runtime)."""
    return current_app.extensions["kiwispray"]


def refuse_if_held_back(where: str) -> None:
    """``TooManyLogins`` (429, Retry-After) if this request's source may not try a token now.

    A source past ``KS_LOGIN_FAILURES_PER_MINUTE`` failures is held back: its
    attempt is not checked, and counts as failed (``where`` says what it tried
    to log in to: "dashboard" or "API").
    """
    wait = runtime().logins.wait(_source())
    if wait > 0:
        login_failed(where)
        raise TooManyLogins(max(1, math.ceil(wait)))


def login_failed(where: str) -> None:
    """Count a failed login of this request's source; log it, one line per source and minute at most.

    The line names the source address and the count since its last line, never the token tried.
    """
    source = _source()
    count = runtime().logins.failed(source)
    if count:
        log.warning("%d failed login%s from %s to the %s since the last line about this address", count,
                    "" if count == 1 else "s", source, where,
                    extra={"event": "login-failed", "remote": source, "count": count, "to": where})


def _source() -> str:
    return request.remote_addr or "-"


def step_aside() -> None:
    """Tell the server that this request from now on only waits on the network (a download, a BMC).

    It then no longer counts against the requests a server process runs at
    once, so that boots go on meanwhile. A no-op outside ``kiwispray serve``.
    """
    hook = request.environ.get(STEP_ASIDE)
    if hook is not None:
        hook()


def send_timeout(seconds: float | None) -> None:
    """Tell the server to drop the connection when a send makes no progress for ``seconds`` (None: never)."""
    hook = request.environ.get(SEND_TIMEOUT)
    if hook is not None:
        hook(seconds)


def text(body: str, status: int = 200) -> Response:
    """A plain-text answer, as iPXE and shell scripts expect."""
    return Response(body, status=status, mimetype="text/plain")


def one(name: str, source=None) -> str | None:
    """The single value of parameter ``name``; BadRequest if it was given twice."""
    return single(name, (source if source is not None else request.args).getlist(name))


def parse_id(value: str | None, name: str = "id") -> int:
    """A host id from a parameter: a positive integer."""
    if value is None or value == "":
        raise BadRequest(f"{name} is required, e.g. ?{name}=1")
    if not is_decimal(value):
        raise BadRequest(f"{name} must be a positive integer, not {value[:40]!r}")
    number = int(value)
    if number < 1 or number > MAX_ID:
        raise BadRequest(f"{name} {value[:40]} is out of range")
    return number


def parse_json_object(value: str, name: str = "metadata") -> dict:
    """Metadata from a parameter: a JSON object that ``ks.core.values.check_metadata`` accepts."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_METADATA_PARAMETER:
        raise BadRequest(f"{name} is larger than {MAX_METADATA_PARAMETER} bytes")
    return check_metadata(load_json_object(value, name, ', e.g. {"rack": "4"}'), name)


def origin() -> Origin:
    """Where machines reach us: the configured base URL, else the request's Host."""
    settings = runtime().settings
    environ = request.environ
    return _origin(
        settings.base_url, settings.poll_interval, environ.get("HTTP_HOST", ""), environ.get("SERVER_NAME"),
        int(environ.get("SERVER_PORT") or 80), request.scheme,
    )


@functools.lru_cache(maxsize=256)
def _origin(
    base_url: str, poll_interval: int, header: str, server_name: str | None, default_port: int, scheme: str
) -> Origin:
    # Every boot asks; a server has few distinct answers (one per address it is reached at).
    if base_url:
        return origin_from_base_url(base_url, poll_interval)
    host, port = split_host(header, default_port) if header else (server_name, default_port)
    if host is None:
        raise BadRequest("the Host header is not a valid host name or address")
    shown = f"[{host}]" if ":" in host else host
    return Origin(f"{scheme}://{shown}:{port}", host, port, poll_interval)


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?")


def split_host(value: str, default_port: int) -> tuple[str | None, int]:
    """Split ``host[:port]`` or ``[v6]:port``; host is None unless it is a valid name or address."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([^:\[\]]+)(?::(\d{1,5}))?", value)
    if not match:
        return None, default_port
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4) or default_port)
    if not 0 < port < 65536:
        return None, default_port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            return None, default_port
    return host, port


def origin_from_base_url(base_url: str, poll_interval: int, strict: bool = True) -> Origin:
    """The Origin for a configured base URL such as ``http://10.0.0.1:5000``."""
    scheme, _, rest = base_url.rstrip("/").rpartition("://")
    host, port = split_host(rest.split("/", 1)[0], 443 if scheme == "https" else 80)
    if host is None:
        if strict:
            raise ConfigError(f"base URL {base_url!r} has no valid host; write it like http://10.0.0.1:5000")
        host = rest.split("/", 1)[0].split(":", 1)[0]
    return Origin(base_url.rstrip("/"), host, port, poll_interval)
