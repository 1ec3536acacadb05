"""The dashboard's actions on one host or a selection: each is shown for confirmation, then done all or nothing.

A first POST (without ``confirm``) answers a page that says what would happen
to which hosts; its "Confirm" button posts the same form with ``confirm=1``.
Changes of the hosts (chain, retry, delete, the chain of a deploy) are one
``ks.fleet.change.HostChange`` applied to every selected host in one unit of work:
one refused host (a retry of a host that has not failed, a host deleted
meanwhile) changes none. Power actions first check that every host has a BMC,
then ask the BMCs in parallel and say which ones failed: a BMC cannot be
rolled back.
"""

from dataclasses import dataclass

from flask import flash, g, redirect, render_template, request, url_for

from ks.boot import images
from ks.core import vault
from ks.core.errors import BadRequest, Conflict, Forbidden
from ks.core.roles import Action
from ks.core.values import is_decimal
from ks.fleet import deploys, machines, operations
from ks.fleet.change import HostChange
from ks.ui import SOURCE, bp, may
from ks.ui.views import dashboard_path
from ks.web import runtime, step_aside


@dataclass(frozen=True)
class Kind:
    """One action of the dashboard: its label, the role it needs, whether it takes a chain, whether it powers."""

    label: str
    needs: Action
    chain: bool = False
    power: str | None = None


ACTIONS = {
    "set-chain": Kind("Set chain", Action.OPERATE, chain=True),
    "deploy": Kind("Deploy now (set chain and power cycle)", Action.OPERATE, chain=True, power="cycle"),
    "retry": Kind("Retry", Action.OPERATE),
    "power-on": Kind("Power on", Action.OPERATE, power="on"),
    "power-off": Kind("Power off", Action.OPERATE, power="off"),
    "power-cycle": Kind("Power cycle", Action.OPERATE, power="cycle"),
    "delete": Kind("Delete", Action.ADMINISTER),
}
MAX_HOSTS = deploys.MAX_DEPLOY_HOSTS


def _host_ids() -> list[int]:
    given = request.form.getlist("host")
    if not given:
        raise BadRequest("select at least one host")
    if len(given) > MAX_HOSTS:
        raise BadRequest(f"{len(given)} hosts selected; one action takes at most {MAX_HOSTS}")
    if not all(is_decimal(v) and 0 < int(v) < 2**63 for v in given):
        raise BadRequest("host must be host ids")
    return list(dict.fromkeys(int(v) for v in given))


def _chain() -> str:
    written = (request.form.get("chain_text") or "").strip()
    chosen = written or (request.form.get("chain") or "").strip()
    if not chosen:
        raise BadRequest("pick a configuration (or write a chain such as wipe,image1)")
    return chosen


@bp.post("/actions")
def act():
    """Confirm, then do one action on the selected hosts."""
    name = request.form.get("action") or ""
    kind = ACTIONS.get(name)
    if kind is None:
        raise BadRequest(f"unknown action {name[:32]!r}")
    if not may(kind.needs.value):
        raise Forbidden(f"a {g.role.label} session may not {kind.label.lower()}; that needs an {kind.needs.value} role")
    host_ids = _host_ids()
    root = runtime().settings.root
    chain = _chain() if kind.chain else None
    force = request.form.get("force") == "1"
    change = _change(name, chain, root, force)
    back = dashboard_path(request.form.get("back")) or url_for("ui.overview")
    if name == "delete" and back.startswith(url_for("ui.overview") + "hosts/"):
        back = url_for("ui.overview")  # the host page is gone with the host
    if request.form.get("confirm") != "1":
        with runtime().db.read() as unit:
            hosts = [machines.get_host(unit, host_id) for host_id in host_ids]
            shown = [(h.id, h.hostname, h.state) for h in hosts]
        return render_template("confirm.html", action=name, kind=kind, hosts=shown, chain=chain, force=force,
                               back=back)
    done = _do(name, kind, change, host_ids)
    flash(done)
    return redirect(back)


# How the dashboard sets a chain that names an image not there yet, or one that cannot boot: its box by the chain.
HOW_TO_FORCE = 'the box "anyway" beside the chain'


def _change(name: str, chain: str | None, root: str, force: bool = False) -> HostChange | None:
    if chain is not None:
        return HostChange.parse(images.catalog(root), state=chain, force=force, how_to_force=HOW_TO_FORCE)
    if name == "retry":
        return HostChange(retry=True)
    if name == "delete":
        return HostChange(delete=True)
    return None


def _do(name: str, kind: Kind, change: HostChange | None, host_ids: list[int]) -> str:
    ks = runtime()
    hosts = f"host {host_ids[0]}" if len(host_ids) == 1 else f"{len(host_ids)} hosts"
    if change is not None:
        operations.change_hosts(ks.db, [str(i) for i in host_ids], change, SOURCE, vault.of(ks.settings))
    if kind.power is None:
        return {"set-chain": f"{hosts}: chain set", "retry": f"{hosts}: failure cleared",
                "delete": f"{hosts} deleted"}[name]
    with ks.db.read() as unit:
        missing = [h.id for h in (machines.get_host(unit, i) for i in host_ids) if not h.bmc_address]
    if missing:
        what = "the chain is set, but " if change is not None else ""
        raise Conflict(f"{what}hosts without a BMC: {', '.join(map(str, missing))}; nothing was powered")
    step_aside()  # the BMCs may take seconds
    failures = operations.power_many(ks.db, host_ids, kind.power, SOURCE, ks.settings)
    if failures:
        raise Conflict(f"{kind.power} failed on {len(failures)} of {len(host_ids)} hosts: "
                       + "; ".join(f"host {i}: {why}" for i, why in failures))
    return f"{hosts}: {'chain set and ' if change is not None else ''}power {kind.power} sent"
