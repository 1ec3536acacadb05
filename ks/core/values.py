"""What a value from a machine or an operator may be, and how it is written into scripts. Pure.

Hostnames, serials, UUIDs and metadata end up in iPXE and shell scripts, legacy
``@VAR@`` ones substituted as plain text. Rather than listing what is dangerous
in two script languages, values are held to an alphabet that means nothing in
either: ASCII letters, digits, space and ``_ . : / @ + = , -``. No ``$`` (iPXE's
``${…}`` and the shell's expansions), no quotes, backslash or backtick, no
``; & | < > ( )`` (commands, redirections, process substitution), no
``* ? [ ] ~ { } !`` (globs, tilde, brace and history expansion), no ``#``
(comments), no control characters, no non-ASCII (so no lone surrogates, no
look-alikes). ``@`` is kept for e-mail-like values; legacy templates substitute
in one pass, so a value ``@bootid@`` stays text.

The space stays in the alphabet (a location, a product name), so a value may
be several words: the shell's ``"…"`` (the ``shell`` filter) keeps it one, iPXE
has no quoting at all, so there the ``ipxe`` filter (and a legacy iPXE
template, ``ks.boot.render.render_legacy``) writes each space as ``_``.

cloud-init's YAML (``ks.boot.nocloud``) needs no such alphabet: the ``yaml`` filter
(``yaml_text``) quotes and escapes any value into one YAML scalar.

Metadata is a JSON object of such strings, numbers, booleans, null and nested
objects, bounded in depth and size. Lists are refused: the original's legacy
rendering prints them as Python's ``['a']``, a glob in a shell script.
"""

import json
import math
import re
import shlex
import string

from ks.core.errors import BadRequest

SAFE_CHARACTERS = frozenset(string.ascii_letters + string.digits + " _.:/@+=,-")
REPLACEMENT = "_"
# Any one character outside the alphabet: a regular expression finds them at C speed.
_UNSAFE = re.compile(f"[^{re.escape(''.join(sorted(SAFE_CHARACTERS)))}]")

MAX_DEPTH = 8  # nested objects in metadata, the top level being 1
MAX_METADATA_BYTES = 16 * 1024  # one host's metadata as compact JSON
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 1024
# Labels: the operator's key=value tags, matched by selectors (``ks.core.selectors``).
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MAX_LABELS = 64  # on one host
MAX_LABEL_VALUE = 255
# A host's name, as DNS and the installed system take it (RFC 1123): labels of letters, digits and
# '-' (not first or last), 1 to 63 long, between dots; 253 characters in all.
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*")
HOSTNAME_RULE = "letters, digits and '-' between dots ('-' not first or last), at most 63 between two dots"


def single(name: str, given: list):
    """The one value of parameter ``name`` (None if absent); BadRequest if it was given more than once."""
    if len(given) > 1:
        raise BadRequest(f"parameter {name!r} given {len(given)} times; give it once")
    return given[0] if given else None


def is_decimal(text: str, max_digits: int = 19) -> bool:
    """Whether ``text`` is a plain decimal number (ASCII digits only) of at most ``max_digits``: an id."""
    return text.isascii() and text.isdigit() and len(text) <= max_digits


def load_json_object(text: str | bytes, name: str, example: str = "") -> dict:
    """A JSON object from text (NaN and Infinity refused); BadRequest names ``name`` otherwise."""
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"{name} must be a JSON object{example}")
    return document


def _no_constant(token: str):
    raise ValueError(f"{token} is not allowed")


def check_text(name: str, value, limit: int = MAX_VALUE_LENGTH, spaces: bool = True) -> str:
    """``value`` if it is a string of the safe alphabet at most ``limit`` long; else BadRequest."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    for char in value:
        if char not in SAFE_CHARACTERS or (char == " " and not spaces):
            allowed = "letters, digits, space and _.:/@+=,-" if spaces else "letters, digits and _.:/@+=,-"
            raise BadRequest(
                f"{name} contains the character {char!r}; it may hold only {allowed}, "
                "because it is written into boot and shell scripts"
            )
    return value


def check_hostname(value, name: str = "hostname") -> str:
    """``value`` if it is a hostname (``HOSTNAME``); else BadRequest. The one rule for every way a host is named."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if not HOSTNAME.fullmatch(value):
        raise BadRequest(f"{name} {value[:80]!r} is not a hostname: {HOSTNAME_RULE}")
    return value


def check_metadata(document, name: str = "metadata") -> dict:
    """``document`` if it is acceptable host metadata (see the module's docstring); else BadRequest."""
    if not isinstance(document, dict):
        raise BadRequest(f"{name} must be a JSON object, e.g. {{\"rack\": \"4\"}}")
    _check_object(document, name, 1)
    size = len(json.dumps(document, separators=(",", ":")))
    if size > MAX_METADATA_BYTES:
        raise BadRequest(
            f"{name} would be {size} bytes as JSON; a host's metadata may hold at most {MAX_METADATA_BYTES}"
        )
    return document


def _check_object(obj: dict, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadRequest(f"{path} is nested deeper than {MAX_DEPTH} levels")
    for key, value in obj.items():
        check_text(f"{path} key {key[:40]!r}" if isinstance(key, str) else f"{path} key", key, MAX_KEY_LENGTH)
        if not key:
            raise BadRequest(f"{path} has an empty key")
        where = f"{path}.{key}"
        if isinstance(value, dict):
            _check_object(value, where, depth + 1)
        elif isinstance(value, str):
            check_text(where, value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{where} is not a finite number")
        elif isinstance(value, list):
            raise BadRequest(f"{where} is a list; metadata values are strings, numbers, booleans, null or objects")
        elif value is not None and not isinstance(value, (bool, int, float)):
            raise BadRequest(f"{where} has an unsupported type")


def check_labels(updates, name: str = "labels") -> dict[str, str | None]:
    """``updates`` if it is ``{key: value or None}`` with valid keys and values (None removes); else BadRequest.

    Keys: a letter or digit, then up to 62 letters, digits and ``. _ / -``; values: at
    most ``MAX_LABEL_VALUE`` characters of the safe alphabet; at most ``MAX_LABELS`` keys.
    """
    if not isinstance(updates, dict):
        raise BadRequest(f"{name} must be an object like {{\"rack\": \"4\", \"role\": null}} (null removes a label)")
    if len(updates) > MAX_LABELS:
        raise BadRequest(f"{name}: {len(updates)} labels given; a host has at most {MAX_LABELS}")
    for key, value in updates.items():
        check_label_key(key)
        if value is not None:
            check_text(f"label {key!r}", value, MAX_LABEL_VALUE)
    return updates


def check_label_key(key) -> str:
    """``key`` if it is a valid label name; else BadRequest saying what a name may be."""
    if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
        shown = repr(key[:70]) if isinstance(key, str) else "a non-string"
        raise BadRequest(f"label name {shown} is invalid: a letter or digit, then up to 62 letters, digits "
                         "and . _ / - (e.g. rack, role, site/room)")
    return key


def parse_label_options(given: list[str], removed: list[str]) -> dict[str, str | None] | None:
    """``--label KEY=VALUE`` and ``--unlabel KEY`` options as label updates; None when neither was given."""
    if not given and not removed:
        return None
    updates: dict[str, str | None] = {}
    for item in given:
        key, equals, value = item.partition("=")
        if not equals:
            raise BadRequest(f"--label {item[:70]!r}: give KEY=VALUE, e.g. --label rack=4")
        updates[check_label_key(key)] = value
    for key in removed:
        if check_label_key(key) in updates:
            raise BadRequest(f"label {key!r} is both set and removed")
        updates[key] = None
    return check_labels(updates)


def load_stored_json(text: str):
    """Decode a JSON column as stored; nesting too deep for Python to read gives a marker, not a crash."""
    try:
        return json.loads(text)
    except RecursionError:
        return {"unreadable": "stored metadata nested too deep to read, set it again with edit-host -m"}


# -- writing values into scripts ---------------------------------------------------


def safe_text(value: str) -> str:
    """``value`` with every character outside the safe alphabet replaced by ``_``."""
    return _UNSAFE.sub(REPLACEMENT, value)


def script_safe(value, path: str, repaired: list[str], depth: int = 1):
    """A copy of a stored value that any script can carry: keys sorted, strings in the alphabet.

    Values stored before these checks existed (or written into the database
    directly) may hold anything; each place that had to be changed is appended
    to ``repaired`` so that the caller can say so in the log.
    """
    if isinstance(value, str):  # most values: checked first
        text = safe_text(value)
        if text != value:
            repaired.append(path)
        return text
    if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
        repaired.append(f"{path} (nested too deep)")
        return "..."
    if isinstance(value, list):
        repaired.append(f"{path} (a list)")
        return [script_safe(item, path, repaired, depth + 1) for item in value]
    if isinstance(value, dict):
        if not value:  # most hosts' facts and labels
            return {}
        copy = {}
        for key in sorted(value, key=str):
            name = safe_text(str(key))
            if name != key:
                repaired.append(f"{path} key {name}")
            copy[name] = script_safe(value[key], f"{path}.{name}", repaired, depth + 1)
        return copy
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    repaired.append(f"{path} ({type(value).__name__})")
    return safe_text(str(value))


def legacy_text(value) -> str:
    """What a legacy ``@VAR@`` placeholder becomes for a ``script_safe`` value: the original's ``str()``.

    Objects print as Python's ``{'a': 'b'}``: their keys and strings are in the
    alphabet, so the quotes pair up and the braces never form an expansion. A
    list (stored before lists were refused) would print as a glob, ``['a']``:
    its brackets become ``_``.
    """
    text = str(value)
    return text.replace("[", REPLACEMENT).replace("]", REPLACEMENT) if isinstance(value, (dict, list)) else text


def shell_quote(value) -> str:
    """The Jinja2 ``shell`` filter: one shell word that stands for exactly ``value``."""
    return shlex.quote(str(value))


def ipxe_text(value) -> str:
    """The Jinja2 ``ipxe`` filter: ``value`` as one inert argument of an iPXE command line.

    iPXE has no quoting and no escape: it splits a line at every space, after
    expanding ``${…}``, and ``kernel`` hands its arguments to the kernel joined
    by spaces. So every character outside the safe alphabet becomes ``_`` (no
    ``${…}`` expansion, no ``||``/``&&``, no line break can result), and so
    does the space: ``product=R640 init=/bin/sh`` stays one argument,
    ``product=R640_init=/bin/sh``, and can add no kernel argument of its own.
    Text meant as several words (an ``echo`` line) is filtered word by word:
    ``{{ message.split() | map("ipxe") | join(" ") }}``.
    """
    return safe_text(str(value)).replace(" ", REPLACEMENT)


def yaml_text(value) -> str:
    """The Jinja2 ``yaml`` filter: ``value`` as one YAML flow node that stands for exactly ``value``.

    Strings become double-quoted scalars with every character outside printable
    ASCII escaped (``\\n``, ``\\x85``, ``\\u2028``, ``\\U0001f600``), so no value can
    end a line, open a key, a list item, a comment or an anchor: it stays one
    scalar of the document, as YAML 1.1 (PyYAML, cloud-init) and 1.2 read it.
    Objects and lists become flow collections of such nodes; ``None`` is
    ``null``; numbers are written so that YAML 1.1 reads them back as numbers.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        text = repr(value)
        # YAML 1.1 reads a float only with a dot and a signed exponent: 1e+20 -> 1.0e+20.
        mantissa, e, exponent = text.partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        if e and exponent[0] not in "+-":
            exponent = "+" + exponent
        return mantissa + (("e" + exponent) if e else "")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_text(str(k))}: {yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return '"' + "".join(_yaml_char(c) for c in str(value)) + '"'


def _yaml_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value) -> str:
    """``value`` for a listing on a terminal: control characters, surrogates and non-characters escaped."""
    text = str(value)
    if text.isprintable() and not any(_unshowable(c) for c in text):
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if _unshowable(c) or not c.isprintable() else c for c in text
    )


def _unshowable(char: str) -> bool:
    code = ord(char)
    return 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE

