"""Power for hosts: their BMC's credentials, the action through ks.power, a line in the history.

Given a session where one is needed, never committing: ``ks.fleet.operations`` opens
the units of work and keeps the BMC's seconds out of them.
"""

from sqlalchemy.orm import Session

from ks import power
from ks.core import vault
from ks.core.config import Settings
from ks.core.errors import Conflict, InvalidBMCAddress, SecretKeyError
from ks.power import discovery
from ks.records import events
from ks.records.events import EventKind


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


def check_bmc(host_id: int, bmc: tuple[str, str, str], source: str) -> None:
    """Conflict, saying how to set one, when the host has no BMC."""
    if not bmc[0]:
        how = (f'PATCH /api/v1/hosts/{host_id} {{"bmc": {{"address": URL, ...}}}}' if source == "api"
               else f"edit-host -i {host_id} --bmc URL")
        raise Conflict(f"host {host_id} has no BMC; set one with {how}")


def run(bmc: tuple[str, str, str], action: str, settings: Settings) -> str:
    """Run ``action`` on the BMC (address, username, password); what it answered."""
    return power.run(*bmc, action, timeout=settings.power_timeout, **_options(settings))


def reached(action: str, result: str) -> str:
    """The power state an action's answer means: the state for ``status``, on or off for the others."""
    return result if action == "status" else ("off" if result == "off" else "on")


def record(session: Session, host_id: int, source: str, detail: str) -> None:
    """One power line in the host's history."""
    events.record(session, host_id, EventKind.POWER, source, detail=detail)


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


def sweep_subnets(settings: Settings, sweep: bool) -> list:
    """KS_BMC_SUBNETS parsed; Conflict when a sweep is asked for and none are set."""
    subnets = discovery.parse_subnets(settings.bmc_subnets)
    if sweep and not subnets:
        raise Conflict("no BMC subnets to sweep; set KS_BMC_SUBNETS on the server, e.g. KS_BMC_SUBNETS=10.0.0.0/24")
    return subnets


def locate(hosts, subnets: list, sweep: bool) -> dict:
    """Where the BMCs that ``hosts`` give by MAC are: ``{"subnets", "bmcs": [{host, hostname, mac, ip}]}``.

    With ``sweep``, ``subnets`` are swept first (PXE Pilot's discovery); without, the
    neighbour table is read as it is.
    """
    bmcs = [(h.id, h.hostname, mac) for h in hosts if h.bmc_address and (mac := _mac(h.bmc_address))]
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
