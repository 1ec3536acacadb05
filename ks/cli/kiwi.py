"""``kiwispray kiwi overlay``: what a KIWI image description needs to call back."""

from pathlib import Path

import click

from ks.cli.common import Group
from ks.kiwi import overlay


@click.group("kiwi", cls=Group)
def kiwi():
    """Help for building KIWI images that KIWIspray deploys."""


@kiwi.command("overlay")
@click.argument("description", type=click.Path(file_okay=False, path_type=Path))
def kiwi_overlay(description: Path):
    """Write the first-boot callback into DESCRIPTION/root/.

    DESCRIPTION is a KIWI image description (the directory of config.xml). The
    installed system's first boot then fetches the post-install script named by
    razorurl= and runs it, which reports the install as done. The image needs
    curl or wget: add <package name="curl"/> to its packages.
    """
    try:
        written = overlay.write(description)
    except OSError as e:
        raise click.ClickException(f"cannot write the overlay: {e}") from e
    for path in written:
        click.echo(path)
    click.echo("add to config.xml's <packages type=\"image\">: "
               + " ".join(f'<package name="{p}"/>' for p in overlay.PACKAGES), err=True)
