"""Secure Boot and UEFI HTTP Boot through KIWIspray, on OVMF with Microsoft's keys enrolled.

The chain a Secure Boot machine runs (docs/secure-boot.md): the firmware's PXE fetches
``shimx64.efi`` (signed by Microsoft) over TFTP, shim fetches ``grubx64.efi`` (Debian's
signed network GRUB) beside it, GRUB reads ``grub/grub.cfg``, asks for its host's
configuration and loads the kernel it names, which shim's keys must have signed. Here
KIWIspray answers all of that TFTP itself (``--tftp-listen``), dnsmasq's TFTP is off
(``secure_boot_variant`` of dnsmasq.conf.example), and the boot decision is the one iPXE
machines get. What these tests show:

- a machine with Secure Boot enforcing registers through shim and GRUB, waits in
  ``new``, boots its image when the operator sets one (the kernel locked down, the
  firmware's SecureBoot variable 1), calls back, ends ``finished``, and GRUB then hands
  it to the next boot device; one host record, the whole history;
- a kernel without a signature is refused by GRUB; the console says so, the machine does
  not end ``finished``, and its deploy deadline flags it failed;
- UEFI HTTP Boot with no TFTP at all: the firmware fetches iPXE's EFI binary from
  KIWIspray over HTTP, and the same lifecycle follows (Secure Boot off: Debian's iPXE is
  not signed);
- UEFI HTTP Boot with Secure Boot on loads shim and GRUB over HTTP, and there it ends:
  Debian 12's signed GRUB has no HTTP (a static server shows it; KIWIspray is not needed).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ks.core import dnsmasq
from ks.lab.lab import ADDRESS, BOOT_FILES, PORT, tail
from ks.lab.machine import Machine
from ks.lab.namespace import Namespace

from .harness import shows_bootid
from helpers import require_command, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WAITING = r"host 1 \(not-set\), state new\."
INSTALLED = r"host 1 \(not-set\) is installed; booting from the next device\."


def history(lab, host_id: int = 1) -> list[tuple[str, str]]:
    return [(e["kind"], e["to"]) for e in json.loads(lab.edit_host("-i", host_id, "--history", "--json").stdout)]


def efi_disk(path: Path) -> Path:
    """A disk that boots under Secure Boot: a FAT file system (made without mounting it) holding
    shim as the removable-media loader, Debian's signed disk GRUB beside it, and its configuration
    where that GRUB looks (as on KIWI's UEFI images: EFI/debian/ and, beside itself, EFI/BOOT/)."""
    config = path.with_suffix(".cfg")
    config.write_text('echo "KSTEST: the disk\'s GRUB"\nsleep 600\n')
    subprocess.run(["mkfs.fat", "-C", str(path), "65536"], check=True, capture_output=True)
    for directory in ("::/EFI", "::/EFI/BOOT", "::/EFI/debian"):
        subprocess.run(["mmd", "-i", str(path), directory], check=True)
    for source, target in ((BOOT_FILES["shimx64.efi"][0], "::/EFI/BOOT/BOOTX64.EFI"),
                           ("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "::/EFI/BOOT/grubx64.efi"),
                           (str(config), "::/EFI/debian/grub.cfg"), (str(config), "::/EFI/BOOT/grub.cfg")):  # fmt: skip
        subprocess.run(["mcopy", "-i", str(path), source, target], check=True)
    return path


@pytest.fixture
def grub_lab(start_lab):
    """A lab where KIWIspray answers TFTP (shim, GRUB, configurations, kernels) and dnsmasq's TFTP is off."""

    def start(**settings):
        lab = start_lab(settings={"KS_TFTP_LISTEN": ADDRESS, **settings}, variants=[dnsmasq.secure_boot_variant])
        lab.link_boot_files()
        return lab

    return start


def test_a_secure_boot_machine_is_installed_through_shim_and_grub(grub_lab):
    lab = grub_lab()
    # 1 GiB: GRUB holds the kernel and initrd in memory, the kernel unpacks the initrd.
    machine = lab.machine("secureboot", memory=1024)
    run = machine.power_on()
    try:
        run.wait_for(WAITING, timeout=300)
        (host,) = lab.hosts()
        assert (host["macs"], host["serial"], host["uuid"]) == ([machine.mac], machine.serial, machine.uuid.upper())
        # What GRUB read of SMBIOS and of itself, kept as the facts iPXE would report.
        facts = host["facts"]
        assert (facts["manufacturer"], facts["platform"], facts["buildarch"]) == ("QEMU", "efi", "x86_64"), facts
        assert facts["product"] == "Standard PC _Q35 + ICH9, 2009_", facts  # outside the alphabet: "_", as from iPXE
        run.wait_for(f"(?s){WAITING}.*{WAITING}")  # GRUB's loop asked again
        lab.edit_host("-i", "1", "-s", "image1")
        run.wait_for(r"KSGUEST: post-install ok", timeout=300)
        console = run.wait_exit(timeout=60)
    finally:
        run.power_off()
    assert "boots image image1" in console
    # Shim checked GRUB, GRUB checked the kernel: Secure Boot was on, and the kernel locked itself down.
    assert "EFI stub: UEFI Secure Boot is enabled." in console
    assert "KSGUEST: SecureBoot 1" in console
    assert "KSGUEST: lockdown none [integrity] confidentiality" in console
    assert not shows_bootid(console)
    assert [h["chain"] for h in lab.hosts()] == [["finished"]]

    # Installed: GRUB (through shim) returns to the firmware, which goes on to its next boot option,
    # the disk — here one with shim and Debian's disk GRUB on it, whose configuration says so.
    machine.disk = efi_disk(lab.workdir / "disk.img")
    run = machine.power_on()
    try:
        run.wait_for(INSTALLED, timeout=300)
        run.wait_for(r"KSTEST: the disk's GRUB", timeout=120)
    finally:
        run.power_off()
    assert "KSGUEST" not in run.text
    assert '"UiApp"' not in run.text  # not the firmware's menu

    assert history(lab) == [("register", "new"), ("boot", "new"), ("state", "image1"), ("boot", "image1"),
                            ("post-install", "image1"), ("finish", "finished"), ("boot", "finished")]  # fmt: skip
    served = tail(lab.server_log, 200000)
    # Everything over KIWIspray's TFTP: firmware -> shim -> GRUB -> its configuration -> kernel and initrd.
    for name in ("shimx64.efi", "grubx64.efi", "/grub/grub.cfg", "/kiwispray/boot/mac=52:54:00:e2:e0:01/",
                 "/kiwispray/poll/mac=52:54:00:e2:e0:01/", "/images/image1/kernel", "/images/image1/initrd"):
        assert f"tftp sent {name}" in served, name
    assert "dnsmasq-tftp" not in tail(lab.dnsmasq_log, 200000)  # dnsmasq served no file


def test_a_bios_machine_still_boots_ipxe_beside_them(grub_lab):
    """The Secure Boot variant changes only what UEFI x86-64 machines get: a BIOS machine still boots
    iPXE and its bootstrap script. (QEMU's NIC ROM is iPXE already, so it fetches no undionly.kpxe;
    a real BIOS PXE ROM would, from KIWIspray's boot files, the way shim is fetched above.)"""
    lab = grub_lab()
    run = lab.machine("bios").power_on()
    try:
        run.wait_for(r'host 1 \(not-set\), state "new"', timeout=300)
    finally:
        run.power_off()
    assert "bootstrap.ipxe" in run.text
    assert "dnsmasq-tftp" not in tail(lab.dnsmasq_log, 200000)


def test_an_unsigned_kernel_is_refused_and_the_deadline_flags_it(grub_lab):
    require_command("sbattach", "sbsigntool")
    lab = grub_lab(KS_TIMEOUT_CHECK_INTERVAL="2")
    unsigned = lab.root / "images" / "unsigned"
    shutil.copytree(lab.root / "images" / "image1", unsigned, symlinks=True)
    (unsigned / "kiwispray.toml").write_text("deploy_timeout = 20\n")
    (kernel,) = unsigned.glob("pxeboot.*.kernel")
    subprocess.run(["sbattach", "--remove", kernel], check=True, capture_output=True)
    machine = lab.machine("secureboot", memory=1024)
    lab.register(machine)
    lab.edit_host("-i", "1", "-s", "unsigned")
    run = machine.power_on()
    try:
        run.wait_for(r"booting image unsigned failed", timeout=300)
    finally:
        run.power_off()
    assert "error: bad shim signature." in run.text
    assert "KSGUEST" not in run.text
    wait_for(lambda: lab.hosts()[0]["failed"], timeout=60, what="the deploy deadline flagging the host")
    (host,) = lab.hosts()
    assert host["failed"] and host["chain"] == ["unsigned"], host
    assert ("timeout", "unsigned") in history(lab)

    run = machine.power_on()  # the operator sees it, and so does the machine's console
    try:
        run.wait_for(r"state unsigned: FAILED", timeout=300)
    finally:
        run.power_off()


def test_uefi_http_boot_without_tftp(start_lab):
    """No TFTP anywhere: the firmware's HTTP Boot fetches iPXE from /boot-files/, then the usual lifecycle."""
    base = f"http://{ADDRESS}:{PORT}"
    lab = start_lab(variants=[dnsmasq.tftp_off, lambda text: dnsmasq.http_boot_variant(text, base)])
    lab.link_boot_files()
    machine = lab.machine("uefi", http_boot=True)
    run = machine.power_on()
    try:
        run.wait_for(r'host 1 \(not-set\), state "new"', timeout=300)
        lab.edit_host("-i", "1", "-s", "image1")
        run.wait_for(r"KSGUEST: post-install ok", timeout=300)
        console = run.wait_exit(timeout=60)
    finally:
        run.power_off()
    assert f"URI: {base}/boot-files/snponly.efi" in console
    assert [h["chain"] for h in lab.hosts()] == [["finished"]]
    assert "dnsmasq-tftp" not in tail(lab.dnsmasq_log, 200000)
    assert '"GET /boot-files/snponly.efi HTTP/1.1" 200' in tail(lab.server_log, 200000)
    assert [kind for kind, _ in history(lab)] == ["register", "boot", "state", "boot", "post-install", "finish"]


def test_http_boot_with_secure_boot_stops_in_grub(tmp_path, guest_cache):
    """Debian 12's signed GRUB, loaded over HTTP Boot, has no HTTP and no TFTP server to ask: it stops at its prompt.

    No KIWIspray: a static HTTP server with shim and GRUB, and dnsmasq answering ``HTTPClient``.
    """
    for target, package in BOOT_FILES.values():
        if not Path(target).exists():
            pytest.fail(f"{target} is missing: install the Debian package {package} (scripts/install-system-deps.sh)")
    http = tmp_path / "http"
    http.mkdir()
    for name in ("shimx64.efi", "grubx64.efi"):
        shutil.copy(BOOT_FILES[name][0], http / name)
    namespace = Namespace(ADDRESS, "ks-sb")
    url = f"http://{ADDRESS}:8080/shimx64.efi"
    conf, log = tmp_path / "dnsmasq.conf", tmp_path / "dnsmasq.log"
    conf.write_text("\n".join([
        "port=0", "interface=br0", "bind-interfaces", "log-dhcp", "user=root",
        "dhcp-range=192.168.42.100,192.168.42.199,1h", f"dhcp-leasefile={tmp_path / 'leases'}", f"log-facility={log}",
        "dhcp-vendorclass=set:httpboot,HTTPClient", "dhcp-option-force=tag:httpboot,60,HTTPClient",
        f"dhcp-boot=tag:httpboot,{url}", "",
    ]))  # fmt: skip
    try:
        namespace.create()
        namespace.start(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"], tmp_path / "dnsmasq.out")
        requests_log = tmp_path / "http.log"
        namespace.start([sys.executable, "-u", "-m", "http.server", "--directory", http, "--bind", ADDRESS, "8080"],
                        requests_log)  # fmt: skip
        machine = Machine(namespace, tmp_path, "secureboot", memory=1024, http_boot=True)
        run = machine.power_on()
        try:
            run.wait_for(r"grub> ", timeout=300)
            console = run.text
        finally:
            run.power_off()
    finally:
        namespace.close()
    requests = tail(requests_log, 100000)
    assert ">>Start HTTP Boot over IPv4" in console and f"URI: {url}" in console
    # The firmware fetched shim, and shim GRUB from beside it: both signatures checked.
    assert '"GET /shimx64.efi HTTP/1.1" 200' in requests
    assert '"GET //grubx64.efi HTTP/1.1" 200' in requests
    assert "Welcome to GRUB!" in console
    # Then nothing: this GRUB reads no configuration over HTTP, and no TFTP server was named.
    assert "grub.cfg" not in requests
    assert "dnsmasq-tftp" not in tail(log, 100000)
