"""GET /metrics through the test client: counters, latency, host gauges, and nothing that identifies a machine."""

from datetime import timedelta

import pytest

from ks.core import states
from ks.fleet import machines, operations
from ks.records.models import utcnow

from helpers import MAC1, MAC2, boot, bootid_of, metric_samples

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


def scrape(client) -> dict:
    """(sample name, sorted label items) -> value."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.mimetype == "text/plain"
    return metric_samples(r.text)


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_boot_registration_finish_and_conflict_are_counted(client, db):
    before = scrape(client)
    boot(client, MAC1, serial="SER1")
    boot(client, MAC2, serial="SER2")
    boot(client, MAC1, serial="SER1", poll=True)  # a poll is no boot decision
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("image1"), "cli"))
    bootid = bootid_of(boot(client, MAC1, serial="SER1").text)
    client.get("/finish", query_string={"id": 1, "bootid": bootid})
    client.get("/finish", query_string={"id": 1, "bootid": bootid})  # a retried /finish advances nothing
    boot(client, MAC1, serial="SER2")  # identifiers of two hosts
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("kiwispray_boots_total", state="new") == 2
    assert delta("kiwispray_boots_total", state="image1") == 1
    assert delta("kiwispray_registrations_total") == 2
    assert delta("kiwispray_finishes_total", state="image1") == 1
    assert delta("kiwispray_conflicts_total") == 1
    assert delta("kiwispray_request_duration_seconds_count", endpoint="/bootstrap") == 5
    assert delta("kiwispray_request_duration_seconds_count", endpoint="/finish") == 2
    assert value(after, "kiwispray_hosts", state="new") == 1
    assert value(after, "kiwispray_hosts", state="finished") == 1


def test_failed_hosts(client, db):
    """Gauges come from the database, so a timeout flagged by a command shows too."""
    boot(client, MAC1, serial="SER1")
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("wipe,image1"), "cli"))
    boot(client, MAC1, serial="SER1")
    assert value(scrape(client), "kiwispray_failed_hosts", state="wipe") == 0
    operations.check_timeouts(db, "cli", now=utcnow() + timedelta(hours=2))
    after = scrape(client)
    assert value(after, "kiwispray_failed_hosts", state="wipe") == 1
    assert value(after, "kiwispray_hosts", state="wipe") == 1


def test_metrics_reveal_no_bootid_mac_or_serial(client, db):
    boot(client, MAC1, serial="SERIAL-XYZ")
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("image1"), "cli"))
    script = boot(client, MAC1, serial="SERIAL-XYZ").text
    client.get("/finish", query_string={"id": 1, "bootid": bootid_of(script)})
    client.get("/no/such/page")
    text = client.get("/metrics").text
    assert bootid_of(script) not in text
    for secret in ("SERIAL-XYZ", "52:54:00:00:00:01", "52-54-00-00-00-01", "no/such"):
        assert secret not in text
    assert 'endpoint="unmatched"' in text
