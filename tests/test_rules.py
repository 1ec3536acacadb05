"""Enrollment rules, pure: parsing, every mistake with its position, matching, what a rule gives."""

import logging
import os

import pytest

from ks.core import rules
from ks.core.errors import BadRequest, RulesError
from ks.core.rules import Machine
from ks.fleet.change import HostChange

from helpers import RACK4_RULES

RACK4 = RACK4_RULES

CATCH_ALL = """\
[[rule]]
name = "rest"
match = {}
hostname = "{{ facts.product | slug }}-{{ '%03d' % seq }}"
"""

IMAGES = {"wipe", "image1"}


def problems(text: str, known_images=None) -> list[str]:
    with pytest.raises(RulesError) as caught:
        rules.parse(text, "rules.toml", known_images)
    return caught.value.problems


def machine(*macs: str, serial=None, uuid=None, **facts) -> Machine:
    return Machine(macs=macs, serial=serial, uuid=uuid, facts=facts)


def test_the_documented_example_parses_with_every_field():
    (rule,) = rules.parse(RACK4, known_images=IMAGES).rules
    assert (rule.name, rule.position, rule.chain, rule.labels) == ("rack4", 1, ("wipe", "image1"), {"rack": "4"})
    assert rule.patterns == {"mac": ["52:54:00:04:*"], "product": ["PowerEdge*"]}


def test_no_rules_and_an_empty_file_match_nothing():
    assert rules.parse("").first_match(machine("52:54:00:04:00:01")) is None
    assert len(rules.parse("# nothing yet\n")) == 0


@pytest.mark.parametrize(
    "candidate, matched",
    [
        (machine("52:54:00:04:00:01", product="PowerEdge R640"), "rack4"),
        (machine("52:54:00:04:00:01", product="poweredge r640"), "rack4"),  # case does not count
        (machine("52:54:00:99:00:01", "52:54:00:04:00:02", product="PowerEdge R640"), "rack4"),  # any MAC
        (machine("52:54:00:04:00:01", product="ProLiant DL380"), "rest"),  # every key must fit
        (machine("52:54:00:04:00:01"), "rest"),  # a fact not reported fits no pattern
        (machine("52:54:00:05:00:01", product="PowerEdge R640"), "rest"),
    ],
)
def test_the_first_rule_whose_every_pattern_fits_wins(candidate, matched):
    ruleset = rules.parse(RACK4 + "\n" + CATCH_ALL, known_images=IMAGES)
    assert ruleset.first_match(candidate).name == matched


@pytest.mark.parametrize(
    "match, candidate, fits",
    [
        ('{ serial = "SN-1*" }', machine("52:54:00:00:00:01", serial="SN-1234"), True),
        ('{ serial = "SN-1*" }', machine("52:54:00:00:00:01"), False),
        ('{ serial = "*" }', machine("52:54:00:00:00:01"), False),  # no serial: nothing to match
        ('{ uuid = "4C4C4544-*" }', machine("52:54:00:00:00:01", uuid="4C4C4544-0042-3510-8056-B4C04F335931"), True),
        ('{ mac = "52-54-00-0?-*" }', machine("52:54:00:07:00:01"), True),  # either MAC spelling
        ('{ mac = "52:54:00:0[0-3]:*" }', machine("52:54:00:07:00:01"), False),
        ('{ product = ["R640*", "PowerEdge*"] }', machine("52:54:00:00:00:01", product="PowerEdge R740"), True),
        ('{ manufacturer = "QEMU", platform = "efi" }', machine("52:54:00:00:00:01", manufacturer="QEMU",
                                                               platform="pcbios"), False),
    ],
)
def test_patterns(match, candidate, fits):
    ruleset = rules.parse(f'[[rule]]\nname = "r"\nmatch = {match}\n')
    assert (ruleset.first_match(candidate) is not None) is fits


def test_a_rule_gives_its_chain_hostname_and_labels_with_the_seq():
    (rule,) = rules.parse(RACK4 + CATCH_ALL.replace("[[rule]]", "\n[[rule]]")).rules[:1]
    got = rule.enroll(machine("52:54:00:04:00:01", product="PowerEdge R640"), 7)
    assert (got.rule, got.seq, got.chain, got.hostname, got.labels, got.problem) == (
        "rack4", 7, ("wipe", "image1"), "rack4-7", {"rack": "4"}, "")


def test_hostname_templates_see_the_machine():
    text = ('[[rule]]\nname = "r"\nmatch = {}\n'
            'hostname = "{{ facts.product | slug }}-{{ serial | lower }}-{{ mac | replace(\':\', \'\') }}-{{ seq }}"\n')
    (rule,) = rules.parse(text).rules
    got = rule.enroll(machine("52:54:00:04:00:01", serial="SN7", product="PowerEdge R640"), 3)
    assert got.hostname == "poweredge-r640-sn7-525400040001-3"


def test_a_hostname_that_comes_out_wrong_for_one_machine_leaves_the_default_and_says_why():
    (rule,) = rules.parse(CATCH_ALL).rules
    got = rule.enroll(machine("52:54:00:04:00:01"), 1)  # no product: "-001"
    assert got.hostname == "not-set"
    assert "'-001', not a hostname" in got.problem
    assert (got.rule, got.seq) == ("rest", 1)


def test_without_hostname_or_chain_the_defaults_stay():
    (rule,) = rules.parse('[[rule]]\nname = "label-only"\nmatch = {}\nlabels = { site = "ber" }\n').rules
    got = rule.enroll(machine("52:54:00:04:00:01"), 1)
    assert (got.chain, got.hostname, got.labels) == (None, "not-set", {"site": "ber"})


BAD = [
    ('[[rule]]\nname = "a"\nmatch = {\n', "rules.toml:3:", "not valid TOML"),
    ('rule = 1\n', "rules.toml:", "'rule' must be an array of tables"),
    ('colour = "red"\n', "rules.toml:", "unknown top-level key 'colour'"),
    ('[[rule]]\nmatch = {}\n', "rules.toml:1: rule 1", "has no name"),
    ('[[rule]]\nname = "bad name"\nmatch = {}\n', "rules.toml:2: rule 1 'bad name', name", "letters, digits"),
    ('[[rule]]\nname = "a"\n', "rules.toml:1: rule 1 'a'", "has no match"),
    ('[[rule]]\nname = "a"\nmatch = "all"\n', "rules.toml:3: rule 1 'a', match", "must be a table"),
    ('[[rule]]\nname = "a"\nmatch = { macs = "52:*" }\n', "rules.toml:3: rule 1 'a', match.macs", "the key is 'mac'"),
    ('[[rule]]\nname = "a"\nmatch = { Product = "x" }\n', "rules.toml:3: rule 1 'a', match.Product", "fact name"),
    ('[[rule]]\nname = "a"\nmatch = { mac = 5 }\n', "rules.toml:3: rule 1 'a', match.mac", "a glob"),
    ('[[rule]]\nname = "a"\nmatch = { mac = "" }\n', "rules.toml:3: rule 1 'a', match.mac", "1 to 128 printable"),
    ('[[rule]]\nname = "a"\nmatch = { mac = [] }\n', "rules.toml:3: rule 1 'a', match.mac", "a glob"),
    ('[[rule]]\nname = "a"\nmatch = {}\nchain = "new,image1"\n', "rules.toml:4: rule 1 'a', chain",
     "'new' can only be the last"),
    ('[[rule]]\nname = "a"\nmatch = {}\nchain = "image9"\n', "rules.toml:4: rule 1 'a', chain",
     "unknown image 'image9'"),
    ('[[rule]]\nname = "a"\nmatch = {}\nchain = "a;b"\n', "rules.toml:4: rule 1 'a', chain", "not a valid state"),
    ('[[rule]]\nname = "a"\nmatch = {}\nhostname = "{{ seq "\n', "rules.toml:4: rule 1 'a', hostname",
     "template error"),
    ('[[rule]]\nname = "a"\nmatch = {}\nhostname = "{{ sequence }}"\n', "rules.toml:4: rule 1 'a', hostname",
     "'sequence' is undefined"),
    ('[[rule]]\nname = "a"\nmatch = {}\nhostname = "{{ macs.__class__.__mro__ }}"\n',
     "rules.toml:4: rule 1 'a', hostname", "unsafe"),
    ('[[rule]]\nname = "a"\nmatch = {}\nhostname = "rack 4-{{ seq }}"\n', "rules.toml:4: rule 1 'a', hostname",
     "'rack 4-1' for a sample machine, which is not a hostname"),
    ('[[rule]]\nname = "a"\nmatch = {}\nhostname = "x{{ seq }}$(reboot)"\n', "rules.toml:4: rule 1 'a', hostname",
     "not a hostname"),
    ('[[rule]]\nname = "a"\nmatch = {}\nlabels = { "a b" = "4" }\n', "rules.toml:4: rule 1 'a', labels",
     "label name 'a b'"),
    ('[[rule]]\nname = "a"\nmatch = {}\nlabels = { role = "db;web" }\n', "rules.toml:4: rule 1 'a', labels",
     "label 'role' contains the character ';'"),
    ('[[rule]]\nname = "a"\nmatch = {}\nlabels = "rack=4"\n', "rules.toml:4: rule 1 'a', labels", "must be a table"),
    ('[[rule]]\nname = "a"\nmatch = {}\ncolour = "red"\n', "rules.toml:4: rule 1 'a', colour", "unknown field"),
    ('[[rule]]\nname = "a"\nmatch = {}\n\n[[rule]]\nname = "a"\nmatch = {}\n', "rules.toml:6: rule 2 'a', name",
     "taken by rule 1"),
    ('rule = [{ name = "a" }]\n', "rules.toml: rule 1 'a'", "has no match"),  # no [[rule]] line to point at
]


@pytest.mark.parametrize("text, where, what", BAD, ids=[b[2] for b in BAD])
def test_each_mistake_is_one_line_naming_its_position(text, where, what):
    (problem,) = problems(text, IMAGES)
    assert problem.startswith(where + (":" if not where.endswith(":") else "")), problem
    assert what in problem
    assert "\n" not in problem and "Traceback" not in problem


def test_every_mistake_of_a_file_is_listed_at_once():
    text = RACK4 + '\n[[rule]]\nname = "b"\nmatch = { mac = 1 }\nchain = "x y"\nlabels = { "" = "1" }\n'
    found = problems(text, IMAGES)
    assert [p.split(":")[1] for p in found] == ["10", "11", "12"]


def test_labels_take_numbers_as_their_text():
    (rule,) = rules.parse('[[rule]]\nname = "a"\nmatch = {}\nlabels = { rack = 4 }\n').rules
    assert rule.labels == {"rack": "4"}


def test_chains_are_checked_for_form_only_without_the_images():
    assert rules.parse('[[rule]]\nname = "a"\nmatch = {}\nchain = "image9"\n').rules[0].chain == ("image9",)


# -- the file under a running server ---------------------------------------------------


def test_the_file_is_read_again_when_it_changes_and_a_bad_one_keeps_the_last_good_rules(tmp_path, caplog):
    path = tmp_path / "rules.toml"
    watched = rules.RulesFile(path, check_interval=0)
    assert len(watched.current()) == 0  # no file: no rules
    path.write_text(RACK4)
    assert [r.name for r in watched.current().rules] == ["rack4"]
    caplog.set_level(logging.WARNING, logger="ks.core.rules")
    path.write_text(RACK4.replace('name = "rack4"', 'name = "rack 4"'))
    assert [r.name for r in watched.current().rules] == ["rack4"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"rules file {path} has mistakes; the previous 1 rule stays in force" in warning
    assert f"{path}:2: rule 1 'rack 4', name" in warning
    watched.current()  # the same bad file: said once
    assert len(caplog.records) == 1
    path.write_text(CATCH_ALL)
    assert [r.name for r in watched.current().rules] == ["rest"]
    os.unlink(path)
    assert len(watched.current()) == 0


def test_the_file_is_looked_at_only_every_check_interval(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(RACK4)
    watched = rules.RulesFile(path, check_interval=3600)
    assert len(watched.current()) == 1
    path.write_text(RACK4 + CATCH_ALL.replace("[[rule]]", "\n[[rule]]"))
    assert len(watched.current()) == 1


@pytest.mark.parametrize("name, ok", [
    ("web-01", True), ("web01.example.org", True), ("a" * 63, True), ("web_01", False), ("lab_1", False),
    ("-a", False), ("a-", False), ("a" * 64, False), ("a..b", False), ("a b", False), ("n:1", False),
])
def test_one_hostname_rule_for_operators_and_enrollment_rules(name, ok):
    try:
        HostChange.parse({}, hostname=name)
        by_operator = True
    except BadRequest:
        by_operator = False
    try:
        rules.parse(f'[[rule]]\nname = "a"\nmatch = {{}}\nhostname = "{name}"\n')
        by_rule = True
    except RulesError:
        by_rule = False
    assert (by_operator, by_rule) == (ok, ok)
