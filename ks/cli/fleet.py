"""``kiwispray host …``, ``config …`` and ``bmc …``: the same verbs on this site or, with
``--server URL``, on a remote server through its admin API (PXE Pilot's CLI habits)."""

import json
from pathlib import Path

import click

from ks import config, deploys, images, machines
from ks.change import HostChange
from ks.cli.common import DEFAULT_TOKEN_FILE, Group, Site, site_of, table
from ks.errors import KSError
from ks.power import hosts as host_power
from ks.record import HostRecord
from ks.remote import Remote, RemoteError

SOURCE = "cli"


class Local:
    """The verbs on the site's own database."""

    def __init__(self, site: Site):
        self.site = site
        self.db = site.migrated_db()

    def hosts(self, power: bool) -> list[dict]:
        with self.db.read() as session:
            hosts = machines.list_hosts(session)
            documents = [h.document() for h in hosts]
        if power:
            found = host_power.power_states(hosts, self.site.settings)
            for document in documents:
                document["power"] = found[document["id"]]
        return documents

    def set_state(self, ref: str, chain_text: str, force: bool) -> dict:
        change = HostChange.parse(images.image_names(self.site.root), state=chain_text, force=force)

        def work(session):
            host = machines.resolve(session, ref)
            change.apply(session, host, SOURCE)
            session.flush()
            return HostRecord.of(host).document()

        return self.db.write(work)

    def power(self, ref: str, action: str) -> dict:
        with self.db.read() as session:
            host_id = machines.resolve(session, ref).id
        reached = host_power.power_host(self.db, host_id, action, SOURCE, self.site.settings)
        return {"host": host_id, "action": action, "power": reached}

    def configurations(self) -> list[dict]:
        return deploys.configurations(self.site.root)

    def deploy(self, config: str, refs: list[str], reboot: bool) -> list[str]:
        host_ids = deploys.deploy(self.db, self.site.root, config, refs, SOURCE)
        if not reboot:
            return []
        failures = host_power.reboot_hosts(self.db, host_ids, SOURCE, self.site.settings)
        return [f"host {host_id}: {why}" for host_id, why in failures]

    def discover(self) -> dict:
        return host_power.discover(self.db, self.site.settings, sweep=True)


class Far:
    """The verbs on a remote server, through its admin API."""

    def __init__(self, remote: Remote):
        self.remote = remote

    def hosts(self, power: bool) -> list[dict]:
        return self.remote.hosts(power)

    def set_state(self, ref: str, chain_text: str, force: bool) -> dict:
        return self.remote.patch(ref, {"state": chain_text, "force": force})

    def power(self, ref: str, action: str) -> dict:
        return self.remote.power(ref, action)

    def configurations(self) -> list[dict]:
        return self.remote.configurations()

    def deploy(self, config: str, refs: list[str], reboot: bool) -> list[str]:
        entries = [{"name": ref} for ref in refs]
        try:
            self.remote.deploy(config, entries, reboot)
        except RemoteError as exc:
            failures = (exc.document or {}).get("reboot_failures")
            if failures is None:
                raise
            return [f"host {f['host']}: {f['error']}" for f in failures]
        return []

    def discover(self) -> dict:
        return self.remote.discover()


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


@host_group.command("list")
@click.option("--power/--no-power", default=True, show_default=True, help="Ask every BMC for the power state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def host_list(ctx, power, as_json):
    """Hosts with their state, MACs, BMC and power state."""
    hosts = backend(ctx).hosts(power)
    if as_json:
        click.echo(json.dumps(hosts, indent=2))
        return
    rows = [[h["id"], h["hostname"], ",".join(h["chain"]), " ".join(h["macs"]),
             (h.get("bmc") or {}).get("address") or "", h.get("power") or ""] for h in hosts]
    click.echo(table(rows, ["ID", "NAME", "STATE", "MAC ADDRESSES", "BMC", "POWER"]))


@host_group.command("set")
@click.argument("ref")
@click.argument("state")
@click.option("--force", is_flag=True, help="Set image states without an image directory.")
@click.pass_context
def host_set(ctx, ref, state, force):
    """Set the state chain of host REF (id, MAC or name)."""
    document = backend(ctx).set_state(ref, state, force)
    click.echo(f"host {document['id']}: {','.join(document['chain'])}")


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
@click.argument("hosts", nargs=-1, required=True)
@click.option("--reboot", is_flag=True, help="Power-cycle the hosts afterwards, so they boot it now.")
@click.pass_context
def config_deploy(ctx, configuration, hosts, reboot):
    """Give HOSTS (ids, MACs or names) CONFIGURATION; nothing changes if one is unknown."""
    failures = backend(ctx).deploy(configuration, list(hosts), reboot)
    rows = [[h, configuration] for h in hosts]
    click.echo(table(rows, ["HOST", "CONFIGURATION"]))
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
