"""Enrollment rules: what a machine seen for the first time gets. Pure: no Flask, no SQL.

The site file ``<root>/rules.toml`` holds ordered rules; the first whose every
``match`` pattern fits the machine enrolls it::

    [[rule]]
    name = "rack4"
    match = { mac = "52:54:00:04:*", product = "PowerEdge*" }
    chain = "wipe,image1"
    hostname = "rack4-{{ seq }}"
    labels = { rack = "4" }

``match`` keys are ``mac`` (any of the machine's MACs), ``serial``, ``uuid`` or the
name of a fact (``ks.core.identity.BOOT_FACTS``, or one the site's discover image
reports); values are shell-style globs (``*``, ``?``, ``[…]``), or lists of globs
of which any may fit, compared without regard to case. A key the machine did not
report fits no pattern; ``match = {}`` fits every machine. ``chain`` defaults to the
server's initial chain, ``hostname`` to ``not-set``. ``hostname`` is a Jinja2
template rendered in a sandbox with ``seq`` (the rule's counter: 1, 2, 3, …, see
``ks.boot.booting.next_seq``), ``rule``, ``mac`` (the first MAC), ``macs``, ``serial``,
``uuid`` and ``facts`` (a fact the machine did not report reads as ``""``), and the
filter ``slug`` (lower case, runs of other characters as one ``-``).

``parse`` checks every field and reports every mistake, each on one line that names
its place: ``rules.toml:LINE:`` and the rule (its number and name) and field.
"""

import fnmatch
import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ks.core import states, values
from ks.core.errors import BadRequest, KSError, RulesError
from ks.core.identity import FACT_KEY, IDENTIFIER_KEYS
from ks.core.values import check_labels

log = logging.getLogger(__name__)

FILE_NAME = "rules.toml"
FIELDS = ("name", "match", "chain", "hostname", "labels")
IDENTIFIERS = ("mac", "serial", "uuid")
MAX_RULES = 1000
MAX_PATTERN_LENGTH = 128
MAX_TEMPLATE_LENGTH = 255
_GLOB_CHARACTERS = re.compile(r"[\x21-\x7e ]+")  # printable ASCII
DEFAULT_HOSTNAME = "not-set"


def slug(value) -> str:
    """The ``slug`` filter: ``"PowerEdge R640"`` -> ``"poweredge-r640"``."""
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")


_ENV = ImmutableSandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)
_ENV.filters["slug"] = slug


class _Facts(dict):
    """Facts as templates see them: one the machine did not report reads as ``missing``."""

    def __init__(self, facts: dict, missing: str = ""):
        super().__init__(facts)
        self.missing = missing

    def __missing__(self, key):
        return self.missing


@dataclass(frozen=True)
class Machine:
    """What a rule can match: a machine's identifiers and facts, normalised (``ks.core.identity``)."""

    macs: tuple[str, ...] = ()
    serial: str | None = None
    uuid: str | None = None
    facts: dict[str, str] = field(default_factory=dict)

    def values(self, key: str) -> tuple[str, ...]:
        """The values a ``match`` key is compared with (none if the machine did not report it)."""
        if key == "mac":
            return self.macs
        found = self.serial if key == "serial" else self.uuid if key == "uuid" else self.facts.get(key)
        return (found,) if found else ()


@dataclass(frozen=True)
class Enrollment:
    """What a rule gives a machine: its chain (None: the server's initial chain), hostname and labels."""

    rule: str
    seq: int
    chain: states.Chain | None
    hostname: str
    labels: dict[str, str]
    # Why the hostname template's result was not used (the host keeps DEFAULT_HOSTNAME); empty when it was.
    problem: str = ""


@dataclass(frozen=True)
class Rule:
    """One checked rule."""

    name: str
    position: int  # 1 for the first rule of the file
    match: tuple[tuple[str, tuple[re.Pattern, ...]], ...]
    patterns: dict[str, list[str]]  # as written, for listings
    chain: states.Chain | None = None
    hostname: str | None = None  # the template's source
    labels: dict[str, str] = field(default_factory=dict)

    def matches(self, machine: Machine) -> bool:
        """Whether every key of ``match`` has a pattern that fits one of the machine's values."""
        for key, compiled in self.match:
            found = machine.values(key)
            if not any(pattern.match(value) for value in found for pattern in compiled):
                return False
        return True

    def enroll(self, machine: Machine, seq: int) -> Enrollment:
        """What a machine enrolled by this rule as its ``seq``-th gets."""
        hostname, problem = DEFAULT_HOSTNAME, ""
        if self.hostname is not None:
            try:
                text = render_hostname(self.hostname, self.name, machine, seq).strip()
            except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
                problem = f"hostname template failed: {exc}"
            else:
                if values.HOSTNAME.fullmatch(text):
                    hostname = text
                else:
                    problem = f"hostname template gave {text[:80]!r}, not a hostname"
        return Enrollment(self.name, seq, self.chain, hostname, dict(self.labels), problem)


def render_hostname(source: str, rule: str, machine: Machine, seq: int, missing_fact: str = "") -> str:
    """The hostname template's text for ``machine`` as the rule's ``seq``-th."""
    template = _compiled(source)
    return template.render(
        seq=seq, rule=rule, mac=machine.macs[0] if machine.macs else "", macs=list(machine.macs),
        serial=machine.serial or "", uuid=machine.uuid or "", facts=_Facts(machine.facts, missing_fact),
    )


_TEMPLATES: dict[str, jinja2.Template] = {}


def _compiled(source: str) -> jinja2.Template:
    template = _TEMPLATES.get(source)
    if template is None:
        template = _TEMPLATES[source] = _ENV.from_string(source)
    return template


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file, in order."""

    rules: tuple[Rule, ...] = ()
    source: str = FILE_NAME

    def __len__(self) -> int:
        return len(self.rules)

    def first_match(self, machine: Machine) -> Rule | None:
        """The first rule that matches ``machine``, None if none does."""
        for rule in self.rules:
            if rule.matches(machine):
                return rule
        return None


# -- parsing -------------------------------------------------------------------------


class _Where:
    """Line numbers of a parsed file: where each ``[[rule]]`` table and its fields are written."""

    _HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines = text.splitlines()
        self.headers = [n for n, line in enumerate(self.lines, 1) if self._HEADER.match(line)]

    def __call__(self, index: int, name: str | None, key: str | None = None) -> str:
        """``rules.toml:LINE: rule N "name", key`` for rule ``index`` (0-based) and its field ``key``."""
        rule = f"rule {index + 1}" + (f" {name!r}" if name else "")
        what = f"{rule}, {key}" if key else rule
        line = self._line(index, key)
        return f"{self.source}:{line}: {what}" if line else f"{self.source}: {what}"

    def _line(self, index: int, key: str | None) -> int | None:
        if index >= len(self.headers):
            return None  # rules written as an inline array: no table header to point at
        start = self.headers[index]
        end = self.headers[index + 1] if index + 1 < len(self.headers) else len(self.lines) + 1
        if key:
            field_name = re.escape(key.split(".")[0])
            written = re.compile(rf"^\s*(?:{field_name}|\"{field_name}\")\s*[=.]")
            for n in range(start + 1, end):
                if written.match(self.lines[n - 1]):
                    return n
        return start


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message as ``rules.toml:LINE:COLUMN: what``."""
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        return f"{source}:{found.group(1)}:{found.group(2)}: {message[: found.start()]} (not valid TOML)"
    return f"{source}: {message} (not valid TOML)"


def parse(text: str, source: str = FILE_NAME, known_images: set[str] | None = None) -> RuleSet:
    """Check a rules file's text; RulesError lists every mistake, one line each.

    ``known_images``: the site's image names, which every chain's images must be
    among; None: chains are checked for form only.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError([_syntax_error(source, exc)]) from None
    problems: list[str] = []
    for key in document:
        if key != "rule":
            problems.append(f"{source}: unknown top-level key {key!r}; the file holds [[rule]] tables only")
    found = document.get("rule", [])
    if not isinstance(found, list):
        raise RulesError([*problems, f"{source}: 'rule' must be an array of tables, written [[rule]]"])
    if len(found) > MAX_RULES:
        raise RulesError([*problems, f"{source}: {len(found)} rules; a file holds at most {MAX_RULES}"])
    where = _Where(source, text)
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, table in enumerate(found):
        rule = _rule(index, table, where, known_images, problems)
        if rule is None:
            continue
        if rule.name in names:
            problems.append(f"{where(index, rule.name, 'name')}: the name is taken by rule {names[rule.name]}")
            continue
        names[rule.name] = index + 1
        rules.append(rule)
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), source)


def _rule(index: int, table, where: _Where, known_images: set[str] | None, problems: list[str]) -> Rule | None:
    """One rule, or None with its mistakes appended to ``problems``."""
    if not isinstance(table, dict):
        problems.append(f"{where(index, None)}: a rule must be a table")
        return None
    before = len(problems)
    name = table.get("name")

    def bad(key: str | None, message: str) -> None:
        problems.append(f"{where(index, name if isinstance(name, str) else None, key)}: {message}")

    for key in table:
        if key not in FIELDS:
            bad(key, f"unknown field; a rule has {', '.join(FIELDS)}")
    if name is None:
        bad(None, "has no name; give it one, e.g. name = \"rack4\"")
    elif not isinstance(name, str) or len(name) > states.MAX_NAME_LENGTH or not states.NAME_PATTERN.fullmatch(name):
        bad("name", "must be letters, digits, '.', '_' or '-' (starting with a letter or digit), at most "
                    f"{states.MAX_NAME_LENGTH}")
    match, patterns = _match(table.get("match"), bad)
    chain = None
    if "chain" in table:
        try:
            chain = states.parse_chain(table["chain"])
        except KSError as exc:
            bad("chain", str(exc))
        else:
            unknown = [n for n in chain if known_images is not None and states.is_image(n) and n not in known_images]
            if unknown:
                bad("chain", f"unknown image {unknown[0]!r} (no directory images/{unknown[0]}); known images: "
                             f"{', '.join(sorted(known_images or ())) or 'none'}; builtin states: "
                             f"{', '.join(states.BUILTINS)}")
    hostname = table.get("hostname")
    if hostname is not None:
        _check_template(hostname, name if isinstance(name, str) else "rule", bad)
    labels: dict[str, str] = {}
    given = table.get("labels", {})
    if not isinstance(given, dict):
        bad("labels", "must be a table of key = \"value\", e.g. labels = { rack = \"4\" }")
    else:
        # A number is taken as its decimal text (labels = { rack = 4 }).
        given = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in given.items()}
        try:
            labels = {key: value for key, value in check_labels(given).items() if value is not None}
        except BadRequest as exc:
            bad("labels", str(exc))
    if len(problems) > before or not isinstance(name, str):
        return None
    return Rule(name, index + 1, match, patterns, chain, hostname, labels)


def _match(given, bad: Callable[[str | None, str], None]) -> tuple[tuple, dict[str, list[str]]]:
    """The compiled patterns of a rule's ``match`` table, in the order written."""
    if given is None:
        bad(None, "has no match; e.g. match = { mac = \"52:54:00:04:*\" }, or match = {} for every machine")
        return (), {}
    if not isinstance(given, dict):
        bad("match", "must be a table of key = \"glob\", e.g. match = { product = \"PowerEdge*\" }")
        return (), {}
    compiled, written = [], {}
    for key, value in given.items():
        where = f"match.{key}"
        if key not in IDENTIFIERS and (key in IDENTIFIER_KEYS or not FACT_KEY.fullmatch(key)):
            hint = " (the key is 'mac')" if key == "macs" else ""
            bad(where, f"{key[:40]!r} is neither mac, serial, uuid nor a fact name (lower-case letters, digits, "
                       f"'_', '-'){hint}")
            continue
        globs = value if isinstance(value, list) else [value]
        if not globs or not all(isinstance(g, str) for g in globs):
            bad(where, "must be a glob (a string) or a list of globs")
            continue
        patterns = []
        for glob in globs:
            if not glob or len(glob) > MAX_PATTERN_LENGTH or not _GLOB_CHARACTERS.fullmatch(glob):
                bad(where, f"glob {glob[:40]!r} must be 1 to {MAX_PATTERN_LENGTH} printable ASCII characters")
                continue
            text = glob.lower().replace("-", ":") if key == "mac" else glob
            patterns.append(re.compile(fnmatch.translate(text), re.IGNORECASE))
        compiled.append((key, tuple(patterns)))
        written[key] = list(globs)
    return tuple(compiled), written


SAMPLE = Machine(macs=("52:54:00:00:00:01",), serial="SAMPLE1", uuid="00000000-0000-4000-8000-000000000001")


def _check_template(source, rule: str, bad: Callable[[str | None, str], None]) -> None:
    """Compile the hostname template and render it once for a sample machine; its text must be a hostname."""
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_TEMPLATE_LENGTH:
        bad("hostname", f"must be a template of 1 to {MAX_TEMPLATE_LENGTH} characters, e.g. \"rack4-{{{{ seq }}}}\"")
        return
    try:
        text = render_hostname(source, rule, SAMPLE, 1, missing_fact="sample")
    except jinja2.TemplateSyntaxError as exc:
        bad("hostname", f"template error: {exc.message}")
        return
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        known = "seq, rule, mac, macs, serial, uuid, facts"
        bad("hostname", f"template fails: {exc}; templates see {known}")
        return
    if not values.HOSTNAME.fullmatch(text.strip()):
        bad("hostname", f"gives {text.strip()[:80]!r} for a sample machine, which is not a hostname "
                        f"({values.HOSTNAME_RULE}; '{{{{ facts.product | slug }}}}' makes a fact fit)")


# -- the file ------------------------------------------------------------------------


def path_of(root: str | Path) -> Path:
    """Where a site's rules live."""
    return Path(root) / FILE_NAME


def load(path: Path, known_images: set[str] | None = None) -> RuleSet:
    """The rules of ``path``; no rules when it does not exist; RulesError when it has mistakes."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RuleSet(source=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([f"{path}: cannot be read: {exc}"]) from None
    return parse(text, str(path), known_images)


class RulesFile:
    """A site's rules as a running server sees them: re-read when the file changes.

    The file's modification time, size and inode are looked at most every
    ``check_interval`` seconds: when a machine registers, and by each server
    worker's thread (``ks.jobs.watch_rules``). A file with mistakes leaves the
    last good rules in force, and the log says so once per change of the file.
    """

    def __init__(self, path: Path, check_interval: float = 2.0, known_images: Callable[[], set[str]] | None = None):
        self.path = path
        self.check_interval = check_interval
        self.known_images = known_images
        self._rules = RuleSet(source=str(path))
        self._seen: tuple | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    def _stat(self) -> tuple | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return ("unreadable", str(exc))
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _images(self) -> set[str] | None:
        return self.known_images() if self.known_images else None

    def prime(self) -> RuleSet:
        """Read the file now, strictly (RulesError): the rules a server starts with, before its workers fork."""
        with self._lock:
            seen = self._stat()  # before reading: a change while it is read is seen by the next check
            self._rules = load(self.path, self._images())
            self._seen, self._next_check = seen, time.monotonic() + self.check_interval
            return self._rules

    def current(self) -> RuleSet:
        """The rules in force now."""
        now = time.monotonic()
        if now < self._next_check:
            return self._rules
        with self._lock:
            if now < self._next_check:
                return self._rules
            self._next_check = now + self.check_interval
            seen = self._stat()
            if seen == self._seen:
                return self._rules
            first = self._seen is None and not self._rules.rules
            self._seen = seen
            try:
                rules = load(self.path, self._images())
            except RulesError as exc:
                kept = len(self._rules)
                previous = f"the previous {_rules(kept)} {'stays' if kept == 1 else 'stay'} in force" \
                    if self._rules.rules or not first else "no rules are in force"
                log.warning("rules file %s has mistakes; %s until it is corrected:\n%s", self.path, previous,
                            "\n".join(exc.problems), extra={"event": "rules", "problems": exc.problems})
                return self._rules
            if seen is None and not first:
                log.info("rules file %s is gone: no rules are in force", self.path)
            elif seen is not None:
                log.info("rules: %s in force from %s", _rules(len(rules)), self.path,
                         extra={"event": "rules", "rules": [r.name for r in rules.rules]})
            self._rules = rules
            return rules


def _rules(count: int) -> str:
    """``1 rule``, ``2 rules``."""
    return f"{count} rule" if count == 1 else f"{count} rules"
