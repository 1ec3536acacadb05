"""Settings: defaults, ``KS_*`` environment variables and ``--root``.

This is the only module that reads ``os.environ``. Everything else receives a
plain mapping (Flask's ``app.config`` or the dict returned here).
"""

import os
from pathlib import Path

from ks.errors import ConfigError

DEFAULTS = {
    # Site root: images/, templates/ (overrides) and the SQLite database.
    "ROOT": ".",
    # SQLAlchemy URL; empty means sqlite:///<ROOT>/kiwispray.db.
    "DATABASE_URL": "",
    # Base URL put into scripts; empty means "from the request's Host header".
    "BASE_URL": "",
    # Chain given to machines seen for the first time.
    "INITIAL_CHAIN": "new",
    # Seconds between two polls of a machine waiting in `new` (or in a conflict).
    "POLL_INTERVAL": 30,
    # PXELINUX links (PXE Pilot's model); empty TFTP_ROOT turns them off.
    "TFTP_ROOT": "",
    # Where the per-state PXELINUX configurations live; relative to TFTP_ROOT unless absolute.
    "PXELINUX_CONFIG_DIR": "pxelinux.configs",
    # Seconds one BMC operation may take; listings wait at most POWER_STATUS_TIMEOUT for all BMCs.
    "POWER_TIMEOUT": 10.0,
    "POWER_STATUS_TIMEOUT": 3.0,
    # Redfish over HTTPS: "true" checks BMC certificates against the system's CAs,
    # "false" accepts any, a path names the CA file to trust.
    "BMC_VERIFY": "true",
    # Comma-separated IPv4 subnets swept for BMCs given by MAC that the neighbour table lacks.
    "BMC_SUBNETS": "",
    # Seconds an image may take from its first boot to /finish before the machine
    # is flagged failed; images/<name>/kiwispray.toml may say otherwise; 0: no limit.
    "DEPLOY_TIMEOUT": 3600,
    # Seconds between two timeout checks in each server process; 0: only
    # `kiwispray timeouts check` (from cron) flags machines.
    "TIMEOUT_CHECK_INTERVAL": 30,
    # Largest value accepted for id= (ids are 64-bit integers in the database).
    "MAX_ID": 2**63 - 1,
    # Seconds an image download may make no progress before the server drops it
    # (a stalled client would otherwise hold a server thread); 0: never.
    "SEND_TIMEOUT": 60,
    # Requests each server process runs at once (0: as many as it has threads);
    # image downloads and BMC calls do not count once they only wait on the network.
    "RUNNING_REQUESTS": 2,
    # Seconds a template lookup (which file serves a state) and a compiled template
    # are trusted before the files are looked at again; 0: on every request.
    "TEMPLATE_CHECK_INTERVAL": 1.0,
    # With a front web server: the internal location that serves images/ (nginx's
    # X-Accel-Redirect); empty: this server sends image files itself.
    "X_ACCEL_REDIRECT": "",
    # Whether GET /hosts lists every host (id, hostname, state, serial) to anyone on
    # the boot network and /state answers without the host's bootid, as the original did.
    "PUBLIC_HOSTS": False,
    # Unknown machines registered per minute by one server (bursts of as many);
    # further ones get a script that asks again later, and nothing is stored. 0: no limit.
    "REGISTRATIONS_PER_MINUTE": 120,
    # Seconds a client may take to send a request's headers; 0: no limit. They
    # are received without holding a server thread either way.
    "HEADER_TIMEOUT": 10.0,
    # The Fernet key that encrypts BMC passwords in the database; empty: the key
    # file SECRET_KEY_FILE (empty: <ROOT>/kiwispray.key, created when first needed).
    "SECRET_KEY": "",
    "SECRET_KEY_FILE": "",
    # Event streams (GET /api/v1/events) each server process holds open; each has a
    # thread of its own beyond --threads, so streams never take a thread from boots.
    "EVENT_STREAMS": 64,
    # Seconds a webhook receiver may take to answer one delivery.
    "WEBHOOK_TIMEOUT": 5.0,
    # Attempts to deliver one event to a webhook before it is given up (logged) and the next one is sent.
    "WEBHOOK_ATTEMPTS": 12,
    # The operator side over HTTPS: certificate chain and key (PEM), and its port.
    "TLS_CERT": "",
    "TLS_KEY": "",
    "ADMIN_PORT": 0,
}

# Environment variable -> setting, with the type to convert to.
ENV_VARS = {
    "KS_ROOT": ("ROOT", str),
    "KS_DATABASE_URL": ("DATABASE_URL", str),
    "KS_BASE_URL": ("BASE_URL", str),
    "KS_INITIAL_CHAIN": ("INITIAL_CHAIN", str),
    "KS_POLL_INTERVAL": ("POLL_INTERVAL", int),
    "KS_TFTP_ROOT": ("TFTP_ROOT", str),
    "KS_POWER_TIMEOUT": ("POWER_TIMEOUT", float),
    "KS_POWER_STATUS_TIMEOUT": ("POWER_STATUS_TIMEOUT", float),
    "KS_BMC_VERIFY": ("BMC_VERIFY", str),
    "KS_BMC_SUBNETS": ("BMC_SUBNETS", str),
    "KS_PXELINUX_CONFIG_DIR": ("PXELINUX_CONFIG_DIR", str),
    "KS_DEPLOY_TIMEOUT": ("DEPLOY_TIMEOUT", int),
    "KS_TIMEOUT_CHECK_INTERVAL": ("TIMEOUT_CHECK_INTERVAL", float),
    "KS_SEND_TIMEOUT": ("SEND_TIMEOUT", float),
    "KS_X_ACCEL_REDIRECT": ("X_ACCEL_REDIRECT", str),
    "KS_TEMPLATE_CHECK_INTERVAL": ("TEMPLATE_CHECK_INTERVAL", float),
    "KS_RUNNING_REQUESTS": ("RUNNING_REQUESTS", int),
    "KS_PUBLIC_HOSTS": ("PUBLIC_HOSTS", "flag"),
    "KS_REGISTRATIONS_PER_MINUTE": ("REGISTRATIONS_PER_MINUTE", int),
    "KS_HEADER_TIMEOUT": ("HEADER_TIMEOUT", float),
    "KS_SECRET_KEY": ("SECRET_KEY", str),
    "KS_SECRET_KEY_FILE": ("SECRET_KEY_FILE", str),
    "KS_EVENT_STREAMS": ("EVENT_STREAMS", int),
    "KS_WEBHOOK_TIMEOUT": ("WEBHOOK_TIMEOUT", float),
    "KS_WEBHOOK_ATTEMPTS": ("WEBHOOK_ATTEMPTS", int),
    "KS_TLS_CERT": ("TLS_CERT", str),
    "KS_TLS_KEY": ("TLS_KEY", str),
    "KS_ADMIN_PORT": ("ADMIN_PORT", int),
}

_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def from_env(environ=None) -> dict:
    """Return the settings given by ``KS_*`` environment variables."""
    environ = os.environ if environ is None else environ
    settings = {}
    for var, (key, kind) in ENV_VARS.items():
        if environ.get(var, "") == "":
            continue
        if kind == "flag":
            value = _FLAGS.get(environ[var].strip().lower())
            if value is None:
                raise ConfigError(f"{var}={environ[var]!r} is not a valid flag; use 1 or 0")
            settings[key] = value
            continue
        try:
            settings[key] = kind(environ[var])
        except ValueError:
            raise ConfigError(f"{var}={environ[var]!r} is not a valid {kind.__name__}") from None
    return settings


def resolve(overrides=None, environ=None) -> dict:
    """Layer defaults, environment and explicit overrides; fill derived values."""
    settings = dict(DEFAULTS)
    settings.update(from_env(environ))
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    root = Path(settings["ROOT"]).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"site root {root} is not a directory; create it or pass --root")
    settings["ROOT"] = str(root)
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = f"sqlite:///{root / 'kiwispray.db'}"
    settings["BASE_URL"] = settings["BASE_URL"].rstrip("/")
    if settings["RUNNING_REQUESTS"] < 0:
        raise ConfigError(f"RUNNING_REQUESTS must be 0 (no limit) or more, not {settings['RUNNING_REQUESTS']}")
    for key in ("DEPLOY_TIMEOUT", "TIMEOUT_CHECK_INTERVAL", "REGISTRATIONS_PER_MINUTE", "HEADER_TIMEOUT"):
        if settings[key] < 0:
            raise ConfigError(f"{key} must be 0 or more seconds, not {settings[key]}")
    if settings["EVENT_STREAMS"] < 1:
        raise ConfigError(f"EVENT_STREAMS must be 1 or more, not {settings['EVENT_STREAMS']}")
    if settings["WEBHOOK_TIMEOUT"] <= 0 or settings["WEBHOOK_ATTEMPTS"] < 1:
        raise ConfigError("WEBHOOK_TIMEOUT must be more than 0 seconds and WEBHOOK_ATTEMPTS 1 or more")
    if len({bool(settings["TLS_CERT"]), bool(settings["TLS_KEY"]), bool(settings["ADMIN_PORT"])}) > 1:
        raise ConfigError("TLS needs all three of --tls-cert, --tls-key and --admin-port (KS_TLS_CERT, KS_TLS_KEY, "
                          "KS_ADMIN_PORT), or none")
    if settings["X_ACCEL_REDIRECT"] and not settings["X_ACCEL_REDIRECT"].startswith("/"):
        raise ConfigError(f"X-Accel-Redirect prefix {settings['X_ACCEL_REDIRECT']!r} must be a path such as /_images")
    return settings


def shipped(name: str) -> Path:
    """Directory of shipped files (``templates`` or ``migrations``).

    A wheel carries them inside the package (``ks/_shipped``); a checkout or an
    editable install finds them at the top of the repository.
    """
    package = Path(__file__).resolve().parent
    inside = package / "_shipped" / name
    return inside if inside.is_dir() else package.parent / name
