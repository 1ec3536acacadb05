"""``python -m ks`` is ``kiwispray``."""

from ks.cli.main import cli

cli(prog_name="kiwispray")
