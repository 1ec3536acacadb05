"""Test machines: one QEMU run per boot, its console captured to a file.

QEMU runs with ``-no-reboot``: when the guest reboots, QEMU exits, so each boot
(firmware, iPXE, kernel, post-install) is one run that a test can read whole.
"""

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Namespace

OVMF = "/usr/share/ovmf/OVMF.fd"
FIRMWARES = ("bios", "uefi")


class BootFailed(AssertionError):
    """A boot that did not show what the test waited for; the message ends with the console."""


@dataclass
class Machine:
    """A disk-less machine with one e1000 NIC on the namespace's tap device."""

    namespace: Namespace
    workdir: Path
    firmware: str = "bios"
    mac: str = "52:54:00:e2:e0:01"
    serial: str = "KSE2E-0001"
    uuid: str = "5a1e2e00-0000-4000-8000-000000000001"
    boots: int = field(default=0, init=False)

    def argv(self) -> list[str]:
        """The QEMU command line of one boot."""
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-no-reboot", "-nographic",
            "-netdev", f"tap,id=net0,ifname={self.namespace.tap},script=no,downscript=no",
            "-device", f"e1000,netdev=net0,mac={self.mac}",
            "-smbios", f"type=1,serial={self.serial},uuid={self.uuid}",
        ]  # fmt: skip
        if self.firmware == "uefi":
            argv += ["-bios", OVMF]
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


class Boot:
    """One running QEMU and its console log."""

    def __init__(self, namespace: Namespace, process: subprocess.Popen, console: Path):
        self.namespace = namespace
        self.process = process
        self.console = console
        self.started = time.monotonic()

    @property
    def text(self) -> str:
        """The console so far, readable (escape sequences and carriage returns removed)."""
        raw = self.console.read_bytes().decode("utf-8", errors="replace")
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
            if self.process.poll() is not None:
                raise self.fail(f"QEMU exited before {pattern!r} appeared")
            if time.monotonic() > deadline:
                raise self.fail(f"{pattern!r} did not appear within {timeout:.0f} s")
            time.sleep(0.2)

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
