"""Where a BMC given by MAC is now: this machine's neighbour table, filled by a sweep.

A BMC written as ``ipmi://52-54-00-aa-bb-cc`` is looked up in the kernel's IPv4 neighbour
(ARP) table. If it is not there and subnets are configured (KS_BMC_SUBNETS), one small UDP
datagram goes to every address of those subnets: the kernel asks ARP for each, the BMC
answers, and its MAC appears in the table. ARP does not cross routers, so the subnets must
be networks this machine is attached to.
"""

import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Sequence

from ks.core.errors import BMCNotFound, ConfigError
from ks.core.identity import MacError, normalize_mac

MAX_PREFIX = 22  # a larger subnet is refused: a sweep stays short and polite
MAX_ADDRESSES = 1024  # the kernel's neighbour table holds 1024 entries by default (gc_thresh3)
SWEEP_WAIT = 2.0  # the kernel asks a silent address again after 1 s: slow BMCs get a second chance
FRESH = 10.0  # power calls on many hosts at once share one sweep
BATCH = 64  # datagrams wait in their socket until ARP ends: a socket per batch keeps within its buffer
# An RMCP/ASF presence ping to the IPMI port: the one datagram every BMC expects to see.
RMCP_PING, RMCP_PORT = bytes.fromhex("0600ff06000011be80000000"), 623
# States with a usable MAC, most trustworthy first. A MAC can sit at two addresses for a
# while (a BMC that got a new DHCP lease); the one that answered last wins.
STATES = ("PERMANENT", "REACHABLE", "DELAY", "PROBE", "STALE")

_lock = threading.Lock()
_swept: dict[tuple, float] = {}


def parse_subnets(text: str) -> list[ipaddress.IPv4Network]:
    """KS_BMC_SUBNETS: comma-separated IPv4 CIDRs, each at most /22, 1024 addresses in all."""
    subnets = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        try:
            subnet = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"KS_BMC_SUBNETS: {item!r} is not a subnet; write e.g. 10.0.0.0/24") from None
        if subnet.version != 4:
            raise ConfigError(f"KS_BMC_SUBNETS: {item} is IPv6; only IPv4 subnets can be swept (ARP)")
        if subnet.prefixlen < MAX_PREFIX:
            raise ConfigError(
                f"KS_BMC_SUBNETS: {item} is larger than /{MAX_PREFIX}; list the smaller subnets the BMCs are on"
            )
        subnets.append(subnet)
    if sum(s.num_addresses for s in subnets) > MAX_ADDRESSES:
        raise ConfigError(
            f"KS_BMC_SUBNETS covers more than {MAX_ADDRESSES} addresses; list only the subnets the BMCs are on"
        )
    return subnets


def parse_neighbours(text: str) -> dict[str, str]:
    """MAC -> IPv4 address from ``ip -4 -json neigh show``: the best entry of each MAC."""
    best: dict[str, tuple[int, ipaddress.IPv4Address]] = {}
    for entry in json.loads(text or "[]"):
        state = next((s for s in entry.get("state", []) if s in STATES), None)
        try:
            mac, ip = normalize_mac(entry.get("lladdr", "")), ipaddress.IPv4Address(entry.get("dst", ""))
        except (MacError, ValueError):  # no link address yet, or not an Ethernet/IPv4 entry
            continue
        if state and (mac not in best or (STATES.index(state), ip) < best[mac]):
            best[mac] = (STATES.index(state), ip)
    return {mac: str(ip) for mac, (_, ip) in best.items()}


def neighbours() -> dict[str, str]:
    """The kernel's IPv4 neighbour table now (of this network namespace)."""
    try:
        done = subprocess.run(
            ["ip", "-4", "-json", "neigh", "show"], capture_output=True, text=True, timeout=5, check=True
        )
    except FileNotFoundError:
        raise ConfigError("BMCs given by MAC are looked up with `ip` (Debian package iproute2); install it") from None
    except subprocess.SubprocessError as exc:
        raise ConfigError(f"cannot read the neighbour table with `ip -json neigh`: {exc}") from None
    try:
        return parse_neighbours(done.stdout)
    except ValueError:  # an `ip` too old for -json prints text
        raise ConfigError("`ip -json neigh` did not print JSON; install a current iproute2") from None


def sweep(subnets: Sequence[ipaddress.IPv4Network]) -> None:
    """Send a presence ping to every address of ``subnets``, so that the kernel ARPs for each."""
    addresses = [str(a) for subnet in subnets for a in subnet.hosts()]
    for start in range(0, len(addresses), BATCH):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setblocking(False)
            for address in addresses[start : start + BATCH]:
                try:
                    probe.sendto(RMCP_PING, (address, RMCP_PORT))
                except OSError:  # no route, a full buffer: that address stays unknown, the rest go on
                    pass


def locate(macs, subnets: Sequence[ipaddress.IPv4Network], force: bool = False) -> dict[str, str]:
    """MAC -> IPv4 address for each of ``macs`` found; sweeps ``subnets`` if one is missing, or if ``force``."""
    wanted = set(macs)
    found = neighbours() if wanted else {}
    if not subnets or not (force or wanted - found.keys()):
        return {mac: found[mac] for mac in wanted & found.keys()}
    key = tuple(subnets)
    with _lock:  # one sweep at a time, and none again right after another
        if force or time.monotonic() - _swept.get(key, -FRESH) >= FRESH:
            sweep(subnets)
            _swept[key] = time.monotonic()
    if force:  # an entry known before may be about to move to a new address: let every answer in
        time.sleep(SWEEP_WAIT)
    deadline = time.monotonic() + (0 if force else SWEEP_WAIT)
    found = neighbours() if wanted else {}
    while wanted - found.keys() and time.monotonic() < deadline:
        time.sleep(0.1)
        found = neighbours()
    return {mac: found[mac] for mac in wanted & found.keys()}


def not_found(mac: str, subnets: Sequence[ipaddress.IPv4Network]) -> BMCNotFound:
    """The error for a BMC whose MAC is nowhere to be found, saying what to check."""
    if not subnets:
        return BMCNotFound(
            f"BMC {mac} is not in this server's neighbour table; set KS_BMC_SUBNETS to the BMC network "
            "(e.g. 10.0.0.0/24) so that a sweep finds it, or give the BMC by IP address"
        )
    swept = ", ".join(map(str, subnets))
    return BMCNotFound(
        f"BMC {mac} did not answer a sweep of {swept}; check that it is powered and cabled, and that "
        "KS_BMC_SUBNETS lists the subnet it is on (one this server is attached to)"
    )
