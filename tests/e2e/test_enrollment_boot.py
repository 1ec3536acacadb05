"""A real boot of a machine nobody registered: an enrollment rule matches its MAC and the
SMBIOS product its iPXE reports, and it boots the rule's chain under the rule's hostname
with no operator command. Under BIOS the iPXE of QEMU's NIC ROM asks, under UEFI
the snponly.efi that dnsmasq hands out."""

import json

import pytest

from ks.lab.machine import FIRMWARES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

RULES = """\
[[rule]]
name = "other-rack"
match = { mac = "52:54:00:e2:e0:01", product = "ProLiant*" }
chain = "image1"
hostname = "wrong-{{ seq }}"

[[rule]]
name = "rack4"
match = { mac = "52:54:00:e2:*", product = "PowerEdge*" }
chain = "wipe"
hostname = "rack4-{{ seq }}"
labels = { rack = "4" }
"""


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_an_unknown_machine_boots_the_chain_of_the_rule_that_matches_it(lab, firmware):
    (lab.root / "rules.toml").write_text(RULES)
    assert "2 rule(s), no mistakes" in lab.kiwispray("rules", "check").stdout
    machine = lab.machine(firmware, manufacturer="Dell Inc.", product="PowerEdge R640")

    console = machine.boot()

    assert "Wiping host 1 (rack4-1), state wipe" in console
    assert "KSGUEST: tag wipe" in console
    assert "KSGUEST: post-install ok" in console
    (host,) = lab.hosts()
    assert (host["hostname"], host["chain"], host["labels"]) == ("rack4-1", ["finished"], {"rack": "4"})
    facts = host["facts"]
    platform = {"bios": "pcbios", "uefi": "efi"}[firmware]
    assert (facts["manufacturer"], facts["product"], facts["platform"]) == ("Dell Inc.", "PowerEdge R640", platform)
    assert facts["buildarch"] in ("i386", "x86_64")
    assert "serial" not in facts and host["serial"] == machine.serial
    events = json.loads(lab.edit_host("-i", "1", "--history", "--json").stdout)
    assert [(e["kind"], e["to"]) for e in events] == [
        ("register", "wipe"), ("boot", "wipe"), ("post-install", "wipe"), ("finish", "finished")]
    assert events[0]["detail"].endswith("; rule rack4 (seq 1)")
    listing = lab.edit_host("-ll").stdout.splitlines()
    (shown,) = [line.split(None, 1)[1] for line in listing if line.split()[:1] == ["Facts:"]]
    for pair in ("manufacturer=Dell Inc.", f"platform={platform}", "product=PowerEdge R640"):
        assert pair in shown.split(","), (pair, shown)
    print("facts reported by iPXE:", facts)
