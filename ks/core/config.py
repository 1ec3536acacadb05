"""Settings: one typed, frozen ``Settings`` object, declared field by field.

Each field declares its type, default, ``KS_*`` environment variable and help
text (and, for the ones ``kiwispray serve`` takes as options, the option and its
bounds). Values are layered defaults < environment < explicit values
(``resolve``). This is the only module that reads ``os.environ``; everything
else receives a ``Settings``. The README's settings table and ``kiwispray serve
--help`` follow these declarations (tests/test_settings.py checks both).
"""

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ks.core.errors import ConfigError


def setting(default: Any, env: str, help: str, *, option: str | None = None, low: float | None = None,
            high: float | None = None) -> Any:
    """Declare one field of ``Settings``.

    ``option`` is the ``kiwispray serve`` option that sets it (its help and
    environment variable come from here); ``low``/``high`` bound a number,
    wherever it comes from.
    """
    return field(default=default, metadata={"env": env, "help": help, "option": option, "low": low, "high": high})


@dataclass(frozen=True)
class Settings:
    """A site's settings. Field ``x`` is setting ``X``, from ``KS_X``."""

    root: str = setting(".", "KS_ROOT", "Site root holding images/, templates/ (overrides) and kiwispray.db.")
    database_url: str = setting(
        "", "KS_DATABASE_URL", "SQLAlchemy URL of the database; empty: sqlite:///<root>/kiwispray.db."
    )
    base_url: str = setting(
        "", "KS_BASE_URL", "URL machines use to reach this server, e.g. http://10.0.0.1:5000; "
        "default: taken from each request's Host header.", option="--base-url",
    )
    initial_chain: str = setting(
        "new", "KS_INITIAL_CHAIN", "Chain for machines seen for the first time, e.g. 'inventory,new'.",
        option="--initial-chain",
    )
    poll_interval: int = setting(
        30, "KS_POLL_INTERVAL", "Seconds between polls of a machine waiting in 'new'.", option="--poll-interval",
        low=1, high=3600,
    )
    tftp_root: str = setting(
        "", "KS_TFTP_ROOT", "TFTP root whose pxelinux.cfg/01-<mac> links follow the hosts' states; empty: no links."
    )
    pxelinux_config_dir: str = setting(
        "pxelinux.configs", "KS_PXELINUX_CONFIG_DIR",
        "Where the per-state PXELINUX configurations live; relative to the TFTP root unless absolute.",
    )
    power_timeout: float = setting(10.0, "KS_POWER_TIMEOUT", "Seconds one BMC operation may take.", low=0)
    power_status_timeout: float = setting(
        3.0, "KS_POWER_STATUS_TIMEOUT", "Seconds a listing waits for all BMCs (queried in parallel).", low=0
    )
    bmc_verify: str = setting(
        "true", "KS_BMC_VERIFY", "Redfish over HTTPS: 'true' checks BMC certificates against the system's CAs, "
        "'false' accepts any, a path names the CA file to trust.",
    )
    bmc_subnets: str = setting(
        "", "KS_BMC_SUBNETS", "Comma-separated IPv4 subnets swept for BMCs given by MAC that the neighbour table lacks."
    )
    deploy_timeout: int = setting(
        3600, "KS_DEPLOY_TIMEOUT", "Seconds an image may take from its first boot to /finish before the machine "
        "is flagged failed; 0: no limit; images/<name>/kiwispray.toml may say otherwise.", option="--deploy-timeout",
        low=0,
    )
    timeout_check_interval: float = setting(
        30.0, "KS_TIMEOUT_CHECK_INTERVAL", "Seconds between two timeout checks in each server process; "
        "0: only `kiwispray timeouts check` (from cron) flags machines.", low=0,
    )
    send_timeout: float = setting(
        60.0, "KS_SEND_TIMEOUT", "Seconds an image download or an event stream may make no progress before the "
        "server drops it; 0: never.", low=0,
    )
    running_requests: int = setting(
        2, "KS_RUNNING_REQUESTS", "Requests each worker runs at once; more wait their turn. Image downloads and "
        "BMC calls step aside once they only wait on the network. Few at once cost less CPU per boot; "
        "0: as many as threads.", option="--running-requests", low=0, high=1024,
    )
    template_check_interval: float = setting(
        1.0, "KS_TEMPLATE_CHECK_INTERVAL", "Seconds a template lookup and a compiled template are trusted before "
        "the files are looked at again; 0: on every request.", low=0,
    )
    rules_check_interval: float = setting(
        2.0, "KS_RULES_CHECK_INTERVAL", "Seconds between two looks at <root>/rules.toml (when a machine registers, "
        "and in each server process); an edited file takes effect within this time.", low=0,
    )
    x_accel_redirect: str = setting(
        "", "KS_X_ACCEL_REDIRECT", "Behind nginx: answer image requests with 'X-Accel-Redirect: PREFIX/<file>' "
        "and let nginx send the file from an internal location (see docs/nginx.conf.example).",
        option="--x-accel-redirect",
    )
    tftp_listen: str = setting(
        "", "KS_TFTP_LISTEN", "Answer TFTP on ADDRESS[:PORT] (port 69 by default): shim, GRUB and their files from "
        "the boot-files directory, GRUB's configuration from the hosts' states, the images' kernels and initrds, "
        "for machines with Secure Boot (see docs/secure-boot.md); empty: off.", option="--tftp-listen",
    )
    boot_files: str = setting(
        "", "KS_BOOT_FILES", "Directory of the EFI boot files served by name over TFTP and at /boot-files/<name> "
        "(shimx64.efi, grubx64.efi, iPXE's .efi); empty: <root>/boot-files.", option="--boot-files",
    )
    tftp_transfers: int = setting(
        64, "KS_TFTP_TRANSFERS", "TFTP transfers each worker runs at once; a request beyond gets a TFTP error and "
        "the client asks again.", low=1, high=4096,
    )
    public_hosts: bool = setting(
        False, "KS_PUBLIC_HOSTS", "List every host (id, hostname, state, serial) at GET /hosts and answer /state "
        "without the host's bootid, as the original did; off: both reveal nothing to the boot network.",
        option="--public-hosts",
    )
    pxepilot_api: bool = setting(
        False, "KS_PXEPILOT_API", "Serve PXE Pilot's REST API (/v1/hosts, /configurations/NAME/deploy, ...; with and "
        "without /v1) for its client and scripts: reads and deploys with a token, a machine's own 'local' deploy "
        "without one (docs/pxepilot.md).", option="--pxepilot-api",
    )
    registrations_per_minute: int = setting(
        3000, "KS_REGISTRATIONS_PER_MINUTE", "Unknown machines this server registers per minute from all addresses "
        "together (bursts of as many); further ones get a script that asks again later and nothing is stored; "
        "0: no limit.", option="--registrations-per-minute", low=0,
    )
    registrations_per_source: int = setting(
        10, "KS_REGISTRATIONS_PER_SOURCE", "Unknown machines registered from one boot address in the last minute, "
        "counted in the database (all workers and servers of the site together); further ones from that address "
        "get a script that asks again later and nothing is stored; 0: no limit (behind a proxy, where every "
        "machine has the proxy's address).", option="--registrations-per-source", low=0,
    )
    login_failures_per_minute: int = setting(
        10, "KS_LOGIN_FAILURES_PER_MINUTE", "Failed logins (a wrong or revoked token, at the dashboard or the API) "
        "one source address may make per minute in each server process, in bursts of as many; further attempts "
        "from it are answered 429 with Retry-After without being checked; 0: no limit.", low=0,
    )
    header_timeout: float = setting(
        10.0, "KS_HEADER_TIMEOUT", "Seconds a client may take to send a request's headers before the connection "
        "is closed (408); headers are received without holding a thread; 0: no limit.", option="--header-timeout",
        low=0,
    )
    body_timeout: float = setting(
        10.0, "KS_BODY_TIMEOUT", "Seconds a client may take to send a request's body once its headers are in, "
        "before the connection is closed (408); bodies are received without holding a thread; 0: no limit.",
        option="--body-timeout", low=0,
    )
    secret_key: str = setting(
        "", "KS_SECRET_KEY", "The Fernet key that encrypts BMC passwords in the database; empty: the key file."
    )
    secret_key_file: str = setting(
        "", "KS_SECRET_KEY_FILE", "The key file; empty: <root>/kiwispray.key, created when first needed."
    )
    event_streams: int = setting(
        64, "KS_EVENT_STREAMS", "Event streams (GET /api/v1/events and the dashboard's /ui/events together) each "
        "server process keeps open at once, each on a thread of its own beyond --threads; one more is answered 503.",
        low=1,
    )
    webhook_timeout: float = setting(
        5.0, "KS_WEBHOOK_TIMEOUT", "Seconds a webhook delivery may take before it counts as failed and is retried.",
        low=0.1,
    )
    webhook_attempts: int = setting(
        12, "KS_WEBHOOK_ATTEMPTS", "Attempts at delivering one event to a webhook (1, 2, 4 ... up to 300 s apart) "
        "before it is logged as given up and the next event is sent.", low=1,
    )
    tls_cert: str = setting(
        "", "KS_TLS_CERT", "PEM certificate (chain) for the operator side: with --tls-key and --admin-port, the admin "
        "API and the dashboard are served over HTTPS on --admin-port only, and machines keep plain HTTP on --port.",
        option="--tls-cert",
    )
    tls_key: str = setting("", "KS_TLS_KEY", "PEM private key of --tls-cert.", option="--tls-key")
    admin_port: int = setting(
        0, "KS_ADMIN_PORT", "HTTPS port of the admin API and the dashboard (with --tls-cert and --tls-key); "
        "0: no HTTPS port.", option="--admin-port", low=0, high=65535,
    )
    session_lifetime: int = setting(
        8 * 3600, "KS_SESSION_LIFETIME", "Seconds a dashboard session lasts from its login; then the token is "
        "asked again.", low=60,
    )


@dataclass(frozen=True)
class Declaration:
    """One setting as declared: its name (``X``), field, type, default, variable, help, option and bounds."""

    name: str
    attr: str
    type: type
    default: Any
    env: str
    help: str
    option: str | None
    low: float | None
    high: float | None


def declarations() -> list[Declaration]:
    """Every setting, in the order of ``Settings``."""
    hints = typing.get_type_hints(Settings)
    return [
        Declaration(f.name.upper(), f.name, hints[f.name], f.default, f.metadata["env"], f.metadata["help"],
                    f.metadata["option"], f.metadata["low"], f.metadata["high"])
        for f in dataclasses.fields(Settings)
    ]


def declared(name: str) -> Declaration:
    """The declaration of setting ``name`` (``POLL_INTERVAL``)."""
    for found in declarations():
        if found.name == name:
            return found
    raise KeyError(name)


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _parse(d: Declaration, text: str) -> Any:
    """An environment variable's text as the setting's type."""
    if d.type is bool:
        value = _FLAGS.get(text.strip().lower())
        if value is None:
            raise ConfigError(f"{d.env}={text!r} is not a valid flag; use 1 or 0")
        return value
    try:
        return d.type(text)
    except ValueError:
        raise ConfigError(f"{d.env}={text!r} is not a valid {d.type.__name__}") from None


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Name -> value of the settings given by ``KS_*`` environment variables (empty ones count as unset)."""
    environ = os.environ if environ is None else environ
    return {d.name: _parse(d, environ[d.env]) for d in declarations() if environ.get(d.env, "") != ""}


def resolve(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Layer defaults, environment and explicit ``overrides`` (by name; None: not given); check and fill in."""
    by_name = {d.name: d for d in declarations()}
    given = from_env(environ)
    for name, value in (overrides or {}).items():
        if name not in by_name:
            raise ConfigError(f"{name} is not a setting")
        if value is not None:
            given[name] = value
    values: dict[str, Any] = {}
    for name, value in given.items():
        d = by_name[name]
        if d.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if d.low is not None and value < d.low or d.high is not None and value > d.high:
            bounds = f"from {d.low:g} to {d.high:g}" if d.high is not None else f"{d.low:g} or more"
            raise ConfigError(f"{name} must be {bounds}, not {value}")
        values[d.attr] = value
    settings = Settings(**values)
    root = Path(settings.root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"site root {root} is not a directory; create it or pass --root")
    if len({bool(settings.tls_cert), bool(settings.tls_key), bool(settings.admin_port)}) > 1:
        raise ConfigError("TLS needs all three of --tls-cert, --tls-key and --admin-port (KS_TLS_CERT, KS_TLS_KEY, "
                          "KS_ADMIN_PORT), or none")
    if settings.public_hosts and settings.pxepilot_api:
        raise ConfigError("--public-hosts and --pxepilot-api both answer GET /hosts (the original's text listing, "
                          "PXE Pilot's JSON): turn one of them off (KS_PUBLIC_HOSTS, KS_PXEPILOT_API)")
    if settings.x_accel_redirect and not settings.x_accel_redirect.startswith("/"):
        raise ConfigError(f"X-Accel-Redirect prefix {settings.x_accel_redirect!r} must be a path such as /_images")
    if settings.tftp_listen:
        tftp_address(settings.tftp_listen)
    return dataclasses.replace(
        settings,
        root=str(root),
        boot_files=str(root / (settings.boot_files or "boot-files")),
        database_url=settings.database_url or f"sqlite:///{root / 'kiwispray.db'}",
        base_url=settings.base_url.rstrip("/"),
    )


def api_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The admin API token given by ``KS_TOKEN`` (for ``--server``), if any; it wins over the token file."""
    environ = os.environ if environ is None else environ
    return environ.get("KS_TOKEN", "").strip() or None


def shipped(name: str) -> Path:
    """Shipped files: the directories ``templates`` and ``migrations``, the file ``dnsmasq.conf.example``.

    A wheel carries them inside the package (``ks/_shipped``); a checkout or an
    editable install finds them at the top of the repository.
    """
    package = Path(__file__).resolve().parent.parent  # ks/, beside which a checkout keeps them
    inside = package / "_shipped" / name
    return inside if inside.exists() else package.parent / name


def tftp_address(text: str) -> tuple[str, int]:
    """``ADDRESS[:PORT]`` of ``--tftp-listen`` (IPv4, or IPv6 in brackets) as (address, port)."""
    import ipaddress

    address, port = text, "69"
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        address, port = text.split(":")
    try:
        ipaddress.ip_address(address)
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ConfigError(f"TFTP address {text!r} is not ADDRESS[:PORT], such as 192.168.42.1 or 192.168.42.1:6969")
    return address, number
