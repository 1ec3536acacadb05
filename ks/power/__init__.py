"""Power control of machines through their BMCs; no Flask, no SQL (ks.power.hosts applies it to hosts).

Operations, as ``run(bmc_url, username, password, operation)`` takes them:

* ``status``  returns ``'on'``, ``'off'`` or ``'unknown'`` (a Redfish state such as Paused)
* ``on``      power on
* ``off``     hard power off: no OS shutdown, as the machines here are reinstalled rather
              than shut down
* ``cycle``   power cycle a machine that is on; a machine that is off is powered on
              instead, because "cycle" asks for "boot it again now", and IPMI lets a BMC
              ignore or refuse a power cycle of a machine that is off. ``run`` then
              returns ``'on'``, the action sent.

``on``, ``off`` and ``cycle`` return once the BMC has accepted the command. BMCs apply
it when they do (Redfish ones often seconds later), so ``status`` right after ``on``
may still say ``off``.

The address's scheme picks the driver that speaks to the BMC (ks.power.schemes.DRIVERS;
each follows ks.power.driver.PowerDriver). Every call is bounded by its timeout, whatever
the BMC, the driver or the network does: the exchange runs in a daemon thread that is
abandoned (and ends on its own) when the deadline passes, so a dead BMC costs ``timeout``
seconds and never hangs a command. The timeouts are the caller's: they come from the
settings (POWER_TIMEOUT, POWER_STATUS_TIMEOUT).

A BMC given by MAC (``ipmi://52-54-00-aa-bb-cc``) is first looked up in the neighbour
table, sweeping ``subnets`` if it is not there (ks.power.discovery); the sweep comes
before the timeout and adds at most discovery.SWEEP_WAIT.
"""

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from ipaddress import IPv4Network

from ks.core.errors import BadRequest, BMCUnreachable, KSError
from ks.power import discovery, schemes
from ks.power.driver import BMCAddress
from ks.power.schemes import parse_bmc_address

__all__ = ["BMCAddress", "OPERATIONS", "PowerStatus", "parse_bmc_address", "run", "status_many"]

OPERATIONS = ("status", "on", "off", "cycle")
MAX_WORKERS = 32


@dataclass(frozen=True)
class PowerStatus:
    """The power state of one BMC in a listing; ``error`` says why it is 'unknown'."""

    state: str  # "on" | "off" | "unknown"
    error: str | None = None


def run(
    bmc: str | BMCAddress,
    username: str,
    password: str,
    operation: str,
    *,
    timeout: float,
    verify: bool | str = True,
    subnets: Sequence[IPv4Network] = (),
) -> str:
    """Do one power operation; return the state (status) or the action sent (on/off/cycle).

    ``verify`` (Redfish over HTTPS): True checks the BMC's certificate against the system's
    CAs, a path names the CA certificate(s) to trust instead, False accepts any certificate.
    ``subnets`` are swept for a BMC given by MAC that the neighbour table does not know.
    Raises InvalidBMCAddress, BadRequest, BMCNotFound, BMCUnreachable, BMCAuthFailed or PowerError.
    """
    if operation not in OPERATIONS:
        raise BadRequest(f"unknown power operation {operation!r}; use one of {', '.join(OPERATIONS)}")
    if not timeout > 0:
        raise BadRequest(f"the power timeout must be a positive number of seconds, got {timeout!r}")
    address = _located([bmc], subnets)[0]
    if isinstance(address, KSError):
        raise address

    def exchange() -> str:
        with schemes.driver(address)(address, username, password, timeout, verify) as connection:
            if operation == "status":
                return connection.state()
            action = operation
            if action == "cycle" and connection.state() == "off":
                action = "on"
            connection.set(action)
            return action

    return _within(timeout, exchange, address, operation)


def status_many(
    targets: Iterable[tuple[str, str, str]],
    *,
    timeout: float,
    verify: bool | str = True,
    subnets: Sequence[IPv4Network] = (),
) -> list[PowerStatus]:
    """The power state of many ``(bmc_url, username, password)`` in parallel, in order.

    Never raises for a BMC: one that fails or does not answer within ``timeout`` gets
    ``PowerStatus('unknown', error)``. A dead BMC holds one of MAX_WORKERS workers for
    ``timeout`` while the others go on, so a listing of up to MAX_WORKERS BMCs takes
    ``timeout`` at most (after one sweep for all the BMCs given by MAC, if needed).
    """
    targets = list(targets)
    if not targets:
        return []
    addresses = _located([url for url, _, _ in targets], subnets)

    def one(address: BMCAddress | KSError, target: tuple[str, str, str]) -> PowerStatus:
        if isinstance(address, KSError):
            return PowerStatus("unknown", str(address))
        try:
            return PowerStatus(run(address, *target[1:], "status", timeout=timeout, verify=verify))
        except Exception as error:  # noqa: BLE001 - one broken BMC must not break the listing
            return PowerStatus("unknown", str(error) or type(error).__name__)

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(targets)), thread_name_prefix="power") as pool:
        return list(pool.map(one, addresses, targets))


def _located(bmcs: list[str | BMCAddress], subnets: Sequence[IPv4Network]) -> list[BMCAddress | KSError]:
    """Each address parsed, at its current IP if given by MAC; an error in place of one that fails."""
    addresses: list[BMCAddress | KSError] = []
    for bmc in bmcs:
        try:
            addresses.append(bmc if isinstance(bmc, BMCAddress) else parse_bmc_address(bmc))
        except KSError as error:
            addresses.append(error)
    macs = {a.mac for a in addresses if isinstance(a, BMCAddress) and a.mac}
    found, failure = {}, None
    try:
        found = discovery.locate(macs, subnets) if macs else {}
    except KSError as error:  # no neighbour table to read: every BMC given by MAC fails alike
        failure = error

    def at(address):
        if isinstance(address, KSError) or not address.mac:
            return address
        if address.mac in found:
            return address.at(found[address.mac])
        return failure or discovery.not_found(address.mac, subnets)

    return [at(a) for a in addresses]


def _within(timeout: float, work: Callable[[], str], address: BMCAddress, operation: str) -> str:
    """Run ``work`` in a daemon thread; BMCUnreachable if it has not ended after ``timeout``."""
    future: Future = Future()

    def target() -> None:
        try:
            future.set_result(work())
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(error)

    # A daemon thread, not a pool: a BMC that never answers must not keep the
    # process alive at exit, and pyghmi gives up on its own a few seconds later.
    threading.Thread(target=target, name=f"power {address}", daemon=True).start()
    try:
        return future.result(timeout)
    except FutureTimeout:
        late = "" if operation == "status" else f" (if it answers late, power {operation} may still happen)"
        raise BMCUnreachable(
            f"{address}: no answer within {timeout:g} s{late}; check the address and port, that "
            "the BMC is on the network, or give it a longer timeout"
        ) from None
