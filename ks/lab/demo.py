"""``kiwispray demo``: one machine installed in a private lab, step by step.

A lab (``ks.lab.lab``): a network namespace, dnsmasq from dnsmasq.conf.example,
``kiwispray serve`` on a fresh site with the stand-in machine imported as image1, and a
QEMU machine. The machine boots unknown and waits in ``new``; the demo gives it image1;
it installs, calls /finish and is ``finished``; its next boot leaves iPXE for its disk.
Every history line is printed as it is written, and the dashboard is reachable from
this machine (``ks.lab.forward``) while the demo runs.
"""

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ks.lab import lab as labs
from ks.lab.forward import Forward
from ks.lab.machine import OVMF, Boot

COMMANDS = ("ip", "dnsmasq", "qemu-system-x86_64")
PACKAGES = "qemu-system-x86 ipxe ovmf dnsmasq-base iproute2"
IMAGE = "image1"
# What iPXE prints when a finished machine's boot goes on to the next device.
HANDED_ON = "is installed; booting from the next device"


def requirements(root: bool, which: Callable[[str], str | None], exists: Callable[[str], bool],
                 cache: Path, firmware: str) -> list[str]:
    """What the demo lacks on this machine, one line each with how to get it; empty when nothing."""
    if not root:
        return ["kiwispray demo needs root: it creates a network namespace with a tap device and runs dnsmasq "
                "and QEMU in it. Run it as root (sudo kiwispray demo)."]
    lacking = [c for c in COMMANDS if which(c) is None]
    lacking += [f for f in (*labs.IPXE_BINARIES, *((OVMF,) if firmware == "uefi" else ())) if not exists(f)]
    problems = []
    if lacking:
        problems.append(f"missing {', '.join(lacking)}: on Debian or Ubuntu `apt-get install {PACKAGES}` "
                        "(KIWIspray's scripts/install-system-deps.sh installs these and what its tests use)")
    if not any(cache.glob("*.install.tar")) if cache.is_dir() else True:
        problems.append(f"no stand-in machine in {cache}: build it with KIWIspray's scripts/build-test-guest.sh "
                        "(a few minutes, once; --machine-cache or KS_E2E_CACHE names another directory)")
    return problems


class Demo:
    """One run of the demo; ``say`` prints a line."""

    def __init__(self, workdir: Path, cache: Path, port: int, firmware: str, say: Callable[[str], None],
                 timeout: float = 600):
        self.lab = labs.Lab(workdir, cache, prefix="ks-demo")
        self.port = port
        self.firmware = firmware
        self.say = say
        self.timeout = timeout
        self.started = time.monotonic()
        self.forward: Forward | None = None
        self.token = ""
        self.seen = 0  # history lines printed

    def step(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.started:4.0f} s] {text}")

    def setup(self) -> None:
        """The lab, a dashboard token and the forwarded port; prints how to reach the dashboard."""
        lab = self.lab
        self.step(f"making a site in {lab.root} with the stand-in machine as image '{IMAGE}'")
        self.step(f"network namespace {lab.namespace.name} (bridge {labs.ADDRESS}/24, no way out): "
                  "dnsmasq from dnsmasq.conf.example, kiwispray serve")
        lab.start()
        self.token = token = lab.kiwispray("token", "create", "demo", "--role", "admin").stdout.strip()
        self.forward = Forward(lab.namespace.name, labs.ADDRESS, labs.PORT, self.port).start()
        self.step(f"dashboard: http://127.0.0.1:{self.forward.port}/ui/ (log in with the token {token}); "
                  f"inside the namespace the server is {lab.base_url}")

    def install(self) -> None:
        """One machine from new through the image to finished, and on to its disk."""
        lab = self.lab
        machine = lab.machine(self.firmware)
        self.step(f"powering on a {self.firmware.upper()} machine in QEMU (MAC {machine.mac}); "
                  "it boots from the network: DHCP, iPXE, then the server's script")
        run = machine.power_on()
        try:
            host = self.wait(run, lambda: next(iter(lab.hosts()), None), "the machine registers")
            self.history(host["id"])
            self.step(f"host {host['id']} is new: it waits in 'new', asking again every few seconds")
            lab.edit_host("-i", host["id"], "-s", IMAGE)
            self.step(f"edit-host -i {host['id']} -s {IMAGE}: the waiting machine boots the image's installer")
            self.wait(run, lambda: not run.running() or None, "the machine installs and reboots", host["id"])
        finally:
            run.power_off()
        self.history(host["id"])
        state = lab.hosts()[0]["chain"]
        if state != ["finished"]:
            raise RuntimeError(f"host {host['id']} is in {','.join(state)} after its install, not finished; "
                               f"its console: {run.console}")
        self.step(f"host {host['id']} is finished; powering it on once more")
        run = machine.power_on()
        try:
            self.wait(run, lambda: HANDED_ON in run.text or None, "iPXE hands the machine on", host["id"])
        finally:
            run.power_off()
        self.history(host["id"])
        self.step(f"iPXE: host {host['id']} {HANDED_ON}, its disk (the stand-in has none to boot, so the "
                  "firmware stops there)")

    def wait(self, run: Boot, done: Callable[[], object], what: str, host_id: int | None = None):
        """Poll ``done`` until it gives something, printing new history lines meanwhile; what it gave."""
        deadline = time.monotonic() + self.timeout
        while True:
            if host_id is not None:
                self.history(host_id)
            found = done()
            if found is not None:
                return found
            if not run.running() or time.monotonic() > deadline:
                raise RuntimeError(f"waited in vain until {what}; the machine's console: {run.console}")
            time.sleep(1)

    def history(self, host_id: int) -> None:
        """Print the host's history lines not printed yet."""
        events = self.lab.history(host_id)
        for event in events[self.seen:]:
            detail = f"  {event['detail']}" if event.get("detail") else ""
            self.step(f"  history: {event['kind']:<13} -> {event['to']}{detail}")
        self.seen = max(self.seen, len(events))

    def close(self) -> None:
        """End the forwarded port, the processes (by PID) and the namespace."""
        if self.forward is not None:
            self.forward.close()
        self.lab.close()


def run(workdir: Path, cache: Path, port: int, firmware: str, say: Callable[[str], None],
        hold: Callable[[], None] | None = None) -> float:
    """Run the demo in ``workdir`` (removed afterwards unless it failed); its wall time in seconds.

    ``hold``, if given, is called once the machine is installed, before anything is torn
    down (e.g. to wait for Ctrl-C while the operator looks at the dashboard).
    """
    demo = Demo(workdir, cache, port, firmware, say)
    ok = False
    try:
        demo.setup()
        demo.install()
        ok = True
        if hold is not None:
            hold()
    finally:
        demo.close()
        say(f"cleaned up: namespace {demo.lab.namespace.name} deleted, its processes ended")
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"the logs stay in {workdir} (server.log, dnsmasq.log, console-*.log)")
    return time.monotonic() - demo.started


def is_root() -> bool:
    return os.geteuid() == 0
