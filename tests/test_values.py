"""The value alphabet, metadata bounds, the quoting filters and one-pass legacy substitution (pure)."""

import json
import subprocess

import pytest

from ks.boot import render
from ks.core import values
from ks.core.errors import BadRequest
from ks.core.identity import normalize_mac


@pytest.mark.parametrize("value", ["rack 4", "node01.example", "a@b.c", "x=1,y=2", "10.0.0.1:80/p", "A+B-C_D", ""])
def test_the_alphabet_takes_ordinary_values(value):
    assert values.check_text("v", value) == value


@pytest.mark.parametrize("char", list("<>()'\"*?[]~{}!#$`\\;&|%^\n\t\r\x00\x7f") + ["é", "\ud800", "\u202e", "\uff1c"])
def test_the_alphabet_refuses_everything_else(char):
    with pytest.raises(BadRequest, match="may hold only"):
        values.check_text("v", f"a{char}b")


@pytest.mark.parametrize(
    "document, message",
    [
        ({"a": ["x"]}, "is a list"),
        ({"a": float("inf")}, "finite"),
        ({"": 1}, "empty key"),
        ({"k" * 65: 1}, "longer than 64"),
        ({"a": "x" * 1025}, "longer than 1024"),
        ({f"k{i}": "x" * 1000 for i in range(17)}, "at most 16384"),
        (json.loads('{"a":' * 9 + "1" + "}" * 9), "deeper than 8"),
    ],
)
def test_metadata_bounds(document, message):
    with pytest.raises(BadRequest, match=message):
        values.check_metadata(document)


def test_metadata_within_bounds_is_kept_as_it_is():
    document = json.loads('{"a":' * 7 + '{"b": 1.5, "c": null, "d": true, "e": "x y"}' + "}" * 7)
    assert values.check_metadata(document) is document


@pytest.mark.parametrize("value", ["plain", "a b", "it's", '"$(id)"', "`id`", "a\nb", "<(touch X)", "*", ""])
def test_the_shell_filter_gives_one_word_that_is_the_value(value):
    echoed = subprocess.run(["sh", "-c", f"printf %s {values.shell_quote(value)}"], capture_output=True, text=True)
    assert echoed.stdout == value


@pytest.mark.parametrize("value", ["${net0}", "a || reboot", "a && b ; c", "x\nshell", "#c"])
def test_the_ipxe_filter_leaves_nothing_ipxe_acts_on(value):
    text = values.ipxe_text(value)
    assert "$" not in text and "|" not in text and "&" not in text and ";" not in text and "\n" not in text
    assert len(text) == len(value)


def test_legacy_substitution_is_one_pass_and_otherwise_the_originals():
    template = b"@HOST_DATA@ @id@ @x@HOST@ @bootid@ @metadata.a@"
    replacements = [("HOST_DATA", "@bootid@ @id@"), ("HOST", 7), ("bootid", "SECRET"), ("id", "@HOST@"),
                    ("metadata.a", "@metadata.a@")]
    assert render.render_legacy(template, replacements) == "@bootid@ @id@ @HOST@ @x7 SECRET @metadata.a@"


def test_stored_values_are_made_script_safe_and_reported():
    repaired = []
    safe = values.script_safe({"b": "x<(y)", "a\n": {"c": ["\ud800"]}, "d": 1}, "metadata", repaired)
    assert safe == {"a_": {"c": ["_"]}, "b": "x__y_", "d": 1}
    assert values.legacy_text(safe) == "{'a_': {'c': _'_'_}, 'b': 'x__y_', 'd': 1}"
    assert repaired == ["metadata key a_", "metadata.a_.c (a list)", "metadata.a_.c", "metadata.b"]


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "33-33-00-00-00-01", "ff:ff:ff:ff:ff:ff", "03:00:00:00:00:00"])
def test_group_addresses_are_no_nic_macs(mac):
    with pytest.raises(BadRequest, match="multicast"):
        normalize_mac(mac)


def test_printable_escapes_what_a_terminal_cannot_show():
    assert values.printable("rack 4 Zürich") == "rack 4 Zürich"
    assert values.printable("a\ud800\n\ufffe") == "a\\ud800\\n\\ufffe"
