"""A real KIWI image, installed by KIWI's own installer, end to end.

The image is the Debian 12 OEM description in tests/e2e/kiwi/ with KIWIspray's
first-boot callback (``kiwispray kiwi overlay``), built by
scripts/build-kiwi-image.sh (cached outside the checkout). One machine with an
empty virtio disk goes the whole way: it boots unknown and waits in ``new``; the
operator sets ``wipe,debian``; ``wipe`` (the busybox stand-in) runs and reports;
then iPXE boots KIWI's installer through the generic template, which downloads
the disk from /images/, writes and verifies it and kexecs into the installed
Debian; its first boot calls back, and /finish makes the host ``finished``. On the
next power-on iPXE leaves network boot and the firmware boots the installed disk.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from .harness import REPO, shows_bootid

# Building the image on a fresh machine (12-25 min) counts towards the first test's time.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(4200)]

IMAGE = "debian"
PRODUCT = "KSKiwi.x86_64-1.0.0"
WAITING = r'host 1 \(not-set\), state "new"'
INSTALLED = re.escape("host 1 (not-set) is installed; booting from the next device")
DISK_SIZE = 2 * 1024**3


@pytest.fixture(scope="module")
def kiwi_build() -> Path:
    """The .install.tar of the real image, built once per set of inputs."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "build-kiwi-image.sh")], stdout=subprocess.PIPE,
                          text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def wait_for_chain(lab, chain: str, timeout: float) -> None:
    """Wait until host 1's chain is ``chain``."""
    deadline = time.monotonic() + timeout
    while (now := ",".join(lab.hosts()[0]["chain"])) != chain:
        if time.monotonic() > deadline:
            raise AssertionError(f"host 1 is in {now!r}, not {chain!r}, after {timeout:.0f} s")
        time.sleep(1)


def boot_the_installed_disk(machine, booted: re.Match, installed_timeout: float, booted_timeout: float):
    """The power-on after an install: the boot loader says the host is installed and hands the machine
    to its disk, which boots the system installed on the root ``booted`` named. The run, powered off."""
    run = machine.power_on()
    try:
        run.wait_for(INSTALLED, timeout=installed_timeout)
        again = run.wait_for(r"KSTEST-BOOTED root=(\S+) via=(\w+)", timeout=booted_timeout)
    finally:
        run.power_off()
    assert again.groups() == (booted.group(1), "disk")
    assert "kiwispray-callback: done" not in run.text
    return run


def history(lab) -> tuple[list[dict], list[tuple[str, str]]]:
    """Host 1's history, and its steps as (kind, state after) without edits."""
    events = json.loads(lab.edit_host("-i", "1", "--history", "--json").stdout)
    return events, [(e["kind"], e["to"]) for e in events if e["kind"] != "edit"]


def kernel_options(script: str) -> list[str]:
    """The options of the script's ``kernel`` line (without the command and the kernel's URL)."""
    (line,) = [line for line in script.splitlines() if line.startswith("kernel ")]
    words = line.split(" || ")[0].split()
    return words[4:]  # kernel --name kernel URL options...


def test_real_kiwi_image_installs_once_then_boots_its_disk(start_lab, kiwi_build, tmp_path):
    lab = start_lab()
    imported = lab.kiwispray("image", "import", IMAGE, kiwi_build)
    # KIWI 9 ships <P>.md5 (digest, blocks, block size of the raw disk); the import
    # decompresses the disk behind a progress bar (its label only, without a terminal).
    assert re.search(r"; md5 of \d+ bytes uncompressed verified", imported.stdout), imported.stdout
    assert f"Verifying {PRODUCT}.xz" in imported.stderr
    listing = json.loads(lab.kiwispray("image", "list", "--json").stdout)
    (entry,) = [e for e in listing if e["name"] == IMAGE]
    assert entry["checksum"] == "ok"

    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(DISK_SIZE)
    machine = lab.machine("bios", mac="52:54:00:e2:e0:09", serial="KSE2E-KIWI", disk=disk, memory=1536,
                          uuid="5a1e2e00-0000-4000-8000-000000000009")

    # Unknown, then wipe: the busybox stand-in, in the same power-on.
    run = machine.power_on()
    try:
        run.wait_for(WAITING)
        lab.edit_host("-i", "1", "-s", f"wipe,{IMAGE}")
        console = run.wait_exit()
    finally:
        run.power_off()
    assert "KSGUEST: post-install ok" in console
    wait_for_chain(lab, IMAGE, 10)

    rendered = lab.kiwispray("render", "-i", "1", "--base-url", lab.base_url).stdout
    options = kernel_options(rendered)
    assert f"rd.kiwi.install.image={lab.base_url}/images/{IMAGE}/{PRODUCT}.xz" in options
    assert "rd.kiwi.install.pass.bootparam" in options
    assert f"ds=nocloud-net;s={lab.base_url}/nocloud/1/BOOTID/" in options  # the shipped user-data: cloud-init's seed

    # KIWI's installer: download, dump, verify, kexec into the installed system,
    # whose first boot calls back.
    started = time.monotonic()
    run = machine.power_on()
    try:
        first = run.wait_for(r"KSTEST-CMDLINE ([^\n]*)\n", timeout=2400)
        booted = run.wait_for(r"KSTEST-BOOTED root=(\S+) via=(\w+)", timeout=120)
        wait_for_chain(lab, "finished", 600)
        install_seconds = time.monotonic() - started
        # /finish is the post-install script's last step; the callback then marks itself done.
        run.wait_for("kiwispray-callback: done", timeout=120)
    finally:
        run.power_off()
    assert booted.group(2) == "kexec"
    assert booted.group(1).startswith("/dev/vda")
    # Every option iPXE gave the installer's kernel, less KIWI's own, reached the
    # installed system: the line `kiwispray render` shows is the one booted.
    passed = [o for o in options if not o.startswith("rd.kiwi")]
    cmdline = first.group(1).split()
    assert cmdline[: len(passed)] == passed, (cmdline, passed)
    assert not shows_bootid(run.text)

    # Installed: iPXE leaves network boot, the firmware boots the disk.
    boot_the_installed_disk(machine, booted, 180, 600)

    events, steps = history(lab)
    wipe, install = f"wipe,{IMAGE}", IMAGE
    assert steps[:10] == [
        ("register", "new"), ("boot", "new"), ("state", wipe),
        ("boot", wipe), ("post-install", wipe), ("finish", install),  # the stand-in
        ("boot", install), ("download", install), ("post-install", install), ("finish", "finished"),  # KIWI
    ], steps
    assert set(steps[10:]) == {("boot", "finished")}
    download = [e for e in events if e["kind"] == "download"][0]
    size = (lab.root / "images" / IMAGE / f"{PRODUCT}.xz").stat().st_size
    assert f"{PRODUCT}.xz" in download["detail"] and f"{size} of {size} bytes" in download["detail"]
    print(f"\ninstall (power-on to finished): {install_seconds:.0f} s; {download['detail']}")


def test_a_corrupted_disk_is_caught_before_and_while_a_machine_installs_it(start_lab, kiwi_build, tmp_path):
    """`image check` finds a damaged .xz; served anyway, KIWI's verification refuses it and
    the provisioning timeout flags the machine failed: it never becomes ``finished``."""
    lab = start_lab()
    lab.kiwispray("image", "import", IMAGE, kiwi_build)
    image = lab.root / "images" / IMAGE
    disk = image / f"{PRODUCT}.xz"
    with disk.open("r+b") as f:  # damage a block in the middle, size unchanged
        f.seek(disk.stat().st_size // 2)
        f.write(b"\xff" * 4096)
    check = lab.kiwispray("image", "check", IMAGE, check=False)
    assert check.returncode == 1
    assert f"{PRODUCT}.xz is damaged" in check.stderr, check.stderr
    (entry,) = [e for e in json.loads(lab.kiwispray("image", "list", "--json").stdout) if e["name"] == IMAGE]
    assert entry["checksum"] == "MISMATCH"
    (image / "kiwispray.toml").write_text("deploy_timeout = 60\n")

    blank = tmp_path / "disk.raw"
    with blank.open("wb") as f:
        f.truncate(DISK_SIZE)
    machine = lab.machine("bios", mac="52:54:00:e2:e0:0a", serial="KSE2E-KIWI-BAD", disk=blank, memory=1536,
                          uuid="5a1e2e00-0000-4000-8000-00000000000a")
    lab.register(machine)
    lab.edit_host("-i", "1", "-s", IMAGE)
    run = machine.power_on()
    try:
        run.wait_for(r"Image checksum test\s+failed", timeout=1500)
        # The server's own timeout check (every 30 s) flags it once its 60 s have passed.
        deadline = time.monotonic() + 120
        while not lab.hosts()[0]["failed"]:
            assert time.monotonic() < deadline, "the host was not flagged failed"
            time.sleep(2)
    finally:
        run.power_off()
    (host,) = lab.hosts()
    assert host["chain"] == [IMAGE] and host["failed"]
    kinds = [e["kind"] for e in json.loads(lab.edit_host("-i", "1", "--history", "--json").stdout)]
    assert "finish" not in kinds and "post-install" not in kinds
    assert "timeout" in kinds, kinds


# The installed system's post-install script, as a site writes one: it shows what the system
# saw of Secure Boot, then reports the end of the installation like the shipped one.
SECURE_BOOT_REPORT = """#!/bin/sh
variable=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
echo "KSTEST: SecureBoot $(od -An -t u1 "$variable" | awk '{ print $5 }')" >/dev/ttyS0
echo "KSTEST: lockdown $(cat /sys/kernel/security/lockdown)" >/dev/ttyS0
curl -fsS -o /dev/null {{ finish_url | shell }} || wget -q -O /dev/null {{ finish_url | shell }}
"""


def test_the_uefi_image_installs_with_secure_boot_enforcing(start_lab, kiwi_build, tmp_path):
    """OVMF with Microsoft's keys: shim and Debian's signed GRUB from KIWIspray's TFTP, KIWI's installer
    (Debian's signed kernel, locked down) writes the disk and kexecs into the installed system, which calls
    back once; the next power-on, KIWIspray's GRUB hands the machine to the installed disk's own GRUB."""
    from ks.core import dnsmasq
    from ks.lab.lab import ADDRESS

    lab = start_lab(settings={"KS_TFTP_LISTEN": ADDRESS}, variants=[dnsmasq.secure_boot_variant])
    lab.link_boot_files()
    lab.kiwispray("image", "import", IMAGE, kiwi_build)
    (lab.root / "images" / IMAGE / "post_install.sh").write_text(SECURE_BOOT_REPORT)
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(DISK_SIZE)
    machine = lab.machine("secureboot", mac="52:54:00:e2:e0:0b", serial="KSE2E-KIWI-SB", disk=disk, memory=1536,
                          uuid="5a1e2e00-0000-4000-8000-00000000000b")

    started = time.monotonic()
    run = machine.power_on()
    try:
        run.wait_for(r"host 1 \(not-set\), state new\.", timeout=300)
        lab.edit_host("-i", "1", "-s", IMAGE)
        booted = run.wait_for(r"KSTEST-BOOTED root=(\S+) via=(\w+)", timeout=2400)
        wait_for_chain(lab, "finished", 900)
        install_seconds = time.monotonic() - started
        run.wait_for("kiwispray-callback: done", timeout=120)
    finally:
        run.power_off()
    console = run.text
    assert "boots image debian" in console  # GRUB's kiwi.grub
    assert booted.group(2) == "kexec"  # lockdown allows kexec_file_load of a signed kernel
    assert "KSTEST: SecureBoot 1" in console
    assert "KSTEST: lockdown none [integrity] confidentiality" in console
    assert not shows_bootid(console)

    # The next power-on: GRUB, asked over the network, hands the machine to the installed disk's own GRUB
    # (kiwi.grub's finished twin), which boots Debian's signed kernel, Secure Boot on.
    run = boot_the_installed_disk(machine, booted, 300, 900)
    assert "secureboot: Secure boot enabled" in run.text and '"UiApp"' not in run.text

    _, steps = history(lab)
    assert steps[:6] == [("register", "new"), ("boot", "new"), ("state", IMAGE), ("boot", IMAGE),
                         ("download", IMAGE), ("post-install", IMAGE)], steps  # fmt: skip
    assert steps[6] == ("finish", "finished") and set(steps[7:]) == {("boot", "finished")}, steps
    assert len(lab.hosts()) == 1
    print(f"\nSecure Boot install (power-on to finished): {install_seconds:.0f} s")


def test_the_uefi_image_installs_through_uefi_http_boot_and_ipxe(start_lab, kiwi_build, tmp_path):
    """The same image on a UEFI machine with Secure Boot off and no TFTP at all: the firmware's HTTP Boot
    fetches iPXE's EFI binary from KIWIspray's /boot-files/, iPXE boots KIWI's installer through kiwi.ipxe,
    and the installed system calls back once; the next power-on, iPXE hands the machine to its disk."""
    from ks.core import dnsmasq
    from ks.lab.lab import ADDRESS, PORT

    base = f"http://{ADDRESS}:{PORT}"
    lab = start_lab(variants=[dnsmasq.tftp_off, lambda text: dnsmasq.http_boot_variant(text, base)])
    lab.link_boot_files()
    lab.kiwispray("image", "import", IMAGE, kiwi_build)
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(DISK_SIZE)
    machine = lab.machine("uefi", mac="52:54:00:e2:e0:0c", serial="KSE2E-KIWI-HTTP", disk=disk, memory=1536,
                          uuid="5a1e2e00-0000-4000-8000-00000000000c", http_boot=True)
    lab.register(machine)
    lab.edit_host("-i", "1", "-s", IMAGE)
    run = machine.power_on()
    try:
        booted = run.wait_for(r"KSTEST-BOOTED root=(\S+) via=(\w+)", timeout=2400)
        wait_for_chain(lab, "finished", 900)
        run.wait_for("kiwispray-callback: done", timeout=120)
    finally:
        run.power_off()
    assert f"URI: {base}/boot-files/snponly.efi" in run.text
    assert "boots image debian" in run.text  # kiwi.ipxe
    assert booted.group(2) == "kexec"
    assert "dnsmasq-tftp" not in (lab.dnsmasq_log.read_text(errors="replace"))

    boot_the_installed_disk(machine, booted, 300, 900)
    _, steps = history(lab)
    assert steps[:8] == [("register", "new"), ("boot", "new"), ("state", IMAGE), ("boot", IMAGE),
                         ("download", IMAGE), ("post-install", IMAGE), ("finish", "finished"),
                         ("boot", "finished")], steps  # fmt: skip
