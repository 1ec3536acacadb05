"""KIWI's checksum file and the check of the compressed disk against it.

An ``oem`` PXE build ships ``<P>.xz`` (the raw disk, xz-compressed) and a
checksum file ``<P>.md5``, ``<P>.sha256`` or ``<P>.sha512`` with one line::

    <hex digest> <blocks> <blocksize> [<zblocks> <zblocksize>]

The digest is that of the *uncompressed* raw disk, whose size is
``blocks * blocksize``. The optional pair describes the compressed file KIWI
hashed, which is not necessarily our ``<P>.xz``, so it is read but not checked.
The algorithm follows from the digest's length, not the file name: some KIWI
versions wrote an md5 digest into files of any extension.
"""

import hashlib
import json
import lzma
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ks.core.errors import ChecksumMismatch, ImageError
from ks.kiwi import CHUNK, Progress, silent

EXTENSIONS = ("sha512", "sha256", "md5")  # strongest first when a build has several
ALGORITHMS = {32: "md5", 64: "sha256", 128: "sha512"}
HEX = re.compile(r"[0-9a-f]+")
RECORD = ".kiwispray.json"  # what import/check found, so `image list` need not decompress


@dataclass(frozen=True)
class Expected:
    """The content of a checksum file."""

    file: str
    algorithm: str
    digest: str
    blocks: int
    blocksize: int

    @property
    def size(self) -> int:
        """Size of the uncompressed disk in bytes."""
        return self.blocks * self.blocksize


@dataclass(frozen=True)
class Result:
    """What the check of one ``<P>.xz`` found."""

    file: str
    algorithm: str
    expected: str
    actual: str
    expected_size: int
    actual_size: int
    xz_size: int
    xz_mtime_ns: int
    # Why the disk could not be read to its end ("" when it could).
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the disk decompressed and digest and size both match."""
        return not self.error and self.expected == self.actual and self.expected_size == self.actual_size


def find(directory: Path, product: str) -> Path | None:
    """The build's checksum file, if it has one."""
    for ext in EXTENSIONS:
        path = directory / f"{product}.{ext}"
        if path.is_file():
            return path
    return None


def parse(path: Path) -> Expected:
    """Read a KIWI checksum file; ImageError if it is not in KIWI's format."""
    try:
        fields = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"cannot read checksum file {path.name}: {exc}") from None
    digest, numbers = (fields[0].lower(), fields[1:3]) if fields else ("", [])
    if (
        len(digest) not in ALGORITHMS
        or not HEX.fullmatch(digest)
        or len(numbers) != 2
        or not all(n.isdigit() for n in numbers)
    ):
        raise ImageError(
            f"{path.name} is not a KIWI checksum file: expected '<md5|sha256|sha512 hex> <blocks> <blocksize>'"
        )
    return Expected(path.name, ALGORITHMS[len(digest)], digest, int(numbers[0]), int(numbers[1]))


def verify(xz: Path, expected: Expected, progress: Progress = silent) -> Result:
    """Decompress ``xz`` as a stream and hash it; a damaged stream is a failed result with its ``error``."""
    digest = hashlib.new(expected.algorithm)
    size = done = 0
    error = ""
    stat = xz.stat()
    try:
        with open(xz, "rb") as raw, lzma.LZMAFile(raw) as disk, progress(f"Verifying {xz.name}", stat.st_size) as bar:
            while chunk := disk.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                position = raw.tell()
                bar.update(position - done)
                done = position
    except (lzma.LZMAError, EOFError) as exc:
        error = f"not a complete xz file ({exc}) after {size} bytes uncompressed"
    return Result(
        expected.file,
        expected.algorithm,
        expected.digest,
        digest.hexdigest(),
        expected.size,
        size,
        stat.st_size,
        stat.st_mtime_ns,
        error,
    )


def mismatch(xz: Path, result: Result) -> ChecksumMismatch:
    """The error for a failed check, naming both digests and sizes (or why the disk is unreadable)."""
    if result.error:
        return ChecksumMismatch(f"{xz.name} is damaged: {result.error}; the download or the build is damaged, "
                                "fetch it again")
    return ChecksumMismatch(
        f"{xz.name} does not match {result.file}: expected {result.algorithm} {result.expected} "
        f"({result.expected_size} bytes uncompressed), got {result.actual} ({result.actual_size} bytes); "
        "the download or the build is damaged, fetch it again"
    )


def write_record(directory: Path, result: Result | None, **extra) -> None:
    """Remember a check (or its absence) in the image directory, replacing the file atomically."""
    record = read_record(directory)
    record.update(extra)
    record["checksum"] = {**asdict(result), "ok": result.ok, "checked": _now()} if result else None
    scratch = directory / f"{RECORD}.tmp"
    scratch.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(scratch, directory / RECORD)


def read_record(directory: Path) -> dict:
    """The record of the last import/check; empty if there is none or it is unreadable."""
    try:
        record = json.loads((directory / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def status(directory: Path, product: str | None) -> str:
    """The last check's verdict for ``image list``.

    ``ok``/``MISMATCH``: as checked; ``changed``: the disk or checksum file differ
    from the checked ones; ``unchecked``: never checked; ``invalid``: unreadable
    checksum file; ``-``: no checksum file.
    """
    sums = find(directory, product) if product else None
    if sums is None:
        return "-"
    checked = read_record(directory).get("checksum")
    xz = directory / f"{product}.xz"
    if not isinstance(checked, dict) or not xz.is_file():
        return "unchecked"
    try:
        expected = parse(sums).digest
    except ImageError:
        return "invalid"
    stat = xz.stat()
    if (checked.get("xz_size"), checked.get("xz_mtime_ns"), checked.get("expected")) != (
        stat.st_size,
        stat.st_mtime_ns,
        expected,
    ):
        return "changed"
    return "ok" if checked.get("ok") else "MISMATCH"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
