"""The operations layer: one locking rule for every change of a host, whoever makes it."""

import threading
import time
from pathlib import Path

import pytest

import ks
from ks.fleet import machines
from ks.records.events import EventKind

from helpers import MAC1, boot

ROUNDS = 8


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_two_concurrent_patches_of_one_host_never_lose_an_update(app, client, db, token, monkeypatch):
    """Two operators PATCH one host's chain and labels at the same time, round after round.

    Each change reads the host and writes it back (the chain replaced, one label
    added to those it has). A pause between that read and the write, as a busy
    server makes, lets the other change in between unless the host's row is
    locked first. Both changes of every round must be there, each state line
    in the history starting from the chain the one before left; a change may be
    refused with 409, never lost.
    """
    boot(client, MAC1)
    set_state = machines.set_state

    def slow_set_state(session, host, chain, source):
        time.sleep(0.05)  # the read is done; the other change may come in now
        set_state(session, host, chain, source)

    monkeypatch.setattr(machines, "set_state", slow_set_state)
    start = threading.Barrier(2, timeout=60)
    applied: dict[str, list[int]] = {"a": [], "b": []}
    refused: list[int] = []

    def operator(name: str, chain: str) -> None:
        own = app.test_client()  # a client of its own per thread, as two operators have
        for n in range(ROUNDS):
            start.wait()
            r = own.patch("/api/v1/hosts/1", json={"state": chain, "labels": {f"{name}{n}": "x"}},
                          headers={"Authorization": f"Bearer {token}"})
            if r.status_code == 409:
                refused.append(n)
                continue
            assert r.status_code == 200, r.json
            applied[name].append(n)

    threads = [threading.Thread(target=operator, args=args) for args in (("a", "wipe,image1"), ("b", "image1"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(applied["a"]) + len(applied["b"]) + len(refused) == 2 * ROUNDS

    with db.read() as session:
        host = machines.get_host(session, 1)
        labels = dict(host.labels or {})
        lines = [e for e in machines.history(session, 1) if e.kind == EventKind.STATE.value]
    wanted = {f"{name}{n}" for name, rounds in applied.items() for n in rounds}
    assert wanted - set(labels) == set(), "a label change was lost"
    changes = [(e.from_state, e.to_state) for e in lines if e.source == "api"]
    assert len(changes) == len(applied["a"]) + len(applied["b"])
    for (_, after), (before, _) in zip(changes, changes[1:], strict=False):
        assert before == after, f"a chain change started from a chain another had replaced: {changes}"
    assert host.state == changes[-1][1]


def test_only_the_operations_layer_applies_a_host_change():
    """The API, both CLIs and the dashboard call ``ks.fleet.operations``; none applies a ``HostChange`` itself."""
    package = Path(ks.__file__).parent
    applying = {str(path.relative_to(package)) for path in package.rglob("*.py")
                if ".apply(session, host" in path.read_text()}
    assert applying == {"fleet/operations.py"}
