"""Power routes: status/on/off/cycle through a host's BMC, PXE Pilot's reboot and BMC discovery."""

from ks import power
from ks.api import SOURCE, answer, body, bp, error, needs
from ks.core.errors import BadRequest
from ks.core.roles import Action
from ks.fleet import operations
from ks.web import runtime, step_aside


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
    ks = runtime()
    step_aside()  # BMCs may take seconds to answer; boots go on meanwhile
    host_id, reached = operations.power(ks.db, ref, action, SOURCE, ks.settings)
    return answer({"host": host_id, "action": action, "power": reached})


@bp.patch("/hosts/<ref>/reboot")
@needs(Action.OPERATE)
def host_reboot(ref: str):
    """Power-cycle the host (PXE Pilot): 204, or 409 if it did not work."""
    ks = runtime()
    host_id = operations.resolve_id(ks.db, ref)
    step_aside()
    failures = operations.power_many(ks.db, [host_id], "cycle", SOURCE, ks.settings)
    if failures:
        return error(f"reboot of host {host_id} failed: {failures[0][1]}", 409)
    return "", 204


@bp.patch("/discovery")
@needs(Action.OPERATE)
def discovery_sweep():
    """Sweep KS_BMC_SUBNETS so that BMCs given by MAC are found (PXE Pilot): 204, 409 if none are set."""
    ks = runtime()
    step_aside()
    operations.discover(ks.db, ks.settings, sweep=True)
    return "", 204


@bp.get("/discovery")
@needs(Action.READ)
def discovery_table():
    """Where each BMC given by MAC is now, as the neighbour table says (no sweep)."""
    ks = runtime()
    return answer(operations.discover(ks.db, ks.settings, sweep=False))


def reboot_hosts(host_ids: list[int]) -> list[tuple[int, str]]:
    """Power-cycle hosts after a deploy; the failures."""
    ks = runtime()
    step_aside()
    return operations.power_many(ks.db, host_ids, "cycle", SOURCE, ks.settings)
