"""Real boots: BIOS and UEFI machines in QEMU install through dnsmasq, iPXE and kiwispray serve.

One machine goes the whole way an operator knows: it boots unknown and waits in
``new``; edit-host gives it ``wipe,image1`` and it moves on without a reboot;
``wipe`` (a legacy template) and ``image1`` (a KIWI build imported with
``kiwispray image import``, booted through the generic template) each run their
post-install script, which calls /finish; then the machine is ``finished`` and
iPXE hands it back to the firmware.
"""

import json
import re

import pytest

from ks.lab.machine import FIRMWARES

from .harness import shows_bootid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

WAITING = r'host 1 \(not-set\), state "new"'
# What the firmware prints once iPXE has exited and it goes on to the next device.
# OVMF tries its own IPv4 PXE after iPXE's (which fetches snponly.efi from dnsmasq
# and asks KIWIspray once more), then IPv6 and HTTP boot, which take minutes to
# time out; leaving IPv4 network boot is enough.
NEXT_DEVICE = {
    "bios": r"No bootable device",
    "uefi": r">>Start PXE over IPv6",
}


def chains(lab) -> list[tuple[int, str, list[str]]]:
    """Every host as (id, chain, MACs), from edit-host."""
    return [(h["id"], ",".join(h["chain"]), h["macs"]) for h in lab.hosts()]


def history(lab) -> list[tuple[str, str]]:
    """Host 1's history as (kind, state after)."""
    return [(e["kind"], e["to"]) for e in json.loads(lab.edit_host("-i", "1", "--history", "--json").stdout)]


def same_address(console: str) -> bool:
    """Whether iPXE and the booted system got the same DHCP address (leases keyed on the MAC)."""
    ipxe = re.findall(r"net0: ([0-9.]+)/", console)
    system = re.findall(r"KSGUEST: address ([0-9.]+)", console)
    return bool(ipxe and system) and set(ipxe) == set(system)


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_machine_installs_once_then_boots_its_disk(lab, firmware):
    machine = lab.machine(firmware)
    mac = machine.mac

    run = machine.power_on()
    try:
        run.wait_for(WAITING)
        assert chains(lab) == [(1, "new", [mac])]
        row = f"   1 not-set              new        {machine.serial}"
        assert row in lab.edit_host("-l").stdout
        assert row in lab.get("/hosts")
        run.wait_for(f"(?s){WAITING}.*{WAITING}")  # it asked again at least once
        lab.edit_host("-i", "1", "-s", "wipe,image1")
        console = run.wait_exit()
    finally:
        run.power_off()
    # The waiting machine took its wipe step in the same QEMU run: no reboot.
    assert "Wiping host 1 (not-set), state wipe" in console
    assert "KSGUEST: tag wipe" in console
    assert "KSGUEST: post-install ok" in console
    assert same_address(console)
    assert chains(lab) == [(1, "image1", [mac])]
    waiting, wiping = console.split("Wiping host 1", 1)
    assert not shows_bootid(waiting)  # the shipped scripts of a machine in "new"
    # The site's legacy wipe template boots its kernel without loglevel=, and the
    # kernel prints its command line, bootid and all: the operator's template, shown
    # here because it proves that the search below finds a bootid when there is one.
    assert shows_bootid(wiping)

    console = machine.boot()
    assert "boots image image1" in console
    assert "KSGUEST: tag kiwi" in console
    assert "KSGUEST: post-install ok" in console
    assert chains(lab) == [(1, "finished", [mac])]
    # The generic KIWI template passes loglevel=4: the kernel keeps its command line,
    # with razorurl= and this boot's bootid, off the console.
    assert not shows_bootid(console)

    run = machine.power_on()
    try:
        run.wait_for(NEXT_DEVICE[firmware], timeout=180)
    finally:
        run.power_off()
    assert "host 1 (not-set) is installed; booting from the next device" in run.text
    assert "KSGUEST" not in run.text
    assert not shows_bootid(run.text)
    if firmware == "uefi":  # dnsmasq's answer to UEFI firmware: snponly.efi over TFTP
        assert "NBP filename is snponly.efi" in run.text
        assert "using SNP on SNP-" in run.text
    assert chains(lab) == [(1, "finished", [mac])]

    events = history(lab)
    assert events[:10] == [
        ("register", "new"),
        ("boot", "new"),  # polls while waiting are not boots
        ("state", "wipe,image1"),
        ("boot", "wipe,image1"),
        ("post-install", "wipe,image1"),
        ("finish", "image1"),
        ("boot", "image1"),
        ("post-install", "image1"),
        ("finish", "finished"),
        ("boot", "finished"),
    ]
    assert set(events[10:]) <= {("boot", "finished")}  # OVMF's own PXE asked once more


def test_identity_conflict_waits_for_the_operator(lab):
    """A machine whose MAC and serial belong to two hosts changes nothing and waits,
    asking again, until an operator resolves it; then it boots as the remaining host."""
    machine = lab.machine("bios")
    known_hosts = [
        {"id": 1, "hostname": "by-mac", "macs": machine.mac.upper(), "state": "finished"},
        {"id": 2, "hostname": "by-serial", "serial": machine.serial, "state": "new"},
    ]
    (lab.workdir / "known_hosts.json").write_text(json.dumps(known_hosts))
    lab.kiwispray("import-legacy", lab.workdir / "known_hosts.json")

    run = machine.power_on()
    try:
        conflict = "KIWIspray: identity conflict, nothing was changed"
        run.wait_for(conflict)
        run.wait_for(f"(?s){conflict}.*{conflict}")  # it asked again at least once
        lab.edit_host("-i", "2", "--delete")
        run.wait_for(NEXT_DEVICE["bios"], timeout=120)
    finally:
        run.power_off()
    assert "host 1 (by-mac) is installed; booting from the next device" in run.text
    assert chains(lab) == [(1, "finished", [machine.mac])]
    # One conflict however often it asked; then host 1 learned the serial and UUID.
    assert [kind for kind, _ in history(lab)] == ["import", "conflict", "update", "boot"]
