"""BMC addresses in the Metal3/Ironic convention, pure: no network.

* ``ipmi://host[:port]``                               IPMI 2.0 over LAN (lanplus), port 623
* ``redfish://host[:port]/redfish/v1/Systems/<id>``    Redfish over HTTPS
* ``redfish+https://…``, ``redfish+http://…``           the same with the transport spelled out

In place of the host, a BMC may be given by its MAC, written with dashes
(``ipmi://52-54-00-aa-bb-cc``): ks.power.discovery finds its IPv4 address.

Credentials never travel inside the address: they are stored and passed apart
from it, so an address can be listed and logged without leaking a password.
"""

import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from ks.errors import InvalidBMCAddress

# scheme -> (driver, transport, default port)
SCHEMES = {
    "ipmi": ("ipmi", None, 623),
    "redfish": ("redfish", "https", 443),
    "redfish+https": ("redfish", "https", 443),
    "redfish+http": ("redfish", "http", 80),
}
EXAMPLES = "ipmi://10.0.0.5 or redfish://10.0.0.5/redfish/v1/Systems/1"

# A MAC where the host goes; dashes, because colons would read as a port (urlsplit lowercases).
MAC_HOST = re.compile(r"[0-9a-f]{2}(?:-[0-9a-f]{2}){5}")
COLON_MAC = re.compile(r"//\[?[0-9a-f]{2}(?::[0-9a-f]{2}){5}(?![0-9a-f]|::)", re.IGNORECASE)

# One member of the Systems collection; ids such as System.Embedded.1 (Dell) or a UUID.
SYSTEM_PATH = re.compile(r"/redfish/v1/Systems/[^/?#]+/?")


@dataclass(frozen=True)
class BMCAddress:
    """A parsed BMC address: which driver, where, and (Redfish) which system."""

    driver: str  # "ipmi" | "redfish"
    host: str
    port: int
    transport: str | None = None  # "https" | "http" for Redfish
    system: str | None = None  # "/redfish/v1/Systems/<id>" for Redfish

    @property
    def mac(self) -> str | None:
        """The BMC's MAC (``aa:bb:…``) when the address gives one instead of a host."""
        return self.host.replace("-", ":") if MAC_HOST.fullmatch(self.host) else None

    def at(self, ip: str) -> "BMCAddress":
        """The same BMC reached at ``ip``, where its MAC was found."""
        return replace(self, host=ip)

    @property
    def base_url(self) -> str:
        """The Redfish service's ``scheme://host:port``."""
        return f"{self.transport}://{_host_for_url(self.host)}:{self.port}"

    def __str__(self) -> str:
        if self.driver == "ipmi":
            return f"ipmi://{_host_for_url(self.host)}:{self.port}"
        return f"redfish+{self.base_url}{self.system}"


def parse_bmc_address(text: str) -> BMCAddress:
    """Parse ``ipmi://…`` or ``redfish[+http|+https]://…``; InvalidBMCAddress says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidBMCAddress(f"a BMC address is required, e.g. {EXAMPLES}")
    text = text.strip()
    if COLON_MAC.search(text):
        raise InvalidBMCAddress(
            f"BMC address {text!r}: write a MAC with dashes, e.g. ipmi://52-54-00-aa-bb-cc (a colon starts the port)"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:  # a port that is not a number or out of range
        raise InvalidBMCAddress(f"BMC address {text!r}: {error}; use e.g. {EXAMPLES}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise InvalidBMCAddress(f"BMC address {text!r}: the scheme must be one of {known}; e.g. {EXAMPLES}")
    if "@" in parts.netloc:
        raise InvalidBMCAddress(
            f"BMC address {text!r} contains credentials; give the address without "
            "'user:password@' and pass the username and password separately"
        )
    if not parts.hostname:
        raise InvalidBMCAddress(f"BMC address {text!r} names no host; e.g. {EXAMPLES}")
    if parts.query or parts.fragment:
        raise InvalidBMCAddress(f"BMC address {text!r}: remove the '?…' or '#…' part")
    if port == 0:
        raise InvalidBMCAddress(f"BMC address {text!r}: port 0 is not a port a BMC listens on")
    driver, transport, default_port = SCHEMES[scheme]
    port = port or default_port
    if driver == "ipmi":
        if parts.path not in ("", "/"):
            raise InvalidBMCAddress(f"IPMI address {text!r} takes no path; use ipmi://host[:port]")
        return BMCAddress("ipmi", parts.hostname, port)
    if not SYSTEM_PATH.fullmatch(parts.path):
        raise InvalidBMCAddress(
            f"Redfish address {text!r} must name one system: "
            f"{scheme}://host[:port]/redfish/v1/Systems/<id> (the ids are listed under /redfish/v1/Systems)"
        )
    return BMCAddress("redfish", parts.hostname, port, transport, parts.path.rstrip("/"))


def _host_for_url(host: str) -> str:
    """Put an IPv6 literal back into brackets."""
    return f"[{host}]" if ":" in host else host
