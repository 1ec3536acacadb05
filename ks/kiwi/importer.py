"""``images/<name>/`` from a KIWI build result or live ISO: all of it or nothing.

The import is assembled in a scratch directory ``images/.import-<name>-*``
(hidden from ``image_names``, on the same filesystem): the source is fetched,
unpacked or copied there, given stable names and checked. Only then is it
renamed to ``images/<name>``, the one step machines can observe. Any failure,
Ctrl-C included, leaves nothing behind but what was there before.
"""

import ctypes
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ks.boot import images
from ks.core import states
from ks.core.errors import ImageError, ImageExists, InvalidState
from ks.kiwi import INITRD, KERNEL, Progress, checksum, live, silent, sources

PXE_KERNELS = ("pxeboot.{p}.kernel", "pxeboot.kernel")
# Not <P>.initrd: that is the installed system's initrd, which kiwi-dump kexecs.
PXE_INITRDS = ("pxeboot.{p}.initrd.xz", "pxeboot.{p}.initrd", "pxeboot.initrd.xz", "pxeboot.initrd")
# Files an operator adds for KIWIspray; they are kept across `--force`, and never
# taken from an archive or download, because a template runs on the server.
OPERATOR_FILES = images.TEMPLATE_FILES


@dataclass
class Imported:
    """What an import produced."""

    name: str
    path: Path
    kind: str  # "kiwi" or "live"
    product: str
    verified: checksum.Result | None = None
    notes: list[str] = field(default_factory=list)


def import_image(
    root: str | Path, name: str, source: str, *, force: bool = False, verify: bool = True, progress: Progress = silent
) -> Imported:
    """Import ``source`` (directory, archive, ISO or URL) as ``images/<name>``."""
    check_name(name)
    base = images.images_dir(root)
    base.mkdir(exist_ok=True)
    target = base / name
    if os.path.lexists(target) and not force:
        raise ImageExists(f"images/{name} already exists; pass --force to replace it")
    work = Path(tempfile.mkdtemp(prefix=f".import-{name}-", dir=base))
    try:
        imported = _stage(source, work, name, verify, progress)
        if force and target.is_dir():
            imported.notes += _keep_operator_files(target, imported.path)
        _install(imported.path, target, work, replace=force)
        imported.path = target
        return imported
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_name(name: str) -> None:
    """ImageError unless ``name`` can be a state that boots an image."""
    try:
        chain = states.parse_chain(name)
    except InvalidState as exc:
        raise ImageError(f"cannot name an image so: {exc}") from None
    if chain != (name,) or not states.is_image(name):
        raise ImageError(f"{name!r} cannot name an image; choose one name other than {' or '.join(states.BUILTINS)}")


def _stage(source: str, work: Path, name: str, verify: bool, progress: Progress) -> Imported:
    staged = work / "image"
    downloaded = sources.is_url(source)
    local = sources.fetch(source, work, progress) if downloaded else Path(source).expanduser()
    what = sources.kind(local)
    if what == sources.ISO:
        iso_name = local.name if sources.SAFE_NAME.fullmatch(local.name) and local.suffix == ".iso" else f"{name}.iso"
        notes = live.build(local, staged, iso_name, move=downloaded, progress=progress)
        imported = Imported(name, staged, "live", iso_name.removesuffix(".iso"), notes=notes)
    else:
        if what == sources.TAR:
            unpacked = work / "unpack"
            sources.unpack(local, unpacked, progress)
            if downloaded:
                local.unlink()  # the archive's space is needed more than the archive
            os.rename(_build_root(unpacked), staged)
            notes = _drop_templates(staged)
        else:
            notes = [
                f"left out {entry}: only files are imported"
                for entry in sources.copy_directory(local, staged, progress)
            ]
        product, result = _arrange(staged, verify, progress)
        imported = Imported(name, staged, "kiwi", product, result, notes)
    shown = sources.redact(source) if downloaded else str(local.resolve())
    checksum.write_record(
        staged,
        imported.verified,
        source=shown,
        kind=imported.kind,
        imported=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return imported


def _build_root(directory: Path) -> Path:
    """The directory holding the build, below any single wrapping directories."""
    entries = list(directory.iterdir())
    while len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        directory = entries[0]
        entries = list(directory.iterdir())
    return directory


def _drop_templates(directory: Path) -> list[str]:
    notes = []
    for name in OPERATOR_FILES:
        if os.path.lexists(directory / name):
            (directory / name).unlink()
            notes.append(f"left out {name}: templates are only taken from a directory; review it and copy it by hand")
    return notes


def _arrange(directory: Path, verify: bool, progress: Progress) -> tuple[str, checksum.Result | None]:
    """Check that a KIWI build is complete, link the stable names, verify the checksum."""
    appends = sorted(p.name for p in directory.glob("*.append") if p.is_file())
    if len(appends) != 1:
        raise ImageError(
            f"expected one <P>.append, found {', '.join(appends) or 'none'}; a KIWI oem PXE build result holds "
            "<P>.append, <P>.xz, <P>.md5 or .sha256, a pxeboot kernel and initrd (import one build at a time)"
        )
    product = appends[0].removesuffix(".append")
    kernel, initrd = (_first(directory, names, product) for names in (PXE_KERNELS, PXE_INITRDS))
    xz, sums = directory / f"{product}.xz", checksum.find(directory, product)
    wanted = [("pxeboot kernel", kernel is not None), ("pxeboot initrd", initrd is not None), (xz.name, xz.is_file())]
    wanted += [(f"{product}.sha256 or .md5 (or pass --no-verify)", sums is not None)] if verify else []
    missing = [label for label, found in wanted if not found]
    if missing or kernel is None or initrd is None:
        raise ImageError(f"the build lacks {', '.join(missing)}; is it a complete KIWI oem PXE build result?")
    for link, real in ((KERNEL, kernel), (INITRD, initrd)):
        if os.path.lexists(directory / link):
            (directory / link).unlink()
        os.symlink(real, directory / link)
    if not verify or sums is None:
        return product, None
    result = checksum.verify(xz, checksum.parse(sums), progress)
    if not result.ok:
        raise checksum.mismatch(xz, result)
    return product, result


def _first(directory: Path, patterns: tuple[str, ...], product: str) -> str | None:
    names = (pattern.format(p=product) for pattern in patterns)
    return next((name for name in names if (directory / name).is_file()), None)


def _keep_operator_files(old: Path, new: Path) -> list[str]:
    kept = []
    for name in OPERATOR_FILES:
        if (old / name).is_file() and not os.path.lexists(new / name):
            shutil.copy2(old / name, new / name)
            kept.append(f"kept {name} of the replaced image")
    return kept


def _install(staged: Path, target: Path, work: Path, replace: bool) -> None:
    """Move ``staged`` to ``target`` atomically; a replaced image ends up in ``work``."""
    if replace and os.path.lexists(target):
        if not _renameat2(staged, target, RENAME_EXCHANGE):
            # No atomic swap on this system: a boot in between may miss the image.
            os.rename(target, work / "replaced")
            try:
                os.rename(staged, target)
            except BaseException:
                os.rename(work / "replaced", target)
                raise
        return
    try:
        if not _renameat2(staged, target, RENAME_NOREPLACE):
            if os.path.lexists(target):
                raise FileExistsError(target)
            os.rename(staged, target)
    except FileExistsError:
        raise ImageExists(f"images/{target.name} appeared during the import; pass --force to replace it") from None


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """Linux renameat(2) with flags; False where the C library or the filesystem lacks it."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), ctypes.c_uint(flags)) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(target))
