"""One boot lab: a private network with dnsmasq (run from the shipped dnsmasq.conf.example),
``kiwispray serve`` on a fresh site root, and machines in QEMU.

    lab = Lab(workdir, cache)
    lab.start()
    machine = lab.machine("uefi")
    console = machine.boot()
    lab.close()

``cache`` is the directory that scripts/build-test-guest.sh fills: a small stand-in
machine (kernel and busybox initrd), also packed as a KIWI build, which the lab imports
as ``images/image1``.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ks
from ks.core import dnsmasq as dnsmasq_conf
from ks.lab.machine import Machine
from ks.lab.namespace import Namespace

# Where the lab's commands import ks from: the same ks as this process's.
PACKAGE_PARENT = Path(ks.__file__).resolve().parents[1]
# Where scripts/build-test-guest.sh puts the stand-in machine (unless KS_E2E_CACHE names another directory).
DEFAULT_CACHE = "/var/cache/kiwispray-test/e2e"
ADDRESS = "192.168.42.1"
PORT = 5000
DHCP_RANGE = "192.168.42.100,192.168.42.199,1h"
IPXE_BINARIES = ("/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi")
# What a site's boot-files directory holds for Secure Boot and HTTP Boot (dnsmasq.conf.example):
# the name served, and the Debian file (package) behind it.
BOOT_FILES = {
    "shimx64.efi": ("/usr/lib/shim/shimx64.efi.signed", "shim-signed"),
    "grubx64.efi": ("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub-efi-amd64-signed"),
    "undionly.kpxe": ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
    "snponly.efi": ("/usr/lib/ipxe/snponly.efi", "ipxe"),
}

# GET a URL from inside the namespace, bypassing any proxy of the environment.
FETCH = (
    "import sys, urllib.request as u;"
    "r = u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=5);"
    "sys.stdout.write(r.read().decode())"
)


def tail(path: Path, size: int = 3000) -> str:
    """The end of a log file, for failure messages."""
    return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"


class Lab:
    """One private boot network with its dnsmasq, server and site root."""

    def __init__(self, workdir: Path, cache: Path, settings: dict | None = None, dnsmasq: Sequence[str] = (),
                 prefix: str = "ks-e2e", variants: Sequence[Callable[[str], str]] = ()):
        """``settings``: KS_* variables for the server and the commands;
        ``dnsmasq``: lines appended to the example's configuration;
        ``prefix``: of the namespace's name;
        ``variants``: changes of the example its comments describe (``ks.core.dnsmasq``), in order."""
        self.workdir = workdir
        self.cache = cache
        self.settings = dict(settings or {})
        self.dnsmasq_additions = list(dnsmasq)
        self.variants = list(variants)
        self.root = workdir / "site"
        self.tftp = workdir / "tftp"
        self.namespace = Namespace(ADDRESS, prefix)
        self.base_url = f"http://{ADDRESS}:{PORT}"
        self.server_log = workdir / "server.log"
        self.dnsmasq_log = workdir / "dnsmasq.log"

    def env(self) -> dict:
        """Environment of KIWIspray commands: this ks, the lab's KS_* settings and no outside ones."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
        env.update(self.settings)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
        return env

    def start(self, poll_interval: int = 2) -> "Lab":
        """Create the site, the network, dnsmasq and the server."""
        self.make_site()
        self.namespace.create()
        self._start_dnsmasq()
        self._start_server(poll_interval)
        return self

    def make_site(self) -> None:
        """The site root, with images/image1: the stand-in machine as a KIWI build, imported the operator's way."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.kiwispray("db", "upgrade")  # a site is a directory with its database; image import asks for one
        (build,) = self.cache.glob("*.install.tar")
        self.kiwispray("image", "import", "image1", build)

    def link_boot_files(self) -> Path:
        """``<root>/boot-files`` linked to Debian's signed shim and GRUB and to iPXE, as a site sets it up."""
        directory = self.root / "boot-files"
        directory.mkdir(parents=True, exist_ok=True)
        for name, (target, package) in BOOT_FILES.items():
            if not Path(target).is_file():
                raise RuntimeError(f"{target} is missing: install the Debian package {package}")
            (directory / name).symlink_to(target)
        return directory

    def close(self) -> None:
        """Stop everything and delete the network."""
        self.namespace.close()

    def _start_dnsmasq(self) -> None:
        self.tftp.mkdir()
        for binary in IPXE_BINARIES:
            shutil.copy(binary, self.tftp)
        w = self.workdir
        # user=root: dnsmasq would run as nobody, which cannot write into the lab's directory.
        # Router advertisements: iPXE configures IPv6 beside DHCPv4 before it boots, and
        # on a network without them it waits about 13 s for one at every boot.
        additions = [
            "port=0", "bind-interfaces", "log-dhcp", "user=root",
            "enable-ra", f"dhcp-range=::,constructor:{self.namespace.bridge},ra-only",
            f"dhcp-leasefile={w / 'dnsmasq.leases'}", f"log-facility={self.dnsmasq_log}",
            f"pid-file={w / 'dnsmasq.pid'}",
            *self.dnsmasq_additions,
        ]  # fmt: skip
        conf = w / "dnsmasq.conf"
        text = dnsmasq_conf.configure(dnsmasq_conf.example(), self.namespace.bridge, DHCP_RANGE, str(self.tftp),
                                      additions)
        for variant in self.variants:
            text = variant(text)
        conf.write_text(text)
        process = self.namespace.start(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"], w / "dnsmasq.out")
        deadline = time.monotonic() + 10
        while "started" not in tail(self.dnsmasq_log):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start:\n{tail(w / 'dnsmasq.out')}\n{tail(self.dnsmasq_log)}")
            time.sleep(0.1)

    def _start_server(self, poll_interval: int) -> None:
        argv = [
            sys.executable, "-m", "ks", "--root", str(self.root), "serve", "--host", "0.0.0.0", "--port", str(PORT),
            "--poll-interval", str(poll_interval), "--workers", "1", "--access-log", "--public-hosts",
        ]  # fmt: skip
        process = self.namespace.start(argv, self.server_log, env=self.env())
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/hosts")
                return
            except RuntimeError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kiwispray serve did not start:\n{tail(self.server_log)}") from None
                time.sleep(0.3)

    def get(self, path: str) -> str:
        """GET a path of the server, from inside the network."""
        argv = self.namespace.command([sys.executable, "-c", FETCH, self.base_url + path])
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"GET {path} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def command(self, module: str, *args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        """``python -m MODULE --root SITE ARGS``: a command as an operator runs it (``env``: more variables)."""
        argv = [sys.executable, "-m", module, "--root", str(self.root), *map(str, args)]
        done = subprocess.run(argv, capture_output=True, text=True, env={**self.env(), **(env or {})})
        if check and done.returncode != 0:
            raise AssertionError(f"{module} {' '.join(map(str, args))} exited {done.returncode}: {done.stderr}")
        return done

    def register(self, machine: Machine) -> str:
        """Make a machine known the way its iPXE would, with one /bootstrap request; the script answered."""
        mac = machine.mac.replace(":", "-")
        return self.get(f"/bootstrap?net0={mac}&serial={machine.serial}&uuid={machine.uuid}")

    def kiwispray(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        """``kiwispray --root SITE ARGS``."""
        return self.command("ks", *args, check=check)

    def edit_host(self, *args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        """``edit-host --root SITE ARGS``."""
        return self.command("ks.cli.edit_host", *args, check=check, env=env)

    def hosts(self) -> list[dict]:
        """All hosts, from ``edit-host --json``."""
        return json.loads(self.edit_host("--json").stdout)

    def history(self, host_id: int) -> list[dict]:
        """A host's history, from ``edit-host --history --json``."""
        return json.loads(self.edit_host("-i", host_id, "--history", "--json").stdout)

    def machine(self, firmware: str, **identity) -> Machine:
        """A machine on this network."""
        return Machine(self.namespace, self.workdir, firmware, **identity)
