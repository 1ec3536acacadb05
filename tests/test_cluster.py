"""Two kiwispray servers on one PostgreSQL database behave as one service.

A boot storm is split between them (some machines ask both at once) while
edit-host changes states; afterwards every acknowledged registration and
change is present, no machine has two hosts, and a /finish retried through
the other server still advances once.
"""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select

from ks.records.db import Database
from ks.records.models import Event, Host, HostMac

from helpers import bootid_of, free_port, run_edit_host
from pg import PostgresServer
from server import ServerProcess, Storm, mac

pytestmark = pytest.mark.e2e

MACHINES = 400


def test_two_servers_on_postgresql(root, pg_url):
    # Hundreds of machines register at once: no registration limit here.
    env = {"KS_DATABASE_URL": pg_url, "KS_REGISTRATIONS_PER_MINUTE": "0"}
    servers = [ServerProcess(root, env=env).start(), ServerProcess(root, env=env).start()]
    storm = Storm(servers)
    changes: dict[str, str] = {}
    done = threading.Event()

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            with storm.lock:
                # Each operator changes its own machines: two changes of one host in
                # flight could be acknowledged in another order than they committed.
                known = [m for m in storm.acked if m != mac(0) and int(m[-2:], 16) % 2 == seed]
            if not known:
                time.sleep(0.05)
                continue
            target = rng.choice(known)
            state = rng.choice(["wipe", "image1", "wipe,image1"])
            if run_edit_host(root, "--mac", target, "-s", state, check=False, env=env).returncode == 0:
                with storm.lock:
                    changes[target] = state

    operators = [threading.Thread(target=operator, args=(n,)) for n in range(2)]
    for t in operators:
        t.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            # Machines 1..9 ask both servers at the same moment, several times.
            futures = [pool.submit(storm.machine, i, server) for i in range(1, 10) for server in (0, 1, 0, 1)]
            futures += [pool.submit(storm.machine, i) for i in range(10, MACHINES)]
            for f in futures:
                f.result()
        deadline = time.monotonic() + 60
        while len(changes) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        for t in operators:
            t.join()

    try:
        # A retried /finish, the retry reaching the other server, advances once.
        storm.machine(0, 0)
        assert run_edit_host(root, "--mac", mac(0), "-s", "wipe,image1", env=env).returncode == 0
        bootid = bootid_of(storm.machine(0, 1))
        host_id = _host_of(pg_url, mac(0))
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(
                lambda srv: requests.get(f"{srv.url}/finish", params={"id": host_id, "bootid": bootid}, timeout=10),
                [servers[0], servers[1], servers[0], servers[1]],
            ))
        assert [a.status_code for a in answers] == [200] * 4
        assert sum("finished its step" in a.text for a in answers) == 1
    finally:
        for srv in servers:
            srv.kill()

    assert len(changes) >= 10
    owners = storm.verify(pg_url, MACHINES, changes)
    assert owners[mac(0)] == host_id
    db = Database(pg_url)
    try:
        with db.read() as session:
            assert session.get(Host, host_id).state == "image1"
            finishes = session.scalars(select(Event).where(Event.host_id == host_id, Event.kind == "finish")).all()
    finally:
        db.dispose()
    assert len(finishes) == 1


def _host_of(url: str, machine_mac: str) -> int:
    db = Database(url)
    try:
        with db.read() as session:
            return session.scalar(select(HostMac.host_id).where(HostMac.mac == machine_mac.replace("-", ":")))
    finally:
        db.dispose()


def test_two_servers_ride_out_a_postgresql_restart(root):
    """PostgreSQL restarts under a boot storm: the servers reconnect by themselves, nothing acknowledged is lost."""
    postgres = PostgresServer(free_port()).start()  # its own: the restart must not cut off other tests' server
    try:
        url = postgres.new_database()
        env = {"KS_DATABASE_URL": url, "KS_REGISTRATIONS_PER_MINUTE": "0"}
        servers = [ServerProcess(root, env=env).start(), ServerProcess(root, env=env).start()]
        storm = Storm(servers)
        changes: dict[str, str] = {}
        refused: list[str] = []
        unexpected: list[str] = []  # any other exit of edit-host, told after the thread ends
        done = threading.Event()

        def operator() -> None:
            """edit-host through the restart: a change is acknowledged by exit 0, refused by 75 (try again)."""
            rng = random.Random(1)
            while not done.is_set():
                with storm.lock:
                    known = sorted(storm.acked)
                if not known:
                    time.sleep(0.05)
                    continue
                target, state = rng.choice(known), rng.choice(["wipe", "image1"])
                edit = run_edit_host(root, "--mac", target, "-s", state, check=False, env=env)
                if edit.returncode == 0:
                    changes[target] = state
                elif edit.returncode == 75:
                    refused.append(edit.stderr)
                else:
                    unexpected.append(f"exit {edit.returncode}: {edit.stderr}")

        editing = threading.Thread(target=operator)
        editing.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(storm.machine, i) for i in range(MACHINES // 2)]
                deadline = time.monotonic() + 60
                while len(storm.acked) < MACHINES // 8 and time.monotonic() < deadline:
                    time.sleep(0.05)
                postgres.restart()
                for f in futures:
                    f.result()
            # Both servers answer afterwards, with connections of their own made after the restart.
            for n in range(len(servers)):
                storm.machine(MACHINES // 2 + n, n)
            # Each edit-host is a whole process: on a loaded machine the storm can end before one has
            # been acknowledged. The operator goes on until one is (the database is back by now).
            deadline = time.monotonic() + 60
            while not changes and not unexpected and time.monotonic() < deadline:
                time.sleep(0.1)
            logs = [srv.log() for srv in servers]
        finally:
            done.set()
            editing.join()
            for srv in servers:
                srv.kill()
        assert not unexpected, unexpected
        assert changes, "edit-host changed hosts"
        assert all("the database server is unreachable or restarting" in message for message in refused), refused
        storm.verify(url, MACHINES // 2 + 2, changes)
        assert storm.errors == 0, "no boot went unanswered"
        for log in logs:
            assert "Internal Server Error" not in log and "Exception on /" not in log, log
    finally:
        postgres.stop()
