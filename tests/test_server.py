"""The boot flow through a real ``kiwispray serve`` process and ``edit-host`` processes."""

import socket
from pathlib import Path

import pytest
import requests

from helpers import MAC1, bootid_of, run_edit_host
from server import ServerProcess

pytestmark = pytest.mark.e2e

WIPE_HOST_TMPL = """#!ipxe
echo wipe for node @id@ (@state@)
kernel http://@SERVER_IP@:@SERVER_PORT@/images/@state@/pxeboot.kernel razorurl=http://@SERVER_IP@:@SERVER_PORT@/post-install?id=@id@&bootid=@bootid@
initrd http://@SERVER_IP@:@SERVER_PORT@/images/@state@/pxeboot.initrd.xz
boot
"""


@pytest.fixture
def server(root):
    (root / "images" / "wipe" / "host.tmpl").write_text(WIPE_HOST_TMPL)
    with ServerProcess(root) as srv:
        yield srv


def bootstrap(srv, **query):
    r = requests.get(srv.url + "/bootstrap", params={"net0": MAC1, "serial": "SER1", **query}, timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def test_boot_flow_end_to_end(server, root):
    chain = requests.get(server.url + "/bootstrap.ipxe", timeout=10).text
    assert f"chain http://127.0.0.1:{server.port}/bootstrap?net0=" in chain

    assert 'state "new"' in bootstrap(server)
    assert run_edit_host(root, "-l").stdout.splitlines()[1].split() == ["1", "not-set", "new", "SER1"]
    assert run_edit_host(root, "-i", "1", "-s", "wipe,image1").returncode == 0

    script = bootstrap(server)
    bootid = bootid_of(script)
    assert script == WIPE_HOST_TMPL.replace("@id@", "1").replace("@state@", "wipe").replace(
        "@SERVER_IP@", "127.0.0.1").replace("@SERVER_PORT@", str(server.port)).replace("@bootid@", bootid)
    kernel = requests.get(f"{server.url}/images/wipe/pxeboot.kernel", timeout=10)
    assert kernel.content == b"kernel-wipe"
    post = requests.get(f"{server.url}/post-install", params={"id": 1, "bootid": bootid}, timeout=10)
    assert post.status_code == 200 and "finish?id=1&bootid=" + bootid in post.text
    assert requests.get(f"{server.url}/finish", params={"id": 1, "bootid": bootid}, timeout=10).status_code == 200

    script = bootstrap(server)
    assert "boots image image1" in script
    bootid = bootid_of(script)
    assert requests.get(f"{server.url}/finish", params={"id": 1, "bootid": bootid}, timeout=10).status_code == 200

    script = bootstrap(server)
    assert script.rstrip().endswith("exit")
    listing = run_edit_host(root, "-l").stdout.splitlines()
    assert len(listing) == 2 and listing[1].split()[2] == "finished"
    log = server.log()
    assert "boot host=1 state=wipe template=images/wipe/host.tmpl" in log
    assert "boot host=1 state=image1 template=shipped:kiwi.ipxe" in log
    assert "boot host=1 state=finished template=shipped:finished.ipxe" in log
    assert bootid not in log


def test_sigterm_stops_cleanly(root):
    srv = ServerProcess(root).start()
    assert srv.stop() == 0
    assert "Shutting down" in srv.log()


def raw(srv, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "target",
    [b"/images/../kiwispray.db", b"/images/wipe/../../kiwispray.db", b"/images/%2e%2e/kiwispray.db",
     b"/../kiwispray.db", b"/kiwispray.db", b"/images/wipe/%2e%2e%2f%2e%2e%2fkiwispray.db"],
)
def test_raw_traversal_requests_are_refused(server, target):
    answer = raw(server, b"GET " + target + b" HTTP/1.0\r\nHost: x\r\n\r\n")
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    assert b"SQLite format" not in answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /bootstrap?net0=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /bootstrap?net0=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /finish?id=1\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /finish?id=%00 HTTP/1.0\r\n\r\n",
        b"POST /update?id=1&bootid=x HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\nmetadata=%",
        b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"NONSENSE\r\n\r\n",
    ],
)
def test_malformed_requests_get_a_4xx_from_the_real_server(server, request_bytes):
    answer = raw(server, request_bytes)
    assert answer, "connection dropped without an answer"
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]


def test_undecodable_serial_is_kept_as_harmless_text(server):
    answer = raw(server, b"GET /bootstrap?serial=%ff%fe&net0=52-54-00-00-00-09 HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.0 4"), answer[:200]
    assert b"\xff" not in answer


def test_pipelined_requests_are_all_answered(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: x\r\n\r\n" * 2
            + b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while data := s.recv(65536):
            answer += data
    assert answer.count(b"HTTP/1.1 200") == 3, answer[:500]


def test_only_the_server_module_knows_gunicorn():
    package = Path(__file__).resolve().parents[1] / "ks"
    naming = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "gunicorn" in p.read_text())
    assert naming == ["server.py"]
