"""A hostile client on the boot network, against a real ``kiwispray serve`` process.

Each table is one promise of the README's trust model; each row a way to try
to break it. Every request gets a 4xx or a script that hands out nothing, and
changes nothing.
"""

import concurrent.futures
import http.client
import itertools
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
import requests
from sqlalchemy import func, select

from ks.core import config, states
from ks.fleet import machines
from ks.records import events
from ks.records.db import Database
from ks.records.models import Event, Host, HostMac

from helpers import bootid_of, cli_env, make_image, run_edit_host
from server import ServerProcess, from_address

PRIVATE = {
    "host.ipxe": "#!ipxe\necho private host.ipxe\n",
    "host.tmpl": "#!ipxe\necho private host.tmpl @bootid@\n",
    "post_install.sh": "#!/bin/sh\necho private post_install.sh\n",
    "post_install.tmpl": "#!/bin/sh\necho private post_install.tmpl\n",
    "user-data": "#cloud-config\n# private user-data\n",
    "network-config": "# private network-config\n",
    "config.ign": '{"private": "config.ign"}\n',
    "kiwispray.toml": "deploy_timeout = 60\n# private settings\n",
    ".kiwispray.json": '{"source": "/private/import/path"}\n',
    ".hidden": "private dotfile\n",
    ".git/config": "private dot-directory\n",
}
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "site"
    root.mkdir()
    make_image(root, "wipe", "Wipe")
    make_image(root, "image1")
    make_image(root, "discover", "Discover")
    private = make_image(root, "private", "Private")
    for name, content in PRIVATE.items():
        (private / name).parent.mkdir(exist_ok=True)
        (private / name).write_text(content)
    (private / "alias").symlink_to("host.tmpl")
    return root


@pytest.fixture(scope="module")
def server(site):
    # One worker with few threads: what a slow client could hold is small. Its tests boot many machines,
    # all from this test's one address: no registration bounds (they have tests of their own below).
    with ServerProcess(site, "--workers", "1", "--threads", "8", "--access-log",
                       "--registrations-per-minute", "0", "--registrations-per-source", "0") as srv:
        yield srv


@pytest.fixture(scope="module")
def db(site, server):
    database = Database(f"sqlite:///{site / 'kiwispray.db'}")
    yield database
    database.dispose()


def mac(n: int, prefix: str = "52-54-0a") -> str:
    return f"{prefix}-{n >> 16 & 255:02x}-{n >> 8 & 255:02x}-{n & 255:02x}"


class Machine:
    """A real machine of the fleet, booted into image1 and holding its current bootid."""

    def __init__(self, server, db):
        n = next(_numbers)
        self.server, self.db = server, db
        self.mac, self.serial, self.uuid = mac(n), f"SER{n:06d}", f"4c4c4544-0000-1000-8000-{n:012x}"
        assert self.boot().status_code == 200
        with db.read() as session:
            self.id = session.scalars(select(HostMac.host_id).where(HostMac.mac == self.mac.replace("-", ":"))).one()
        self.set_chain("image1")
        self.bootid = bootid_of(self.boot().text)

    def boot(self):
        query = {"net0": self.mac, "serial": self.serial, "uuid": self.uuid}
        return requests.get(self.server.url + "/bootstrap", params=query, timeout=10)

    def set_chain(self, chain: str) -> None:
        self.db.write(lambda s: machines.set_state(s, machines.get_host(s, self.id), states.parse_chain(chain), "cli"))

    def host(self) -> Host:
        with self.db.read() as session:
            host = machines.get_host(session, self.id)
            _ = host.mac_list  # loaded while the session is open
            return host

    def bootid_works(self, bootid: str | None = None) -> bool:
        params = {"id": self.id, "bootid": bootid or self.bootid}
        return requests.get(self.server.url + "/post-install", params=params, timeout=10).status_code == 200


def host_count(db) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(Host))


# --- a serial or UUID is not enough to be handed a host's boot --------------------------------

TAKEOVER = {
    "serial only": lambda m, f: {"serial": m.serial},
    "uuid only": lambda m, f: {"uuid": m.uuid},
    "serial and uuid": lambda m, f: {"serial": m.serial, "uuid": m.uuid},
    "serial, foreign MAC": lambda m, f: {"net0": f, "serial": m.serial},
    "uuid, foreign MAC": lambda m, f: {"net0": f, "uuid": m.uuid},
    "serial and uuid, foreign MAC": lambda m, f: {"net0": f, "serial": m.serial, "uuid": m.uuid},
    "lower-case serial, foreign MAC": lambda m, f: {"net0": f, "serial": m.serial.lower()},
    "padded serial, foreign MAC": lambda m, f: {"net0": f, "serial": f"  {m.serial} "},
    "upper-case uuid, foreign MAC": lambda m, f: {"net0": f, "uuid": m.uuid.upper()},
    "urn: uuid, foreign MAC": lambda m, f: {"net0": f, "uuid": f"urn:uuid:{m.uuid}"},
    "braced uuid, foreign MAC": lambda m, f: {"net0": f, "uuid": "{" + m.uuid + "}"},
    "serial, foreign dhcp_mac": lambda m, f: {"dhcp_mac": f, "serial": m.serial},
    "serial, foreign MAC in net7": lambda m, f: {"net0": "", "net7": f, "serial": m.serial},
    "serial, several foreign MACs": lambda m, f: {
        "net0": f,
        "net1": f[:-1] + "e",
        "net2": f[:-1] + "f",
        "serial": m.serial,
    },
    "serial, poll": lambda m, f: {"net0": f, "serial": m.serial, "poll": "1"},
}


@pytest.mark.parametrize("attack", TAKEOVER.values(), ids=TAKEOVER.keys())
def test_knowing_a_serial_or_uuid_hands_out_nothing(server, db, attack):
    victim = Machine(server, db)
    hosts = host_count(db)
    foreign = mac(next(_numbers) * 16, "52-54-0b")  # a MAC of the attacker's, no host's
    r = requests.get(server.url + "/bootstrap", params=attack(victim, foreign), timeout=10)
    assert r.status_code in (200, 400), r.text
    assert "bootid=" not in r.text and "finish" not in r.text
    assert victim.bootid_works(), "the real machine's bootid was voided"
    host = victim.host()
    assert host.mac_list == [victim.mac.replace("-", ":")] and host.state == "image1"
    assert host_count(db) == hosts
    # The machine that is what it claims, with one of its MACs and a new NIC, still learns it.
    r = requests.get(server.url + "/bootstrap", params={"net0": victim.mac, "net1": mac(next(_numbers), "52-54-0c"),
                                                        "serial": victim.serial}, timeout=10)
    assert bootid_of(r.text) and len(victim.host().mac_list) == 2


def test_the_host_listing_and_state_reveal_nothing_unless_the_site_turns_the_original_listing_on(site, server, db):
    victim = Machine(server, db)
    listing = requests.get(server.url + "/hosts", timeout=10)
    assert listing.status_code == 403 and victim.serial not in listing.text
    for params in ({"id": victim.id}, {"id": victim.id, "bootid": "0" * 32}):
        r = requests.get(server.url + "/state", params=params, timeout=10)
        assert r.status_code == 401 and "image1" not in r.text
    r = requests.get(server.url + "/state", params={"id": victim.id, "bootid": victim.bootid}, timeout=10)
    assert (r.status_code, r.text) == (200, "image1\n")

    with ServerProcess(site, "--workers", "1", env={"KS_PUBLIC_HOSTS": "1"}) as public:
        lines = requests.get(public.url + "/hosts", timeout=10).text.splitlines()
        assert lines[0].split() == ["#Id", "Hostname", "State", "Serial#"]
        assert [str(victim.id), "not-set", "image1", victim.serial] in [line.split() for line in lines]
        assert not any(victim.mac in line or victim.bootid in line for line in lines)
        assert requests.get(public.url + "/state", params={"id": victim.id}, timeout=10).text == "image1\n"


# --- setting a chain voids the bootid handed out before it ---------------------------------------


@pytest.fixture(scope="module")
def token(site, server):
    env = cli_env(site)
    out = subprocess.run([sys.executable, "-m", "ks", "token", "create", "hostile"], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def api(server, token, method, path, **kwargs):
    return requests.request(method, f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=30, **kwargs)


def _edit_host(site, server, token, m):
    run_edit_host(site, "-i", str(m.id), "-s", "wipe,image1")


def _patch(site, server, token, m):
    assert api(server, token, "PATCH", f"/hosts/{m.id}", json={"state": "wipe,image1"}).status_code == 200


def _deploy(site, server, token, m):
    # PXE Pilot's deploy sets one state; the old boot must not finish it either.
    r = api(server, token, "PUT", "/configurations/wipe/deploy", json={"hosts": [{"macAddress": m.mac}]})
    assert r.status_code == 204, r.text


def _host_set(site, server, token, m):
    subprocess.run([sys.executable, "-m", "ks", "host", "set", str(m.id), "wipe,image1"], env=cli_env(site),
                   check=True, capture_output=True)


SETTERS = {"edit-host -s": _edit_host, "API PATCH state": _patch, "API deploy": _deploy, "host set": _host_set}


@pytest.mark.parametrize("setter", SETTERS.values(), ids=SETTERS.keys())
def test_setting_a_chain_voids_the_bootid_before_it(site, server, db, token, setter):
    m = Machine(server, db)
    setter(site, server, token, m)
    chain = m.host().state
    assert chain.startswith("wipe")
    r = requests.get(server.url + "/finish", params={"id": m.id, "bootid": m.bootid}, timeout=10)
    assert r.status_code == 401, r.text
    assert m.host().state == chain, "a late /finish popped a step that never ran"
    new = bootid_of(m.boot().text)  # the next boot of the new chain gets a bootid that works
    assert requests.get(server.url + "/finish", params={"id": m.id, "bootid": new}, timeout=10).status_code == 200


# --- bounds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entries", [1001, 5000], ids=["1001 hosts", "one host 5000 times"])
def test_a_deploy_naming_too_many_hosts_is_refused_and_changes_nothing(server, db, token, entries):
    m = Machine(server, db)
    r = api(server, token, "PUT", "/configurations/wipe/deploy", json={"hosts": [{"macAddress": m.mac}] * entries})
    assert r.status_code == 400 and "at most 1000" in r.json()["error"]
    assert m.host().state == "image1" and m.bootid_works()


def test_a_deploy_naming_one_host_many_times_changes_it_once_and_answers_204_without_a_type(server, db, token):
    m = Machine(server, db)
    r = api(server, token, "PUT", "/configurations/wipe/deploy",
            json={"hosts": [{"macAddress": m.mac}, {"name": str(m.id)}] * 500})
    assert r.status_code == 204 and "Content-Type" not in r.headers and r.content == b""
    with db.read() as session:
        changes = session.scalars(select(Event).where(Event.host_id == m.id, Event.kind == "state")).all()
    assert [e.to_state for e in changes][-1] == "wipe" and sum(e.to_state == "wipe" for e in changes) == 1


def test_a_host_with_many_macs_and_large_metadata_does_not_slow_boots(server, db):
    heavy, other = Machine(server, db), Machine(server, db)
    big = {f"key{i:04d}": "x" * 1000 for i in range(1000)}  # about 1 MB

    def grow(session):
        host = machines.get_host(session, heavy.id)
        host.meta = big
        host.macs.extend(HostMac(mac=mac(i, "52:54:0d").replace("-", ":"), position=i + 1) for i in range(1000))

    db.write(grow)
    for machine in (heavy, other, heavy):
        start = time.monotonic()
        assert machine.boot().status_code == 200
        assert time.monotonic() - start < 2, "a boot's cost grew with MACs x metadata"


def test_registrations_of_unknown_machines_are_bounded(site, server, db):
    known = Machine(server, db)
    # The ceiling of all addresses together; the machines of the other tests share this test's address.
    with ServerProcess(site, "--workers", "2", "--registrations-per-minute", "3",
                       "--registrations-per-source", "0") as limited:
        base = next(_numbers) * 16
        answers = [requests.get(limited.url + "/bootstrap", params={"net0": mac(base + i, "52-54-0e")}, timeout=10)
                   for i in range(6)]
        assert [r.status_code for r in answers] == [200] * 6
        registered = ['state "new"' in r.text for r in answers]
        assert registered == [True] * 3 + [False] * 3, "both workers draw from one bucket"
        for r in answers[3:]:
            assert "not registered" in r.text and "chain" in r.text and "bootid" not in r.text
        with db.read() as session:
            stored = session.scalars(select(HostMac.mac).where(HostMac.mac.like("52:54:0e:%"))).all()
        assert len(stored) == 3, "a machine turned away was stored"
        r = requests.get(limited.url + "/bootstrap", params={"net0": known.mac, "serial": known.serial}, timeout=10)
        assert bootid_of(r.text), "known machines boot whatever the limit"


def boot_from(srv: ServerProcess, source: str, query: dict) -> str:
    """GET /bootstrap from the address ``source``; the script."""
    with from_address(source) as session:
        answer = session.get(srv.url + "/bootstrap", params=query, timeout=30)
    assert answer.status_code == 200, answer.status_code
    return answer.text


def test_one_address_inventing_machines_is_bounded_with_the_default_settings(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    bound = config.resolve({"ROOT": str(root)}).registrations_per_source
    with ServerProcess(root, "--workers", "2") as srv:  # the default settings
        # Invented machines from one address, booting and polling (a poll registers too): `bound` are stored.
        scripts = [boot_from(srv, "127.0.3.1", {"net0": mac(i, "52-54-10"), **({"poll": "1"} if i % 2 else {})})
                   for i in range(bound + 6)]
        registered = ['state "new"' in script for script in scripts]
        assert registered == [True] * bound + [False] * 6, "one address registered beyond its bound"
        for script in scripts[bound:]:
            assert "not registered" in script and "bootid" not in script
        # Another machine, from its own address, is not held back by that flood.
        assert 'state "new"' in boot_from(srv, "127.0.3.2", {"net0": mac(1, "52-54-11")})
        # And a machine the flooding address registered boots as itself.
        assert 'state "new"' in boot_from(srv, "127.0.3.1", {"net0": mac(0, "52-54-10")})
    database = Database(f"sqlite:///{root / 'kiwispray.db'}")
    with database.read() as session:
        stored = session.scalars(select(HostMac.mac).where(HostMac.mac.like("52:54:10:%"))).all()
    database.dispose()
    assert len(stored) == bound, "a machine turned away was stored"


def test_a_rack_of_500_new_machines_registers_at_once_with_the_default_settings(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    rack = 500
    with ServerProcess(root, "--workers", "2") as srv:  # the default settings
        def power_on(i: int) -> bool:  # each machine boots from the address its DHCP lease gave it
            return 'state "new"' in boot_from(srv, f"127.0.{4 + i // 250}.{i % 250 + 1}", {"net0": mac(i, "52-54-12")})

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            registered = list(pool.map(power_on, range(rack)))
    assert registered.count(False) == 0, f"{registered.count(False)} of a rack of {rack} were turned away"
    database = Database(f"sqlite:///{root / 'kiwispray.db'}")
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(HostMac).where(HostMac.mac.like("52:54:12:%"))) == rack
    database.dispose()


def test_conflicts_write_one_line_per_host_and_minute_that_counts_the_others(site, server, db):
    victim = Machine(server, db)
    sent = 240
    base = next(_numbers) * 1024
    with ServerProcess(site, "--workers", "2") as other:  # two servers, three worker processes, one database

        def conflicts(lane: int) -> list[int]:
            url = (server, other)[lane % 2].url + "/bootstrap"
            return [requests.get(url, params={"net0": mac(base + i, "52-54-0f"), "serial": victim.serial},
                                 timeout=30).status_code for i in range(lane, sent, 8)]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = [status for lane in pool.map(conflicts, range(8)) for status in lane]
    assert statuses == [200] * sent
    with db.read() as session:
        lines = [e.detail for e in machines.history(session, victim.id) if e.kind == "conflict"]
    # One line a minute: a second only if the test ran across the end of the first line's minute.
    assert 1 <= len(lines) <= 2, lines
    assert sum(1 + events.more_of(detail) for detail in lines) == sent, lines
    assert "serial=" + victim.serial in lines[0] and "more by" in lines[0]
    assert victim.bootid_works() and victim.host().mac_list == [victim.mac.replace("-", ":")]


def _dribble(server, count: int, stop: threading.Event, closed: list) -> None:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    try:
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    closed.append(s)
            stop.wait(0.5)
    finally:
        for s in socks:
            s.close()


def test_slow_clients_do_not_stall_boots(server, db):
    m = Machine(server, db)
    stop, closed = threading.Event(), []
    slow = threading.Thread(target=_dribble, args=(server, 200, stop, closed))
    slow.start()
    try:
        time.sleep(1)  # all 200 connected and dribbling
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            start = time.monotonic()
            r = m.boot()
            assert r.status_code == 200 and time.monotonic() - start < 1, "a boot waited behind slow clients"
            start = time.monotonic()
            assert requests.get(server.url + "/bootstrap.ipxe", timeout=5).status_code == 200
            assert time.monotonic() - start < 1
    finally:
        stop.set()
        slow.join()


def test_headers_that_take_too_long_are_cut_off(site):
    with ServerProcess(site, "--workers", "1", "--header-timeout", "1") as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.settimeout(10)
        s.sendall(b"GET /bootstrap.ipxe HTTP/1.1\r\n")
        start = time.monotonic()
        answer = b""
        try:
            while True:
                s.send(b"X")  # one byte at a time, never the end of the headers
                time.sleep(0.2)
                if time.monotonic() - start > 8:
                    break
        except OSError:
            pass
        try:
            answer = s.recv(200)
        except OSError:  # a reset is the server closing too
            answer = b""
        s.close()
        assert time.monotonic() - start < 5, "the connection was not closed"
        assert answer.startswith(b"HTTP/1.1 408") or answer == b""
        assert requests.get(srv.url + "/bootstrap.ipxe", timeout=5).status_code == 200


SLOW_BODIES = [
    b"POST /update?id=1&bootid=00 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n",
    b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n",
    b"POST /bootstrap HTTP/1.1\r\nHost: x\r\n",  # answered 405, after its body
    b"PATCH /api/v1/hosts/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
]


def _stall_bodies(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that promise a 100,000-byte body, send one byte of it, and then nothing."""
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(SLOW_BODIES[i % len(SLOW_BODIES)] + b"Content-Length: 100000\r\n\r\nx")
        socks.append(s)
    return socks


def test_clients_that_stall_in_their_body_do_not_stop_the_server(site):
    with ServerProcess(site, "--workers", "2", "--threads", "8", "--registrations-per-minute", "0",
                       "--registrations-per-source", "0") as srv:
        socks = _stall_bodies(srv.port, 40)  # 8 were enough to hold every running slot of both workers
        try:
            time.sleep(1)
            for _ in range(5):
                assert requests.get(srv.url + "/bootstrap.ipxe", timeout=5).status_code == 200
                assert requests.get(srv.url + "/api/v1/hosts", timeout=5).status_code == 401
                assert requests.get(srv.url + "/ui/login", timeout=5).status_code == 200
                r = requests.get(srv.url + "/bootstrap", params={"net0": mac(next(_numbers), "52-54-0f")}, timeout=5)
                assert r.status_code == 200 and "#!ipxe" in r.text
        finally:
            for s in socks:
                s.close()


def _answer(s: socket.socket, limit: float = 10) -> bytes:
    """What the server sends until it closes the connection (or ``limit`` seconds pass)."""
    s.settimeout(limit)
    answer = b""
    try:
        while chunk := s.recv(4096):
            answer += chunk
    except OSError:  # a reset or the time limit: the answer so far
        pass
    return answer


def test_a_body_that_stalls_is_answered_408_and_closed(site):
    with ServerProcess(site, "--workers", "1", "--body-timeout", "1") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            start = time.monotonic()
            s.sendall(SLOW_BODIES[0] + b"Content-Length: 100\r\n\r\nid=")
            answer = _answer(s)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - start < 8, "the connection was not closed"
        assert requests.get(srv.url + "/bootstrap.ipxe", timeout=5).status_code == 200


def test_a_body_longer_than_accepted_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(SLOW_BODIES[0] + b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
        assert _answer(s).startswith(b"HTTP/1.1 413"), "the server waited for a body it refuses"


@pytest.mark.parametrize("framing", ["length", "chunked", "expect-continue"])
def test_bodies_are_received_whole_however_they_are_framed(server, db, framing):
    m = Machine(server, db)
    m.set_chain("discover,new")
    m.bootid = bootid_of(m.boot().text)
    body = f"fact.product=framed-{framing}".encode()
    head = (f"POST /update?id={m.id}&bootid={m.bootid} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        answer = _send_framed(s, framing, head, body)
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer
    assert m.host().facts["product"] == f"framed-{framing}"


def _send_framed(s: socket.socket, framing: str, head: str, body: bytes) -> bytes:
    s.settimeout(10)
    if framing == "chunked":
        s.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
        for part in (body[:5], body[5:]):  # in two chunks, a moment apart
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            time.sleep(0.2)
        s.sendall(b"0\r\n\r\n")
    elif framing == "expect-continue":
        s.sendall(head.encode() + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), "the client would wait for it"
        s.sendall(body)
    else:
        s.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body[:7])
        time.sleep(0.3)
        s.sendall(body[7:])
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := s.recv(4096)):
        answer += chunk
    return answer


def test_pipelined_requests_with_bodies_are_each_answered(server):
    body = b"fact.product=x"
    one = b"POST /update?id=1&bootid=00 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(one * 3 + b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _answer(s)
    assert answer.count(b"HTTP/1.1 ") == 4 and b"#!ipxe" in answer, answer


# --- private files are not served -----------------------------------------------------------------

PRIVATE_PATHS = [
    *[f"/images/private/{name}" for name in PRIVATE],
    "/images/private/alias",  # a symlink to host.tmpl
    "/images/private/%2ekiwispray.json",
    "/images/private/host%2Etmpl",
    "/images/private/.git/./config",
]


@pytest.mark.parametrize("path", PRIVATE_PATHS)
def test_templates_settings_and_dotfiles_are_not_served(server, path):
    for method in ("GET", "HEAD"):
        r = requests.request(method, server.url + path, timeout=10)
        assert r.status_code == 404, (method, path)
        assert b"private" not in r.content
    assert requests.get(server.url + "/images/private/pxeboot.kernel", timeout=10).content == b"kernel-private"


# --- bootids stay out of logs ---------------------------------------------------------------------

SPELLINGS = ["bootid", "boot%69d", "boot%49d", "BOOTID", "Boot%49D", "%62ootid", "%62%6F%6F%74%69%64", "boot%2569d"]


@pytest.mark.parametrize("name", SPELLINGS)
def test_no_spelling_of_bootid_reaches_the_access_log(server, db, name):
    m = Machine(server, db)
    # http.client sends the path as written (requests would decode %69 to i).
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/finish?id={m.id}&{name}={m.bootid}")
    assert conn.getresponse().status in (200, 401)
    conn.close()
    time.sleep(0.2)
    assert m.bootid not in server.log()
    assert f"/finish?id={m.id}&{name}=-" in server.log()


@pytest.mark.parametrize("line", [
    b"GET /finish?id=1&bootid={secret}\r\n\r\n",
    b"GET /finish?id=1&boot%69d={secret} HTTP/1.1 x\r\n\r\n",
    b"GET /finish?bootid={secret}&" + b"a" * 3000 + b" HTTP/1.1 junk\r\n\r\n",
], ids=["no version", "encoded name, extra word", "long line"])
def test_invalid_request_lines_are_logged_without_the_secret_and_cut_short(server, line):
    secret = os.urandom(16).hex()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(line.replace(b"{secret}", secret.encode()))
        assert s.recv(100).startswith(b"HTTP/1.1 4")
    time.sleep(0.2)
    log = server.log()
    assert "Invalid request" in log and secret not in log
    assert max(len(line) for line in log.splitlines()) < 1200


# --- files: modes and BMC passwords at rest -------------------------------------------------------


def test_database_lock_and_key_files_are_private_and_bmc_passwords_encrypted(site, server, db):
    m = Machine(server, db)
    password = "Hostile-" + os.urandom(8).hex()
    run_edit_host(site, "-i", str(m.id), "--bmc", "ipmi://10.0.0.9", "--bmc-user", "admin",
                  env={"KS_BMC_PASSWORD": password})
    shown = json.loads(run_edit_host(site, "-i", str(m.id), "--json").stdout)
    assert shown["bmc"] == {"address": "ipmi://10.0.0.9", "username": "admin"}
    for name in ("kiwispray.db", "kiwispray.db-writer", "kiwispray.db-wal", "kiwispray.db-shm", "kiwispray.key"):
        mode = stat.S_IMODE((site / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    for path in site.iterdir():
        if path.is_file():
            assert password.encode() not in path.read_bytes(), f"the BMC password is in {path.name} in clear"
    with db.read() as session:
        stored = machines.get_host(session, m.id).bmc_password
    assert stored and password not in stored
