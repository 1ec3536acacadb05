"""MACs, serials, UUIDs and firmware placeholders."""

import pytest

from ks.core.errors import BadRequest
from ks.core.identity import Identity, is_placeholder, normalize_mac, normalize_serial, normalize_uuid, parse_boot_args


@pytest.mark.parametrize(
    "raw",
    [
        "52-54-00-AB-cd-EF",
        "52:54:00:ab:cd:ef",
        "5254.00ab.cdef",
        "525400abcdef",
        " 52-54-00-ab-cd-ef ",
        "net0$52-54-00-ab-cd-ef",
    ],
)
def test_mac_spellings_share_one_normal_form(raw):
    assert normalize_mac(raw) == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "52-54-00",
        "zz-54-00-ab-cd-ef",
        "00:00:00:00:00:00",
        "ff:ff:ff:ff:ff:ff",
        "a" * 5000,
        "52-54-00-ab-cd-ef\x00",
    ],
)
def test_bad_macs(raw):
    with pytest.raises(BadRequest):
        normalize_mac(raw)


@pytest.mark.parametrize(
    "value",
    ["", "Not Specified", "To be filled by O.E.M.", "Default string", "System Serial Number", "0123456789",
     "None", "00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
     "03000200-0400-0500-0006-000700080009", "  to be filled by o.e.m.  "],
)
def test_placeholders_are_not_identity(value):
    assert is_placeholder(value)


def test_real_values_are_identity():
    assert not is_placeholder("CZJ1234567")
    assert normalize_serial("czj1234567") == "CZJ1234567"
    assert normalize_serial("Not Specified") is None
    assert normalize_uuid("4c4c4544-0042-3510-8056-b4c04f335931") == "4C4C4544-0042-3510-8056-B4C04F335931"
    assert normalize_uuid("00000000-0000-0000-0000-000000000000") is None


@pytest.mark.parametrize(
    "serial", ["abc\nshell", "abc && shell", "a;b", "x${net0/mac}", "a`id`", "a|b", "a\x00b", "a\rb"]
)
def test_serial_that_could_inject_script_text_is_refused(serial):
    with pytest.raises(BadRequest):
        normalize_serial(serial)


def test_uuid_must_be_a_uuid():
    with pytest.raises(BadRequest, match="not a UUID"):
        normalize_uuid("not-a-uuid")


def test_parse_boot_args_collects_macs_in_order_without_duplicates():
    ident = parse_boot_args(
        {"net0": ["52-54-00-00-00-01"], "net1": [""], "net2": ["52-54-00-00-00-02"],
         "dhcp_mac": ["net0$52-54-00-00-00-01"], "serial": ["S1"], "uuid": [""], "other": ["ignored"]}
    )
    assert ident == Identity(macs=("52:54:00:00:00:01", "52:54:00:00:00:02"), serial="S1", uuid=None)


def test_repeated_parameters_are_refused():
    with pytest.raises(BadRequest, match="given 2 times"):
        parse_boot_args({"net0": ["52-54-00-00-00-01", "52-54-00-00-00-02"]})
