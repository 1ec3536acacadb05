"""Install progress: the phase of each host's current boot, counted downloads, bounded writes."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ks.boot import files
from ks.core import progress, states
from ks.fleet import machines
from ks.records.record import HostRecord

from helpers import MAC1, boot, bootid_of, eh

DISK = "/images/image1/Image1.xz"
SIZE = 4 * files.READ_SIZE + 1000  # several reads of the server's file wrapper
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BASE = HostRecord(id=1, hostname="h", state="image1", macs=(), serial=None, uuid=None, meta={}, facts={}, labels={},
                  created_at=T0, updated_at=T0, last_boot_at=T0, last_seen_at=T0, bmc_address=None, bmc_username=None,
                  bmc_password=None, failed_at=None, deadline_at=None, boot_finished=False, download_sent=0,
                  download_size=None, post_install_at=None, chain_set_at=None)


@pytest.mark.parametrize("changes, expected", [
    ({"state": "new", "last_boot_at": None}, ("waiting", None)),
    ({"last_boot_at": None}, ("waiting", None)),
    ({"chain_set_at": datetime(2026, 12, 6, 12, 1, tzinfo=UTC)}, ("waiting", None)),
    ({"chain_set_at": datetime(2026, 12, 6, 11, 59, tzinfo=UTC)}, ("booted", 0)),
    ({}, ("booted", 0)),
    ({"download_sent": 250, "download_size": 1000}, ("downloading", 25)),
    ({"download_sent": 999, "download_size": 1000}, ("downloading", 99)),
    ({"download_sent": 1000, "download_size": 1000}, ("downloaded", 100)),
    ({"download_sent": 1000, "download_size": 1000, "post_install_at": T0}, ("post-install fetched", 100)),
    ({"boot_finished": True}, ("finished", 100)),
    ({"state": "finished"}, ("finished", 100)),
    ({"failed_at": T0, "download_sent": 10, "download_size": 1000}, ("failed", None)),
])
def test_the_phase_follows_from_the_record(changes, expected):
    found = progress.phase(replace(BASE, **changes))
    assert (found["phase"], found["percent"]) == expected


def test_describe():
    assert progress.describe({"phase": "downloading", "percent": 42}) == "downloading 42 %"
    assert progress.describe({"phase": "finished", "percent": 100}) == "finished"


def test_the_throttle_writes_every_tenth_or_every_few_seconds():
    now = [0.0]
    written = []
    throttle = progress.Throttle(1000, written.append, seconds=3.0, clock=lambda: now[0])
    for sent in range(0, 1001, 10):  # a hundred chunks
        throttle(sent)
    assert written == list(range(0, 1001, 100))
    written.clear()
    slow = progress.Throttle(10**9, written.append, seconds=3.0, clock=lambda: now[0])
    for second in range(10):
        now[0] = float(second)
        slow(second)
    assert written == [0, 3, 6, 9]


@pytest.fixture
def disk(root):
    path = root / "images" / "image1" / "Image1.xz"
    path.write_bytes(b"x" * SIZE)
    return path


def booted_into_image(client, db, address="10.1.2.3") -> str:
    boot(client, MAC1, serial="SER1")
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("image1"), "cli"))
    response = client.get("/bootstrap", query_string={"net0": MAC1, "serial": "SER1"},
                          environ_base={"REMOTE_ADDR": address})
    return bootid_of(response.get_data(as_text=True))


def phase_of(client, token):
    return client.get("/api/v1/hosts/1", headers={"Authorization": f"Bearer {token}"}).get_json()["progress"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_download_moves_the_phase_and_is_written_a_bounded_number_of_times(client, db, disk, token, monkeypatch):
    from ks.boot import booting

    bootid = booted_into_image(client, db)
    assert phase_of(client, token) == {"phase": "booted", "percent": 0}
    writes = []
    original = booting.record_progress
    monkeypatch.setattr(booting, "record_progress", lambda *args: (writes.append(args[3]), original(*args)))
    response = client.get(DISK, environ_base={"REMOTE_ADDR": "10.1.2.3"}, buffered=False)
    chunks = iter(response.response)
    next(chunks)
    next(chunks)
    middle = phase_of(client, token)
    assert middle["phase"] == "downloading" and 0 <= middle["percent"] < 100
    b"".join(chunks)
    response.close()
    assert phase_of(client, token) == {"phase": "downloaded", "percent": 100}
    assert 2 <= len(writes) <= 11  # never one per chunk beyond the 10 % steps
    client.get("/post-install", query_string={"id": 1, "bootid": bootid})
    assert phase_of(client, token) == {"phase": "post-install fetched", "percent": 100}
    client.get("/finish", query_string={"id": 1, "bootid": bootid})
    assert phase_of(client, token) == {"phase": "finished", "percent": 100}


def test_a_download_from_another_address_is_not_counted_and_stays_zero_copy(client, db, disk, token, app):
    booted_into_image(client, db)
    with app.test_request_context(DISK, environ_base={"REMOTE_ADDR": "10.9.9.9"}):
        from ks.boot.views import _progress_tracker

        track = _progress_tracker("image1/Image1.xz")
        assert track(SIZE) is None  # no machine booted from there: sendfile as before
    client.get(DISK, environ_base={"REMOTE_ADDR": "10.9.9.9"}, buffered=True).close()
    assert phase_of(client, token) == {"phase": "booted", "percent": 0}


def test_a_counted_window_has_no_fileno_so_the_server_reads_it(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"y" * 100)
    seen = []
    with open(path, "rb") as file:
        window = files.Window(file, 100, progress=seen.append)
        with pytest.raises(OSError):
            window.fileno()
        assert window.read(60) == b"y" * 60 and window.read() == b"y" * 40
    assert seen == [60, 100]
    with open(path, "rb") as file:
        assert files.Window(file, 100).fileno() == file.fileno()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_new_boot_and_a_new_chain_start_the_progress_again(client, db, disk, token):
    booted_into_image(client, db)
    client.get(DISK, environ_base={"REMOTE_ADDR": "10.1.2.3"}, buffered=True).close()
    assert phase_of(client, token)["phase"] == "downloaded"
    client.get("/bootstrap", query_string={"net0": MAC1, "serial": "SER1"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert phase_of(client, token) == {"phase": "booted", "percent": 0}
    client.get(DISK, environ_base={"REMOTE_ADDR": "10.1.2.3"}, buffered=True).close()
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("wipe"), "cli"))
    assert phase_of(client, token) == {"phase": "waiting", "percent": None}
    client.get("/bootstrap", query_string={"net0": MAC1, "serial": "SER1"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert phase_of(client, token) == {"phase": "booted", "percent": 0}


def test_the_progress_is_in_the_openapi_schema(client):
    schema = client.get("/api/v1/openapi.json").get_json()
    host = schema["components"]["schemas"]["Host"]["properties"]
    assert host["progress"]["properties"]["phase"]["enum"] == list(progress.PHASES)


def test_edit_host_lists_progress_in_a_column_only_when_asked(cli_runner, root, client, db, disk):
    booted_into_image(client, db)
    plain = eh(cli_runner, root, "-l").output
    assert plain.splitlines()[0].split() == ["#Id", "Hostname", "State", "Serial#"]
    assert "booted" not in plain
    client.get(DISK, environ_base={"REMOTE_ADDR": "10.1.2.3"}, buffered=True).close()
    lines = eh(cli_runner, root, "-l", "--progress").output.splitlines()
    assert lines[0].split() == ["#Id", "Hostname", "State", "Serial#", "Progress"]
    assert lines[1].split() == ["1", "not-set", "image1", "SER1", "downloaded"]
