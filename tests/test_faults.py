"""Faults a site meets, on a real ``kiwispray serve``: the disk under the database fills up, a worker dies mid-download.

A boot refused for a fault gets a script that asks again with everything it
sent; the API and the commands say what is wrong; the log says it once a
while, not once per request; the server recovers by itself.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from helpers import cli_env, make_image, run_edit_host
from server import ServerProcess, mac

pytestmark = pytest.mark.e2e

DISK_FULL = "the disk under the database is full"


@pytest.fixture
def tiny_root(tmp_path):
    """A site root on its own 1.2 MB file system (a tmpfs), so that the database's disk can fill up."""
    site = tmp_path / "site"
    site.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k,mode=0755", "tmpfs", str(site)], check=True)
    try:
        make_image(site, "wipe", "Wipe")
        make_image(site, "image1")
        yield site
    finally:
        # Lazily: the server's workers, killed with it, may still be closing their files.
        subprocess.run(["umount", "--lazy", str(site)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def boot(srv: ServerProcess, i: int) -> requests.Response:
    return requests.get(srv.url + "/bootstrap", params={"net0": mac(i), "serial": f"M{i:05d}", "product": "R640"},
                        timeout=30)


def test_a_full_disk_under_the_database_makes_machines_ask_again(tiny_root):
    site = tiny_root
    env = {"KS_REGISTRATIONS_PER_MINUTE": "0"}
    with ServerProcess(site, "--workers", "2", env=env) as srv:
        token = subprocess.run([sys.executable, "-m", "ks", "token", "create", "ops", "--role", "operator"],
                               env=cli_env(site), capture_output=True, text=True, check=True).stdout.splitlines()[0]
        assert "#!ipxe" in boot(srv, 0).text
        (site / "reserve").write_bytes(b"\0" * 256 * 1024)  # what returns when space returns
        fill(site / "filler")
        registered, refused = {0}, None
        for i in range(1, 400):  # the database's files have some room left in pages they hold
            r = boot(srv, i)
            assert r.status_code == 200 and r.text.startswith("#!ipxe"), r.text
            if DISK_FULL in r.text:
                refused, first_refusal = i, time.monotonic()
                break
            registered.add(i)
        assert refused is not None, "the database never filled its disk"
        # The machine waits and asks again with everything it sent: its facts too.
        chain = next(line for line in r.text.splitlines() if line.startswith("chain "))
        assert f"/bootstrap?net0={mac(refused)}&serial=M{refused:05d}&product=R640 " in chain
        for i in range(refused, refused + 20):
            assert DISK_FULL in boot(srv, i).text
        # The API and edit-host say so.
        api = requests.patch(f"{srv.url}/api/v1/hosts/1", json={"hostname": "node01"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert api.status_code == 503 and DISK_FULL in api.json()["error"], api.text
        edit = run_edit_host(site, "-i", "1", "-n", "node01", check=False)
        assert edit.returncode == 75 and DISK_FULL in edit.stderr and "Traceback" not in edit.stderr, edit.stderr
        # The log says it once per worker and minute, with no traceback.
        log = srv.log()
        assert "Traceback" not in log, log
        minutes = 1 + int((time.monotonic() - first_refusal) // 60)
        assert 1 <= log.count(DISK_FULL) <= 2 * (minutes + 1) < 20, log
        # Space returns: the same server takes the waiting machines, nothing acknowledged is lost.
        (site / "filler").unlink()
        (site / "reserve").unlink()
        for i in range(refused, refused + 5):
            r = boot(srv, i)
            assert r.status_code == 200 and DISK_FULL not in r.text, r.text
        hosts = requests.get(srv.url + "/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        macs = [m for host in hosts.json()["hosts"] for m in host["macs"]]
        expected = registered | set(range(refused, refused + 5))
        assert sorted(macs) == sorted(mac(i).replace("-", ":") for i in expected)


DISK_SIZE = 64 * 1024 * 1024


def test_a_worker_killed_mid_download_leaves_how_far_it_got_in_the_history(root):
    disk = root / "images" / "image1" / "Image1.xz"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    with ServerProcess(root, "--workers", "1", "--threads", "4", env={"KS_SEND_TIMEOUT": "120"}) as srv:
        assert "#!ipxe" in boot(srv, 1).text
        run_edit_host(root, "-i", "1", "-s", "image1")
        assert "Image1" in boot(srv, 1).text  # booted into image1 from this address: its download is counted
        downloader = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        downloader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        downloader.sendall(b"GET /images/image1/Image1.xz HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < DISK_SIZE // 4:
            received += len(downloader.recv(1 << 20))
        # The count reaches the database while the download runs (every 10 % or 3 s).
        for _ in range(100):
            listing = run_edit_host(root, "-l", "--progress", "-i", "1").stdout
            if "downloading" in listing and "downloading 0 %" not in listing:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(listing)
        worker = int(Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()[0])
        os.kill(worker, signal.SIGKILL)
        downloader.settimeout(30)
        try:
            while downloader.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        downloader.close()
        # The server (a new worker) serves the next request, and the machine boots again.
        assert requests.get(srv.url + "/bootstrap.ipxe", timeout=30).status_code == 200
        assert "Image1" in boot(srv, 1).text
        history = run_edit_host(root, "-i", "1", "--history").stdout
        line = next(line for line in history.splitlines() if "download" in line)
        assert f"of {DISK_SIZE} bytes" in line and "stopped" in line, history
