"""Power for hosts: their BMC from the database, the action through ks.power, a line in the history."""

from concurrent.futures import ThreadPoolExecutor

from ks import events, machines, power, vault
from ks.config import Settings
from ks.db import Database
from ks.errors import Conflict, InvalidBMCAddress, KSError, SecretKeyError
from ks.events import EventKind
from ks.power import discovery


def verify_setting(value: str) -> bool | str:
    """KS_BMC_VERIFY: 'true' (system CAs), 'false' (accept any certificate), or a CA file."""
    lowered = str(value).strip().lower()
    if lowered in ("", "1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    return str(value)


def _options(settings: Settings) -> dict:
    """The settings every BMC call takes."""
    return {
        "verify": verify_setting(settings.bmc_verify),
        "subnets": discovery.parse_subnets(settings.bmc_subnets),
    }


def credentials(host, settings: Settings) -> tuple[str, str, str]:
    """The host's BMC address, username and (decrypted) password."""
    password = vault.of(settings).decrypt(host.bmc_password) if host.bmc_password else ""
    return host.bmc_address, host.bmc_username or "", password


def power_host(db: Database, host_id: int, action: str, source: str, settings: Settings) -> str:
    """Run ``action`` on the host's BMC; returns the power state reached (or asked for).

    The attempt is recorded in the host's history whether it worked or not.
    """
    with db.read() as session:
        host = machines.get_host(session, host_id)
        bmc = credentials(host, settings)
    if not bmc[0]:
        how = (f'PATCH /api/v1/hosts/{host_id} {{"bmc": {{"address": URL, ...}}}}' if source == "api"
               else f"edit-host -i {host_id} --bmc URL")
        raise Conflict(f"host {host_id} has no BMC; set one with {how}")
    try:
        result = power.run(*bmc, action, timeout=settings.power_timeout, **_options(settings))
    except KSError as exc:
        _record(db, host_id, source, f"{action} failed: {exc}")
        raise
    reached = result if action == "status" else ("off" if result == "off" else "on")
    if action != "status":
        _record(db, host_id, source, f"{result} sent")
    return reached


def _record(db: Database, host_id: int, source: str, detail: str) -> None:
    """One power line in the host's history, in its own transaction."""
    db.write(lambda session: events.record(session, host_id, EventKind.POWER, source, detail=detail))


def power_hosts(db: Database, host_ids: list[int], action: str, source: str,
                settings: Settings) -> list[tuple[int, str]]:
    """Run ``action`` on the hosts' BMCs in parallel; returns (host id, reason) for each that failed, in order."""

    def one(host_id: int) -> tuple[int, str] | None:
        try:
            power_host(db, host_id, action, source, settings)
        except KSError as exc:
            return host_id, str(exc)
        return None

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(host_ids)))) as pool:
        return [failure for failure in pool.map(one, host_ids) if failure]


def reboot_hosts(db: Database, host_ids: list[int], source: str, settings: Settings) -> list[tuple[int, str]]:
    """Power-cycle hosts in parallel; returns (host id, reason) for each that failed."""
    return power_hosts(db, host_ids, "cycle", source, settings)


def power_states(hosts, settings: Settings) -> dict[int, str | None]:
    """Power state of each host with a BMC (None without), queried in parallel.

    A host whose password cannot be decrypted (a lost key) shows ``unknown``: one
    such host must not break the listing of all.
    """
    with_bmc, bmcs, found = [], [], {}
    for host in hosts:
        if host.bmc_address:
            try:
                bmcs.append(credentials(host, settings))
                with_bmc.append(host)
            except SecretKeyError:
                found[host.id] = "unknown"
    states = power.status_many(bmcs, timeout=settings.power_status_timeout, **_options(settings))
    found.update({h.id: s.state for h, s in zip(with_bmc, states, strict=True)})
    return {h.id: found.get(h.id) for h in hosts}


def discover(db: Database, settings: Settings, sweep: bool) -> dict:
    """Where the BMCs that hosts give by MAC are: ``{"subnets", "bmcs": [{host, hostname, mac, ip}]}``.

    With ``sweep``, KS_BMC_SUBNETS is swept first (PXE Pilot's discovery); without, the
    neighbour table is read as it is.
    """
    subnets = discovery.parse_subnets(settings.bmc_subnets)
    if sweep and not subnets:
        raise Conflict("no BMC subnets to sweep; set KS_BMC_SUBNETS on the server, e.g. KS_BMC_SUBNETS=10.0.0.0/24")
    with db.read() as session:
        bmcs = [(h.id, h.hostname, mac) for h in machines.list_hosts(session)
                if h.bmc_address and (mac := _mac(h.bmc_address))]
    found = discovery.locate([mac for _, _, mac in bmcs], subnets if sweep else [], force=sweep)
    return {
        "subnets": [str(s) for s in subnets],
        "bmcs": [{"host": i, "hostname": name, "mac": mac, "ip": found.get(mac)} for i, name, mac in bmcs],
    }


def _mac(address: str) -> str | None:
    try:
        return power.parse_bmc_address(address).mac
    except InvalidBMCAddress:  # stored before a stricter parser: not a BMC given by MAC either way
        return None
