"""``kiwispray init`` (a new site) and ``kiwispray dnsmasq-config`` (dnsmasq for it)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import click

from ks.cli import newsite
from ks.cli.common import Command, Site
from ks.core import config, roles
from ks.fleet import tokens

DASHBOARD_TOKEN = "dashboard"


@click.command(cls=Command)
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def init(site: Site, directory: Path | None):
    """Make a new site in DIRECTORY (default: --root, else the current directory).

    Writes images/ and templates/, each with a note of what goes in it, a
    commented rules.toml, and the database with an admin token for the dashboard,
    printed once. Refuses a directory that is a site already (a database or one
    of these files there): it overwrites nothing.
    """
    where = directory or Path(site.options["root"] or config.from_env().get("ROOT") or ".")
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot make the site's directory: {exc}") from None
    site = Site(str(where))
    root = Path(site.root)
    planned = newsite.files(root)
    database = _sqlite_file(site)
    present = [path for path in [*planned, database] if path is not None and path.exists()]
    if present:
        names = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in present)
        raise click.ClickException(
            f"{root} is a KIWIspray site already ({names} exist): init overwrites nothing. Use it as it is; "
            f"a new dashboard token: kiwispray --root {root} token create NAME --role admin")
    try:
        for path, text in planned.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write the site: {exc}") from None
    db = site.migrated_db(create=True)
    token = db.write(lambda session: tokens.create(session, DASHBOARD_TOKEN, roles.Role.ADMIN))
    click.echo(f"made a site in {root}: images/, templates/, rules.toml, the database")
    click.echo(f"the dashboard's admin token (shown only now; keep it): {token}")
    at = "" if root == Path.cwd() else f"--root {root} "
    click.echo(f"""next steps:
  1. an image:     kiwispray {at}image import image1 /path/to/<image>.install.tar
  2. dnsmasq:      kiwispray dnsmasq-config --interface eth1 --subnet 192.168.100.0/24 \\
                       --output /etc/dnsmasq.d/kiwispray.conf   (your interface and subnet)
  3. the server:   kiwispray {at}serve --host 0.0.0.0
  4. a machine:    boot it from the network; it waits in 'new' (edit-host {at}-l lists it),
                   then: edit-host {at}-i 1 -s image1
  5. watch:        http://<this machine>:5000/ui/, log in with the token above""")


def _sqlite_file(site: Site) -> Path | None:
    """The site's SQLite database file, if it uses one."""
    from sqlalchemy.engine import make_url

    url = make_url(site.settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


@click.command("dnsmasq-config", cls=Command)
@click.option("--interface", required=True, metavar="IF",
              help="The interface that faces the machines to be installed, e.g. eth1.")
@click.option("--subnet", required=True, metavar="CIDR",
              help="That interface's IPv4 subnet, e.g. 192.168.100.0/24. Full DHCP hands out its upper half "
                   "(.128-.254 of a /24).")
@click.option("--proxy", is_flag=True,
              help="Proxy DHCP: another DHCP server keeps handing out the addresses; dnsmasq only adds the boot "
                   "information.")
@click.option("--server", metavar="URL",
              help="KIWIspray's address as machines reach it, e.g. http://192.168.100.1:5000 [default: this "
                   "DHCP server, port 5000].")
@click.option("--tftp-root", metavar="DIR", help="Where the iPXE binaries are [default: /srv/tftp].")
@click.option("--secure-boot", is_flag=True,
              help="UEFI x86-64 machines get shim and Debian's signed GRUB from KIWIspray's own TFTP server "
                   "(kiwispray serve --tftp-listen), so that machines with Secure Boot on install; dnsmasq's TFTP "
                   "is off. Full DHCP only.")
@click.option("--http-boot", is_flag=True,
              help="Firmware booting over HTTP (UEFI HTTP Boot) gets iPXE from --server's /boot-files/, no TFTP. "
                   "Needs --server; full DHCP only.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the configuration to this file (e.g. /etc/dnsmasq.d/kiwispray.conf) instead of stdout.")
def dnsmasq_config(interface: str, subnet: str, proxy: bool, server: str | None, tftp_root: str | None,
                   secure_boot: bool, http_boot: bool, output: Path | None):
    """Write a dnsmasq configuration for one interface and subnet, made from dnsmasq.conf.example.

    Full DHCP (dnsmasq hands out addresses) or --proxy (beside an existing DHCP
    server). Checked with `dnsmasq --test` when dnsmasq is installed here.
    """
    from ks.core import dnsmasq

    text = dnsmasq.for_site(interface, subnet, proxy, server, tftp_root, secure_boot, http_boot)
    checked = _check(text)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc}") from None
        click.echo(f"wrote {output} ({'proxy DHCP' if proxy else 'full DHCP'} on {interface}, {subnet})", err=True)
    click.echo(checked, err=True)
    if secure_boot or http_boot:
        click.echo("KIWIspray serves the boot files from <root>/boot-files/ (docs/secure-boot.md): "
                   "ln -s /usr/lib/shim/shimx64.efi.signed shimx64.efi; "
                   "ln -s /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed grubx64.efi; "
                   "ln -s /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/snponly.efi .", err=True)
    if secure_boot:
        click.echo("run the server with --tftp-listen <this DHCP server's address on the interface>", err=True)
    else:
        click.echo("the TFTP root needs the iPXE binaries: cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/snponly.efi "
                   f"{tftp_root or '/srv/tftp'}/", err=True)


def _check(text: str) -> str:
    """``dnsmasq --test`` of ``text``: a line saying so; a failure ends the command."""
    binary = shutil.which("dnsmasq")
    if binary is None:
        return "dnsmasq is not installed here: not checked (check it with: dnsmasq --test -C FILE)"
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
        conf.write(text)
        conf.flush()
        done = subprocess.run([binary, "--test", f"--conf-file={conf.name}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"dnsmasq --test refused the configuration: {done.stderr.strip()}")
    return "checked: dnsmasq --test accepts it"
