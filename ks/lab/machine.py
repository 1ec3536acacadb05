"""Machines in QEMU on a lab's network: one QEMU run per boot, its console captured to a file.

QEMU runs with ``-no-reboot``: when the guest reboots, QEMU exits, so each boot
(firmware, iPXE, kernel, post-install) is one run that a test or the demo can read whole.

A machine can also be powered by a simulated BMC instead (``chassis_program``): then
each power-on is one QEMU run, and the guest's reboots happen inside it.
"""

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ks.lab.namespace import Namespace

OVMF = "/usr/share/ovmf/OVMF.fd"
FIRMWARES = ("bios", "uefi")
# UEFI with Secure Boot enforcing: OVMF built with SMM and Secure Boot, its variables
# with Microsoft's keys enrolled (a writable copy per machine). Its q35 machine and
# secure flash are what that build needs; its network driver is OVMF's own virtio-net,
# the NIC without option ROM: with QEMU's e1000, its iPXE ROM is the UEFI network stack,
# and shim's fetch of grubx64.efi through it fails ("Malformed binary").
OVMF_SECBOOT_CODE = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
OVMF_MS_VARS = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"


class BootFailed(AssertionError):
    """A boot that did not show what was waited for; the message ends with the console."""


@dataclass
class Machine:
    """A machine with one e1000 NIC on the namespace's tap device and, if given, one virtio disk.

    With a disk the firmware tries the network first and the disk second, as a
    machine that is provisioned over the network is set up.
    """

    namespace: Namespace
    workdir: Path
    firmware: str = "bios"
    mac: str = "52:54:00:e2:e0:01"
    serial: str = "KSE2E-0001"
    uuid: str = "5a1e2e00-0000-4000-8000-000000000001"
    disk: Path | None = None
    memory: int = 512
    # SMBIOS system manufacturer and product (type 1), which iPXE reports as facts; QEMU's own when None.
    manufacturer: str | None = None
    product: str | None = None
    # OVMF only: skip its PXE boot options, so the firmware goes straight to UEFI HTTP Boot.
    http_boot: bool = False
    boots: int = field(default=0, init=False)

    def argv(self, exit_on_reboot: bool = True) -> list[str]:
        """The QEMU command line of one boot (or of one power-on, without ``exit_on_reboot``)."""
        nic = f"e1000,netdev=net0,mac={self.mac}"
        # OVMF's own virtio-net driver and network stack: with e1000, the NIC's iPXE option ROM
        # becomes the UEFI network stack, and shim's fetch of GRUB through it fails.
        if self.firmware == "secureboot" or self.http_boot:
            nic = f"virtio-net-pci,netdev=net0,mac={self.mac},romfile="
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", str(self.memory), "-nographic",
            *(["-no-reboot"] if exit_on_reboot else []),
            "-netdev", f"tap,id=net0,ifname={self.namespace.tap},script=no,downscript=no",
            "-device", nic,
            "-smbios", f"type=1,serial={self.serial},uuid={self.uuid}" + "".join(
                f",{key}={value.replace(',', ',,')}" for key, value in
                (("manufacturer", self.manufacturer), ("product", self.product)) if value),
        ]  # fmt: skip
        if self.disk is not None and (self.firmware == "secureboot" or self.http_boot):
            # OVMF orders its boot options by bootindex: the network (PXE over IPv4, or HTTP Boot) first,
            # then the disk; without, it put a disk it could boot before HTTP Boot.
            argv[argv.index(nic)] = f"{nic},bootindex=1"
            argv += ["-drive", f"file={self.disk},if=none,id=disk0,format=raw",
                     "-device", "virtio-blk-pci,drive=disk0,bootindex=2"]  # fmt: skip
        elif self.disk is not None:
            argv += ["-drive", f"file={self.disk},if=virtio,format=raw", "-boot", "order=nc"]
        if self.firmware == "uefi":
            argv += ["-bios", OVMF]
        if self.firmware == "secureboot":
            variables = self.workdir / f"ovmf-vars-{self.mac.replace(':', '')}.fd"
            if not variables.exists():
                shutil.copy(OVMF_MS_VARS, variables)
            argv += [
                "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECBOOT_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
            ]  # fmt: skip
        if self.http_boot:
            argv += [
                "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
            ]  # fmt: skip
        return argv

    def power_on(self) -> "Boot":
        """Start one boot; the caller waits on the returned Boot."""
        self.boots += 1
        console = self.workdir / f"console-{self.firmware}-{self.boots}.log"
        return Boot(self.namespace, self.namespace.start(self.argv(), console), console)

    def boot(self, timeout: float = 240) -> str:
        """One whole boot, until the guest reboots; its console text."""
        run = self.power_on()
        try:
            return run.wait_exit(timeout)
        finally:
            run.power_off()

    def chassis_program(self, directory: Path) -> Path:
        """Write a chassis program for ipmi_sim that powers this machine; its path.

        Its power is a QEMU process: ``set power 1`` starts one (its console in
        ``console-bmc-N.log``, N counting power-ons), ``set power 0`` ends it by its PID,
        ``get power`` says whether it runs. QEMU runs without -no-reboot here: a
        reboot of the guest is a reset with the power staying on, as on hardware,
        and a QEMU that ends on its own (the guest powered off) is a machine whose
        power is off.
        """
        program = directory / "chassis"
        program.write_text(CHASSIS.format(
            directory=shlex.quote(str(directory)), qemu=shlex.join(self.namespace.command(self.argv(False)))
        ))
        program.chmod(0o755)
        return program

    def powered(self, directory: Path, number: int, timeout: float = 30) -> "PoweredRun":
        """The ``number``-th power-on of this machine by the chassis program in ``directory``,
        once it has happened."""
        run = PoweredRun(directory, number)
        while run.power_ons() < number:
            if time.monotonic() - run.started > timeout:
                raise run.fail(f"power-on {number} did not happen within {timeout:.0f} s")
            time.sleep(0.1)
        return run


# ipmi_sim runs "chassis get power" (answer "power:0|1" on stdout) and "chassis set power 0|1".
CHASSIS = """\
#!/bin/sh
cd {directory}
running() {{
    pid=$(cat qemu.pid 2>/dev/null) && [ -n "$pid" ] || return 1
    # A QEMU that ended is a zombie until init reaps it, which may take a moment.
    [ -e "/proc/$pid" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status"
}}
case "$1 $2" in
"get power")
    if running; then echo power:1; else echo power:0; fi ;;
"set power")
    echo "$3" >>power.log
    if [ "$3" = 1 ]; then
        running && exit 0
        n=$(($(cat power-ons 2>/dev/null || echo 0) + 1))
        # Its output to a file, not to ipmi_sim, which reads this program's output to the end.
        {qemu} </dev/null >"console-bmc-$n.log" 2>&1 &
        echo $! >qemu.pid
        echo "$n" >power-ons
    elif running; then
        # Pulling the plug, and quickly: ipmi_sim answers the BMC client only after this
        # program has ended, and a client that waits too long sends its request again.
        kill -KILL "$pid"
        i=0
        while running && [ "$i" -lt 50 ]; do sleep 0.02; i=$((i + 1)); done
    fi ;;
esac
exit 0
"""


class Console:
    """The console log of a running machine, and waiting for what it shows."""

    console: Path
    started: float

    def running(self) -> bool:
        """Whether the machine still runs."""
        raise NotImplementedError

    @property
    def text(self) -> str:
        """The console so far, readable (escape sequences and carriage returns removed)."""
        raw = self.console.read_bytes().decode("utf-8", errors="replace") if self.console.exists() else ""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r", "", raw)

    def fail(self, why: str) -> BootFailed:
        tail = self.text[-6000:]
        return BootFailed(f"{why} (after {time.monotonic() - self.started:.0f} s); console {self.console}:\n{tail}")

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match:
        """Wait until ``pattern`` (a regular expression) appears on the console."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text)
            if match:
                return match
            if not self.running():
                raise self.fail(f"QEMU exited before {pattern!r} appeared")
            if time.monotonic() > deadline:
                raise self.fail(f"{pattern!r} did not appear within {timeout:.0f} s")
            time.sleep(0.2)


class Boot(Console):
    """One running QEMU and its console log."""

    def __init__(self, namespace: Namespace, process: subprocess.Popen, console: Path):
        self.namespace = namespace
        self.process = process
        self.console = console
        self.started = time.monotonic()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_exit(self, timeout: float = 240) -> str:
        """Wait until the guest reboots (QEMU exits); the console text."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"the machine did not reboot within {timeout:.0f} s") from None
        return self.text

    def power_off(self) -> None:
        """Pull the plug (a no-op if QEMU has exited)."""
        self.namespace.stop(self.process, grace=2)


class PoweredRun(Console):
    """One power-on of a machine by its chassis program: the QEMU started by ``set power 1``."""

    def __init__(self, directory: Path, number: int):
        self.directory = directory
        self.number = number
        self.console = directory / f"console-bmc-{number}.log"
        self.started = time.monotonic()

    def power_ons(self) -> int:
        """How often the chassis program has started the machine so far."""
        ons = self.directory / "power-ons"
        return int(ons.read_text().strip() or 0) if ons.exists() else 0

    def running(self) -> bool:
        power = subprocess.run([self.directory / "chassis", "get", "power"], capture_output=True, text=True).stdout
        return power.strip() == "power:1" and self.power_ons() == self.number
