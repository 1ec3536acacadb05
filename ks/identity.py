"""How a machine is recognised: MACs, DMI serial and UUID. Pure functions.

Firmware fills unset DMI fields with placeholder strings. Those are never
identity: two machines with the serial "To be filled by O.E.M." are not one
machine. The list lives here and nowhere else.
"""

import re
import uuid as uuidlib
from dataclasses import dataclass, field

from ks.errors import BadRequest
from ks.values import check_text, single

# Compared after upper-casing and trimming.
PLACEHOLDER_VALUES = frozenset(
    {
        "",
        "NONE",
        "NULL",
        "N/A",
        "NA",
        "NOT SPECIFIED",
        "NOT APPLICABLE",
        "NOT AVAILABLE",
        "NOT SETTABLE",
        "NOT PRESENT",
        "UNKNOWN",
        "TO BE FILLED BY O.E.M.",
        "TO BE FILLED BY OEM",
        "DEFAULT STRING",
        "SYSTEM SERIAL NUMBER",
        "SYSTEM PRODUCT NAME",
        "CHASSIS SERIAL NUMBER",
        "BASE BOARD SERIAL NUMBER",
        "SERIAL NUMBER",
        "INVALID",
        "EMPTY",
        "XXXXXXXXXX",
        "0",
        "00000000",
        "0000000000",
        "0123456789",
        "1234567890",
        "123456789",
        "03000200-0400-0500-0006-000700080009",
    }
)

MAX_IDENTIFIER_LENGTH = 128
MAX_MACS = 16

_HEX12 = re.compile(r"[0-9a-f]{12}")
_NET_PREFIX = re.compile(r"^net[0-7]\$", re.IGNORECASE)


class MacError(BadRequest):
    """A MAC address that cannot be parsed."""


def normalize_mac(text: str) -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` for any common spelling, or raise MacError.

    Accepts ``aa-bb-…`` (iPXE ``hexhyp``), ``aa:bb:…``, ``aabb.ccdd.eeff`` and the
    original bootstrap script's ``net0$aa-bb-…`` form of ``dhcp_mac``.
    """
    raw = _NET_PREFIX.sub("", text.strip())
    if len(raw) > 32:
        raise MacError(f"MAC address {raw[:32]!r}… is too long")
    digits = re.sub(r"[-:.]", "", raw).lower()
    if not _HEX12.fullmatch(digits):
        raise MacError(f"{raw!r} is not a MAC address (expected aa:bb:cc:dd:ee:ff)")
    if digits == "000000000000" or int(digits[:2], 16) & 1:
        # The group bit (broadcast, multicast): addresses a NIC listens to, never its own.
        raise MacError(f"{raw!r} is a zero, broadcast or multicast address, not the address of a network card")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_placeholder(value: str) -> bool:
    """True for empty values and the strings firmware uses for 'not set'."""
    v = value.strip().upper()
    if v in PLACEHOLDER_VALUES:
        return True
    compact = v.replace("-", "").replace(" ", "")
    return len(set(compact)) == 1 and compact[0] in "0F"


def normalize_serial(value: str) -> str | None:
    """Upper-cased serial (as the original stored it), or None for a placeholder."""
    value = check_text("serial", value.strip(), MAX_IDENTIFIER_LENGTH)
    return None if is_placeholder(value) else value.upper()


def normalize_uuid(value: str) -> str | None:
    """Upper-cased canonical UUID, or None for a placeholder; BadRequest if malformed."""
    value = value.strip()
    if is_placeholder(value):
        return None
    try:
        parsed = uuidlib.UUID(check_text("uuid", value, MAX_IDENTIFIER_LENGTH))
    except ValueError:
        raise BadRequest(f"uuid {value[:40]!r} is not a UUID") from None
    text = str(parsed).upper()
    return None if is_placeholder(text) else text


@dataclass(frozen=True)
class Identity:
    """What a booting machine told us about itself, normalised."""

    macs: tuple[str, ...] = ()
    serial: str | None = None
    uuid: str | None = None
    extra: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.macs or self.serial or self.uuid)

    def describe(self) -> str:
        """One line for logs and the conflict history."""
        parts = [f"mac={m}" for m in self.macs]
        if self.serial:
            parts.append(f"serial={self.serial}")
        if self.uuid:
            parts.append(f"uuid={self.uuid}")
        return " ".join(parts) or "no identifiers"


BOOT_PARAMS = tuple(f"net{i}" for i in range(8)) + ("dhcp_mac", "serial", "uuid", "buildarch", "platform", "poll")


def parse_boot_args(args: dict[str, list[str]]) -> Identity:
    """Build an Identity from /bootstrap's query (each key mapped to all its values).

    Parameters it does not know are ignored, so that a site's own bootstrap
    script may send more; known ones must come once.
    """
    one = {}
    for key in BOOT_PARAMS:
        value = single(key, args.get(key, []))
        if value is not None:
            one[key] = value
    macs: list[str] = []
    for key in BOOT_PARAMS[:9]:
        value = one.get(key, "").strip()
        if not value:
            continue  # iPXE expands a missing netN to an empty string
        mac = normalize_mac(value)
        if mac not in macs:
            macs.append(mac)
    extra = {}
    for key in ("buildarch", "platform"):
        if one.get(key):
            extra[key] = check_text(key, one[key], 32)
    return Identity(
        macs=tuple(macs),
        serial=normalize_serial(one.get("serial", "")),
        uuid=normalize_uuid(one.get("uuid", "")),
        extra=extra,
    )
