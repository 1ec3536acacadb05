"""Image directories under ``images/``: what they hold and which files may be served.

An image is a directory ``images/<name>/``. A KIWI ``oem`` PXE build puts a
kernel, an initrd, the compressed disk ``<P>.xz`` and the kernel command line
``<P>.append`` there; the names differ between KIWI versions, so the files are
found by the patterns below, first match wins.

An ``.append`` may contain ``@IMAGE_URL@``; scripts get the image directory's
URL there (``<base URL>/images/<name>``). The URL depends on how machines reach
the server, so files on disk cannot hold it: a live ISO's ``.append`` says
``root=live:@IMAGE_URL@/<file>.iso`` (see ks.kiwi.live).
"""

import logging
import os
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ks.boot.loaders import IPXE, LOADERS, Loader
from ks.core import states
from ks.core.errors import NotFound

KERNEL_NAMES = ("kernel", "pxeboot.kernel", "pxeboot.{p}.kernel", "{p}.kernel", "linux", "vmlinuz")
INITRD_NAMES = (
    "initrd",
    "pxeboot.initrd.xz",
    "pxeboot.{p}.initrd.xz",
    "pxeboot.{p}.initrd",
    "pxeboot.initrd",
    "{p}.initrd",
    "initrd.img",
)
# KIWI's own .append carries a placeholder install image URL; ours replaces it.
REPLACED_ARGS = ("rd.kiwi.install.image=",)
IMAGE_URL = "@IMAGE_URL@"
# Per-image settings, e.g. ``deploy_timeout = 5400``.
SETTINGS_FILE = "kiwispray.toml"
# The installed system's cloud-init files that an image directory may hold as templates (see ks.boot.nocloud).
CLOUD_FILES = ("user-data", "vendor-data", "network-config")
# The installed system's Ignition config template (see ks.boot.ignition).
IGNITION_FILE = "config.ign"
# Templates of what the installed system reads on its first boot.
FIRST_BOOT_FILES = (*CLOUD_FILES, IGNITION_FILE)
# An operator's templates in an image directory (see ks.boot.render).
TEMPLATE_FILES = ("host.ipxe", "host.tmpl", "host.grub", "host.grub.tmpl", "post_install.sh", "post_install.tmpl",
                  *FIRST_BOOT_FILES)
# Never served: templates show how a site installs its machines (and may hold
# credentials), settings and dotfiles (.kiwispray.json: where an image came from) are
# for this server. Everything else in an image directory is the image.
PRIVATE_FILES = frozenset(TEMPLATE_FILES + (SETTINGS_FILE,))

log = logging.getLogger(__name__)


@dataclass
class Image:
    """The bootable parts of one image directory (names relative to it)."""

    name: str
    path: Path
    product: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    disk: str | None = None
    append: str = ""
    files: list[str] = field(default_factory=list)

    def context(self, base_url: str) -> dict:
        """The ``image`` variable of templates: ``url`` for HTTP, ``path`` on the TFTP server (GRUB)."""
        url = f"{base_url}/images/{self.name}"
        return {
            "name": self.name,
            "url": url,
            "path": f"/images/{self.name}",
            "kernel": self.kernel,
            "initrd": self.initrd,
            "xz": self.disk,
            "append": self.append.replace(IMAGE_URL, url),
            "files": self.files,
        }


def images_dir(root: str | Path) -> Path:
    """The ``images/`` directory of a site root."""
    return Path(root) / "images"


def image_names(root: str | Path) -> set[str]:
    """Names of all image directories (valid state names only)."""
    base = images_dir(root)
    if not base.is_dir():
        return set()
    return {
        entry.name
        for entry in os.scandir(base)
        if entry.is_dir() and states.NAME_PATTERN.fullmatch(entry.name) and states.is_image(entry.name)
    }


def catalog(root: str | Path) -> dict[str, str]:
    """Every image (see ``image_names``) with why it cannot boot, "" when it can (see ``unbootable``)."""
    return {name: unbootable(root, name) for name in image_names(root)}


def own_templates(root: str | Path, name: str, loader: Loader = IPXE) -> tuple[Path, ...]:
    """``loader``'s boot templates made for state ``name`` alone, in ks.boot.render's order of lookup."""
    return loader.own_templates(images_dir(root) / name, Path(root) / "templates", name)


def unbootable(root: str | Path, name: str) -> str:
    """Why image ``name`` cannot boot, "" when it can.

    The generic KIWI template boots a kernel and an initrd; a boot template of
    the state's own (``own_templates``, of any loader) boots whatever it says.
    """
    image = load(root, name)
    if image is None:
        return f"images/{name}/ does not exist"
    if image.kernel and image.initrd:
        return ""
    if any(path.is_file() for loader in LOADERS.values() for path in own_templates(root, name, loader)):
        return ""
    missing = " and ".join(part for part, found in (("no kernel", image.kernel), ("no initrd", image.initrd))
                           if not found)
    return f"images/{name}/ has {missing} (nor a host.ipxe of its own)"


def _first(directory: Path, patterns, product: str | None) -> str | None:
    for pattern in patterns:
        if "{p}" in pattern and not product:
            continue
        name = pattern.format(p=product)
        if (directory / name).is_file():
            return name
    return None


def clean_append(text: str) -> str:
    """The ``.append`` command line without the arguments KIWIspray sets itself."""
    return " ".join(arg for arg in text.split() if not arg.startswith(REPLACED_ARGS))


def load(root: str | Path, name: str) -> Image | None:
    """Describe ``images/<name>/``, or None if there is no such image.

    Every boot of a machine in an image asks; the answer is kept while the directory and its
    ``.append`` file are unchanged (two ``stat`` calls instead of listing the directory). A
    change less than ``RACY_SECONDS`` old is not trusted to be told apart by its time stamp:
    such a directory is read every time until it is older. The ``Image`` returned may be
    shared: callers read it, never change it.
    """
    if not states.NAME_PATTERN.fullmatch(name) or not states.is_image(name):
        return None
    directory = images_dir(root) / name
    try:
        st = os.stat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    key = (st.st_ino, st.st_mtime_ns)
    cached = _loaded.get(directory)
    if cached is not None and cached[0] == key and cached[1] == _append_key(cached[2]):
        return cached[2]
    image = _read(directory, name)
    append = _append_key(image)
    now = time.time()
    if now - st.st_mtime > RACY_SECONDS and (append is None or now - append[1] / 1e9 > RACY_SECONDS):
        if len(_loaded) >= MAX_LOADED:
            _loaded.clear()
        _loaded[directory] = (key, append, image)
    return image


# What ``load`` keeps: directory -> (its validators, its .append file's, the Image).
_loaded: dict[Path, tuple[tuple, tuple | None, "Image"]] = {}
RACY_SECONDS = 2.0
MAX_LOADED = 1024


def _append_key(image: Image) -> tuple | None:
    if not image.product:
        return None
    try:
        st = os.stat(image.path / f"{image.product}.append")
    except OSError:
        return (0, 0, 0)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read(directory: Path, name: str) -> Image:
    files = sorted(p.name for p in directory.iterdir() if p.is_file())
    appends = [f for f in files if f.endswith(".append")]
    product = appends[0][: -len(".append")] if appends else None
    image = Image(name=name, path=directory, product=product, files=files)
    image.kernel = _first(directory, KERNEL_NAMES, product)
    image.initrd = _first(directory, INITRD_NAMES, product)
    if product and (directory / f"{product}.xz").is_file():
        image.disk = f"{product}.xz"
    if appends:
        image.append = clean_append((directory / appends[0]).read_text(errors="replace"))
    return image


def deploy_timeout(root: str | Path, name: str, default: int) -> int:
    """Seconds image ``name`` may take from its first boot to /finish (0: no limit).

    ``deploy_timeout`` in ``images/<name>/kiwispray.toml``, else ``default``. A
    broken file must not break boots: it is reported and the default applies.
    """
    path = images_dir(root) / name / SETTINGS_FILE
    try:
        value = tomllib.loads(path.read_text(encoding="utf-8")).get("deploy_timeout", default)
    except FileNotFoundError:
        return default
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("%s is unreadable (%s); using the default deploy timeout of %d s", path, exc, default)
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        log.warning("%s: deploy_timeout must be 0 or more seconds, not %r; using %d s", path, value, default)
        return default
    return value


class DeployTimeouts:
    """``deploy_timeout`` of each image for the boot path: each file is read at most every ``ttl`` seconds."""

    def __init__(self, root: str | Path, default: int, ttl: float = 5.0):
        self.root = root
        self.default = default
        self.ttl = ttl
        self._cache: dict[str, tuple[float, int]] = {}

    def __call__(self, name: str) -> int:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached and cached[0] > now:
            return cached[1]
        seconds = deploy_timeout(self.root, name, self.default)
        self._cache[name] = (now + self.ttl, seconds)
        return seconds


def resolve_file(root: str | Path, relpath: str) -> Path:
    """The real path of ``images/<relpath>``; NotFound for anything but an image's own files.

    Refuses ``..`` components, absolute paths, NUL bytes, directories,
    symlinks whose target leaves ``images/``, and the private files of an
    image directory (``PRIVATE_FILES``, dotfiles, anything in a dot-directory),
    by the name asked for and by the name a symlink leads to.
    """
    base = images_dir(root).resolve()
    parts = relpath.split("/")
    if "\x00" in relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise NotFound("no such image file")
    candidate = (base / relpath).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        raise NotFound("no such image file")
    if _private(parts) or _private(candidate.relative_to(base).parts):
        raise NotFound("no such image file")
    return candidate


def resolve_boot_file(directory: str | Path, name: str) -> Path:
    """The real path of boot file ``name`` in ``directory`` (``KS_BOOT_FILES``); NotFound for anything else.

    One file name, no dotfile; a symlink may lead anywhere (a site links Debian's
    ``/usr/lib/shim/shimx64.efi.signed``), as long as it leads to a file.
    """
    if not name or "/" in name or "\x00" in name or name.startswith("."):
        raise NotFound("no such boot file")
    candidate = Path(directory) / name
    if not candidate.is_file():
        raise NotFound("no such boot file")
    return candidate.resolve()


def _private(parts) -> bool:
    return parts[-1] in PRIVATE_FILES or any(part.startswith(".") for part in parts)
