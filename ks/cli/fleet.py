"""``kiwispray host …``, ``config …`` and ``bmc …``: the same verbs on this site or, with
``--server URL``, on a remote server through its admin API (PXE Pilot's CLI habits)."""

import json
from contextlib import contextmanager
from pathlib import Path

import click

from ks.boot import images
from ks.cli.common import DEFAULT_TOKEN_FILE, Group, Site, site_of, table
from ks.cli.remote import Remote, RemoteError
from ks.core import config, selectors, states, vault
from ks.core.errors import BadRequest, KSError
from ks.core.values import parse_label_options
from ks.fleet import deploys, machines, operations
from ks.fleet.change import HostChange
from ks.power import hosts as host_power

SOURCE = "cli"


class Local:
    """The verbs on the site's own database."""

    def __init__(self, site: Site):
        self.site = site
        self.db = site.migrated_db()

    def hosts(self, power: bool, selector: str | None = None) -> list[dict]:
        parsed = selectors.parse(selector) if selector is not None else None
        with self.db.read() as session:
            hosts = machines.list_hosts(session, selector=parsed)
            documents = [h.document() for h in hosts]
        if power:
            found = host_power.power_states(hosts, self.site.settings)
            for document in documents:
                document["power"] = found[document["id"]]
        return documents

    def set(self, ref: str, changes: dict) -> dict:
        return operations.change_host(self.db, ref, _change(self.site.root, changes), SOURCE).document()

    def set_selected(self, selector: str, changes: dict, dry_run: bool) -> list[dict]:
        change = _change(self.site.root, changes)
        hosts = operations.change_selected(self.db, selectors.parse(selector), change, SOURCE,
                                           vault.of(self.site.settings), dry_run=dry_run)
        return [h.document() for h in hosts]

    def power(self, ref: str, action: str) -> dict:
        host_id, reached = operations.power(self.db, ref, action, SOURCE, self.site.settings)
        return {"host": host_id, "action": action, "power": reached}

    def configurations(self) -> list[dict]:
        return deploys.configurations(self.site.root)

    def deploy(self, config: str, refs: list[str], reboot: bool, selector: str | None = None) -> list[str]:
        parsed = selectors.parse(selector) if selector is not None else None
        host_ids = operations.deploy(self.db, self.site.root, config, refs, SOURCE, selector=parsed)
        if not reboot:
            return []
        failures = operations.power_many(self.db, host_ids, "cycle", SOURCE, self.site.settings)
        return [f"host {host_id}: {why}" for host_id, why in failures]

    def discover(self) -> dict:
        return operations.discover(self.db, self.site.settings, sweep=True)


class Far:
    """The verbs on a remote server, through its admin API."""

    def __init__(self, remote: Remote):
        self.remote = remote

    def hosts(self, power: bool, selector: str | None = None) -> list[dict]:
        return self.remote.hosts(power, selector)

    def set(self, ref: str, changes: dict) -> dict:
        with forced_with_flag():
            return self.remote.patch(ref, changes)

    def set_selected(self, selector: str, changes: dict, dry_run: bool) -> list[dict]:
        with forced_with_flag():
            return self.remote.patch_selected(selector, changes, dry_run)["hosts"]

    def power(self, ref: str, action: str) -> dict:
        return self.remote.power(ref, action)

    def configurations(self) -> list[dict]:
        return self.remote.configurations()

    def deploy(self, config: str, refs: list[str], reboot: bool, selector: str | None = None) -> list[str]:
        entries = [{"name": ref} for ref in refs]
        try:
            self.remote.deploy(config, entries, reboot, selector)
        except RemoteError as exc:
            failures = (exc.document or {}).get("reboot_failures")
            if failures is None:
                raise
            return [f"host {f['host']}: {f['error']}" for f in failures]
        return []

    def discover(self) -> dict:
        return self.remote.discover()


@contextmanager
def forced_with_flag():
    """The server's refusal of a chain, saying how this command forces it (``--force``), not how the API does."""
    try:
        yield
    except RemoteError as exc:
        api, here = states.force_hint(states.FORCE_IN_API), states.force_hint("--force")
        if api not in str(exc):
            raise
        raise RemoteError(str(exc).replace(api, here), exc.document) from None


def _change(root: str, changes: dict) -> HostChange:
    """The body of a host PATCH (state, force, labels) as a validated change of this site."""
    return HostChange.parse(images.catalog(root), state=changes.get("state"), labels=changes.get("labels"),
                            force=changes.get("force", False))


def backend(ctx: click.Context):
    """Local unless --server was given (before or after the command)."""
    site = site_of(ctx)
    if not site.options["server"]:
        return Local(site)
    return Far(Remote(site.options["server"], _token(site.options["token_file"])))


def _token(token_file: str | None) -> str:
    given = config.api_token()
    if given:
        return given
    path = Path(token_file or DEFAULT_TOKEN_FILE).expanduser()
    try:
        return path.read_text().strip()
    except OSError:
        raise click.ClickException(
            f"no API token: set KS_TOKEN or put one in {path} (kiwispray token create NAME on the server)"
        ) from None


@click.group("host", cls=Group)
def host_group():
    """Hosts: list, change state, power (here, or on --server)."""


SELECT_HELP = ("Only the hosts matching SELECTOR, e.g. 'rack=4,role!=db', 'state=new', 'mac=52:54:00:*' "
               "(see README, Selectors).")


@host_group.command("list")
@click.option("--select", "selector", metavar="SELECTOR", help=SELECT_HELP)
@click.option("--power/--no-power", default=True, show_default=True, help="Ask every BMC for the power state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def host_list(ctx, selector, power, as_json):
    """Hosts with their state, MACs, labels, BMC and power state."""
    if selector is not None:
        selectors.parse(selector)  # a malformed selector is a usage error here, before the server is asked
    _print_hosts(backend(ctx).hosts(power, selector), as_json, power=True)


def _print_hosts(hosts: list[dict], as_json: bool, power: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(hosts, indent=2))
        return
    rows = [[h["id"], h["hostname"], ",".join(h["chain"]), " ".join(h["macs"]),
             (h.get("bmc") or {}).get("address") or ""]
            + ([h.get("power") or ""] if power else [])
            + [",".join(f"{k}={v}" for k, v in sorted((h.get("labels") or {}).items()))] for h in hosts]
    click.echo(table(rows, ["ID", "NAME", "STATE", "MAC ADDRESSES", "BMC"] + (["POWER"] if power else []) + ["LABELS"]))


@host_group.command("set")
@click.argument("args", nargs=-1, metavar="[REF] [STATE]")
@click.option("--select", "selector", metavar="SELECTOR",
              help="Change every host matching SELECTOR instead of REF, all or nothing (see README, Selectors).")
@click.option("--label", "labels", metavar="KEY=VALUE", multiple=True, help="Set a label (repeatable).")
@click.option("--unlabel", "unlabels", metavar="KEY", multiple=True, help="Remove a label (repeatable).")
@click.option("--dry-run", is_flag=True, help="With --select: show the hosts the change would touch; change nothing.")
@click.option("--force", is_flag=True, help="Set image states without an image directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def host_set(ctx, args, selector, labels, unlabels, dry_run, force, as_json):
    """Set the state chain (STATE) and labels of host REF (id, MAC or name), or of every host --select matches.

    \b
    Examples:
      kiwispray host set 3 wipe,image1
      kiwispray host set 3 --label rack=4 --unlabel role
      kiwispray host set --select 'rack=4,role!=db' image1 --dry-run
    """
    args = list(args)
    if len(args) > (1 if selector is not None else 2):
        raise click.UsageError("give REF STATE, or --select SELECTOR STATE" if selector is None
                               else "with --select, give only STATE (no REF)")
    if selector is None and not args:
        raise click.UsageError("give the host REF (id, MAC or name), or --select SELECTOR")
    if dry_run and selector is None:
        raise click.UsageError("--dry-run goes with --select")
    if selector is not None:
        selectors.parse(selector)
    ref = args.pop(0) if selector is None else None
    try:
        label_updates = parse_label_options(list(labels), list(unlabels))
    except BadRequest as exc:
        raise click.BadParameter(str(exc), param_hint="--label/--unlabel") from None
    changes: dict = {"force": force}
    if args:
        changes["state"] = args[0]
    if label_updates is not None:
        changes["labels"] = label_updates
    if len(changes) == 1:
        raise click.UsageError("nothing to change: give STATE, --label or --unlabel")
    if selector is None:
        document = backend(ctx).set(ref, changes)
        if as_json:
            click.echo(json.dumps(document, indent=2))
        else:
            click.echo(f"host {document['id']}: {','.join(document['chain'])}"
                       + "".join(f" {k}={v}" for k, v in sorted(document.get("labels", {}).items())))
        return
    hosts = backend(ctx).set_selected(selector, changes, dry_run)
    _print_hosts(hosts, as_json)
    if dry_run:
        click.echo(f"dry run: the change would touch these {len(hosts)} host(s); nothing changed", err=True)
    else:
        click.echo(f"{len(hosts)} host(s) changed" if hosts else f"no host matches {selector}; nothing changed",
                   err=True)


def _power_command(action: str, help_text: str):
    @host_group.command(action, help=help_text)
    @click.argument("ref")
    @click.pass_context
    def command(ctx, ref):
        result = backend(ctx).power(ref, "cycle" if action == "reboot" else action)
        click.echo(f"host {result['host']}: power {result['power']}")

    return command


_power_command("on", "Power host REF on through its BMC.")
_power_command("off", "Power host REF off (hard) through its BMC.")
_power_command("reboot", "Power-cycle host REF (power it on if it is off).")
_power_command("status", "Show the power state of host REF.")


@click.group("config", cls=Group)
def config_group():
    """Configurations (images and builtin states): list and deploy."""


@config_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def config_list(ctx, as_json):
    """Images and builtin states hosts can be given."""
    configs = backend(ctx).configurations()
    if as_json:
        click.echo(json.dumps(configs, indent=2))
        return
    click.echo(table([[c["name"], c["kind"]] for c in configs], ["NAME", "KIND"]))


@config_group.command("deploy")
@click.argument("configuration")
@click.argument("hosts", nargs=-1)
@click.option("--select", "selector", metavar="SELECTOR",
              help="Instead of HOSTS, every host matching SELECTOR, e.g. 'rack=4' (see README, Selectors).")
@click.option("--reboot", is_flag=True, help="Power-cycle the hosts afterwards, so they boot it now.")
@click.pass_context
def config_deploy(ctx, configuration, hosts, selector, reboot):
    """Give HOSTS (ids, MACs or names), or those --select matches, CONFIGURATION; all or nothing."""
    if bool(hosts) == (selector is not None):
        raise click.UsageError("give the HOSTS (ids, MACs or names) or --select SELECTOR, one of the two")
    if selector is not None:
        selectors.parse(selector)  # a malformed selector is a usage error here, before the server is asked
    failures = backend(ctx).deploy(configuration, list(hosts), reboot, selector)
    if selector is not None:
        click.echo(f"{configuration} deployed to every host matching {selector}")
    else:
        click.echo(table([[h, configuration] for h in hosts], ["HOST", "CONFIGURATION"]))
    if failures:
        raise KSError("deployed, but the reboot failed: " + "; ".join(failures))


@click.group("bmc", cls=Group)
def bmc_group():
    """BMCs: find those given by MAC (here, or on --server)."""


@bmc_group.command("discover")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bmc_discover(ctx, as_json):
    """Sweep KS_BMC_SUBNETS and show at which IP each host's BMC given by MAC answers.

    The sweep fills the server's neighbour table (PXE Pilot's discovery); power
    commands look BMCs given by MAC up there.
    """
    found = backend(ctx).discover()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[b["host"], b["hostname"], b["mac"], b["ip"] or "not found"] for b in found["bmcs"]]
    click.echo(table(rows, ["ID", "NAME", "BMC MAC", "IP"]))
    located = sum(1 for b in found["bmcs"] if b["ip"])
    click.echo(f"swept {', '.join(found['subnets'])}: {located} of {len(rows)} BMC(s) given by MAC found", err=True)
