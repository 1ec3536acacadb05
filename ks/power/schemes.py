"""BMC addresses in the Metal3/Ironic convention: the driver registry by URL scheme, and the parser.

* ``ipmi://host[:port]``                               IPMI 2.0 over LAN (lanplus), port 623
* ``redfish://host[:port]/redfish/v1/Systems/<id>``    Redfish over HTTPS
* ``redfish+https://…``, ``redfish+http://…``           the same with the transport spelled out

In place of the host, a BMC may be given by its MAC, written with dashes
(``ipmi://52-54-00-aa-bb-cc``): ks.power.discovery finds its IPv4 address.

Credentials never travel inside the address: they are stored and passed apart
from it, so an address can be listed and logged without leaking a password.

A new driver is a module with a class that follows ks.power.driver.PowerDriver, and
one line in DRIVERS for each scheme it speaks.
"""

import re
from urllib.parse import urlsplit

from ks.core.errors import InvalidBMCAddress
from ks.power.driver import BMCAddress, PowerDriver
from ks.power.ipmi import IPMI
from ks.power.redfish import Redfish, RedfishHTTP

DRIVERS: dict[str, type[PowerDriver]] = {
    "ipmi": IPMI,
    "redfish": Redfish,
    "redfish+https": Redfish,
    "redfish+http": RedfishHTTP,
}
EXAMPLES = "ipmi://10.0.0.5 or redfish://10.0.0.5/redfish/v1/Systems/1"

COLON_MAC = re.compile(r"//\[?[0-9a-f]{2}(?::[0-9a-f]{2}){5}(?![0-9a-f]|::)", re.IGNORECASE)


def driver(address: BMCAddress) -> type[PowerDriver]:
    """The driver that speaks ``address``'s protocol."""
    return DRIVERS[address.scheme]


def parse_bmc_address(text: str) -> BMCAddress:
    """Parse a BMC address of a scheme in DRIVERS; InvalidBMCAddress says what is wrong."""
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
    if scheme not in DRIVERS:
        known = ", ".join(f"{name}://" for name in DRIVERS)
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
    found = DRIVERS[scheme]
    return BMCAddress(found.scheme, parts.hostname, port or found.default_port, found.check_path(text, parts.path))
