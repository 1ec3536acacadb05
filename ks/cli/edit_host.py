"""``edit-host``: list machines and change their state, the original's way.

Exit status: 0 on success, 1 when a change is refused or fails (message on
stderr), 2 on usage errors.
"""

import json
import sys

import click

from ks.boot import images
from ks.cli.common import Command, Site, root_option
from ks.core import selectors, vault
from ks.core.errors import BadRequest, InvalidBMCAddress, NotFound
from ks.core.values import load_json_object, parse_label_options
from ks.fleet import machines, operations, present
from ks.fleet.change import UNCHANGED, HostChange
from ks.power import hosts as host_power

# Options that name something of one machine: refused with --select.
ONE_HOST_OPTIONS = {"hostname": "-n/--hostname", "set_macs": "--set-macs", "bmc": "--bmc", "delete": "--delete",
                    "power_action": "--power", "reboot": "--reboot", "history": "--history"}


def _json_object(ctx, param, value):
    if value is None:
        return None
    try:
        return load_json_object(value, "--meta", ", e.g. '{\"location\": \"rack 4\"}'")
    except BadRequest as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-i", "--id", "host_id", type=click.IntRange(min=1), help="Select the host with this id (also filters -l)."
)
@click.option("--mac", help="Select the host owning this MAC address.")
@click.option("--serial", help="Select the host with this DMI serial.")
@click.option("--select", "selector", metavar="SELECTOR",
              help="Select every host matching SELECTOR, e.g. 'rack=4,role!=db', 'state=new', 'mac=52:54:00:*' "
                   "(see README, Selectors): filters -l, and -s/-m/--label/--unlabel/--retry change them all "
                   "at once, all or nothing.")
@click.option("--dry-run", is_flag=True, help="With --select: list the hosts the change would touch; change nothing.")
@click.option("-l", "--list", "verbosity", count=True,
              help="List hosts: -l '#Id Hostname State Serial#', -ll adds MACs, labels, facts and metadata, "
                   "-lll nested metadata.")
@click.option("-s", "--state", help="Set the state chain, e.g. 'image1' or 'wipe,image1' (replaces the whole chain).")
@click.option("-m", "--meta", callback=_json_object, help="Set the metadata to this JSON object (replaces it).")
@click.option("-n", "--hostname", help="Set the host name.")
@click.option("--label", "labels", metavar="KEY=VALUE", multiple=True,
              help="Set a label (repeatable), e.g. --label rack=4 --label role=db.")
@click.option("--unlabel", "unlabels", metavar="KEY", multiple=True, help="Remove a label (repeatable).")
@click.option("--set-macs", help="Replace the host's MACs with this comma-separated list.")
@click.option("--delete", is_flag=True, help="Delete the host (its id is never reused).")
@click.option("--retry", is_flag=True,
              help="Clear a failure (a provisioning timeout): the next boot starts the current state again.")
@click.option(
    "--bmc",
    metavar="URL",
    help="Set the host's BMC: ipmi://host[:port], redfish://host/redfish/v1/Systems/ID, "
    "redfish+http://…; the host may be the BMC's MAC, ipmi://52-54-00-aa-bb-cc, "
    "found in the neighbour table (KS_BMC_SUBNETS: swept) ('' removes it).",
)
@click.option("--bmc-user", metavar="USER", help="BMC user name (with --bmc).")
@click.option("--bmc-password", metavar="PASSWORD", envvar="KS_BMC_PASSWORD",
              help="BMC password (with --bmc); '-' reads it from stdin, and env KS_BMC_PASSWORD keeps it "
                   "off the command line.")
@click.option("--power", "power_action", type=click.Choice(["status", "on", "off", "cycle"]),
              help="Power action through the host's BMC.")
@click.option("--reboot", is_flag=True, help="After the change (e.g. -s image1), power-cycle the host so it boots now.")
@click.option("--force", is_flag=True, help="Set a state even if images/<name>/ does not exist (yet).")
@click.option("--history", is_flag=True, help="Show the host's history: boots, state changes, finishes, conflicts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
@click.option("-p", "--progress", "show_progress", is_flag=True,
              help="With -l: add a column with each host's install progress (booted, downloading 42 %, ...).")
@root_option
def edit_host(host_id, mac, serial, selector, dry_run, verbosity, state, meta, hostname, labels, unlabels, set_macs,
              delete, retry, bmc, bmc_user, bmc_password, power_action, reboot, force, history, as_json, show_progress,
              root):
    """List known machines and change their state, hostname, metadata or labels, one host or many (--select).

    \b
    Examples:
      edit-host -l                      list all hosts
      edit-host -i 1 -s wipe,image1     boot 'wipe', then 'image1', then disk
      edit-host --mac 52:54:00:12:34:56 -s finished
      edit-host -i 1 -m '{"location": "rack 4"}' -n node01
      edit-host -i 1 --history
      edit-host -i 1 --retry            install the current state again after a timeout
      edit-host -i 1 --label rack=4 --label role=db --unlabel old
      edit-host -l --select 'rack=4,role!=db'
      edit-host --select 'rack=4,role!=db' -s image1 --dry-run
    """
    site = Site(root)
    if sum(x is not None for x in (host_id, mac, serial)) > 1:
        raise click.UsageError("select the host with one of -i, --mac or --serial")
    try:
        label_updates = parse_label_options(list(labels), list(unlabels))
    except BadRequest as exc:
        raise click.BadParameter(str(exc), param_hint="--label/--unlabel") from None
    selected = host_id is not None or mac is not None or serial is not None
    changes = (any(x is not None for x in (state, meta, hostname, set_macs, bmc, label_updates))
               or delete or retry)
    if selector is not None:
        _check_select(selected, {"hostname": hostname, "set_macs": set_macs, "bmc": bmc, "delete": delete,
                                 "power_action": power_action, "reboot": reboot, "history": history})
        _selected(site, selectors.parse(selector), changes, state, meta, label_updates, retry, force, dry_run,
                  verbosity, as_json, show_progress)
        return
    if dry_run:
        raise click.UsageError("--dry-run goes with --select (it shows the hosts a change of many would touch)")
    acts = changes or history or power_action or reboot
    if not (selected or verbosity or as_json or acts):
        raise click.UsageError("nothing to do: list with -l, or select a host with -i ID and change it with -s/-m/-n")
    if acts and not selected:
        raise click.UsageError("select the host to change with -i ID, --mac or --serial")
    if (bmc_user is not None or bmc_password is not None) and bmc is None:
        raise click.UsageError("--bmc-user and --bmc-password go with --bmc URL")
    if power_action and reboot:
        raise click.UsageError("give either --power or --reboot")
    db = site.migrated_db()
    if selected:
        host_id = _resolve(db, host_id, mac, serial)
    if changes:
        change = _change(site, state, meta, hostname, set_macs, bmc, bmc_user, bmc_password, force, retry, delete,
                         label_updates)
        keys = vault.of(site.settings)
        operations.change_host(db, str(host_id), change, "cli", keys)
        if delete:
            click.echo(f"host {host_id} deleted", err=True)
            return
    if power_action or reboot:
        # The change above stands whatever the BMC does; a failure is reported with exit 1.
        action = power_action or "cycle"
        _, reached = operations.power(db, str(host_id), action, "cli", site.settings)
        done = f"power cycled, now {reached}" if action == "cycle" else f"power {reached}"
        click.echo(f"host {host_id}: {done}", err=True)
    with db.read() as session:
        if history:
            _show_history(session, host_id, as_json)
        else:
            _show_hosts(session, host_id, verbosity or 1, as_json, site.settings, show_progress)


def _resolve(db, host_id, mac, serial) -> int:
    with db.read() as session:
        if host_id is not None:
            return machines.get_host(session, host_id).id
        return machines.find_by(session, mac=mac, serial=serial).id


def _check_select(selected: bool, given: dict) -> None:
    """Usage errors for --select with options that belong to one host."""
    if selected:
        raise click.UsageError("give either -i/--mac/--serial (one host) or --select (many), not both")
    for name, option in ONE_HOST_OPTIONS.items():
        if given[name] not in (None, False):
            raise click.UsageError(f"{option} belongs to one host and cannot be given with --select; "
                                   "select that host with -i ID")


def _selected(site, selector, changes, state, meta, label_updates, retry, force, dry_run, verbosity, as_json,
              show_progress=False) -> None:
    """--select: list the matching hosts, or change them all in one unit of work and show them."""
    db = site.migrated_db()
    if not changes:
        if dry_run:
            raise click.UsageError("--dry-run shows what a change would touch: "
                                   "give -s, -m, --label, --unlabel or --retry")
        with db.read() as session:
            _print_hosts(machines.list_hosts(session, selector=selector), verbosity or 1, as_json, site.settings,
                         show_progress=show_progress)
        return
    change = HostChange.parse(images.catalog(site.root), state=state, metadata=meta, labels=label_updates,
                              force=force, retry=retry)
    hosts = operations.change_selected(db, selector, change, "cli", vault.of(site.settings), dry_run=dry_run)
    _print_hosts(hosts, verbosity or 1, as_json, site.settings)
    if not hosts:
        click.echo(f"no host matches {selector}; nothing changed", err=True)
    elif dry_run:
        click.echo(f"dry run: the change would touch these {len(hosts)} host(s); nothing changed", err=True)
    else:
        click.echo(f"{len(hosts)} host(s) changed", err=True)


def _change(site, state, meta, hostname, set_macs, bmc, bmc_user, bmc_password, force, retry, delete,
            labels) -> HostChange:
    """The options as one validated change; a bad --bmc URL is a usage error (exit 2)."""
    if bmc:
        if bmc_password == "-":
            bmc_password = sys.stdin.readline().rstrip("\n")
        bmc = {"address": bmc, "username": bmc_user or "", "password": bmc_password or ""}
    try:
        return HostChange.parse(
            images.catalog(site.root), state=state, hostname=hostname, metadata=meta,
            macs=None if set_macs is None else [m for m in set_macs.split(",") if m.strip()],
            bmc=UNCHANGED if bmc is None else bmc or None, force=force, retry=retry, delete=delete, labels=labels,
        )
    except InvalidBMCAddress as exc:
        raise click.BadParameter(str(exc), param_hint="--bmc") from None


def _show_hosts(session, host_id, verbosity, as_json, settings, show_progress=False) -> None:
    hosts = machines.list_hosts(session, host_id=host_id)
    if host_id is not None and not hosts:
        raise NotFound(f"no host with id {host_id}")
    if as_json and host_id is not None:
        click.echo(json.dumps(hosts[0].document(), indent=2))
        return
    _print_hosts(hosts, verbosity, as_json, settings, one=host_id is not None, show_progress=show_progress)


def _print_hosts(hosts, verbosity, as_json, settings, one: bool = False, show_progress: bool = False) -> None:
    """Hosts as the original's table (more with -ll), or a JSON list."""
    if as_json:
        click.echo(json.dumps([h.document() for h in hosts], indent=2))
        return
    power_states = host_power.power_states(hosts, settings) if verbosity > 1 else {}
    line_format = present.list_format(hosts)
    if show_progress:  # one more column after the original's, which stay as they were
        line_format = present.with_progress(line_format, hosts)
    lines = [present.table_header(line_format, show_progress)]
    for host in hosts:
        lines.append(present.table_row(host, line_format, show_progress))
        if verbosity > 1:
            lines.append(f"     MAC addrs: {present.legacy_macs(host)}")
            if host.bmc_address:
                lines.append(f"     BMC:       {host.bmc_address}  power: {power_states.get(host.id) or 'unknown'}")
            if host.labels:
                lines.append("     Labels:    " + present.pairs(host.labels))
            if host.facts:
                lines.append("     Facts:     " + present.pairs(host.facts))
        if (one or verbosity > 1) and host.meta:
            lines.append("     Metadata:")
            lines += present.metadata_lines(host.meta, verbosity)
    click.echo("\n".join(lines))


def _show_history(session, host_id, as_json) -> None:
    events = machines.history(session, host_id)
    if as_json:
        click.echo(json.dumps([present.event_dict(e) for e in events], indent=2))
    else:
        click.echo("\n".join(present.event_lines(events)) or f"host {host_id} has no history yet")


def main() -> None:
    """Console-script entry point."""
    edit_host(prog_name="edit-host")


if __name__ == "__main__":
    main()
