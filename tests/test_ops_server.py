"""Timeouts through a real ``kiwispray serve`` with two worker processes."""

import json
import time
from datetime import datetime, timedelta

import pytest
import requests

from conftest import MAC1, bootid_of, run_edit_host
from server import ServerProcess

pytestmark = pytest.mark.e2e


def bootstrap(srv, machine=MAC1, **query) -> str:
    r = requests.get(srv.url + "/bootstrap", params={"net0": machine, **query}, timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s")


def test_the_server_flags_a_machine_that_never_finishes_once_and_a_retry_puts_it_back(root):
    (root / "images" / "wipe" / "kiwispray.toml").write_text("deploy_timeout = 600\n")
    env = {"KS_DEPLOY_TIMEOUT": "1", "KS_TIMEOUT_CHECK_INTERVAL": "0.3"}
    with ServerProcess(root, "--workers", "2", env=env) as srv:
        bootstrap(srv)
        assert run_edit_host(root, "-i", "1", "-s", "image1,wipe").returncode == 0
        assert "boots image image1" in bootstrap(srv)
        wait_for(lambda: "image1,wipe (failed)" in run_edit_host(root, "-l").stdout, what="the timeout")
        time.sleep(1)  # both workers keep checking; neither may flag it again
        history = json.loads(run_edit_host(root, "-i", "1", "--history", "--json").stdout)
        assert [e["kind"] for e in history].count("timeout") == 1
        assert history[-1]["source"] == "server"
        assert "FAILED" in bootstrap(srv)

        assert run_edit_host(root, "-i", "1", "--retry").returncode == 0
        script = bootstrap(srv, poll="1")  # the waiting machine asks again
        assert "boots image image1" in script
        # Even if this /finish came after the new one-second deadline, it would count.
        r = requests.get(srv.url + "/finish", params={"id": 1, "bootid": bootid_of(script)}, timeout=10)
        assert r.status_code == 200
        assert "boots image wipe" in bootstrap(srv)
        host = json.loads(run_edit_host(root, "-i", "1", "--json").stdout)
        assert (host["state"], host["failed"]) == ("wipe", False)
        started, deadline = (datetime.fromisoformat(host[k]) for k in ("last_boot_at", "deadline_at"))
        assert deadline - started == timedelta(seconds=600)  # the image's own timeout
