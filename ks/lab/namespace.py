"""A private network namespace with a bridge and a tap device, and the processes in it.

Nothing in it can reach another network: the bridge has no uplink. Closing it
ends every process it started (by PID) and deletes the namespace, which also
removes its devices.
"""

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

_names = itertools.count(1)


def run(*argv: str) -> str:
    """Run a command, raise with its stderr if it fails, return its stdout."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class Namespace:
    """``ip netns`` NAME holding bridge ``br0`` (ADDRESS/24, fd42::1/64) and tap ``tap0`` on it."""

    bridge = "br0"
    tap = "tap0"
    # Unique-local: the bridge needs an IPv6 prefix for router advertisements on it.
    address6 = "fd42::1"

    def __init__(self, address: str, prefix: str = "ks-e2e"):
        self.name = f"{prefix}-{os.getpid()}-{next(_names)}"
        self.address = address
        self.processes: list[subprocess.Popen] = []

    def create(self) -> "Namespace":
        """Create the namespace and its devices."""
        ns = ["ip", "-n", self.name]
        run("ip", "netns", "add", self.name)
        run(*ns, "link", "set", "lo", "up")
        # forward_delay 0: the tap forwards as soon as QEMU opens it.
        run(*ns, "link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        run(*ns, "addr", "add", f"{self.address}/24", "dev", self.bridge)
        # nodad: usable at once, not after duplicate address detection.
        run(*ns, "addr", "add", f"{self.address6}/64", "dev", self.bridge, "nodad")
        run(*ns, "link", "set", self.bridge, "up")
        run(*ns, "tuntap", "add", self.tap, "mode", "tap")
        run(*ns, "link", "set", self.tap, "master", self.bridge)
        run(*ns, "link", "set", self.tap, "up")
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same PID)."""
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def start(self, argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start a process in the namespace, its output going to ``log``."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                self.command(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        """End the processes started here, then anything left in the namespace; delete it."""
        for process in reversed(self.processes):
            self.stop(process)
        self.processes.clear()
        leftovers = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in leftovers:  # only processes of this namespace, which this run created
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.strip():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
