"""Secure Boot through the network: OVMF enforcing Secure Boot with Microsoft's keys,
shim (signed by Microsoft), Debian's signed network GRUB and Debian's signed kernel.

The chain, as a site sets it up with Debian 12's packages (docs/secure-boot.md):
the firmware's PXE fetches ``shimx64.efi`` over TFTP; shim fetches ``grubx64.efi``
(Debian's ``grubnetx64.efi.signed``, renamed) from the same TFTP directory and
checks its signature; GRUB reads ``grub/grub.cfg`` from the TFTP server; the
kernel it loads is checked against shim's keys. What these tests show:

- the whole chain boots the signed kernel, which reports Secure Boot enabled and
  locks itself down; the booted system reads the firmware's ``SecureBoot`` variable;
- GRUB refuses a kernel without a signature, and says so on the console;
- Debian 12's signed network GRUB has no ``http`` module built in, and under Secure
  Boot it loads none: ``(http,…)`` paths make it ask the TFTP server for
  ``grub/x86_64-efi/http.mod`` and fail. Everything it reads comes over TFTP;
- UEFI HTTP Boot with TFTP switched off (dnsmasq answers the ``HTTPClient`` vendor
  class with option 60 and a URL): OVMF fetches shim over HTTP and shim fetches
  GRUB over HTTP, both checked; then this GRUB, having no ``http``, reads no
  configuration at all and stops at its prompt.

No KIWIspray server takes part: the loader is a static TFTP directory and a static
HTTP server (for the booted system's post-install script).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ks.lab.lab import tail
from ks.lab.machine import Machine
from ks.lab.namespace import Namespace

from helpers import require_command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ADDRESS = "192.168.42.1"
HTTP_PORT = 8080
MAC, SERIAL, UUID = "52:54:00:e2:e0:01", "KSE2E-0001", "5a1e2e00-0000-4000-8000-000000000001"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
NETWORK_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
# efivarfs names a variable <name>-<vendor GUID>; this is EFI_GLOBAL_VARIABLE's.
SECURE_BOOT_VARIABLE = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# The test machine's initrd loads the modules named in /lib/modules/order; the
# Secure Boot machine has a virtio NIC (OVMF's own driver), so a second initrd
# (GRUB concatenates them) brings virtio-net, and efivarfs to read the firmware's
# variables, and replaces that list. Under lockdown only signed modules load:
# Debian's are.
MODULES = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "failover", "net_failover", "virtio_net", "efivarfs",
)  # fmt: skip

# What the booted system runs (razorurl=, fetched over HTTP by the test machine's /init).
POST_INSTALL = f"""\
mount -t efivarfs efivarfs /sys/firmware/efi/efivars
echo "KSTEST: SecureBoot variable" $(od -An -t u1 /sys/firmware/efi/efivars/{SECURE_BOOT_VARIABLE})
mount -t securityfs securityfs /sys/kernel/security
echo "KSTEST: lockdown $(cat /sys/kernel/security/lockdown)"
"""

# GRUB's first configuration: its prefix is (tftp,<next server>)/grub.
GRUB_CFG = f"""\
echo "KSTEST: grub.cfg from prefix $prefix"
smbios --type 1 --get-string 7 --set serial
smbios --type 1 --get-uuid 8 --set uuid
echo "KSTEST: mac $net_default_mac serial $serial uuid $uuid"
echo "KSTEST: GRUB lockdown $lockdown shim_lock $shim_lock"
configfile (http,{ADDRESS}:{HTTP_PORT})/boot.cfg
echo "KSTEST: no configuration over HTTP"
configfile /boot.cfg
"""

BOOT_CFG = """\
echo "KSTEST: boot.cfg read, loading {kernel}"
linux /{kernel} console=ttyS0 razorurl=http://{address}:{port}/post-install
initrd /initrd.gz /modules.cpio
boot
echo "KSTEST: boot failed"
"""


def modules_initrd(guest_cache: Path, target: Path) -> None:
    """A newc cpio with MODULES of the test machine's kernel and their load order."""
    package = (guest_cache / "guest" / "kernel-package").read_text().strip()
    kernel = guest_cache / "debs" / package / "lib" / "modules"
    tree = target.parent / "modules-initrd"
    (tree / "lib" / "modules").mkdir(parents=True)
    for name in MODULES:
        (module,) = kernel.rglob(f"{name}.ko")
        shutil.copy(module, tree / "lib" / "modules" / module.name)
    (tree / "lib" / "modules" / "order").write_text("\n".join(MODULES) + "\n")
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    with open(target, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=tree, input=files, stdout=out,
                       check=True)  # fmt: skip


class SecureBootLab:
    """A private network with dnsmasq (DHCP, and TFTP unless switched off) and a static HTTP server."""

    def __init__(self, workdir: Path, guest_cache: Path):
        self.workdir = workdir
        self.tftp = workdir / "tftp"
        self.http = workdir / "http"
        self.dnsmasq_log = workdir / "dnsmasq.log"
        self.http_log = workdir / "http.log"
        self.namespace = Namespace(ADDRESS)
        for directory in (self.tftp, self.tftp / "grub", self.http):
            directory.mkdir()
        # shim looks for grubx64.efi next to itself: Debian's network GRUB under that name.
        for root in (self.tftp, self.http):
            shutil.copy(SHIM, root / "shimx64.efi")
            shutil.copy(NETWORK_GRUB, root / "grubx64.efi")
        (self.tftp / "grub" / "grub.cfg").write_text(GRUB_CFG)
        shutil.copy(guest_cache / "guest" / "vmlinuz", self.tftp / "vmlinuz")
        shutil.copy(guest_cache / "guest" / "initrd.gz", self.tftp / "initrd.gz")
        modules_initrd(guest_cache, self.tftp / "modules.cpio")
        (self.http / "post-install").write_text(POST_INSTALL)

    def boot_config(self, kernel: str) -> None:
        (self.tftp / "boot.cfg").write_text(BOOT_CFG.format(kernel=kernel, address=ADDRESS, port=HTTP_PORT))

    def start(self, dnsmasq: list[str]) -> "SecureBootLab":
        self.namespace.create()
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("\n".join([
            "port=0", "interface=br0", "bind-interfaces", "log-dhcp", "user=root",
            "dhcp-range=192.168.42.100,192.168.42.199,1h",
            f"dhcp-leasefile={self.workdir / 'dnsmasq.leases'}", f"log-facility={self.dnsmasq_log}",
            *dnsmasq, "",
        ]))  # fmt: skip
        self.namespace.start(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"], self.workdir / "dnsmasq.out")
        server = [sys.executable, "-u", "-m", "http.server", "--directory", self.http, "--bind", ADDRESS, HTTP_PORT]
        self.namespace.start(server, self.http_log)
        return self

    def machine(self, http_boot: bool = False) -> Machine:
        # 1 GiB: the kernel and its initrds are read into memory by GRUB and unpacked by the kernel.
        return Machine(self.namespace, self.workdir, "secureboot", MAC, SERIAL, UUID, memory=1024, http_boot=http_boot)

    def tftp_log(self) -> str:
        """dnsmasq's TFTP lines, paths relative to the TFTP root."""
        lines = [line for line in tail(self.dnsmasq_log, 100000).splitlines() if "dnsmasq-tftp" in line]
        return "\n".join(lines).replace(f"{self.tftp}/", "")

    def close(self) -> None:
        self.namespace.close()


@pytest.fixture
def secure_boot_lab(tmp_path, guest_cache):
    for path, package in ((SHIM, "shim-signed"), (NETWORK_GRUB, "grub-efi-amd64-signed")):
        if not path.exists():
            pytest.fail(f"{path} is missing: install the Debian package {package} (scripts/install-system-deps.sh)")
    require_command("sbattach", "sbsigntool")
    lab = SecureBootLab(tmp_path, guest_cache)
    try:
        yield lab
    finally:
        lab.close()


TFTP_BOOT = ["enable-tftp", "dhcp-boot=shimx64.efi"]


def test_signed_chain_boots_with_secure_boot_enforcing(secure_boot_lab):
    lab = secure_boot_lab
    lab.boot_config("vmlinuz")
    lab.start(TFTP_BOOT + [f"tftp-root={lab.tftp}"])
    run = lab.machine().power_on()
    try:
        run.wait_for(r"KSTEST: grub\.cfg from prefix \(tftp,192\.168\.42\.1\)/grub", timeout=300)
        run.wait_for(r"KSGUEST: post-install ok", timeout=300)
        console = run.text
    finally:
        run.power_off()
    tftp = lab.tftp_log()
    # The firmware fetched shim, shim fetched GRUB, GRUB its configuration: all over TFTP.
    assert "sent shimx64.efi" in tftp and "sent grubx64.efi" in tftp and "sent grub/grub.cfg" in tftp, tftp
    # No HTTP in this GRUB: it looks for the module on its prefix (and may not load it).
    assert "file grub/x86_64-efi/http.mod not found" in tftp, tftp
    assert "KSTEST: no configuration over HTTP" in console
    # What GRUB knows of the machine, to ask for its configuration with: MAC, SMBIOS serial and UUID.
    # (GRUB's console wraps at 80 columns: one short line each.)
    assert f"KSTEST: mac {MAC} serial {SERIAL} uuid {UUID}" in console
    assert "KSTEST: GRUB lockdown y shim_lock y" in console
    # (GRUB's kernel and initrd came over TFTP too; dnsmasq logs their "sent" lines only
    # once a transfer has ended on its side, which may be after the kernel runs.)
    # The kernel's EFI stub and the kernel itself see Secure Boot on, and lock down.
    assert "EFI stub: UEFI Secure Boot is enabled." in console
    assert "secureboot: Secure boot enabled" in console
    assert "Kernel is locked down from EFI Secure Boot" in console
    # The booted system reads the variable (4 attribute bytes, then the value 1) and the lockdown mode.
    assert "KSTEST: SecureBoot variable 6 0 0 0 1" in console
    assert "KSTEST: lockdown none [integrity] confidentiality" in console


def test_unsigned_kernel_is_refused(secure_boot_lab):
    lab = secure_boot_lab
    shutil.copy(lab.tftp / "vmlinuz", lab.tftp / "unsigned")
    subprocess.run(["sbattach", "--remove", lab.tftp / "unsigned"], check=True, capture_output=True)
    lab.boot_config("unsigned")
    lab.start(TFTP_BOOT + [f"tftp-root={lab.tftp}"])
    run = lab.machine().power_on()
    try:
        run.wait_for(r"KSTEST: boot failed", timeout=300)
        console = run.text
    finally:
        run.power_off()
    assert "sent unsigned" in lab.tftp_log()
    assert "error: bad shim signature." in console
    assert "error: you need to load the kernel first." in console
    assert "KSGUEST: init started" not in console


def test_http_boot_without_tftp(secure_boot_lab):
    lab = secure_boot_lab
    url = f"http://{ADDRESS}:{HTTP_PORT}/shimx64.efi"
    # No enable-tftp: dnsmasq serves no files.
    lab.start(["dhcp-vendorclass=set:httpboot,HTTPClient", "dhcp-option-force=tag:httpboot,60,HTTPClient",
               f"dhcp-boot=tag:httpboot,{url}"])  # fmt: skip
    run = lab.machine(http_boot=True).power_on()
    try:
        run.wait_for(r"grub> ", timeout=300)
        console = run.text
    finally:
        run.power_off()
    requests = tail(lab.http_log, 100000)
    assert ">>Start HTTP Boot over IPv4" in console and f"URI: {url}" in console
    # The firmware fetched shim, and shim GRUB from beside it: both signatures checked.
    assert '"GET /shimx64.efi HTTP/1.1" 200' in requests
    assert '"GET //grubx64.efi HTTP/1.1" 200' in requests
    assert "Welcome to GRUB!" in console
    # Then nothing: this GRUB reads no configuration over HTTP and has no TFTP server to ask.
    assert "grub.cfg" not in requests
    assert "dnsmasq-tftp" not in tail(lab.dnsmasq_log, 100000)
    assert "KSTEST" not in console
