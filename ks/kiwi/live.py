"""A KIWI live ISO booted over the network, as the original's import-live-iso.sh did it.

The ISO's own kernel and initrd (``boot/<arch>/loader/linux`` and ``initrd``)
are read with pycdlib, so no root, loop device or mount is needed. dracut's
livenet module then downloads the ISO named by ``root=live:<URL>``; that URL
depends on where machines reach this server, so the ``.append`` written here
says ``root=live:@IMAGE_URL@/<file>.iso`` and ks.boot.images fills in the URL when
a script is rendered. The ISO must be built with ``flags="dmsquash"``.
"""

import os
import re
from pathlib import Path

from ks.boot.images import IMAGE_URL
from ks.core.errors import ImageError
from ks.kiwi import INITRD, KERNEL, Progress, silent
from ks.kiwi.sources import copy_file

LOADER = re.compile(r"/boot/([^/]+)/loader")
PREFERRED_ARCH = "x86_64"
# BOOTIF makes dracut configure the NIC that booted instead of trying every port;
# iPXE expands ${netX/mac:hexhyp} when it runs the generic template's kernel line.
LIVE_ARGS = "rd.live.image root=live:{url}/{iso} BOOTIF=01-${{netX/mac:hexhyp}}"


def append_line(iso_name: str) -> str:
    """The kernel command line of a live image whose ISO is ``iso_name``."""
    return LIVE_ARGS.format(url=IMAGE_URL, iso=iso_name)


def build(iso: Path, directory: Path, iso_name: str, move: bool, progress: Progress = silent) -> list[str]:
    """Fill the new ``directory``: kernel, initrd, the ISO and its ``.append``; return notes."""
    directory.mkdir()
    arch, arches = extract_boot_files(iso, directory)
    target = directory / iso_name
    if move:
        os.rename(iso, target)
    else:
        with progress(f"Copying {iso.name}", iso.stat().st_size) as bar:
            copy_file(iso, target, bar)
    (directory / f"{iso_name.removesuffix('.iso')}.append").write_text(append_line(iso_name) + "\n", encoding="utf-8")
    if len(arches) > 1:
        return [f"the ISO boots {', '.join(arches)}; imported the {arch} kernel and initrd"]
    return []


def extract_boot_files(iso: Path, directory: Path) -> tuple[str, list[str]]:
    """Write ``kernel`` and ``initrd`` from the ISO's loader directory; return its architecture and all found."""
    try:
        import pycdlib
        from pycdlib.pycdlibexception import PyCdlibException
    except ImportError:
        raise ImageError("importing an ISO needs the pycdlib package; install it with 'pip install pycdlib'") from None
    reader = pycdlib.PyCdlib()
    try:
        reader.open(str(iso))
    except (PyCdlibException, OSError) as exc:
        raise ImageError(f"{iso.name} is not a readable ISO image ({exc})") from None
    try:
        facade = _facade(reader)
        loaders = _loaders(facade)
        if not loaders:
            raise ImageError(
                f"{iso.name} has no boot/<arch>/loader/linux and initrd; "
                'is it a KIWI live ISO (type iso, flags="dmsquash")?'
            )
        arch = PREFERRED_ARCH if PREFERRED_ARCH in loaders else min(loaders)
        folder, kernel, initrd = loaders[arch]
        for name, member in ((KERNEL, kernel), (INITRD, initrd)):
            with open(directory / name, "wb") as out:
                facade.get_file_from_iso_fp(out, f"{folder}/{member}")
    except PyCdlibException as exc:
        raise ImageError(f"cannot read the kernel and initrd out of {iso.name} ({exc})") from None
    finally:
        reader.close()
    return arch, sorted(loaders)


def _facade(reader):
    # Rock Ridge and Joliet keep real names; plain ISO 9660 names look like LINUX.;1.
    if reader.has_rock_ridge():
        return reader.get_rock_ridge_facade()
    if reader.has_joliet():
        return reader.get_joliet_facade()
    return reader.get_iso9660_facade()


def _loaders(facade) -> dict[str, tuple[str, str, str]]:
    """Architecture -> (loader directory, kernel name, initrd name) as the ISO spells them."""
    found = {}
    for folder, _dirs, files in facade.walk("/"):
        match = LOADER.fullmatch(folder.lower())
        names = {name.lower().partition(";")[0].rstrip("."): name for name in files}
        if match and "linux" in names and "initrd" in names:
            found[match.group(1)] = (folder, names["linux"], names["initrd"])
    return found
