"""A private network for tests: a network namespace joined to this one by a veth pair.

The test's side gets the first address of a /29, the namespace's side the second, with a
MAC the test chooses. Traffic to the /29 goes nowhere but into the namespace. Teardown
ends the processes left in the namespace by their pids and deletes it (and so the pair).
"""

import contextlib
import ipaddress
import json
import os
import random
import signal
import subprocess
from dataclasses import dataclass

from helpers import require_command


@dataclass(frozen=True)
class Veth:
    """The namespace, its veth pair and their addresses."""

    name: str
    near: str  # our end's interface
    subnet: ipaddress.IPv4Network
    near_ip: str
    far_ip: str
    far_mac: str

    @property
    def prefix(self) -> list[str]:
        """Run a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def flush_neighbours(self) -> None:
        """Forget, on our side, which MAC the far end has."""
        ip("neigh", "flush", "dev", self.near)


def ip(*args: str) -> str:
    """Run ``ip`` (iproute2); its output."""
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _unused_subnet() -> ipaddress.IPv4Network:
    """A /29 in 10.213.0.0/16 that no route or address of this machine touches."""
    routes = json.loads(ip("-4", "-json", "route", "show", "table", "all"))
    taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst") not in (None, "default")]
    taken += [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
              for link in json.loads(ip("-4", "-json", "addr")) for a in link.get("addr_info", [])]
    for _ in range(100):
        subnet = ipaddress.ip_network(f"10.213.{random.randrange(256)}.{8 * random.randrange(32)}/29")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise RuntimeError("no free /29 in 10.213.0.0/16")


@contextlib.contextmanager
def veth_namespace(far_mac: str):
    """A namespace reachable through a veth pair; yields a Veth."""
    require_command("ip", "iproute2")
    tag = f"{os.getpid() % 100000}{random.randrange(100)}"
    subnet = _unused_subnet()
    near_ip, far_ip = (str(a) for a in list(subnet.hosts())[:2])
    veth = Veth(f"ks-disc-{tag}", f"ksd{tag}a", subnet, near_ip, far_ip, far_mac)
    far = f"ksd{tag}b"
    ip("netns", "add", veth.name)
    try:
        ip("link", "add", veth.near, "type", "veth", "peer", "name", far, "netns", veth.name)
        inside = ["-n", veth.name]
        ip(*inside, "link", "set", far, "address", far_mac)
        ip(*inside, "addr", "add", f"{far_ip}/{subnet.prefixlen}", "dev", far)
        ip(*inside, "link", "set", far, "up")
        ip(*inside, "link", "set", "lo", "up")
        ip("addr", "add", f"{near_ip}/{subnet.prefixlen}", "dev", veth.near)
        ip("link", "set", veth.near, "up")
        yield veth
    finally:
        for pid in ip("netns", "pids", veth.name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        # Deleting the namespace deletes its end of the pair, and with it ours.
        ip("netns", "del", veth.name)
