"""``kiwispray``: serve, database, import and render commands."""

import logging
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ks import __version__
from ks.cli.common import (
    REMOTE_COMMANDS,
    SERVER_HELP,
    TOKEN_FILE_HELP,
    Group,
    Site,
    accept_after,
    no_server_after,
    root_after,
    root_option,
    server_after,
    server_refused,
    setting_option,
    token_file_after,
)
from ks.cli.demo import demo
from ks.cli.fleet import bmc_group, config_group, host_group
from ks.cli.image import image
from ks.cli.kiwi import kiwi
from ks.cli.rules import rules_group
from ks.cli.site import dnsmasq_config, init
from ks.cli.token import token
from ks.cli.webhook import webhook
from ks.core import config
from ks.core.errors import RulesError

# Commands that work on no site and drive no server: they take neither --root nor --server after them
# (dnsmasq-config's own --server is the URL it writes).
SITELESS = ("dnsmasq-config", "demo")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kiwispray")
@root_option
@click.option("--server", envvar="KS_SERVER", metavar="URL", help=SERVER_HELP)
@click.option("--token-file", envvar="KS_TOKEN_FILE", type=click.Path(dir_okay=False), help=TOKEN_FILE_HELP)
@click.pass_context
def cli(ctx: click.Context, root: str | None, server: str | None, token_file: str | None):
    """KIWIspray: network-boot provisioning for KIWI images.

    Machines PXE-boot into iPXE, ask this service what to do, install their
    image once and then boot from disk. Start with `kiwispray serve` in the
    directory that holds images/. --root, and for the host, config and bmc
    commands --server and --token-file, may also follow the command.
    """
    if server and ctx.invoked_subcommand not in (*REMOTE_COMMANDS, *SITELESS):
        given = "--server" if ctx.get_parameter_source("server") is ParameterSource.COMMANDLINE else "KS_SERVER"
        raise server_refused(ctx.invoked_subcommand or "", given)
    ctx.obj = Site(root, server, token_file)


@cli.command()
@click.option("--host", default="127.0.0.1", envvar="KS_HOST", show_default=True,
              help="Address to listen on. 127.0.0.1 is reachable from this machine only; "
                   "0.0.0.0 listens on every interface, which booting machines need (env KS_HOST).")
@click.option("--port", default=5000, envvar="KS_PORT", type=click.IntRange(1, 65535), show_default=True,
              help="TCP port; dnsmasq's iPXE answer points at it (env KS_PORT).")
@click.option("--discover", is_flag=True, envvar="KS_DISCOVER",
              help="Register unknown machines in 'discover,new' instead of 'new' (env KS_DISCOVER).")
@setting_option("INITIAL_CHAIN")
@setting_option("BASE_URL")
@setting_option("POLL_INTERVAL")
@click.option("--workers", default=2, envvar="KS_WORKERS", type=click.IntRange(1, 64), show_default=True,
              help="Worker processes (env KS_WORKERS).")
@click.option("--threads", default=32, envvar="KS_THREADS", type=click.IntRange(1, 1024), show_default=True,
              help="Threads per worker; each serves one request at a time, and an image download holds "
                   "its thread until the last byte: workers x threads is how many machines can download "
                   "at once without delaying other requests (env KS_THREADS).")
@setting_option("RUNNING_REQUESTS")
@setting_option("X_ACCEL_REDIRECT", metavar="PREFIX")
@setting_option("DEPLOY_TIMEOUT")
@setting_option("REGISTRATIONS_PER_MINUTE")
@setting_option("REGISTRATIONS_PER_SOURCE")
@setting_option("HEADER_TIMEOUT")
@setting_option("BODY_TIMEOUT")
@setting_option("TFTP_LISTEN", metavar="ADDRESS[:PORT]")
@setting_option("BOOT_FILES", metavar="DIR")
@setting_option("PUBLIC_HOSTS")
@setting_option("PXEPILOT_API")
@setting_option("TLS_CERT", metavar="FILE")
@setting_option("TLS_KEY", metavar="FILE")
@setting_option("ADMIN_PORT", metavar="PORT")
@click.option("--access-log", is_flag=True, envvar="KS_ACCESS_LOG", help="Log every request (env KS_ACCESS_LOG).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="KS_LOG_FORMAT",
              show_default=True, help="'json' writes one JSON object per line, for log shippers (env KS_LOG_FORMAT).")
@click.pass_obj
def serve(site: Site, host, port, discover, initial_chain, base_url, poll_interval, workers, threads, running_requests,
          x_accel_redirect, deploy_timeout, registrations_per_minute, registrations_per_source, header_timeout,
          body_timeout, tftp_listen, boot_files, public_hosts, pxepilot_api, tls_cert, tls_key, admin_port, access_log,
          log_format):
    """Run the boot service (a production WSGI server).

    Migrates the database to the current schema first. Stops cleanly on
    SIGTERM or Ctrl-C, finishing requests in flight.
    """
    from ks import server, tftp
    from ks.boot import images
    from ks.core import logs, rules, states

    if discover and initial_chain:
        raise click.UsageError("give either --discover or --initial-chain, not both")
    chain = "discover,new" if discover else initial_chain
    try:
        settings = config.resolve(
            {"ROOT": site.root, "INITIAL_CHAIN": chain, "BASE_URL": base_url, "POLL_INTERVAL": poll_interval,
             "DEPLOY_TIMEOUT": deploy_timeout, "X_ACCEL_REDIRECT": x_accel_redirect,
             "RUNNING_REQUESTS": running_requests, "PUBLIC_HOSTS": public_hosts or None,
             "PXEPILOT_API": pxepilot_api or None,
             "REGISTRATIONS_PER_MINUTE": registrations_per_minute,
             "REGISTRATIONS_PER_SOURCE": registrations_per_source, "HEADER_TIMEOUT": header_timeout,
             "BODY_TIMEOUT": body_timeout, "TFTP_LISTEN": tftp_listen, "BOOT_FILES": boot_files,
             "TLS_CERT": tls_cert, "TLS_KEY": tls_key, "ADMIN_PORT": admin_port}
        )
        states.parse_chain(settings.initial_chain)
        if settings.admin_port == port:
            raise click.UsageError("--admin-port must differ from --port: machines boot over plain HTTP on --port")
        if settings.tls_cert:
            server.tls_context(settings)
        site.settings = settings
        for flag, taken in (("--port", port), ("--admin-port", settings.admin_port)):
            if taken and server.in_use(host, taken):
                raise click.ClickException(f"port {taken} on {host} is in use (another kiwispray serve?); "
                                           f"choose another with {flag}")
        if settings.tftp_listen and (problem := tftp.check(*config.tftp_address(settings.tftp_listen))):
            raise click.ClickException(problem)
        rules_path = rules.path_of(settings.root)
        watched = rules.RulesFile(rules_path, settings.rules_check_interval, lambda: images.image_names(settings.root))
        enrollment = watched.prime()
    except RulesError as exc:
        raise click.ClickException(f"{rules_path} has mistakes; not starting until they are corrected "
                                   "(`kiwispray rules check` lists them):\n" + "\n".join(exc.problems)) from None
    site.migrated_db(create=True)
    logs.setup(log_format)
    log = logging.getLogger("ks.serve")
    log.info("site root %s, database %s", settings.root, _safe_url(settings.database_url))
    log.info("machines seen for the first time start in '%s'", settings.initial_chain)
    if enrollment.rules:
        log.info("enrollment rules from %s: %s (re-read when the file changes)", rules_path,
                 ", ".join(rule.name for rule in enrollment.rules))
    if not images.image_names(settings.root):
        log.warning("no images in %s yet: machines can only wait in 'new'; `kiwispray image import NAME SOURCE` "
                    "adds a KIWI build", images.images_dir(settings.root))
    if settings.deploy_timeout:
        log.info("an image that does not /finish within %d s of its first boot is flagged failed "
                 "(checked every %g s)", settings.deploy_timeout, settings.timeout_check_interval)
    if host in ("127.0.0.1", "localhost", "::1"):
        log.info(
            "listening on %s:%d: only this machine can reach it; use --host 0.0.0.0 for booting machines", host, port
        )
    if settings.tls_cert:
        log.info("the admin API and the dashboard are served over HTTPS on port %d only; machines use plain HTTP "
                 "on port %d", settings.admin_port, port)
    if settings.x_accel_redirect:
        log.info("image files are sent by the front web server from %s/", settings.x_accel_redirect.rstrip("/"))
    server.run(settings, host, port, workers, threads, access_log, log_format, rules_file=watched)


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@cli.group(cls=Group)
def db():
    """Database schema commands."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(site: Site):
    """Migrate the database to the current schema (serve does this too)."""
    from ks.records import migrate

    db = site.migrated_db(create=True)
    click.echo(f"database at revision {migrate.current(db)}: {_safe_url(db.url)}")


@cli.command("import-legacy")
@click.argument("known_hosts", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and report, change nothing.")
@click.pass_obj
def import_legacy(site: Site, known_hosts: Path, dry_run: bool):
    """Import the original KIWIspray's known_hosts.json, keeping host ids.

    Every host is checked first; if any record is invalid or collides with a
    host already in the database, nothing is imported.
    """
    from ks.fleet import legacy

    records = legacy.read(known_hosts)
    db = site.migrated_db(create=True)
    imported = db.write(lambda session: legacy.import_hosts(session, records, dry_run=dry_run))
    verb = "would import" if dry_run else "imported"
    click.echo(f"{verb} {len(imported)} hosts from {known_hosts}")


# ks.boot.render.PLACEHOLDER_URL, named here so that starting the command does not load the renderer.
PLACEHOLDER_URL = "http://SERVER:5000"


@cli.command()
@click.option("-i", "--id", "host_id", type=int, help="Host id.")
@click.option("--mac", help="Select the host by one of its MACs.")
@click.option("--serial", help="Select the host by its DMI serial.")
@click.option("--state", "state", help="Render for this state instead of the host's current one.")
@click.option("--post-install", is_flag=True, help="Show the post-install script instead of the boot script.")
@click.option("--loader", type=click.Choice(["ipxe", "grub"]), default="ipxe", show_default=True,
              help="The boot loader whose script to show: iPXE, or GRUB (Secure Boot machines, over TFTP).")
@click.option("--base-url", metavar="URL",
              help="Base URL to put into the script [default: KS_BASE_URL, else the placeholder "
                   f"{PLACEHOLDER_URL}].")
@click.pass_obj
def render(site: Site, host_id, mac, serial, state, post_install, loader, base_url):
    """Show the script a machine would get now, changing nothing.

    The bootid is shown as BOOTID: the real one is made at boot time.
    """
    from ks.boot import loaders
    from ks.boot import render as rendering
    from ks.fleet import machines
    from ks.records.record import HostRecord
    from ks.web import origin_from_base_url

    if sum(x is not None for x in (host_id, mac, serial)) != 1:
        raise click.UsageError("select the host with exactly one of -i, --mac, --serial")
    base_url = base_url or site.settings.base_url
    if not base_url:
        base_url = PLACEHOLDER_URL
        click.echo(f"# base URL: {PLACEHOLDER_URL}, a placeholder: the server takes it from each request's Host "
                   "header; set KS_BASE_URL or pass --base-url to see the real one", err=True)
    where = origin_from_base_url(base_url, site.settings.poll_interval, strict=False)
    renderer = rendering.Renderer(site.root, config.shipped("templates"))
    with site.migrated_db().read() as session:
        host = HostRecord.of(
            machines.get_host(session, host_id) if host_id else machines.find_by(session, mac=mac, serial=serial)
        )
        script = rendering.script_now(renderer, host, where, state, post_install, loaders.named(loader))
    click.echo(f"# template: {script.template}", err=True)
    sys.stdout.write(script.text)


@cli.group("timeouts", cls=Group)
def timeouts_group():
    """Provisioning timeouts: machines that did not /finish their image in time."""


@timeouts_group.command("check")
@click.pass_obj
def timeouts_check(site: Site):
    """Flag every machine past its deadline as failed, once; prints one line per machine flagged.

    The server checks on its own (KS_TIMEOUT_CHECK_INTERVAL); this is for cron,
    or for sites that run the server with the interval set to 0. Prints nothing
    when no machine is overdue.
    """
    from ks.fleet import operations

    flagged = operations.check_timeouts(site.migrated_db(), "cli")
    for host_id, state in flagged:
        click.echo(
            f"host {host_id}: no /finish from '{state}' in time; flagged failed (edit-host -i {host_id} --retry)"
        )


@cli.group("pxelinux", cls=Group)
def pxelinux_group():
    """PXELINUX links in the TFTP root (set KS_TFTP_ROOT to use them)."""


@pxelinux_group.command("sync")
@click.pass_obj
def pxelinux_sync(site: Site):
    """Repair drift: make every host's pxelinux.cfg/01-<mac> link as it should be."""
    from ks.boot import pxelinux

    pxe = pxelinux.from_settings(site.settings)
    if pxe is None:
        raise click.ClickException("no TFTP root configured; set KS_TFTP_ROOT (and KS_PXELINUX_CONFIG_DIR)")
    try:
        changes = pxe.sync(site.migrated_db())
    except OSError as exc:  # a TFTP root it may not write: a one-line failure, as in `image import`
        raise click.ClickException(str(exc)) from None
    for change in changes:
        click.echo(str(change))
    # On stdout after the list: one stream keeps the order and the line ends, wherever it goes.
    click.echo(f"{len(changes)} link(s) changed in {pxe.link_dir}")


cli.add_command(image)
cli.add_command(kiwi)
cli.add_command(token)
cli.add_command(rules_group)
cli.add_command(webhook)
cli.add_command(host_group)
cli.add_command(config_group)
cli.add_command(bmc_group)
cli.add_command(init)
cli.add_command(dnsmasq_config)
cli.add_command(demo)
for _name, _command in cli.commands.items():
    if _name in SITELESS:
        continue
    if _name in REMOTE_COMMANDS:
        accept_after(_command, root_after, server_after, token_file_after)
    else:
        accept_after(_command, root_after, no_server_after)
