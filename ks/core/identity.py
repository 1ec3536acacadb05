"""How a machine is recognised (MACs, DMI serial and UUID) and what else it reports (facts). Pure functions.

Firmware fills unset DMI fields with placeholder strings. Those are never
identity: two machines with the serial "To be filled by O.E.M." are not one
machine. The list lives here and nowhere else.
"""

import re
import uuid as uuidlib
from dataclasses import dataclass, field

from ks.core.errors import BadRequest
from ks.core.values import check_text, safe_text, single

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


# -- facts ------------------------------------------------------------------------
#
# What a machine reports beyond its identifiers: never identity, only description,
# kept per host (``hosts.facts``) for listings, selectors and enrollment rules.
# /bootstrap takes these parameters (the shipped bootstrap.ipxe sends each from the
# iPXE setting named beside it; an iPXE without the setting sends an empty value).
BOOT_FACTS = {
    "manufacturer": "manufacturer",  # SMBIOS system manufacturer (type 1)
    "product": "product",  # SMBIOS system product name (type 1)
    "asset": "asset",  # SMBIOS chassis asset tag (type 3)
    "board_serial": "board-serial",  # SMBIOS base board serial (type 2)
    "buildarch": "buildarch",  # the architecture iPXE was built for: i386, x86_64, arm64
    "platform": "platform",  # the firmware interface iPXE runs on: pcbios, efi
    "chip": "net0/chip",  # the first NIC's chip, as iPXE's driver names it
    "memsize": "memsize",  # MiB of memory (iPXE 1.21 and later, BIOS)
    "ipxe_version": "version",  # iPXE's version
}
# iPXE's own values hold only the alphabet: a character outside it there is refused
# with 400, as in an identifier. Every other fact is description that vendors write,
# where parentheses, brackets and commas are common ("Standard PC (i440FX + PIIX,
# 1996)"): characters outside the alphabet become "_", so a machine is never turned
# away for its product name.
IPXE_FACTS = frozenset({"buildarch", "platform", "chip", "memsize", "ipxe_version"})
MAX_FACT_LENGTH = 128
MAX_FACTS = 64
# Names of facts; ``mac``, ``serial`` and ``uuid`` are identifiers, never facts.
FACT_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
IDENTIFIER_KEYS = frozenset({"mac", "macs", "serial", "uuid"})


def check_fact_key(key: str) -> str:
    """``key`` if it may name a fact (lower-case letters, digits, ``_``, ``-``; not an identifier)."""
    if not isinstance(key, str) or not FACT_KEY.fullmatch(key):
        shown = key[:40] if isinstance(key, str) else key
        raise BadRequest(f"{shown!r} cannot name a fact: lower-case letters, digits, '_' and '-', at most 64, "
                         "starting with a letter or digit")
    if key in IDENTIFIER_KEYS:
        raise BadRequest(f"{key!r} is an identifier of the machine, not a fact")
    return key


def normalize_fact(key: str, value: str) -> str | None:
    """A reported fact's value as stored, or None for a placeholder or nothing.

    iPXE's own values (``IPXE_FACTS``) are held to the alphabet (BadRequest)
    like a serial; any other keeps its text with characters outside the
    alphabet as ``_``, runs of spaces as one, at most ``MAX_FACT_LENGTH`` characters.
    """
    if not isinstance(value, str):
        raise BadRequest(f"fact {key} must be a string")
    value = value.strip()
    if key in IPXE_FACTS:
        value = check_text(f"fact {key}", value, MAX_FACT_LENGTH)
    else:
        value = " ".join(safe_text(value[: MAX_FACT_LENGTH * 4]).split())[:MAX_FACT_LENGTH].strip()
    return None if is_placeholder(value) else value


@dataclass(frozen=True)
class Identity:
    """What a booting machine told us about itself, normalised."""

    macs: tuple[str, ...] = ()
    serial: str | None = None
    uuid: str | None = None
    # What it reported of BOOT_FACTS (placeholders left out); empty from an iPXE script that sends none.
    facts: dict[str, str] = field(default_factory=dict)

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


BOOT_PARAMS = tuple(f"net{i}" for i in range(8)) + ("dhcp_mac", "serial", "uuid", "poll", *BOOT_FACTS)


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
    facts = {}
    for key in BOOT_FACTS:
        value = normalize_fact(key, one.get(key, ""))
        if value is not None:
            facts[key] = value
    return Identity(
        macs=tuple(macs),
        serial=normalize_serial(one.get("serial", "")),
        uuid=normalize_uuid(one.get("uuid", "")),
        facts=facts,
    )
