"""A private PostgreSQL server for tests: initdb in a temp dir, loopback only, stopped at the end.

Debian's ``postgresql`` package provides the binaries (scripts/install-system-deps.sh
installs it). The server runs as the ``postgres`` system user when the tests run as root.
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL is missing: install the Debian package postgresql (scripts/install-system-deps.sh)")
    return Path(found[-1]).parent


class PostgresServer:
    """One throw-away cluster; ``new_database()`` gives each test its own database."""

    def __init__(self, port: int):
        self.port = port
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="ks-pg-"))
        self.data = self.dir / "data"
        self.user = None
        if os.geteuid() == 0:  # postgres refuses to run as root
            self.user = pwd.getpwnam("postgres")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str) -> None:
        def demote():
            if self.user:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)

        subprocess.run(args, check=True, preexec_fn=demote, capture_output=True, cwd=self.dir)

    def start(self) -> "PostgresServer":
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self._launch()

    @property
    def pid(self) -> int:
        """The postmaster's PID, from the file it keeps in its data directory."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def restart(self) -> None:
        """Shut the server down as a crash would (SIGQUIT to its PID: every client cut off), then start it again."""
        pid = self.pid
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():  # not our child: wait until its PID is gone
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL (PID {pid}) did not stop within 30 s")
            time.sleep(0.05)
        self._launch()

    def _launch(self) -> "PostgresServer":
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.admin_dsn, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = "ks_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
