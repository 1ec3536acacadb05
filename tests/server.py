"""A real ``kiwispray serve`` process for tests: start, wait until it answers, stop or kill."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from helpers import cli_env, free_port

# What the script of a boot the database could not take says (ks.records.db's messages of ks.core.errors.Unavailable).
REFUSED = "nothing was written"


class ServerProcess:
    """``python -m ks serve`` in its own process group, logging to a file."""

    def __init__(self, root: Path, *args: str, port: int | None = None, env: dict | None = None,
                 in_root: bool = False):
        """``in_root``: run in ``root`` without KS_ROOT, as an operator does in a site (or a checkout)."""
        self.root = root
        self.in_root = in_root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        # TMPDIR: the metrics directory of a killed server stays with the test's files.
        self.env = {**cli_env(root), "TMPDIR": str(root.parent), **(env or {})}
        self.log_path = root.parent / f"serve-{self.port}.log"
        if in_root:
            del self.env["KS_ROOT"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "ServerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ks", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.root if self.in_root else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(self.url + "/hosts", timeout=1)
                return self
            # A loaded machine may accept before its workers answer: not an error, wait on.
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as an init system would; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (master and workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


class SourceAddress(HTTPAdapter):
    """requests from a given local address (another machine, on loopback)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def from_address(address: str) -> requests.Session:
    """A session whose requests come from ``address``: all of 127/8 is loopback on Linux."""
    session = requests.Session()
    session.mount("http://", SourceAddress(address))
    return session


def address(i: int) -> str:
    """The address test machine ``i`` boots from, as its own DHCP lease would give it."""
    return f"127.1.{i // 250 % 250 + 1}.{i % 250 + 1}"


def mac(i: int) -> str:
    """The MAC of test machine ``i``."""
    return f"52-54-01-{i >> 16 & 255:02x}-{i >> 8 & 255:02x}-{i & 255:02x}"


class Storm:
    """Machines that keep retrying /bootstrap until they get a 200, like iPXE's bootstrap script."""

    def __init__(self, servers: list["ServerProcess"]):
        self.servers = servers
        self.acked: dict[str, int] = {}  # MAC -> times it got a 200
        self.errors = 0
        self.refused = 0  # answers that said the database took nothing (ks.core.errors.Unavailable)
        self.lock = threading.Lock()

    def machine(self, i: int, server: int | None = None) -> None:
        """Boot machine ``i`` once (through servers[server], default: split by i), from its own address."""
        srv = self.servers[i % len(self.servers) if server is None else server]
        for _attempt in range(200):
            try:
                with from_address(address(i)) as session:
                    r = session.get(srv.url + "/bootstrap", params={"net0": mac(i), "serial": f"M{i:05d}"},
                                    timeout=10)
            except requests.RequestException:
                with self.lock:
                    self.errors += 1
                time.sleep(0.2)
                continue
            assert r.status_code == 200, r.text
            if REFUSED in r.text:  # the busy script: the database took nothing, the machine asks again
                with self.lock:
                    self.refused += 1
                time.sleep(0.2)
                continue
            with self.lock:
                self.acked[mac(i)] = self.acked.get(mac(i), 0) + 1
            return r.text
        raise AssertionError(f"machine {i} got no answer in 200 tries")

    def verify(self, url: str, machines: int, changes: dict[str, str]) -> dict[str, int]:
        """Assert what the storm must leave behind; returns MAC -> host id.

        One host per machine, every acknowledged registration present once, and every
        acknowledged state change (MAC -> chain) as the operator left it.
        """
        from sqlalchemy import select

        from ks.records.db import Database
        from ks.records.models import Host, HostMac

        db = Database(url)
        try:
            with db.read() as session:
                owners: dict[str, list[int]] = {}
                for host_mac in session.scalars(select(HostMac)):
                    owners.setdefault(host_mac.mac.replace(":", "-"), []).append(host_mac.host_id)
                states = {h.id: h.state for h in session.scalars(select(Host))}
        finally:
            db.dispose()
        assert len(states) == machines, "one host per machine, no duplicates"
        for m in self.acked:
            assert len(owners.get(m, [])) == 1, f"acknowledged registration of {m} is missing or duplicated"
        for m, state in changes.items():
            assert states[owners[m][0]] == state, f"acknowledged change of {m} to {state} was lost"
        return {m: ids[0] for m, ids in owners.items()}
