"""What each image directory is, what it lacks, and whether its disk still matches.

Kinds: ``live`` (its ``.append`` boots ``root=live:``), ``kiwi`` (a ``<P>.xz``
or a KIWI checksum file) and ``custom`` (anything else, usually an image with
its own ``host.ipxe``). Listing never decompresses anything: the checksum
column reports the last import or ``image check`` (see ks.kiwi.checksum).
"""

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ks.boot import images
from ks.core.errors import ImageError, NotFound
from ks.kiwi import INITRD, KERNEL, Progress, checksum, silent

LIVE_ISO = re.compile(r"root=live:" + re.escape(images.IMAGE_URL) + r"/(\S+)")
HOST_TEMPLATES = ("host.ipxe", "host.tmpl", "host.grub", "host.grub.tmpl")


@dataclass
class Status:
    """One row of ``image list``."""

    name: str
    kind: str
    size: int
    checksum: str
    product: str | None
    missing: list[str] = field(default_factory=list)


def describe(root: str | Path, name: str) -> Status:
    """The status of ``images/<name>``; NotFound if there is no such image."""
    image = images.load(root, name)
    if image is None:
        known = ", ".join(sorted(images.image_names(root))) or "none"
        raise NotFound(f"no image {name!r} under images/; known images: {known}")
    if "root=live:" in image.append:
        kind = "live"
    elif image.disk or (image.product and checksum.find(image.path, image.product)):
        kind = "kiwi"
    else:
        kind = "custom"
    return Status(
        name, kind, _size(image.path), checksum.status(image.path, image.product), image.product, _missing(image, kind)
    )


def describe_all(root: str | Path) -> list[Status]:
    """The status of every image, by name."""
    return [describe(root, name) for name in sorted(images.image_names(root))]


def scratch_directories(root: str | Path) -> list[str]:
    """Scratch directories of imports: running now, or killed before they could clean up."""
    base = images.images_dir(root)
    return sorted(p.name for p in base.glob(".import-*")) if base.is_dir() else []


def check(root: str | Path, name: str, progress: Progress = silent) -> tuple[Status, checksum.Result | None]:
    """Verify an image again: files present, disk matching its checksum file (None: nothing to verify)."""
    status = describe(root, name)
    if status.missing:
        raise ImageError(f"images/{name} lacks {', '.join(status.missing)}; import it again")
    directory = images.images_dir(root) / name
    sums = checksum.find(directory, status.product) if status.product else None
    if sums is None:
        return status, None
    xz = directory / f"{status.product}.xz"
    result = checksum.verify(xz, checksum.parse(sums), progress)
    with contextlib.suppress(OSError):  # a read-only image directory can still be checked
        checksum.write_record(directory, result)
    if not result.ok:
        raise checksum.mismatch(xz, result)
    return status, result


def _missing(image: images.Image, kind: str) -> list[str]:
    missing = []
    if kind != "custom" or not any((image.path / name).is_file() for name in HOST_TEMPLATES):
        for part, found in ((KERNEL, image.kernel), (INITRD, image.initrd)):
            # A broken stable link counts: the lookup would fall back to another file.
            broken = (image.path / part).is_symlink() and not (image.path / part).exists()
            if broken or not found:
                missing.append(part)
    if kind == "kiwi":
        if not image.disk:
            missing.append(f"{image.product or '<P>'}.xz")
        if not checksum.find(image.path, image.product or ""):
            missing.append("checksum file")
    if kind == "live":
        iso = LIVE_ISO.search(image.append)
        if iso and not (image.path / iso.group(1)).is_file():
            missing.append(iso.group(1))
    return missing


def _size(directory: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
