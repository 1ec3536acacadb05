"""A real PXELINUX boot, PXE Pilot's model: the machine never talks to KIWIspray, it
reads ``pxelinux.cfg/01-<mac>`` over TFTP, a link that KIWIspray keeps pointing at the
configuration of the host's state.

dnsmasq runs from dnsmasq.conf.example as in the other real boots, with two test-only
lines appended that hand this one machine ``pxelinux.0`` instead of KIWIspray's
bootstrap URL. QEMU's BIOS (SeaBIOS) has no PXE client of its own: the PXE ROM of its
NIC is iPXE, which loads ``pxelinux.0`` over TFTP and gives it the PXE API, as any
vendor PXE ROM would. Its DHCP requests carry iPXE's user class, so they match the
example's ``tag:ipxe`` line as well; dnsmasq takes the last matching ``dhcp-boot``,
which is the one appended here (the console's ``Filename: pxelinux.0`` checks it).

PXELINUX reads everything over TFTP from dnsmasq's root, which is KS_TFTP_ROOT: its
``ldlinux.c32``, the link, the configuration the link points at, and the kernel and
initrd that configuration names.
"""

import json
import os
import shutil

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PXELINUX = "/usr/lib/PXELINUX/pxelinux.0"
LDLINUX = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
MAC = "52:54:00:e2:e0:01"
LINK = "01-52-54-00-e2-e0-01"

# The configurations a site keeps per state, in KS_PXELINUX_CONFIG_DIR (default:
# pxelinux.configs in the TFTP root). image1 boots the test machine, whose /init
# prints the kstag= of its command line: the marker that this configuration was booted.
CONFIGS = {
    "image1": """\
DEFAULT image1
LABEL image1
  KERNEL test-machine/vmlinuz
  INITRD test-machine/initrd.gz
  APPEND console=ttyS0 panic=10 kstag=pxelinux-image1
""",
    "local": """\
DEFAULT local
LABEL local
  LOCALBOOT 0
""",
}


@pytest.fixture
def pxelinux_lab(start_lab, tmp_path, guest_cache):
    """A lab whose dnsmasq gives the test machine pxelinux.0, and whose TFTP root is KS_TFTP_ROOT."""
    lab = start_lab(
        settings={"KS_TFTP_ROOT": str(tmp_path / "tftp")},
        # Test-only: this MAC boots PXELINUX; every other machine would still get iPXE.
        dnsmasq=[f"dhcp-mac=set:pxelinux,{MAC}", "dhcp-boot=tag:pxelinux,pxelinux.0"],
    )
    shutil.copy(PXELINUX, lab.tftp)
    shutil.copy(LDLINUX, lab.tftp)
    (lab.tftp / "test-machine").mkdir()
    for name in ("vmlinuz", "initrd.gz"):
        shutil.copy(guest_cache / "guest" / name, lab.tftp / "test-machine" / name)
    (lab.tftp / "pxelinux.configs").mkdir()
    for state, config in CONFIGS.items():
        (lab.tftp / "pxelinux.configs" / state).write_text(config)
    return lab


def link(lab) -> str:
    return os.readlink(lab.tftp / "pxelinux.cfg" / LINK)


def read_over_tftp(lab) -> list[str]:
    """The files dnsmasq sent over TFTP, relative to its root, in order."""
    prefix = f"sent {lab.tftp}/"
    return [
        line.split(prefix, 1)[1].split(" to ")[0] for line in lab.dnsmasq_log.read_text().splitlines() if prefix in line
    ]


def distinct(names: list[str]) -> list[str]:
    """Each name once, in the order of its first appearance.

    dnsmasq logs a transfer when it ends, and PXELINUX sometimes leaves a second
    request for ldlinux.c32 that dnsmasq ends only at its timeout, seconds later.
    """
    return list(dict.fromkeys(names))


def test_pxelinux_boots_the_configuration_of_the_hosts_state(pxelinux_lab):
    lab = pxelinux_lab
    machine = lab.machine("bios", mac=MAC)
    # A PXELINUX machine never asks KIWIspray, so the host is made known first, by
    # the request its iPXE would send; it starts in "new" like any machine.
    lab.register(machine)
    assert link(lab) == "../pxelinux.configs/new"

    lab.edit_host("-i", "1", "-s", "image1")
    assert link(lab) == "../pxelinux.configs/image1"
    run = machine.power_on()
    try:
        run.wait_for("KSGUEST: tag pxelinux-image1", timeout=180)
    finally:
        run.power_off()
    assert "Filename: pxelinux.0" in run.text
    assert "PXELINUX 6" in run.text
    sent = read_over_tftp(lab)
    config = f"pxelinux.cfg/{LINK}"
    assert distinct(sent) == ["pxelinux.0", "ldlinux.c32", config, "test-machine/vmlinuz", "test-machine/initrd.gz"]

    lab.edit_host("-i", "1", "-s", "finished")
    assert link(lab) == "../pxelinux.configs/local"
    run = machine.power_on()
    try:
        run.wait_for("No bootable device", timeout=180)
    finally:
        run.power_off()
    assert "Booting from local disk" in run.text
    assert "KSGUEST" not in run.text
    later = distinct(read_over_tftp(lab)[len(sent):])
    assert config in later and "test-machine/vmlinuz" not in later

    # KIWIspray saw the registering request and the operator's changes, no boot of its own.
    events = json.loads(lab.edit_host("-i", "1", "--history", "--json").stdout)
    assert [(e["kind"], e["to"]) for e in events] == [
        ("register", "new"), ("boot", "new"), ("state", "image1"), ("state", "finished"),
    ]  # fmt: skip
