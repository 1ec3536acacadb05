"""The boot lab of one test (``ks.lab``), with the site the tests boot: images/wipe, a
legacy template booting the test machine, beside the lab's images/image1.

    lab = Lab(tmp_path, prepare())
    lab.start()
    machine = lab.machine("uefi")
    console = machine.boot()
    lab.close()
"""

import re
import shutil
import subprocess
from pathlib import Path

from ks.lab import lab

REPO = Path(__file__).resolve().parents[2]
SITE_TEMPLATE = Path(__file__).resolve().parent / "site"


def prepare() -> Path:
    """Build the test machine (cached); the cache directory. scripts/install-system-deps.sh installs what it needs."""
    done = subprocess.run(
        ["sh", str(REPO / "scripts" / "build-test-guest.sh")], stdout=subprocess.PIPE, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def make_site(root: Path, cache: Path) -> None:
    """A site root with images/wipe: a legacy template booting the test machine."""
    shutil.copytree(SITE_TEMPLATE, root)
    for name in ("vmlinuz", "initrd.gz"):
        shutil.copy(cache / "guest" / name, root / "images" / "wipe" / name)


def shows_bootid(console: str) -> bool:
    """Whether a boot secret is on a console, e.g. from a kernel printing its command line with razorurl= or ds=."""
    return re.search(r"bootid=[0-9a-f]{8}|/nocloud/[0-9]+/[0-9a-f]{8}", console) is not None


class Lab(lab.Lab):
    """The lab with the tests' site: images/wipe and images/image1."""

    def make_site(self) -> None:
        make_site(self.root, self.cache)
        super().make_site()
