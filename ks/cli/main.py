"""``kiwispray``: serve, database, import and render commands."""

import click

from ks import __version__
from ks.cli.common import Site, root_option
from ks.cli.image import image


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kiwispray")
@root_option
@click.pass_context
def cli(ctx: click.Context, root: str | None):
    """KIWIspray: network-boot provisioning for KIWI images.

    Machines PXE-boot into iPXE, ask this service what to do, install their
    image once and then boot from disk. Start with `kiwispray serve` in the
    directory that holds images/.
    """
    ctx.obj = Site(root)


cli.add_command(image)
