"""Image files through a real ``kiwispray serve``: raw requests, a 64 MiB file, sendfile, stalled clients, nginx."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from helpers import REPO, free_port, require_command, run_edit_host
from server import ServerProcess

pytestmark = pytest.mark.e2e

BIG = 64 * 1024 * 1024
KERNEL = b"kernel-image1"


def make_big(path: Path) -> bytes:
    """A sparse 64 MiB file with distinct bytes every MiB and at its end; returns its content."""
    with open(path, "wb") as f:
        f.truncate(BIG)
        for offset in [*range(0, BIG, 1024 * 1024), BIG - 4096]:
            f.seek(offset)
            f.write(hashlib.sha256(str(offset).encode()).digest() * 128)
    return path.read_bytes()


@pytest.fixture
def big(root) -> bytes:
    return make_big(root / "images" / "image1" / "big.raw")


@pytest.fixture
def server(root, big):
    with ServerProcess(root, "--workers", "1", "--threads", "4") as srv:
        yield srv


class Reply:
    """A response read off the wire as the server sent it."""

    def __init__(self, data: bytes):
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


def raw(port: int, path: str, method: str = "GET", headers: dict | None = None) -> Reply:
    """One request on its own connection, read until the server closes it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while data := s.recv(1 << 20):
            chunks.append(data)
    return Reply(b"".join(chunks))


def check_file_semantics(port: int) -> None:
    """What any front (kiwispray alone, or nginx before it) must answer for an image file."""
    full = raw(port, "/images/image1/pxeboot.kernel")
    assert (full.status, full.body, full.headers["content-length"]) == (200, KERNEL, "13")
    assert full.headers["content-type"] == "application/octet-stream"
    assert full.headers["accept-ranges"] == "bytes"
    etag = full.headers["etag"]
    head = raw(port, "/images/image1/pxeboot.kernel", "HEAD")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "13")
    part = raw(port, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=7-"})
    assert (part.status, part.body, part.headers["content-range"]) == (206, b"image1", "bytes 7-12/13")
    assert part.headers["content-length"] == "6"
    bad = raw(port, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=13-20"})
    assert (bad.status, bad.headers["content-range"]) == (416, "bytes */13")
    assert KERNEL not in bad.body
    cached = raw(port, "/images/image1/pxeboot.kernel", headers={"If-None-Match": etag})
    assert (cached.status, cached.body) == (304, b"")
    since = raw(port, "/images/image1/pxeboot.kernel", headers={"If-Modified-Since": full.headers["last-modified"]})
    assert since.status == 304
    resumed = raw(port, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=7-", "If-Range": etag})
    assert (resumed.status, resumed.body) == (206, b"image1")
    changed = raw(port, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=7-", "If-Range": '"old"'})
    assert (changed.status, changed.body) == (200, KERNEL)
    text = raw(port, "/images/image1/Image1.append")
    assert text.status == 200 and text.headers["content-type"].startswith("text/plain")
    for path in (
        "/images/../kiwispray.db",
        "/images/image1/../../kiwispray.db",
        "/images/image1/missing",
        "/images/image1",
    ):
        assert raw(port, path).status in (400, 404), path


def check_big_file(port: int, big: bytes) -> None:
    whole = raw(port, "/images/image1/big.raw")
    assert whole.status == 200 and whole.headers["content-length"] == str(BIG)
    assert hashlib.sha256(whole.body).digest() == hashlib.sha256(big).digest()
    start, end = 1_000_001, 33_554_431
    part = raw(port, "/images/image1/big.raw", headers={"Range": f"bytes={start}-{end}"})
    assert part.status == 206 and part.headers["content-range"] == f"bytes {start}-{end}/{BIG}"
    assert part.body == big[start:end + 1]
    tail = raw(port, "/images/image1/big.raw", headers={"Range": "bytes=-5000"})
    assert tail.status == 206 and tail.body == big[-5000:]


def test_file_semantics_on_the_wire(server):
    check_file_semantics(server.port)


def test_large_file_arrives_intact(server, big):
    check_big_file(server.port, big)


def worker_pids(srv: ServerProcess) -> list[int]:
    children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def traced_calls(log: Path) -> list[tuple[str, str, int]]:
    """The system calls of ``strace -ff -o log``: (name, arguments, result) of each, thread by thread.

    One file per thread (``log.<tid>``), so no call is split into ``<unfinished ...>`` and
    ``<... resumed>`` halves by a call of another thread; a call interrupted by a signal is
    still joined to its end."""
    calls = []
    for path in sorted(log.parent.glob(log.name + ".*")):
        pending = ""
        for line in path.read_text().splitlines():
            if line.endswith("<unfinished ...>"):
                pending = line.removesuffix("<unfinished ...>")
                continue
            if line.startswith("<... "):
                line = pending + line.split("resumed>", 1)[1]
            pending = ""
            name, paren, rest = line.partition("(")
            arguments, equals, result = rest.rpartition(") = ")
            if paren and equals and result.split()[0].lstrip("-").isdigit():
                calls.append((name, arguments, int(result.split()[0])))
    return calls


def test_downloads_use_sendfile_from_the_requested_offset(server, root, tmp_path):
    strace = require_command("strace", "strace")
    log = tmp_path / "strace.log"
    pids = [arg for pid in worker_pids(server) for arg in ("-p", str(pid))]
    tracer = subprocess.Popen([strace, "-ff", "-y", "-e", "trace=sendfile,read,pread64,readv", "-o", str(log), *pids],
                              stderr=subprocess.PIPE, text=True)
    try:
        # strace says "Process N attached" once per -p, after it attached every thread of N.
        for _ in range(len(pids) // 2):
            assert "attached" in tracer.stderr.readline()
        assert raw(server.port, "/images/image1/big.raw", headers={"Range": "bytes=1000000-"}).status == 206
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=10)
    calls = [(name, arguments, result) for name, arguments, result in traced_calls(log) if "big.raw" in arguments]
    sent = [(arguments, result) for name, arguments, result in calls
            if name == "sendfile" and "big.raw" in arguments.split(",")[1]]
    assert sent, calls
    assert not [name for name, _, _ in calls if "read" in name], "the file was read into Python"
    # Python passes the offset to sendfile: the first call starts at the range's first byte.
    assert "[1000000]" in sent[0][0]
    assert sum(result for _, result in sent if result > 0) == BIG - 1_000_000


def test_a_stalled_download_neither_blocks_others_nor_holds_its_thread(root, big):
    with ServerProcess(root, "--workers", "1", "--threads", "2", env={"KS_SEND_TIMEOUT": "2"}) as srv:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", srv.port))
        stalled.sendall(b"GET /images/image1/big.raw HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # its thread is now blocked on a full socket
        started = time.monotonic()
        # The second thread serves everyone else, large downloads included.
        assert raw(srv.port, "/bootstrap.ipxe").status == 200
        assert hashlib.sha256(raw(srv.port, "/images/image1/big.raw").body).digest() == hashlib.sha256(big).digest()
        # After 2 s without progress the server drops the stalled client ...
        time.sleep(max(0.0, 4 - (time.monotonic() - started)))
        received = 0
        stalled.settimeout(10)
        try:
            while data := stalled.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
        stalled.close()
        assert received < BIG
        assert "TimeoutError" in srv.log()
        # ... and both threads serve again: two slow requests at once still pass.
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(raw(srv.port, "/images/image1/big.raw").status))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert replies == [200, 200]



def test_a_download_steps_aside_so_kept_alive_boots_go_on(root, big):
    """With one request running at a time, a download that only waits on its client does not count."""
    with ServerProcess(root, "--workers", "1", "--threads", "4", "--running-requests", "1",
                       env={"KS_SEND_TIMEOUT": "60"}) as srv:
        # Kept-alive connections count from their second request on.
        downloader = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        downloader.request("GET", "/bootstrap.ipxe")
        assert downloader.getresponse().read().startswith(b"#!ipxe")
        downloader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        downloader.sock.sendall(b"GET /images/image1/big.raw HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # never read: the download now waits on a full socket, for up to 60 s
        booter = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        started = time.monotonic()
        for _ in range(3):
            booter.request("GET", "/bootstrap?net0=52-54-00-00-00-01")
            assert booter.getresponse().read().startswith(b"#!ipxe")
        assert time.monotonic() - started < 5
        downloader.close()
        booter.close()


def test_a_download_limits_its_stalls_through_the_servers_environ_call(client, big):
    """``kiwispray.send_timeout`` gets KS_SEND_TIMEOUT before the bytes go out; a HEAD sends none."""
    calls = []
    reply = client.get("/images/image1/big.raw", environ_overrides={"kiwispray.send_timeout": calls.append})
    reply.close()
    assert reply.status_code == 200 and calls == [60]
    calls.clear()
    assert (
        client.head("/images/image1/big.raw", environ_overrides={"kiwispray.send_timeout": calls.append}).status_code
        == 200
    )
    assert calls == []


# -- nginx in front --------------------------------------------------------------

NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/kiwispray.conf;
}}
"""


def nginx_config(tmp: Path, nginx_port: int, upstream_port: int, images: Path) -> Path:
    """docs/nginx.conf.example with its CHANGE lines filled in, inside a minimal main config."""
    example = (REPO / "docs" / "nginx.conf.example").read_text()
    for old, new in (
        ("127.0.0.1:5001", f"127.0.0.1:{upstream_port}"),
        ("listen 5000;", f"listen 127.0.0.1:{nginx_port};"),
        ("/srv/kiwispray/images/", f"{images.resolve()}/"),
    ):
        assert old in example
        example = example.replace(old, new)
    (tmp / "kiwispray.conf").write_text(example)
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the test's private tmp dir
    main = tmp / "nginx.conf"
    main.write_text(NGINX_MAIN.format(tmp=tmp, user=user))
    return main


@pytest.fixture
def nginx_front(root, big, tmp_path):
    nginx = require_command("nginx", "nginx-light")
    with ServerProcess(root, "--workers", "1", "--x-accel-redirect", "/_kiwispray_images") as srv:
        tmp = tmp_path / "nginx"
        tmp.mkdir()
        port = free_port()
        conf = nginx_config(tmp, port, srv.port, root / "images")
        proc = subprocess.Popen([nginx, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, (tmp / "error.log").read_text()
                    time.sleep(0.1)
            yield port
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_nginx_front_serves_images_kiwispray_allows(nginx_front, big):
    port = nginx_front
    check_file_semantics(port)
    check_big_file(port, big)
    chain = raw(port, "/bootstrap.ipxe")
    assert chain.status == 200 and f"http://127.0.0.1:{port}/bootstrap?" in chain.body.decode()
    # The internal location is not a way around KIWIspray's checks.
    assert raw(port, "/_kiwispray_images/image1/pxeboot.kernel").status == 404
    assert raw(port, "/images/image1/big.raw", "HEAD").headers["content-length"] == str(BIG)



def download_events(root: Path) -> list[str]:
    """The details of host 1's download events."""
    events = json.loads(run_edit_host(root, "-i", "1", "--history", "--json").stdout)
    return [e["detail"] for e in events if e["kind"] == "download"]


def test_the_download_of_a_disk_sent_with_sendfile_is_recorded_with_its_bytes(root, big):
    """Through gunicorn's sendfile: the whole disk, then a download the client drops half way."""
    shutil.copy(root / "images" / "image1" / "big.raw", root / "images" / "image1" / "Image1.xz")
    with ServerProcess(root, "--workers", "1", "--threads", "4") as srv:
        requests.get(srv.url + "/bootstrap?net0=52-54-00-00-00-01", timeout=10)
        run_edit_host(root, "-i", "1", "-s", "image1")
        requests.get(srv.url + "/bootstrap?net0=52-54-00-00-00-01", timeout=10)
        assert len(raw(srv.port, "/images/image1/Image1.xz").body) == BIG
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.sendall(b"GET /images/image1/Image1.xz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(64 * 1024)
            time.sleep(0.5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        deadline = time.monotonic() + 30
        while len(events := download_events(root)) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
    assert len(events) == 2, events
    whole, dropped = events
    assert whole.startswith(f"Image1.xz: {BIG} of {BIG} bytes in ") and whole.endswith(" to 127.0.0.1"), whole
    sent = int(dropped.split()[1])
    assert 0 < sent < BIG and dropped.endswith("(incomplete: the client went away)"), dropped
