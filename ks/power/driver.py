"""What a power driver is: the parsed BMC address it is given and the protocol it follows; pure.

A driver speaks one protocol (IPMI, Redfish…) for the URL schemes that ks.power.schemes
maps to it. ks.power opens a session per operation — ``with driver(address, username,
password, timeout, verify) as session`` — and asks it for ``state()`` or to ``set(action)``;
the rules common to every BMC (which operations there are, "cycle" of a machine that is
off, the timeout) stay in ks.power, so that a driver holds only its protocol.
"""

import re
from dataclasses import dataclass, replace
from typing import Protocol, Self

# A MAC where the host goes; dashes, because colons would read as a port (urlsplit lowercases).
MAC_HOST = re.compile(r"[0-9a-f]{2}(?:-[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class BMCAddress:
    """A parsed BMC address: its scheme (as ks.power.schemes writes it), where, and the path its driver keeps."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def mac(self) -> str | None:
        """The BMC's MAC (``aa:bb:…``) when the address gives one instead of a host."""
        return self.host.replace("-", ":") if MAC_HOST.fullmatch(self.host) else None

    def at(self, ip: str) -> "BMCAddress":
        """The same BMC reached at ``ip``, where its MAC was found."""
        return replace(self, host=ip)

    @property
    def netloc(self) -> str:
        """``host:port``, with an IPv6 literal in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


class PowerDriver(Protocol):
    """A session with one BMC: opened by ``with`` (login), closed on exit (logout, connections)."""

    scheme: str  # the scheme its addresses are written with, a key of schemes.DRIVERS: "redfish+https"
    default_port: int  # the port of an address that names none

    @classmethod
    def check_path(cls, text: str, path: str) -> str:
        """The path of address ``text`` as the driver keeps it; InvalidBMCAddress saying what to write."""
        ...

    def __init__(self, address: BMCAddress, username: str, password: str, timeout: float, verify: bool | str) -> None:
        """A session not yet open; ``verify`` is for TLS (see ks.power.run), ``timeout`` bounds each exchange."""
        ...

    def __enter__(self) -> Self:
        """Log in; a KIWIspray PowerError (or subclass) when that fails."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """Log out and close, whatever happened inside."""
        ...

    def state(self) -> str:
        """'on', 'off' or 'unknown'."""
        ...

    def set(self, action: str) -> None:
        """Send 'on', 'off' (hard) or 'cycle' (of a machine that is on); return once the BMC accepted it."""
        ...
