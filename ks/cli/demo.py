"""``kiwispray demo``: watch one machine install in a private lab (see ks.lab.demo)."""

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import click

from ks.cli.common import Command

# ks.lab.lab.DEFAULT_CACHE, named here so that the CLI does not load the lab to start.
DEFAULT_CACHE = "/var/cache/kiwispray-test/e2e"


@click.command(cls=Command)
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True,
              help="The machine's firmware: SeaBIOS, or OVMF for UEFI.")
@click.option("--port", default=5080, type=click.IntRange(0, 65535), show_default=True,
              help="Port on 127.0.0.1 where the dashboard is reachable while the demo runs (0: any free port).")
@click.option("--machine-cache", "cache", envvar="KS_E2E_CACHE", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_CACHE, show_default=True,
              help="Where scripts/build-test-guest.sh built the stand-in machine (env KS_E2E_CACHE, as for the "
                   "script).")
@click.option("--hold", is_flag=True,
              help="Once the machine is installed, keep everything running until Ctrl-C, to look around "
                   "the dashboard.")
def demo(firmware: str, port: int, cache: Path, hold: bool):
    """Watch a machine install: new, image, finished, its disk (needs root; about two minutes).

    Builds a private network namespace (nothing in it reaches another network),
    starts dnsmasq from dnsmasq.conf.example, `kiwispray serve` on a new site in a
    temporary directory, and a QEMU machine. The image is a small stand-in machine
    (a kernel and busybox initrd built by scripts/build-test-guest.sh, imported as a
    KIWI build) whose "install" runs the post-install script that ends it. Each step
    is printed as it happens, with the dashboard's address on 127.0.0.1. Everything
    is removed at the end, also on Ctrl-C. Needs QEMU, dnsmasq, iPXE and iproute2;
    it says so, and how to get them, when one is missing.
    """
    from ks.lab import demo as demos

    problems = demos.requirements(demos.is_root(), shutil.which, lambda p: Path(p).exists(), cache, firmware)
    if problems:
        raise click.ClickException("\n".join(problems))
    # SIGTERM ends the demo as Ctrl-C does: through the clean-up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    def wait_for_ctrl_c() -> None:
        click.echo("installed; the lab keeps running: press Ctrl-C to end it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass

    workdir = Path(tempfile.mkdtemp(prefix="kiwispray-demo-"))
    try:
        seconds = demos.run(workdir, cache, port, firmware, click.echo, wait_for_ctrl_c if hold else None)
    except (RuntimeError, AssertionError, OSError) as exc:
        raise click.ClickException(f"the demo failed: {exc}") from None
    click.echo(f"done in {seconds:.0f} s: the machine went new -> {demos.IMAGE} -> finished -> its disk")
