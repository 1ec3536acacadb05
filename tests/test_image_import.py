"""`kiwispray image import|list|check` with KIWI-shaped builds made on the spot.

The builds are tiny but shaped like KIWI's: pxeboot kernel and initrd, the raw
disk xz-compressed as <P>.xz, a checksum file in KIWI's own format, <P>.append
with KIWI's placeholder install URL, and the <P>.kernel symlink.
"""

import functools
import hashlib
import io
import json
import lzma
import os
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from ks.boot import images, render
from ks.cli.main import cli
from ks.core import config
from ks.core.errors import ChecksumMismatch, DownloadFailed, ImageError, ImageExists, UnsafeArchive
from ks.kiwi import checksum, importer, inventory, sources

P = "Leap-15.5.x86_64-1.15.5"
DISK = bytes(range(256)) * 64 + b"\0" * 65536  # 20 blocks of 4096 bytes
OTHER_DISK = b"\1" * len(DISK)
BASE = "http://192.0.2.1:5000"
KIWI_APPEND = "rd.kiwi.install.pxe rd.kiwi.install.image=http://example.com/image.xz console=ttyS0\n"


def kiwi_build(
    directory: Path,
    disk: bytes = DISK,
    algorithm: str = "sha256",
    old: bool = False,
    digest: str | None = None,
    blocks: int | None = None,
) -> Path:
    """Write a KIWI oem PXE build result: the current layout, or the older one with pxeboot.kernel."""
    directory.mkdir(parents=True, exist_ok=True)
    kernel, initrd = ("pxeboot.kernel", "pxeboot.initrd.xz") if old else (f"pxeboot.{P}.kernel", f"pxeboot.{P}.initrd")
    digest = digest or hashlib.new(algorithm, disk).hexdigest()
    files = {
        kernel: b"KERNEL",
        initrd: b"INSTALL INITRD",
        f"{P}.initrd": b"system initrd for kexec",
        f"{P}.xz": lzma.compress(disk),
        f"{P}.{algorithm}": f"{digest} {blocks or len(disk) // 4096} 4096\n".encode(),
        f"{P}.append": KIWI_APPEND.encode(),
    }
    if not old:
        files[f"{P}.config.bootoptions"] = b"root=UUID=1234\n"
    for name, data in files.items():
        (directory / name).write_bytes(data)
    os.symlink(kernel, directory / f"{P}.kernel")
    return directory


def make_tar(directory: Path, archive: Path, mode: str = "w", prefix: str = "") -> Path:
    """Pack the files of ``directory`` (symlinks as symlinks), optionally below ``prefix``."""
    with tarfile.open(archive, mode) as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=prefix + path.name)
    return archive


def make_iso(path: Path, files: dict[str, bytes]) -> Path:
    """An ISO with Rock Ridge and Joliet names, made with pycdlib (no root, no mkisofs)."""
    import pycdlib
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", joliet=3, vol_ident="KIWI_LIVE")
    made = set()
    for name, data in files.items():
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                iso.add_directory("/" + folder.upper(), rr_name=parts[depth - 1], joliet_path="/" + folder)
                made.add(folder)
        iso.add_fp(io.BytesIO(data), len(data), "/" + name.upper() + ";1", rr_name=parts[-1], joliet_path="/" + name)
    iso.write(str(path))
    iso.close()
    return path


LIVE_FILES = {
    "boot/x86_64/loader/linux": b"LIVE KERNEL",
    "boot/x86_64/loader/initrd": b"LIVE INITRD",
    "LiveOS/squashfs.img": b"squashfs",
}


def leftovers(root: Path) -> list[str]:
    """Scratch directories of imports, which must never outlive them."""
    return [p.name for p in (root / "images").iterdir() if p.name.startswith(".")] if (root / "images").is_dir() else []


def boot_script(root: Path, name: str) -> str:
    """The script the generic template renders for a machine in state ``name``."""
    renderer = render.Renderer(root, config.shipped("templates"))
    image = images.load(root, name)
    context = {
        "host": {"id": 7, "hostname": "node7"},
        "state": name,
        "image": image.context(BASE),
        "post_install_url": f"{BASE}/post-install?id=7&bootid=b",
    }
    rendered = renderer.render("host", name, context, list)
    assert rendered.template == "shipped:kiwi.ipxe"
    return rendered.text


@pytest.fixture
def root(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    assert CliRunner().invoke(cli, ["--root", str(site), "db", "upgrade"]).exit_code == 0
    return site


@pytest.fixture
def web(tmp_path):
    """A directory served over HTTP on 127.0.0.1: (directory, base URL)."""
    served = tmp_path / "www"
    served.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


# -- the three kinds of source, and URLs ------------------------------------------


def assert_bootable(root: Path, name: str, initrd: str = f"pxeboot.{P}.initrd") -> None:
    image = images.load(root, name)
    assert (image.kernel, image.initrd, image.disk, image.product) == ("kernel", "initrd", f"{P}.xz", P)
    assert os.readlink(image.path / "initrd") == initrd
    assert "rd.kiwi.install.pxe" in image.append and "console=ttyS0" in image.append
    assert "example.com" not in image.append
    script = boot_script(root, name)
    url = f"{BASE}/images/{name}"
    assert f"kernel --name kernel {url}/kernel initrd=initrd loglevel=4 rd.kiwi.install.pxe console=ttyS0" in script
    assert f"rd.kiwi.install.image={url}/{P}.xz" in script
    assert f"initrd --name initrd {url}/initrd" in script


def test_install_tar(root, tmp_path):
    archive = make_tar(kiwi_build(tmp_path / "build"), tmp_path / f"{P}.install.tar")
    done = importer.import_image(root, "leap", str(archive))
    assert (done.kind, done.product, done.path) == ("kiwi", P, root / "images" / "leap")
    assert done.verified.ok and done.verified.algorithm == "sha256" and done.verified.actual_size == len(DISK)
    assert_bootable(root, "leap")
    directory = root / "images" / "leap"
    assert os.readlink(directory / "kernel") == f"pxeboot.{P}.kernel"
    assert os.readlink(directory / f"{P}.kernel") == f"pxeboot.{P}.kernel"
    assert (directory / f"{P}.config.bootoptions").is_file()
    assert checksum.status(directory, P) == "ok"
    assert leftovers(root) == []


def test_older_tar_xz_with_a_wrapping_directory(root, tmp_path):
    build = kiwi_build(tmp_path / "build", algorithm="md5", old=True)
    archive = make_tar(build, tmp_path / "Image1.tar.xz", mode="w:xz", prefix="Image1/")
    done = importer.import_image(root, "image1", str(archive))
    assert done.verified.algorithm == "md5" and done.verified.ok
    assert os.readlink(root / "images/image1/kernel") == "pxeboot.kernel"
    assert_bootable(root, "image1", initrd="pxeboot.initrd.xz")


def test_directory(root, tmp_path):
    build = kiwi_build(tmp_path / "build", algorithm="sha512")
    (build / "subdir").mkdir()
    done = importer.import_image(root, "leap", str(build))
    assert done.verified.algorithm == "sha512"
    assert done.notes == ["left out subdir: only files are imported"]
    assert os.readlink(root / "images/leap" / f"{P}.kernel") == f"pxeboot.{P}.kernel"
    assert_bootable(root, "leap")


def test_url(root, tmp_path, web):
    served, url = web
    make_tar(kiwi_build(tmp_path / "build"), served / f"{P}.install.tar")
    seen = []

    def progress(label, total):
        seen.append((label, total))
        return sources.silent(label, total)

    done = importer.import_image(root, "leap", f"{url}/{P}.install.tar?token=secret", progress=progress)
    assert done.verified.ok
    assert_bootable(root, "leap")
    assert seen[0] == (f"Downloading {P}.install.tar", (served / f"{P}.install.tar").stat().st_size)
    assert [label.split()[0] for label, _ in seen] == ["Downloading", "Unpacking", "Verifying"]
    record = checksum.read_record(root / "images/leap")
    assert record["source"] == f"{url}/{P}.install.tar"  # no query: it may hold a token
    assert not (root / "images/leap" / f"{P}.install.tar").exists()
    assert leftovers(root) == []


def test_url_not_found_and_html_pages_are_refused(root, web):
    _, url = web
    with pytest.raises(DownloadFailed, match="404"):
        importer.import_image(root, "leap", f"{url}/missing.tar")
    with pytest.raises(ImageError, match="HTML page"):
        importer.import_image(root, "leap", f"{url}/")
    assert not (root / "images/leap").exists() and leftovers(root) == []


def test_redact_drops_credentials_and_query():
    assert sources.redact("https://u:pw@host:8443/a/b.tar?sig=1#x") == "https://host:8443/a/b.tar"


@pytest.mark.parametrize(
    "line, algorithm, size",
    [
        (f"{'a' * 64} 20 4096\n", "sha256", 81920),
        (f"{'B' * 128} 3 512 1 700\n", "sha512", 1536),  # with the compressed pair
        (f"{'c' * 32} 5 4096\n", "md5", 20480),  # old KIWI wrote md5 whatever the extension
    ],
)
def test_checksum_file_format(tmp_path, line, algorithm, size):
    path = tmp_path / f"{P}.sha256"
    path.write_text(line)
    expected = checksum.parse(path)
    assert (expected.algorithm, expected.size, expected.digest) == (algorithm, size, line.split()[0].lower())


@pytest.mark.parametrize("line", [f"{'a' * 64}  {P}.xz\n", f"{'a' * 63} 1 1\n", "", f"{'g' * 64} 1 1\n"])
def test_checksum_files_in_other_formats_are_refused(tmp_path, line):
    path = tmp_path / f"{P}.sha256"
    path.write_text(line)
    with pytest.raises(ImageError, match="not a KIWI checksum file"):
        checksum.parse(path)


# -- refusals leave nothing behind -------------------------------------------------


@pytest.mark.parametrize(
    "damage, expected",
    [
        ({"digest": "0" * 64}, "expected sha256 " + "0" * 64),
        (
            {"blocks": 21},
            f"({21 * 4096} bytes uncompressed), got {hashlib.sha256(DISK).hexdigest()} ({len(DISK)} bytes)",
        ),
    ],
    ids=["digest", "size"],
)
def test_checksum_mismatch_is_refused(root, tmp_path, damage, expected):
    archive = make_tar(kiwi_build(tmp_path / "build", **damage), tmp_path / "build.tar")
    with pytest.raises(ChecksumMismatch) as caught:
        importer.import_image(root, "leap", str(archive))
    message = str(caught.value)
    assert expected in message
    assert hashlib.sha256(DISK).hexdigest() in message and f"{P}.sha256" in message
    assert not (root / "images/leap").exists() and leftovers(root) == []


def test_damaged_xz_is_refused(root, tmp_path):
    build = kiwi_build(tmp_path / "build")
    xz = build / f"{P}.xz"
    xz.write_bytes(xz.read_bytes()[:-40])
    with pytest.raises(ImageError, match="not a complete xz file"):
        importer.import_image(root, "leap", str(build))
    assert not (root / "images/leap").exists() and leftovers(root) == []


def test_incomplete_build_is_refused(root, tmp_path):
    build = kiwi_build(tmp_path / "build")
    (build / f"pxeboot.{P}.initrd").unlink()
    with pytest.raises(ImageError, match="lacks pxeboot initrd"):
        importer.import_image(root, "leap", str(build))
    (build / f"{P}.append").unlink()
    with pytest.raises(ImageError, match="expected one <P>.append, found none"):
        importer.import_image(root, "leap", str(build))
    assert not (root / "images/leap").exists() and leftovers(root) == []


UNSAFE = {  # member name -> (type, link target)
    "../evil": (tarfile.REGTYPE, ""),
    "/tmp/evil": (tarfile.REGTYPE, ""),
    "abs-link": (tarfile.SYMTYPE, "/etc/passwd"),
    "up-link": (tarfile.SYMTYPE, "sub/../../evil"),
    "hard-link": (tarfile.LNKTYPE, "../evil"),
    "fifo": (tarfile.FIFOTYPE, ""),
}


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_tar_member_is_refused(root, tmp_path, name):
    archive = make_tar(kiwi_build(tmp_path / "build"), tmp_path / "build.tar")
    member = tarfile.TarInfo(name)
    member.type, member.linkname = UNSAFE[name]
    member.size = 4 if member.isfile() else 0
    with tarfile.open(archive, "a") as tar:
        tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    with pytest.raises(UnsafeArchive, match="refusing archive member"):
        importer.import_image(root, "leap", str(archive))
    assert not (root / "images/leap").exists() and leftovers(root) == []
    assert not (root / "images/evil").exists() and not (root / "evil").exists()


def test_interrupted_import_leaves_nothing(root, tmp_path):
    archive = make_tar(kiwi_build(tmp_path / "build"), tmp_path / "build.tar")

    def ctrl_c_while_verifying(label, total):
        if label.startswith("Verifying"):
            raise KeyboardInterrupt
        return sources.silent(label, total)

    with pytest.raises(KeyboardInterrupt):
        importer.import_image(root, "leap", str(archive), progress=ctrl_c_while_verifying)
    assert not (root / "images/leap").exists() and leftovers(root) == []


def test_force_replaces_and_keeps_the_operators_templates(root, tmp_path):
    importer.import_image(root, "leap", str(kiwi_build(tmp_path / "one")))
    (root / "images/leap/host.ipxe").write_text("#!ipxe\necho mine\n")
    newer = kiwi_build(tmp_path / "two", disk=OTHER_DISK)
    with pytest.raises(ImageExists, match="--force"):
        importer.import_image(root, "leap", str(newer))
    done = importer.import_image(root, "leap", str(newer), force=True)
    assert done.verified.actual == hashlib.sha256(OTHER_DISK).hexdigest()
    assert done.notes == ["kept host.ipxe of the replaced image"]
    assert (root / "images/leap/host.ipxe").read_text() == "#!ipxe\necho mine\n"
    assert lzma.decompress((root / "images/leap" / f"{P}.xz").read_bytes()) == OTHER_DISK
    assert leftovers(root) == []


def test_failed_force_keeps_the_old_image(root, tmp_path):
    importer.import_image(root, "leap", str(kiwi_build(tmp_path / "one")))
    broken = kiwi_build(tmp_path / "two", disk=OTHER_DISK, digest="f" * 64)
    with pytest.raises(ChecksumMismatch):
        importer.import_image(root, "leap", str(broken), force=True)
    assert lzma.decompress((root / "images/leap" / f"{P}.xz").read_bytes()) == DISK
    assert leftovers(root) == []


def test_replacing_swaps_both_directories_in_one_step(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "version").write_text("1")
    (new / "version").write_text("2")
    if not importer._renameat2(new, old, importer.RENAME_EXCHANGE):
        pytest.skip("this filesystem cannot exchange directories; the importer falls back to two renames")
    assert (old / "version").read_text() == "2" and (new / "version").read_text() == "1"


def test_import_and_replace_without_renameat2(root, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "_renameat2", lambda source, target, flags: False)
    importer.import_image(root, "leap", str(kiwi_build(tmp_path / "one")))
    importer.import_image(root, "leap", str(kiwi_build(tmp_path / "two", disk=OTHER_DISK)), force=True)
    assert lzma.decompress((root / "images/leap" / f"{P}.xz").read_bytes()) == OTHER_DISK
    assert leftovers(root) == []


def test_templates_are_not_taken_from_archives(root, tmp_path):
    build = kiwi_build(tmp_path / "build")
    (build / "host.ipxe").write_text("#!ipxe\n{{ 7 * 6 }}\n")
    done = importer.import_image(root, "leap", str(make_tar(build, tmp_path / "build.tar")))
    assert not (root / "images/leap/host.ipxe").exists()
    assert done.notes and "host.ipxe" in done.notes[0]


@pytest.mark.parametrize("name", ["new", "finished", "a,b", "../x", ""])
def test_names_that_cannot_be_images(root, tmp_path, name):
    with pytest.raises(ImageError):
        importer.import_image(root, name, str(tmp_path))


# -- live ISO ----------------------------------------------------------------------


@pytest.mark.parametrize("over_http", [False, True], ids=["file", "url"])
def test_live_iso(root, tmp_path, web, over_http):
    served, url = web
    iso = make_iso(served / "Rescue.x86_64-1.0.iso", LIVE_FILES)
    done = importer.import_image(root, "rescue", f"{url}/{iso.name}" if over_http else str(iso))
    assert (done.kind, done.product, done.verified) == ("live", "Rescue.x86_64-1.0", None)
    directory = root / "images/rescue"
    assert (directory / "kernel").read_bytes() == b"LIVE KERNEL"
    assert (directory / "initrd").read_bytes() == b"LIVE INITRD"
    assert (directory / iso.name).read_bytes() == iso.read_bytes()
    append = (directory / "Rescue.x86_64-1.0.append").read_text()
    assert f"root=live:@IMAGE_URL@/{iso.name}" in append
    image = images.load(root, "rescue")
    assert (image.kernel, image.initrd, image.disk) == ("kernel", "initrd", None)
    script = boot_script(root, "rescue")
    assert f"root=live:{BASE}/images/rescue/{iso.name} " in script
    assert "rd.live.image" in script and "@IMAGE_URL@" not in script and "rd.kiwi.install.image" not in script
    assert f"initrd --name initrd {BASE}/images/rescue/initrd" in script
    status = inventory.describe(root, "rescue")
    assert (status.kind, status.missing, status.checksum) == ("live", [], "-")
    assert leftovers(root) == []


def test_iso_without_kiwi_loader_is_refused(root, tmp_path):
    iso = make_iso(tmp_path / "other.iso", {"isolinux/vmlinuz": b"K", "isolinux/initrd.img": b"I"})
    with pytest.raises(ImageError, match="no boot/<arch>/loader/linux and initrd"):
        importer.import_image(root, "other", str(iso))
    assert not (root / "images/other").exists() and leftovers(root) == []


def test_odd_iso_names_get_the_image_name(root, tmp_path):
    iso = make_iso(tmp_path / "My Rescue (1).iso", LIVE_FILES)
    importer.import_image(root, "rescue", str(iso))
    assert "root=live:@IMAGE_URL@/rescue.iso " in (root / "images/rescue/rescue.append").read_text()


def test_unknown_source_kinds_are_refused(root, tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ImageError, match="neither a tar archive"):
        importer.import_image(root, "leap", str(tmp_path / "notes.txt"))
    with pytest.raises(ImageError, match="does not exist"):
        importer.import_image(root, "leap", str(tmp_path / "nothing.tar"))
    assert leftovers(root) == []


# -- the commands ------------------------------------------------------------------


def run(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--root", str(root), "image", *args])


def table(output: str) -> dict[str, list[str]]:
    rows = [line.split(None, 4) for line in output.splitlines()]
    assert rows[0] == ["NAME", "KIND", "SIZE", "CHECKSUM", "MISSING"]
    return {row[0]: row[1:] for row in rows[1:]}


def test_cli_import_outside_a_site_is_refused_and_leaves_nothing(tmp_path):
    archive = make_tar(kiwi_build(tmp_path / "build"), tmp_path / f"{P}.install.tar")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run(elsewhere, "import", "leap", str(archive))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no database at {elsewhere / 'kiwispray.db'}: {elsewhere} is not a "
                                    "KIWIspray site (yet).")
    assert list(elsewhere.iterdir()) == []


def test_cli_import_list_check(root, tmp_path):
    archive = make_tar(kiwi_build(tmp_path / "build"), tmp_path / f"{P}.install.tar")
    result = run(root, "import", "leap", str(archive))
    assert result.exit_code == 0, result.output
    assert f"imported kiwi image leap ({P})" in result.stdout and "sha256" in result.stdout
    assert f"Verifying {P}.xz" in result.stderr  # the progress bar's label

    custom = root / "images/hand-made"
    custom.mkdir()
    (custom / "host.ipxe").write_text("#!ipxe\nexit\n")
    result = run(root, "list")
    assert result.exit_code == 0
    rows = table(result.stdout)
    assert rows["leap"][0] == "kiwi" and rows["leap"][2:] == ["ok", "-"]
    assert rows["hand-made"] == ["custom", "12B", "-", "-"]

    result = run(root, "list", "--json")
    assert result.exit_code == 0
    listed = {row["name"]: row for row in json.loads(result.stdout)}
    assert (
        listed["leap"]["checksum"] == "ok"
        and listed["leap"]["missing"] == []
        and listed["leap"]["size"] > len(DISK) // 100
    )

    result = run(root, "check", "leap")
    assert result.exit_code == 0, result.output
    assert f"leap: {P}.sha256 matches (sha256 {hashlib.sha256(DISK).hexdigest()}" in result.stdout


def test_cli_check_finds_a_damaged_disk(root, tmp_path):
    assert run(root, "import", "leap", str(kiwi_build(tmp_path / "build"))).exit_code == 0
    xz = root / "images/leap" / f"{P}.xz"
    xz.write_bytes(lzma.compress(OTHER_DISK))
    assert table(run(root, "list").stdout)["leap"][2] == "changed"

    result = run(root, "check", "leap")
    assert result.exit_code == 1
    assert "does not match" in result.stderr
    assert hashlib.sha256(DISK).hexdigest() in result.stderr and hashlib.sha256(OTHER_DISK).hexdigest() in result.stderr
    assert table(run(root, "list").stdout)["leap"][2] == "MISMATCH"

    (root / "images/leap" / f"pxeboot.{P}.initrd").unlink()
    assert table(run(root, "list").stdout)["leap"][3] == "initrd"
    result = run(root, "check", "leap")
    assert result.exit_code == 1 and "lacks initrd" in result.stderr


def test_cli_check_of_a_corrupted_xz_stream_records_the_mismatch(root, tmp_path):
    """A disk damaged in place (same size, a bad block): check fails and the listing says MISMATCH."""
    assert run(root, "import", "leap", str(kiwi_build(tmp_path / "build"))).exit_code == 0
    xz = root / "images/leap" / f"{P}.xz"
    data = bytearray(xz.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\xff" * 16
    xz.write_bytes(bytes(data))
    result = run(root, "check", "leap")
    assert result.exit_code == 1
    assert f"{P}.xz is damaged: not a complete xz file" in result.stderr and "fetch it again" in result.stderr
    assert "Traceback" not in result.stderr
    assert table(run(root, "list").stdout)["leap"][2] == "MISMATCH"


def test_cli_refusals_are_sentences(root, tmp_path):
    bad = kiwi_build(tmp_path / "bad", digest="0" * 64)
    result = run(root, "import", "leap", str(bad))
    assert result.exit_code == 1 and "Error: " in result.stderr and "fetch it again" in result.stderr
    assert not (root / "images/leap").exists()

    assert run(root, "import", "leap", str(kiwi_build(tmp_path / "good"))).exit_code == 0
    result = run(root, "import", "leap", str(tmp_path / "good"))
    assert result.exit_code == 1 and "pass --force" in result.stderr
    result = run(root, "import", "other", str(tmp_path / "missing"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = run(root, "check", "nope")
    assert result.exit_code == 1 and "no image 'nope'" in result.stderr and "leap" in result.stderr


def test_cli_no_verify(root, tmp_path):
    result = run(root, "import", "--no-verify", "leap", str(kiwi_build(tmp_path / "build", digest="0" * 64)))
    assert result.exit_code == 0 and "NOT verified" in result.stdout
    assert table(run(root, "list").stdout)["leap"][2] == "unchecked"


def test_cli_list_without_images(root):
    result = run(root, "list")
    assert result.exit_code == 0 and "no images yet" in result.stdout
    (root / "images/.import-leap-x1y2").mkdir(parents=True)  # what kill -9 during an import leaves
    result = run(root, "list")
    assert result.exit_code == 0 and "images/.import-leap-x1y2 is an import in progress" in result.stderr
    assert json.loads(run(root, "list", "--json").stdout) == []
