"""``kiwispray image import|list|check``: the commands over ks.kiwi."""

import json
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict

import click

from ks.cli.common import Group, Site, table
from ks.fleet import present
from ks.kiwi import importer, inventory


@click.group("image", cls=Group)
def image():
    """Import, list and check the images under images/."""


@contextmanager
def progressbar(label: str, total: int | None):
    """A progress bar on stderr, in bytes (ks.kiwi's progress callable)."""
    if total is None:
        # click shows a running count instead of a percentage for an iterable without a length.
        with click.progressbar((_ for _ in ()), label=label, file=sys.stderr, show_pos=True) as bar:
            yield bar
    else:
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar


@contextmanager
def terminate_as_exit():
    """Let SIGTERM unwind like Ctrl-C, so an interrupted import removes its scratch directory."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@image.command("import")
@click.argument("name")
@click.argument("source")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing image of this name (atomically; its host.ipxe/post_install templates are kept).",
)
@click.option(
    "--no-verify", is_flag=True, help="Do not check <P>.xz against the build's checksum file (not recommended)."
)
@click.pass_obj
def import_command(site: Site, name: str, source: str, force: bool, no_verify: bool):
    """Import SOURCE as images/NAME.

    SOURCE is a KIWI oem PXE build result (<P>.install.tar, an older .tar.xz, or a
    directory holding its files), a KIWI live ISO, or an http(s) URL of an archive
    or ISO. The disk is checked against the build's checksum file before the
    image appears; a failed or interrupted import leaves nothing behind.
    """
    site.require()  # images/ of a directory that is no site would serve no machine
    # A file system failure (a full disk, a directory it may not write) is no KIWIspray error; it ends
    # the command with its one-line message too, exit 1. KIWIspray errors go to Group's one mapping.
    try:
        with terminate_as_exit():
            done = importer.import_image(
                site.root, name, source, force=force, verify=not no_verify, progress=progressbar
            )
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    if done.verified:
        verified = f"{done.verified.algorithm} of {done.verified.actual_size} bytes uncompressed verified"
    elif done.kind == "kiwi":
        verified = "checksum NOT verified (--no-verify)"
    else:
        verified = "boots root=live: from the ISO"
    click.echo(f"imported {done.kind} image {name} ({done.product}) into {done.path}; {verified}")
    click.echo(f"machines boot it in state {name}, e.g. `edit-host -i ID -s {name}`")


@image.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_obj
def list_command(site: Site, as_json: bool):
    """List images: kind, size, checksum status and missing files.

    The checksum column reports the last import or `image check`: ok, MISMATCH,
    unchecked, changed (the disk changed since) or - (nothing to check).
    """
    rows = inventory.describe_all(site.root)
    for scratch in inventory.scratch_directories(site.root):
        click.echo(f"note: images/{scratch} is an import in progress or a killed one; remove it if none runs", err=True)
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no images yet; add one with `kiwispray image import NAME SOURCE`")
        return
    cells = [(r.name, r.kind, present.human_size(r.size), r.checksum, ", ".join(r.missing) or "-") for r in rows]
    click.echo(table(cells, ["NAME", "KIND", "SIZE", "CHECKSUM", "MISSING"]))


@image.command("check")
@click.argument("name")
@click.pass_obj
def check_command(site: Site, name: str):
    """Verify images/NAME again: its files, and its disk against the checksum file."""
    try:
        status, result = inventory.check(site.root, name, progress=progressbar)
    except OSError as exc:  # an unreadable file: a one-line failure, as in `image import`
        raise click.ClickException(str(exc)) from None
    if result is None:
        click.echo(f"{name}: {status.kind} image complete; it has no checksum file to verify")
    else:
        click.echo(
            f"{name}: {result.file} matches "
            f"({result.algorithm} {result.actual}, {result.actual_size} bytes uncompressed)"
        )
