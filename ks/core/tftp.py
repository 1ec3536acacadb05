"""TFTP (RFC 1350, options RFC 2347-2349) as data: packets, option negotiation, and names.

What a Secure Boot machine reads before Linux runs comes over TFTP: shim (from the
firmware), GRUB (from shim), GRUB's configuration, the kernel and the initrd (from
GRUB; Debian 12's signed GRUB has no HTTP). ``ks.tftp`` serves them; this module
decides, without sockets, what a packet says and what a name means.

Names (``route``) become requests to the application, so that one boot decision
answers every loader:

=====================================  ==================================================
TFTP name                              asked of the application as
=====================================  ==================================================
``grub/grub.cfg``                      ``GET /bootstrap.grub``
``kiwispray/boot/mac=…/uuid=…/…``     ``GET /bootstrap?net0=<mac>&uuid=…&…&loader=grub``
``kiwispray/poll/…``                   the same with ``poll=1`` (a waiting machine asks again)
``images/<name>/<file>``               ``GET /images/<name>/<file>`` (the kernel, the initrd)
``<file>`` (no directory)              ``GET /boot-files/<file>`` (shim, GRUB, iPXE)
=====================================  ==================================================

A boot request's name is ``KEY=value`` segments (``GRUB_KEYS``: the MAC, the UUID, the
SMBIOS facts GRUB reads, the serial last); a value may hold ``/``: a segment that
starts with no known key belongs to the value before it. A leading ``/`` (GRUB's
absolute paths, shim's ``//grubx64.efi`` under HTTP) is ignored. Anything else is
"file not found"; no name reaches the file system but through the application's own
checks.
"""

import struct
from dataclasses import dataclass
from urllib.parse import urlencode

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
# Error codes (RFC 1350, 2347).
NOT_DEFINED, NOT_FOUND, ACCESS_VIOLATION, ILLEGAL_OPERATION, OPTION_REFUSED = 0, 1, 2, 4, 8

DEFAULT_BLOCK = 512
MIN_BLOCK, MAX_BLOCK = 8, 65464  # RFC 2348
MAX_NAME = 1024  # bytes of a requested name; GRUB's longest is a few hundred
MAX_REQUEST = 2048  # bytes of a request packet: a name, a mode, a few options
# The keys of a boot request's name (bootstrap.grub writes them), as /bootstrap's parameters;
# ``mac`` is the boot NIC's (``net0``).
GRUB_KEYS = ("mac", "uuid", "manufacturer", "product", "asset", "board_serial", "platform", "buildarch", "serial")


class TftpError(Exception):
    """A packet this server refuses: the peer gets an ERROR packet with ``code`` and the message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Request:
    """A read request: the name, and the options the client asked for (lower-case names)."""

    name: str
    options: dict[str, str]


def parse_request(packet: bytes) -> Request:
    """A read request; TftpError for a write request or a malformed packet."""
    if len(packet) < 4 or len(packet) > MAX_REQUEST:
        raise TftpError(ILLEGAL_OPERATION, "malformed request")
    (opcode,) = struct.unpack("!H", packet[:2])
    if opcode == WRQ:
        raise TftpError(ACCESS_VIOLATION, "this server only sends files")
    if opcode != RRQ:
        raise TftpError(ILLEGAL_OPERATION, "expected a read request")
    fields = packet[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"" or len(fields) % 2 == 0:
        raise TftpError(ILLEGAL_OPERATION, "malformed request")
    try:
        name, mode, *pairs = (field.decode("utf-8") for field in fields[:-1])
    except UnicodeDecodeError:
        raise TftpError(ILLEGAL_OPERATION, "the request is not UTF-8") from None
    if not name or len(name.encode()) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise TftpError(ACCESS_VIOLATION, "not a valid file name")
    if mode.lower() != "octet":
        raise TftpError(ILLEGAL_OPERATION, "only octet mode is served")
    options = {pairs[i].lower(): pairs[i + 1] for i in range(0, len(pairs), 2)}
    return Request(name, options)


def negotiate(options: dict[str, str], size: int | None) -> tuple[int, dict[str, str]]:
    """The block size to send with and the options to acknowledge (empty: no OACK).

    ``blksize`` is taken within RFC 2348's bounds, capped at ``MAX_BLOCK``; ``tsize``
    is answered with the size when it is known before sending. Others are ignored.
    """
    block, accepted = DEFAULT_BLOCK, {}
    wanted = options.get("blksize", "")
    if wanted.isdigit() and int(wanted) >= MIN_BLOCK:
        block = min(int(wanted), MAX_BLOCK)
        accepted["blksize"] = str(block)
    if "tsize" in options and size is not None:
        accepted["tsize"] = str(size)
    return block, accepted


def data(block: int, payload: bytes) -> bytes:
    """A DATA packet; block numbers wrap from 65535 to 0, as GRUB and EDK2 expect."""
    return struct.pack("!HH", DATA, block % 65536) + payload


def oack(options: dict[str, str]) -> bytes:
    """An OACK packet for the options accepted."""
    return struct.pack("!H", OACK) + b"".join(f"{k}\0{v}\0".encode() for k, v in options.items())


def error(code: int, message: str) -> bytes:
    """An ERROR packet, its message cut to fit one small packet."""
    return struct.pack("!HH", ERROR, code) + message.encode("utf-8", "replace")[:200] + b"\0"


def parse_ack(packet: bytes) -> int | None:
    """The block an ACK acknowledges; None for an ERROR from the client; ValueError otherwise."""
    if len(packet) >= 4:
        opcode, block = struct.unpack("!HH", packet[:4])
        if opcode == ACK:
            return block
        if opcode == ERROR:
            return None
    raise ValueError("not an ACK")


def route(name: str) -> tuple[str, str] | None:
    """The application's path (not URL-quoted) and query string a TFTP ``name`` is asked as; None: no such file."""
    path = name.lstrip("/")
    if ".." in path.split("/"):
        return None
    if path == "grub/grub.cfg":
        return "/bootstrap.grub", ""
    first, _, rest = path.partition("/")
    if first == "kiwispray":
        ask, _, identity = rest.partition("/")
        if ask not in ("boot", "poll"):
            return None
        values: dict[str, str] = {}
        key = None
        for segment in identity.split("/"):
            name, sep, value = segment.partition("=")
            if sep and name in GRUB_KEYS and name not in values:
                key, values[name] = name, value
            elif key is not None:
                values[key] += "/" + segment
        query = {("net0" if k == "mac" else k): v for k, v in values.items() if v}
        query["loader"] = "grub"
        if ask == "poll":
            query["poll"] = "1"
        return "/bootstrap", urlencode(query)
    if first == "images" and rest:
        return "/images/" + rest, ""
    if path and "/" not in path:
        return "/boot-files/" + path, ""
    return None
