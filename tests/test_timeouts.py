"""Provisioning timeouts: deadlines set by boots, cleared by /finish, flagged once, retried."""

import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from ks.app import create_app
from ks.cli.edit_host import edit_host
from ks.cli.main import cli
from ks.core import states
from ks.fleet import machines, operations, timeouts
from ks.records import migrate
from ks.records.models import utcnow

from helpers import MAC1, boot, bootid_of

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def app(root, database_url):
    """The application with a one-second deploy timeout."""
    app = create_app({"ROOT": str(root), "DATABASE_URL": database_url, "DEPLOY_TIMEOUT": 1})
    migrate.upgrade(app.extensions["kiwispray"].db)
    yield app
    app.extensions["kiwispray"].db.dispose()


@pytest.fixture
def run(cli_runner, root, database_url):
    """Run edit-host or kiwispray on the test's database; returns click's result."""

    def invoke(command, *args):
        return cli_runner.invoke(command, ["--root", str(root), *args], env={"KS_DATABASE_URL": database_url})

    return invoke


def host(db, host_id=1):
    with db.read() as s:
        return machines.get_host(s, host_id)


def kinds(db, host_id=1):
    with db.read() as s:
        return [(e.kind, e.source) for e in machines.history(s, host_id)]


def set_state(db, text, host_id=1):
    db.write(lambda s: machines.set_state(s, machines.get_host(s, host_id), states.parse_chain(text), "cli"))


def booted_into(client, db, chain) -> str:
    """Register MAC1, give it ``chain`` and boot it; returns the bootid."""
    boot(client, MAC1, serial="SER1")
    set_state(db, chain)
    return bootid_of(boot(client, MAC1, serial="SER1").text)


def later(seconds: float):
    return utcnow() + timedelta(seconds=seconds)


def test_a_machine_that_never_finishes_is_flagged_and_a_retry_puts_it_back(client, db, run, public_hosts):
    booted_into(client, db, "wipe,image1")
    assert host(db).deadline_at is not None
    assert operations.check_timeouts(db, "server") == []  # not yet
    time.sleep(1.2)  # the real one-second timeout passes
    assert operations.check_timeouts(db, "server") == [(1, "wipe")]
    assert operations.check_timeouts(db, "server") == []  # flagged once

    listing = run(edit_host, "-l")
    assert listing.exit_code == 0
    assert listing.output.splitlines()[1] == "   1 not-set              wipe,image1 (failed) SER1"
    assert client.get("/hosts").text.splitlines()[1] == listing.output.splitlines()[1]
    data = json.loads(run(edit_host, "-i", "1", "--json").output)
    assert data["failed"] is True and data["failed_at"] and data["deadline_at"] is None
    assert data["chain"] == ["wipe", "image1"]
    history = run(edit_host, "-i", "1", "--history")
    timeout_line = history.output.splitlines()[-1]
    assert (
        " timeout " in timeout_line
        and "no /finish from 'wipe'" in timeout_line
        and "edit-host -i 1 --retry" in timeout_line
    )

    # Booting again, the machine is told why and waits; its polls change nothing.
    r = boot(client, MAC1, serial="SER1")
    assert "FAILED" in r.text and "edit-host -i 1 --retry" in r.text and "chain --replace" in r.text
    assert "kernel" not in r.text
    assert host(db).deadline_at is None
    before = kinds(db)
    assert "FAILED" in boot(client, MAC1, serial="SER1", poll=True).text
    assert kinds(db) == before

    r = run(edit_host, "-i", "1", "--retry")
    assert r.exit_code == 0, r.output
    assert "   1 not-set              wipe,image1 SER1" in r.output
    assert kinds(db)[-1] == ("retry", "cli")
    # The waiting machine's next poll starts the current state again, with a new deadline.
    script = boot(client, MAC1, serial="SER1", poll=True).text
    assert "/images/wipe/" in script
    assert host(db).deadline_at is not None and host(db).failed_at is None
    assert client.get("/finish", query_string={"id": 1, "bootid": bootid_of(script)}).status_code == 200
    assert host(db).state == "image1" and host(db).deadline_at is None


def test_retry_of_a_healthy_host_is_refused(client, db, run):
    booted_into(client, db, "image1")
    r = run(edit_host, "-i", "1", "--retry")
    assert r.exit_code == 1 and "host 1 has not failed; nothing to retry" in r.output


def test_kiwispray_timeouts_check_prints_the_machines_it_flags(client, db, run):
    booted_into(client, db, "image1")
    assert run(cli, "timeouts", "check").output == ""
    time.sleep(1.2)
    r = run(cli, "timeouts", "check")
    assert r.exit_code == 0
    assert r.output == "host 1: no /finish from 'image1' in time; flagged failed (edit-host -i 1 --retry)\n"
    assert kinds(db)[-1] == ("timeout", "cli")
    assert run(cli, "timeouts", "check").output == ""


def test_a_reboot_into_the_same_image_keeps_the_deadline(client, db):
    booted_into(client, db, "image1")
    first = host(db).deadline_at
    time.sleep(0.05)
    boot(client, MAC1, serial="SER1")
    assert host(db).deadline_at == first


def test_finish_clears_the_deadline_and_the_next_image_gets_its_own(client, db, root):
    (root / "images" / "image1" / "kiwispray.toml").write_text("# an hour and a half\ndeploy_timeout = 5400\n")
    bootid = booted_into(client, db, "wipe,image1")
    h = host(db)
    assert h.deadline_at - h.last_boot_at == timedelta(seconds=1)
    client.get("/finish", query_string={"id": 1, "bootid": bootid})
    assert host(db).deadline_at is None  # none until image1 boots
    boot(client, MAC1, serial="SER1")
    h = host(db)
    assert h.deadline_at - h.last_boot_at == timedelta(seconds=5400)


def test_builtin_states_and_a_zero_timeout_set_no_deadline(client, db, root):
    boot(client, MAC1, serial="SER1")
    assert host(db).deadline_at is None  # new
    set_state(db, "finished")
    boot(client, MAC1, serial="SER1")
    assert host(db).deadline_at is None
    (root / "images" / "image1" / "kiwispray.toml").write_text("deploy_timeout = 0\n")
    set_state(db, "image1")
    boot(client, MAC1, serial="SER1")
    assert host(db).deadline_at is None


def test_a_new_state_clears_a_failure(client, db):
    booted_into(client, db, "image1")
    operations.check_timeouts(db, "server", now=later(5))
    assert host(db).failed_at is not None
    set_state(db, "wipe")
    assert host(db).failed_at is None
    assert "/images/wipe/" in boot(client, MAC1, serial="SER1").text


def test_a_late_finish_still_counts(client, db):
    bootid = booted_into(client, db, "image1")
    operations.check_timeouts(db, "server", now=later(5))
    r = client.get("/finish", query_string={"id": 1, "bootid": bootid})
    assert r.status_code == 200
    h = host(db)
    assert (h.state, h.failed_at, h.deadline_at) == ("finished", None, None)
    with db.read() as s:
        assert machines.history(s, 1)[-1].detail == "after its deadline"


def test_two_checks_at_once_flag_a_machine_once(client, db):
    """The second writer waits for the first, then finds nothing left to flag."""
    booted_into(client, db, "image1")
    now = later(5)
    second: list = []
    with Session(db.engine) as first, first.begin():
        assert timeouts.flag_overdue(first, now, "server") == [(1, "image1")]
        other = threading.Thread(
            target=lambda: second.append(db.write(lambda s: timeouts.flag_overdue(s, now, "server")))
        )
        other.start()
        time.sleep(0.3)  # the other check is now waiting for our row (PostgreSQL) or write lock (SQLite)
        assert other.is_alive()
    other.join(10)
    assert second == [[]]
    assert [k for k, _ in kinds(db)].count("timeout") == 1


def test_render_shows_what_a_failed_machine_gets(client, db, run):
    booted_into(client, db, "image1")
    operations.check_timeouts(db, "server", now=later(5))
    r = run(cli, "render", "-i", "1")
    assert r.exit_code == 0 and "FAILED" in r.output and "shipped:failed.ipxe" in r.output
    assert "FAILED" not in run(cli, "render", "-i", "1", "--state", "image1").output
