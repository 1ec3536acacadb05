"""Crash safety: a boot storm, edit-host in other processes, and a SIGKILL of the whole server.

Every registration that got a 200 and every change edit-host acknowledged
(exit 0) must be in the database afterwards, with no duplicate hosts.
"""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import run_edit_host
from server import ServerProcess, Storm

pytestmark = pytest.mark.e2e

MACHINES = 500
CLIENTS = 16


def test_acknowledged_writes_survive_sigkill_of_the_server(root):
    # Hundreds of machines register at once: no registration limit here.
    srv = ServerProcess(root, "--workers", "2", "--threads", "8", "--registrations-per-minute", "0").start()
    storm = Storm([srv])
    changes: dict[str, str] = {}  # MAC -> last state edit-host acknowledged
    done = threading.Event()

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            with storm.lock:
                # Each operator changes its own machines: two changes of one host in
                # flight could be acknowledged in another order than they committed.
                known = [m for m in storm.acked if int(m[-2:], 16) % 2 == seed]
            if not known:
                time.sleep(0.05)
                continue
            target = rng.choice(known)
            state = rng.choice(["wipe", "image1", "wipe,image1", "finished"])
            result = run_edit_host(root, "--mac", target, "-s", state, check=False)
            if result.returncode == 0:
                with storm.lock:
                    changes[target] = state
            else:
                assert "no host with MAC" not in result.stderr, result.stderr

    operators = [threading.Thread(target=operator, args=(n,)) for n in range(2)]
    for t in operators:
        t.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            # The same machine booting many times at once must stay one host.
            futures = [pool.submit(storm.machine, 0) for _ in range(20)]
            futures += [pool.submit(storm.machine, i) for i in range(1, MACHINES)]
            while len(storm.acked) < MACHINES // 2:
                time.sleep(0.01)
            srv.kill()  # SIGKILL, master and workers, mid-storm
            killed_at = len(storm.acked)
            time.sleep(0.5)
            srv.start()
            for f in futures:
                f.result()
        deadline = time.monotonic() + 60
        while len(changes) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)  # let the operators finish a few changes after the storm as well
    finally:
        done.set()
        for t in operators:
            t.join()
        srv.kill()

    assert MACHINES // 2 <= killed_at < MACHINES, "the kill must land in the middle of the storm"
    assert storm.errors > 0, "some requests must have met the dead server"
    assert len(storm.acked) == MACHINES
    assert len(changes) >= 10, "edit-host must have changed hosts during and after the storm"

    storm.verify(f"sqlite:///{root / 'kiwispray.db'}", MACHINES, changes)
