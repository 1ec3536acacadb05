"""Where an import comes from: a URL, a directory, a tar archive or an ISO image.

Everything lands in a scratch directory that the importer owns; nothing here
writes anywhere else. Archives are unpacked member by member and refused at
the first member that could leave that directory.
"""

import os
import posixpath
import re
import shutil
import tarfile
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from ks.core.errors import DownloadFailed, ImageError, UnsafeArchive
from ks.kiwi import CHUNK, Bar, Progress, silent

DIRECTORY, TAR, ISO = "directory", "tar", "iso"
ISO_MAGIC = (0x8001, b"CD001")  # ISO 9660 primary volume descriptor, sector 16
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# tarfile's own "data" filter (PEP 706) backs up the checks below where Python has it;
# Debian 12's Python 3.11.2 may not.
HAS_TAR_FILTER = hasattr(tarfile, "data_filter")
TIMEOUT = (10, 60)  # seconds to connect, seconds between two reads


def is_url(source: str) -> bool:
    """True for http(s) URLs."""
    return source.lower().startswith(("http://", "https://"))


def redact(url: str) -> str:
    """A URL without user, password and query, fit for messages and records."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def fetch(url: str, directory: Path, progress: Progress = silent) -> Path:
    """Download ``url`` into ``directory`` as a stream; the file keeps the URL's last path segment."""
    shown = redact(url)
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT, headers={"Accept-Encoding": "identity"}) as response:
            response.raise_for_status()
            if response.headers.get("Content-Type", "").startswith("text/html"):
                raise ImageError(
                    f"{shown} is an HTML page (a directory listing?); "
                    "give the URL of the .install.tar, .tar.xz or .iso file"
                )
            name = unquote(urlsplit(response.url).path.rstrip("/").rpartition("/")[2])
            target = directory / (name if SAFE_NAME.fullmatch(name) else "download")
            length = response.headers.get("Content-Length", "")
            with (
                open(target, "wb") as out,
                progress(f"Downloading {target.name}", int(length) if length.isdigit() else None) as bar,
            ):
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except requests.RequestException as exc:
        raise DownloadFailed(
            f"cannot download {shown}: {exc}; check the URL and that the server is reachable"
        ) from None
    return target


def kind(path: Path) -> str:
    """DIRECTORY, TAR or ISO; ImageError for anything else."""
    if path.is_dir():
        return DIRECTORY
    if not path.is_file():
        raise ImageError(f"{path} does not exist; give a KIWI build directory, archive, ISO or http(s) URL")
    offset, magic = ISO_MAGIC
    with open(path, "rb") as data:
        data.seek(offset)
        if data.read(len(magic)) == magic:
            return ISO
    if tarfile.is_tarfile(path):
        return TAR
    raise ImageError(
        f"{path.name} is neither a tar archive (<P>.install.tar, .tar.xz) nor an ISO image; "
        "give a KIWI oem PXE build result or a live ISO"
    )


def unpack(archive: Path, directory: Path, progress: Progress = silent) -> None:
    """Extract ``archive`` (any compression) into ``directory``, refusing unsafe members."""
    try:
        with (
            open(archive, "rb") as raw,
            tarfile.open(fileobj=raw, mode="r|*") as tar,
            progress(f"Unpacking {archive.name}", archive.stat().st_size) as bar,
        ):
            members = _checked(tar, raw, bar)
            if HAS_TAR_FILTER:
                tar.extractall(directory, members=members, filter="data")
            else:
                tar.extractall(directory, members=members)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(f"refusing {archive.name}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:  # a full disk (OSError) is reported as itself
        raise ImageError(f"cannot unpack {archive.name}: {exc}; the archive is damaged or incomplete") from None


def _checked(tar: tarfile.TarFile, raw, bar: Bar):
    done = 0
    for member in tar:
        check_member(member)
        yield member
        bar.update(raw.tell() - done)
        done = raw.tell()


def check_member(member: tarfile.TarInfo) -> None:
    """UnsafeArchive unless ``member`` is a file, directory or link that stays inside the archive's root."""
    name = member.name
    refuse = f"refusing archive member {name!r}"
    if name.startswith("/") or ".." in name.split("/"):
        raise UnsafeArchive(f"{refuse}: its path leaves the image directory; this is no KIWI build result")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"{refuse}: it is a device, FIFO or other special file")
    if member.issym() or member.islnk():
        base = posixpath.dirname(name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise UnsafeArchive(f"{refuse}: it links to {member.linkname!r}, outside the image directory")


def copy_directory(source: Path, directory: Path, progress: Progress = silent) -> list[str]:
    """Copy the files at the top of ``source``; return the names of entries left out."""
    entries = sorted(source.iterdir())
    total = sum(p.stat().st_size for p in entries if p.is_file())
    skipped = []
    directory.mkdir()
    with progress(f"Copying {source.name}", total) as bar:
        for path in entries:
            link = os.readlink(path) if path.is_symlink() else None
            if link and "/" not in link and (source / link).is_file():
                os.symlink(link, directory / path.name)  # e.g. <P>.kernel -> pxeboot.<P>.kernel
            elif path.is_file():
                copy_file(path, directory / path.name, bar)
            else:
                skipped.append(path.name)
    return skipped


def copy_file(source: Path, target: Path, bar: Bar) -> None:
    """Copy one file in chunks, reporting progress, keeping its times and mode."""
    with open(source, "rb") as data, open(target, "wb") as out:
        while chunk := data.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(source, target)
