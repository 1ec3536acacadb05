"""Timeouts, metrics and logs through a real ``kiwispray serve`` with two worker processes."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector

from helpers import MAC1, bootid_of, metric_samples, run_edit_host, wait_for
from server import ServerProcess, mac

pytestmark = pytest.mark.e2e


def bootstrap(srv, machine=MAC1, **query) -> str:
    r = requests.get(srv.url + "/bootstrap", params={"net0": machine, **query}, timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def scrape(srv) -> dict:
    r = requests.get(srv.url + "/metrics", timeout=10)
    assert r.status_code == 200
    return metric_samples(r.text)


def metrics_dir(srv) -> Path:
    return Path(re.search(r"metrics of the worker processes are kept in (\S+)", srv.log()).group(1))


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
        samples = scrape(srv)
        assert samples[("kiwispray_failed_hosts", (("state", "image1"),))] == 1
        assert samples[("kiwispray_timeouts_total", (("state", "image1"),))] == 1

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
        assert scrape(srv)[("kiwispray_failed_hosts", (("state", "wipe"),))] == 0


def boots_counted_in(path: Path) -> float:
    """The boots one worker counted, read from its own file."""
    return sum(
        s.value
        for metric in MultiProcessCollector.merge([str(path)])
        if metric.name == "kiwispray_boots"
        for s in metric.samples
        if s.name == "kiwispray_boots_total"
    )


def test_metrics_add_up_over_the_worker_processes_and_their_directory_goes_away(root):
    # Its machines all boot from this test's one address: no per-address registration bound.
    srv = ServerProcess(root, "--workers", "2", "--registrations-per-source", "0").start()
    try:
        directory = metrics_dir(srv)
        booted = 0
        # Boot new machines on new connections until both workers have counted some.
        with ThreadPoolExecutor(4) as pool:
            while booted < 400:
                list(pool.map(lambda i: bootstrap(srv, mac(i)), range(booted, booted + 8)))
                booted += 8
                counters = list(directory.glob("counter_*.db"))
                if len(counters) == 2 and all(boots_counted_in(p) for p in counters):
                    break
        assert len(counters) == 2 and all(boots_counted_in(p) for p in counters), "one worker served every boot"
        for _ in range(6):  # whichever worker answers the scrape adds up both
            samples = scrape(srv)
            assert samples[("kiwispray_boots_total", (("state", "new"),))] == booted
            assert samples[("kiwispray_registrations_total", ())] == booted
            assert samples[("kiwispray_hosts", (("state", "new"),))] == booted
            assert samples[("kiwispray_request_duration_seconds_count", (("endpoint", "/bootstrap"),))] == booted
        text = requests.get(srv.url + "/metrics", timeout=10).text
        assert mac(1) not in text and mac(1).replace("-", ":") not in text
        assert srv.stop() == 0
    finally:
        srv.kill()
    assert not directory.exists()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logs_carry_boot_decisions_and_never_a_bootid(root, log_format):
    srv = ServerProcess(root, "--access-log", env={"KS_LOG_FORMAT": log_format}).start()
    try:
        bootstrap(srv, serial="SER1")
        assert run_edit_host(root, "-i", "1", "-s", "image1").returncode == 0
        bootid = bootid_of(bootstrap(srv, serial="SER1"))
        assert requests.get(srv.url + "/finish", params={"id": 1, "bootid": bootid}, timeout=10).status_code == 200
        assert srv.stop() == 0
    finally:
        srv.kill()
    log = srv.log()
    assert bootid not in log
    if log_format == "text":
        assert "boot host=1 state=image1 template=shipped:kiwi.ipxe" in log
        assert "GET /finish?id=1&bootid=- HTTP/1.1" in log
        # gunicorn's lines and ours: one line format, one kind of timestamp, none in the message.
        line_format = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \[\d+\] [A-Z]+ ([\w.]+): ")
        loggers = {line_format.match(line)[1] for line in log.splitlines() if line.strip()}
        assert {"ks.serve", "ks.boot.views", "gunicorn.error", "gunicorn.access"} <= loggers
        assert not re.search(r"\[\d\d/\w{3}/\d{4}:|\[\d{4}-\d\d-\d\d ", log)
        return
    documents = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(d) for d in documents)
    decision = next(d for d in documents if d.get("event") == "boot" and d.get("state") == "image1")
    assert decision["logger"] == "ks.boot.views" and decision["level"] == "INFO"
    assert (decision["host_id"], decision["template"]) == (1, "shipped:kiwi.ipxe")
    assert any(d.get("event") == "finish" and d["host_id"] == 1 for d in documents)
    access = [d for d in documents if d["logger"] == "gunicorn.access"]
    assert any(d["path"] == "/finish" and d["status"] == "200" and d["query"] == "id=1&bootid=-" for d in access)
    assert not any(re.search(r"\[\d\d/\w{3}/\d{4}:", d["message"]) for d in access)  # the time is "time"
    assert any(d["logger"] == "gunicorn.error" and "Booting worker" in d["message"] for d in documents)
    assert any(d["logger"] == "ks.serve" for d in documents)
