"""Selectors: which hosts a listing shows or a bulk change touches. Pure: one grammar, parsed here.

A selector is comma-separated terms, each ``key=value`` (the value matches) or
``key!=value`` (it does not); a host is selected when every term holds::

    rack=4,role!=db          mac=52:54:00:04:*          product=PowerEdge R640

Values are shell-style globs: ``*`` any run of characters (also none), ``?``
exactly one; everything else stands for itself, case-sensitively. A backslash
takes the next character literally: ``\\,`` (a comma inside a value),
``\\*``, ``\\?``, ``\\\\``. A value holds the characters host values may hold
(``ks.core.values``: letters, digits, space and ``_ . : / @ + = , -``) besides
``* ? \\``; spaces are part of the value (``product=PowerEdge R640``).

Keys, checked in this order:

- builtin fields: ``id``, ``hostname``, ``state`` (the current state, the first
  of the chain), ``chain`` (the whole chain, e.g. ``chain=wipe\\,image1``),
  ``mac`` (any of the host's MACs; written with ``:`` or ``-``, any case),
  ``serial`` (matched upper-cased, as stored), ``uuid`` (lower-cased);
- otherwise the host's label of that name if it has one, else its fact of that
  name (a label is the operator's word and wins over what the firmware says);
- ``label.NAME`` and ``fact.NAME`` name one of the two explicitly, also for a
  name that is a builtin field (``label.state=…``).

A label or fact the host does not have is the empty value: ``role!=db`` selects
hosts without a ``role`` label too, ``role=`` those without one (or with an
empty one), ``role=?*`` those with one.

A malformed selector raises ``BadSelector`` naming the position (counted from
1) of the mistake: ``selector 'rack=4,,x': empty term at position 8``.
SQL for a selector is built in ``ks.fleet.select_sql``; ``Selector.matches`` is the
same meaning in Python.
"""

import re
from dataclasses import dataclass

from ks.core.errors import BadSelector
from ks.core.values import SAFE_CHARACTERS

BUILTINS = ("id", "hostname", "state", "chain", "mac", "serial", "uuid")
SCOPES = ("label", "fact")
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
KEY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-")
VALUE_CHARACTERS = SAFE_CHARACTERS | {"*", "?", "\\"}
MAX_SELECTOR_LENGTH = 4096
MAX_TERMS = 64
WILDCARDS = ("*", "?")


@dataclass(frozen=True)
class Pattern:
    """A value as parts: ``(True, "*"|"?")`` for a wildcard, ``(False, text)`` for literal text."""

    parts: tuple[tuple[bool, str], ...]

    @property
    def literal(self) -> str | None:
        """The text the value must equal when it has no wildcard; None otherwise."""
        if any(wild for wild, _ in self.parts):
            return None
        return "".join(text for _, text in self.parts)

    def regex(self) -> re.Pattern:
        """The pattern as a Python regular expression (to ``fullmatch``)."""
        return re.compile("".join((".*" if text == "*" else ".") if wild else re.escape(text)
                                  for wild, text in self.parts), re.DOTALL)

    def glob(self) -> str:
        """SQLite's GLOB pattern: wildcards as they are, ``[*]``, ``[?]``, ``[[]`` for the literal ones."""
        return "".join(text if wild else re.sub(r"([*?\[])", r"[\1]", text) for wild, text in self.parts)

    def like(self) -> str:
        """A LIKE pattern with ``\\`` as its escape character: ``%`` and ``_`` for the wildcards."""
        escape = lambda text: re.sub(r"([%_\\])", r"\\\1", text)  # noqa: E731
        return "".join(("%" if text == "*" else "_") if wild else escape(text) for wild, text in self.parts)

    def map(self, literal) -> "Pattern":
        """The pattern with ``literal`` applied to its literal parts (normalising MACs, serials)."""
        return Pattern(tuple((wild, text if wild else literal(text)) for wild, text in self.parts))


@dataclass(frozen=True)
class Term:
    """One ``key=value`` or ``key!=value``; ``scope`` is "builtin", "label", "fact" or "either"."""

    scope: str
    key: str
    pattern: Pattern
    negated: bool = False

    def value_of(self, host) -> list[str]:
        """The values of ``host`` this term looks at (several MACs, otherwise one)."""
        if self.scope == "builtin":
            if self.key == "mac":
                return list(host.macs)
            if self.key == "state":
                return [host.state.split(",", 1)[0]]
            if self.key == "chain":
                return [host.state]
            value = getattr(host, self.key)
            return ["" if value is None else str(value)]
        labels, facts = host.labels or {}, host.facts or {}
        if self.scope == "label" or (self.scope == "either" and self.key in labels):
            found = labels.get(self.key)
        else:
            found = facts.get(self.key)
        return ["" if found is None else str(found)]

    def matches(self, host) -> bool:
        regex = self.pattern.regex()
        hit = any(regex.fullmatch(value) for value in self.value_of(host))
        return hit != self.negated


@dataclass(frozen=True)
class Selector:
    """A parsed selector: the text as given and its terms."""

    text: str
    terms: tuple[Term, ...]

    def matches(self, host) -> bool:
        """Whether ``host`` (anything with the fields of ``ks.records.record.HostRecord``) is selected."""
        return all(term.matches(host) for term in self.terms)

    def __str__(self) -> str:
        return self.text


def parse(text) -> Selector:
    """The selector ``text``; BadSelector naming the position of the first mistake."""
    if not isinstance(text, str):
        raise BadSelector("a selector must be a string like 'rack=4,role!=db'")
    shown = text if len(text) <= 80 else text[:77] + "..."

    def fail(why: str, position: int):
        raise BadSelector(f"selector {shown!r}: {why} at position {position}")

    if len(text) > MAX_SELECTOR_LENGTH:
        raise BadSelector(f"selector {shown!r} is longer than {MAX_SELECTOR_LENGTH} characters")
    if not text.strip():
        raise BadSelector("empty selector; give terms like 'rack=4,role!=db' (see README, Selectors)")
    terms: list[Term] = []
    start = 0
    while True:
        end = _scan_term(text, start, fail)
        if len(terms) == MAX_TERMS:
            fail(f"more than {MAX_TERMS} terms", start + 1)
        terms.append(_term(text, start, end, fail))
        if end == len(text):
            return Selector(text, tuple(terms))
        start = end + 1


def _scan_term(text: str, start: int, fail) -> int:
    """Where the term starting at ``start`` ends: the index of its unescaped comma, or the end."""
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 == len(text):
                fail("'\\' with nothing to escape", i + 1)
            i += 2
            continue
        if char == ",":
            break
        i += 1
    if i == start:
        fail("empty term", i + 1)
    return i


def _term(text: str, start: int, end: int, fail) -> Term:
    """One term of ``text[start:end]``."""
    equals = text.find("=", start, end)
    if equals < 0:
        fail(f"term {text[start:end][:40]!r} has no '=' or '!='", start + 1)
    negated = equals > start and text[equals - 1] == "!"
    key_end = equals - 1 if negated else equals
    key = text[start:key_end]
    if not key:
        fail("missing key before '" + ("!=" if negated else "=") + "'", start + 1)
    for offset, char in enumerate(key):
        if char not in KEY_CHARACTERS or (offset == 0 and not char.isalnum()):
            fail(f"key {key[:40]!r} may not hold {char!r} (keys are letters, digits and . _ / -, "
                 "starting with a letter or digit)", start + offset + 1)
    scope, name = "builtin" if key in BUILTINS else "either", key
    prefix, dot, rest = key.partition(".")
    if dot and prefix in SCOPES:
        if not rest:
            fail(f"'{prefix}.' needs a name after it", start + 1)
        scope, name = prefix, rest
    if not KEY.fullmatch(name):
        fail(f"key {name[:40]!r} is longer than 63 characters or does not start with a letter or digit",
             start + 1)
    pattern = _pattern(text, equals + 1, end, fail)
    if scope == "builtin":
        pattern = _normalised(name, pattern)
    return Term(scope, name, pattern, negated)


def _pattern(text: str, start: int, end: int, fail) -> Pattern:
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    i = start
    while i < end:
        char = text[i]
        if char == "\\":
            escaped = text[i + 1]
            if escaped not in VALUE_CHARACTERS:
                fail(f"value may not hold {escaped!r}", i + 2)
            literal.append(escaped)
            i += 2
            continue
        if char in WILDCARDS:
            if literal:
                parts.append((False, "".join(literal)))
                literal = []
            if not (char == "*" and parts and parts[-1] == (True, "*")):  # ** is *
                parts.append((True, char))
        elif char in VALUE_CHARACTERS:
            literal.append(char)
        else:
            fail(f"value may not hold {char!r} (values are letters, digits, space and _.:/@+=,- "
                 "with * and ? as wildcards)", i + 1)
        i += 1
    if literal:
        parts.append((False, "".join(literal)))
    return Pattern(tuple(parts))


def _normalised(key: str, pattern: Pattern) -> Pattern:
    """Builtin values compared as they are stored: MACs lower-case with ':', serials upper-case, UUIDs lower-case."""
    if key == "mac":
        return pattern.map(lambda text: text.lower().replace("-", ":"))
    if key == "serial":
        return pattern.map(str.upper)
    if key == "uuid":
        return pattern.map(str.lower)
    return pattern
