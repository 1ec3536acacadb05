"""Power routes: status/on/off/cycle through a host's BMC, PXE Pilot's reboot and BMC discovery."""

from ks import machines, power
from ks.api import SOURCE, answer, body, bp, error, needs
from ks.errors import BadRequest
from ks.power import hosts as host_power
from ks.roles import Action
from ks.web import runtime, step_aside


def _host_id(ref: str) -> int:
    with runtime().db.read() as session:
        return machines.resolve(session, ref).id


@bp.post("/hosts/<ref>/power")
@needs(Action.OPERATE)
def power_action(ref: str):
    """``{"action": "status"|"on"|"off"|"cycle"}``; a failure answers with its error's status.

    502 when the BMC refuses or fails (a wrong password, too), 504 when it does not answer.
    """
    document = body()
    action = document.get("action")
    if set(document) != {"action"} or action not in power.OPERATIONS:
        raise BadRequest('send {"action": "status" | "on" | "off" | "cycle"}')
    host_id = _host_id(ref)
    ks = runtime()
    step_aside()  # BMCs may take seconds to answer; boots go on meanwhile
    reached = host_power.power_host(ks.db, host_id, action, SOURCE, ks.settings)
    return answer({"host": host_id, "action": action, "power": reached})


@bp.patch("/hosts/<ref>/reboot")
@needs(Action.OPERATE)
def host_reboot(ref: str):
    """Power-cycle the host (PXE Pilot): 204, or 409 if it did not work."""
    host_id = _host_id(ref)
    ks = runtime()
    step_aside()
    failures = host_power.reboot_hosts(ks.db, [host_id], SOURCE, ks.settings)
    if failures:
        return error(f"reboot of host {host_id} failed: {failures[0][1]}", 409)
    return "", 204


@bp.patch("/discovery")
@needs(Action.OPERATE)
def discovery_sweep():
    """Sweep KS_BMC_SUBNETS so that BMCs given by MAC are found (PXE Pilot): 204, 409 if none are set."""
    ks = runtime()
    step_aside()
    host_power.discover(ks.db, ks.settings, sweep=True)
    return "", 204


@bp.get("/discovery")
@needs(Action.READ)
def discovery_table():
    """Where each BMC given by MAC is now, as the neighbour table says (no sweep)."""
    ks = runtime()
    return answer(host_power.discover(ks.db, ks.settings, sweep=False))


def reboot_hosts(host_ids: list[int]) -> list[tuple[int, str]]:
    """Power-cycle hosts after a deploy; the failures."""
    ks = runtime()
    step_aside()
    return host_power.reboot_hosts(ks.db, host_ids, SOURCE, ks.settings)
