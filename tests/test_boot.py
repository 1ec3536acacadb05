"""The boot protocol through the Flask test client (SPEC §2-§4)."""

import pytest
from sqlalchemy import func, select

from ks.boot import booting
from ks.core import states
from ks.fleet import machines
from ks.records import events as events_module
from ks.records.models import Event, Host

from helpers import MAC1, MAC2, MAC3, boot, bootid_of, make_image

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


def set_state(db, host_id, text):
    db.write(lambda s: machines.set_state(s, machines.get_host(s, host_id), states.parse_chain(text), "cli"))


def host(db, host_id):
    with db.read() as s:
        return machines.get_host(s, host_id)


def events(db, host_id):
    with db.read() as s:
        return [(e.kind, e.source, e.from_state, e.to_state) for e in machines.history(s, host_id)]


def count_hosts(db):
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Host))


def test_unknown_machine_is_registered_in_new(client, db, public_hosts):
    r = boot(client, MAC1, MAC2, serial="SER1", uuid="4c4c4544-0042-3510-8056-b4c04f335931")
    assert r.status_code == 200
    assert r.text.startswith("#!ipxe")
    assert 'state "new"' in r.text
    h = host(db, 1)
    assert (h.state, h.serial, h.uuid) == ("new", "SER1", "4C4C4544-0042-3510-8056-B4C04F335931")
    assert h.mac_list == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert [e[0] for e in events(db, 1)] == ["register", "boot"]
    assert client.get("/hosts").text.splitlines()[1].split() == ["1", "not-set", "new", "SER1"]


def test_machine_with_only_a_mac_is_registered(client, db):
    assert boot(client, MAC1).status_code == 200
    assert host(db, 1).mac_list == ["52:54:00:00:00:01"]
    assert host(db, 1).serial is None


def test_machine_is_recognised_by_its_macs_and_learns_new_ones(client, db):
    boot(client, MAC1, serial="SER1")
    boot(client, MAC1, MAC2, serial="SER1")  # a NIC added
    boot(client, MAC2, MAC3, uuid="4c4c4544-0042-3510-8056-b4c04f335931", serial="SER1")
    assert count_hosts(db) == 1
    h = host(db, 1)
    assert h.mac_list == ["52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"]
    assert h.uuid == "4C4C4544-0042-3510-8056-B4C04F335931"


def test_serial_or_uuid_alone_does_not_hand_out_a_hosts_boot(client, db):
    boot(client, MAC1, serial="SER1", uuid="4c4c4544-0042-3510-8056-b4c04f335931")
    r = boot(client, MAC2, serial="SER1")
    assert r.status_code == 200 and "conflict" in r.text and "bootid=" not in r.text
    r = boot(client, MAC3, uuid="4c4c4544-0042-3510-8056-b4c04f335931")
    assert r.status_code == 200 and "conflict" in r.text and "bootid=" not in r.text
    assert host(db, 1).mac_list == ["52:54:00:00:00:01"]
    assert [e[0] for e in events(db, 1)][-2:] == ["boot", "conflict"]  # the second is counted in the first
    with db.read() as s:
        assert events_module.more_of(machines.history(s, 1)[-1].detail) == 1


def test_firmware_placeholders_never_merge_machines(client, db):
    boot(client, MAC1, serial="To be filled by O.E.M.", uuid="03000200-0400-0500-0006-000700080009")
    boot(client, MAC2, serial="To be filled by O.E.M.", uuid="03000200-0400-0500-0006-000700080009")
    assert count_hosts(db) == 2
    assert host(db, 1).serial is None and host(db, 1).uuid is None


def test_identity_conflict_changes_nothing_and_is_recorded(client, db):
    boot(client, MAC1, serial="SER1")
    boot(client, MAC2, serial="SER2")
    before = [(host(db, i).bootid_hash, host(db, i).mac_list) for i in (1, 2)]
    r = boot(client, MAC1, serial="SER2")
    assert r.status_code == 200
    assert "identity conflict" in r.text
    assert "hosts 1, 2" not in r.text and "host 1" not in r.text  # which hosts exist is not the boot network's business
    assert "chain --replace --autofree" in r.text  # it waits and asks again
    assert count_hosts(db) == 2
    assert [(host(db, i).bootid_hash, host(db, i).mac_list) for i in (1, 2)] == before
    assert events(db, 1)[-1][0] == "conflict" and events(db, 2)[-1][0] == "conflict"
    # Its polls do not record the conflict again.
    boot(client, MAC1, serial="SER2", poll=True)
    assert [e[0] for e in events(db, 1)].count("conflict") == 1


def test_full_chain_wipe_then_image_then_disk(client, db, root):
    boot(client, MAC1, serial="SER1")
    set_state(db, 1, "wipe,image1")

    script = boot(client, MAC1, serial="SER1").text
    assert "boots image wipe" in script
    assert "/images/wipe/pxeboot.kernel" in script
    bootid = bootid_of(script)
    post = client.get("/post-install", query_string={"id": 1, "bootid": bootid})
    assert post.status_code == 200 and post.text.startswith("#!/bin/sh")
    assert f"/finish?id=1&bootid={bootid}" in post.text
    assert client.get("/finish", query_string={"id": 1, "bootid": bootid}).status_code == 200
    assert host(db, 1).state == "image1"

    script = boot(client, MAC1, serial="SER1").text
    assert "boots image image1" in script
    assert "rd.kiwi.install.image=http://localhost:80/images/image1/Image1.xz" in script
    assert "http://example.com" not in script  # KIWI's placeholder install URL is replaced
    bootid2 = bootid_of(script)
    assert bootid2 != bootid
    assert client.get("/finish", query_string={"id": 1, "bootid": bootid2}).status_code == 200
    assert host(db, 1).state == "finished"

    script = boot(client, MAC1, serial="SER1").text
    assert "\nexit" in script and "kernel" not in script
    assert count_hosts(db) == 1
    kinds = [e[0] for e in events(db, 1)]
    assert kinds == ["register", "boot", "state", "boot", "post-install", "finish", "boot", "finish", "boot"]


def test_retried_finish_advances_once(client, db):
    boot(client, MAC1)
    set_state(db, 1, "wipe,image1")
    bootid = bootid_of(boot(client, MAC1).text)
    first = client.get("/finish", query_string={"id": 1, "bootid": bootid})
    again = client.get("/finish", query_string={"id": 1, "bootid": bootid})
    assert (first.status_code, again.status_code) == (200, 200)
    assert "already finished" in again.text
    assert host(db, 1).state == "image1"
    assert [e[0] for e in events(db, 1)].count("finish") == 1


def test_old_bootid_is_refused_after_the_next_boot(client, db):
    boot(client, MAC1)
    set_state(db, 1, "wipe,image1")
    old = bootid_of(boot(client, MAC1).text)
    boot(client, MAC1)
    assert client.get("/finish", query_string={"id": 1, "bootid": old}).status_code == 401
    assert client.get("/post-install", query_string={"id": 1, "bootid": old}).status_code == 401
    assert host(db, 1).state == "wipe,image1"


@pytest.mark.parametrize("state", ["new", "finished"])
def test_finish_with_nothing_to_finish_is_409(client, db, state):
    boot(client, MAC1)
    set_state(db, 1, state)
    # The scripts of `new` and `finished` carry no bootid; give the host a known one.
    bootid = _rotate(db, 1)
    r = client.get("/finish", query_string={"id": 1, "bootid": bootid})
    assert r.status_code == 409 and "nothing to finish" in r.text
    assert host(db, 1).state == state


def _rotate(db, host_id):
    """Give the host a known bootid, as /bootstrap would."""
    bootid = booting.new_bootid()

    def work(s):
        h = machines.get_host(s, host_id)
        h.bootid_hash = booting.hash_bootid(bootid)
        h.boot_finished = False

    db.write(work)
    return bootid


def test_order_of_checks_id_then_bootid_then_state(client, db):
    boot(client, MAC1)
    assert client.get("/finish").status_code == 400
    assert client.get("/finish?id=99&bootid=x").status_code == 401
    assert client.get("/finish?id=99").status_code == 401
    assert client.get("/finish?id=1").status_code == 401
    assert client.get("/finish?id=1&bootid=0123").status_code == 401
    assert client.get("/finish", query_string={"id": 1, "bootid": _rotate(db, 1)}).status_code == 409


def test_state_endpoint(client, db):
    boot(client, MAC1)
    set_state(db, 1, "wipe,image1")
    assert client.get("/state?id=1").status_code == 401
    bootid = bootid_of(boot(client, MAC1).text)
    r = client.get("/state", query_string={"id": 1, "bootid": bootid})
    assert (r.status_code, r.text) == (200, "wipe\n")
    assert client.get("/state?id=2").status_code == 401
    assert client.get("/state?id=x").status_code == 400


BOOTID_GUARDED = [
    ("get", "/finish?id={id}&bootid={bootid}"),
    ("get", "/state?id={id}&bootid={bootid}"),
    ("get", "/post-install?id={id}&bootid={bootid}"),
    ("post", "/update?id={id}&bootid={bootid}"),
    ("get", "/nocloud/{id}/{bootid}/meta-data"),
    ("get", "/nocloud/{id}/{bootid}/user-data"),
    ("get", "/ignition/{id}/{bootid}/config.ign"),
]


@pytest.mark.parametrize(("method", "path"), BOOTID_GUARDED)
def test_a_wrong_bootid_does_not_tell_whether_the_host_exists(client, db, method, path):
    boot(client, MAC1)  # host 1, booted: it has a bootid
    set_state(db, 1, "discover")
    boot(client, MAC2)  # host 2, given a state since: no bootid
    set_state(db, 2, "image1")
    for bootid in ("0" * 32, "x", ""):
        answers = {
            host_id: getattr(client, method)(path.format(id=host_id, bootid=bootid))
            for host_id in (1, 2, 99, 2**40)
        }
        seen = {(r.status_code, r.get_data()) for r in answers.values()}
        assert len(seen) == 1, (bootid, seen)
        if bootid or "?" in path:  # an empty path segment matches no route at all
            assert answers[99].status_code == 401


def test_conflicts_of_a_host_are_counted_in_one_line_per_interval(client, db):
    boot(client, MAC1, serial="SER1")
    for mac in (MAC2, MAC3, MAC2):
        assert "identity conflict" in boot(client, mac, serial="SER1").text
    with db.read() as s:
        lines = [e for e in machines.history(s, 1) if e.kind == "conflict"]
    assert len(lines) == 1 and lines[0].detail.startswith("the serial or UUID of host 1")
    assert events_module.more_of(lines[0].detail) == 2 and "mac=52:54:00:00:00:02" in lines[0].detail

    def age(session):  # the line's interval is over
        session.get(Event, lines[0].id).at -= booting.CONFLICT_INTERVAL

    db.write(age)
    boot(client, MAC3, serial="SER1")
    boot(client, MAC2, serial="SER1")
    with db.read() as s:
        details = [e.detail for e in machines.history(s, 1) if e.kind == "conflict"]
    assert [events_module.more_of(d) for d in details] == [2, 1] and "mac=52:54:00:00:00:03" in details[1]


def test_waiting_machine_polls_without_flooding_history_and_moves_on(client, db):
    first = boot(client, MAC1, serial="SER1").text
    assert "poll=1" in first
    bootid_hash = host(db, 1).bootid_hash
    for _ in range(5):
        r = boot(client, MAC1, serial="SER1", poll=True)
        assert 'state "new"' in r.text
    assert [e[0] for e in events(db, 1)] == ["register", "boot"]
    assert host(db, 1).bootid_hash == bootid_hash
    set_state(db, 1, "image1")
    r = boot(client, MAC1, serial="SER1", poll=True)
    assert "boots image image1" in r.text
    assert [e[0] for e in events(db, 1)][-1] == "boot"
    assert host(db, 1).bootid_hash != bootid_hash


def test_discover_initial_chain_and_update(root, db, database_url):
    from ks.app import create_app

    app = create_app({"ROOT": str(root), "INITIAL_CHAIN": "discover,new", "DATABASE_URL": database_url})
    client = app.test_client()
    make_image(root, "discover")
    bootid = bootid_of(boot(client, MAC1).text)
    assert host(db, 1).state == "discover,new"
    r = client.post(
        f"/update?id=1&bootid={bootid}",
        data={
            "mac": ["52:54:00:00:00:09", "52-54-00-00-00-0A"],
            "metadata": ['{"ipmi_addr": "10.0.0.9"}', '{"dmi": {"sys_vendor": "QEMU"}}'],
        },
    )
    assert r.status_code == 200, r.text
    h = host(db, 1)
    assert h.mac_list == ["52:54:00:00:00:01", "52:54:00:00:00:09", "52:54:00:00:00:0a"]
    assert h.meta == {"ipmi_addr": "10.0.0.9", "dmi": {"sys_vendor": "QEMU"}}
    assert client.get(f"/finish?id=1&bootid={bootid}").status_code == 200
    assert host(db, 1).state == "new"
    r = client.post(f"/update?id=1&bootid={bootid}", data={"metadata": "{}"})
    assert r.status_code == 409 and "only accepted in state 'discover'" in r.text
    app.extensions["kiwispray"].db.dispose()


def test_a_machine_never_changes_metadata_that_is_set(client, api, db, root):
    make_image(root, "discover")
    boot(client, MAC1)
    operator_key = "ssh-ed25519 AAAAC3operator admin@site"
    r = api.patch("/hosts/1", json={"state": "discover", "metadata": {"ssh_authorized_keys": operator_key}})
    assert r.status_code == 200, r.text
    bootid = _rotate(db, 1)
    for document in ('{"ssh_authorized_keys": "ssh-ed25519 AAAAC3attacker x@evil", "rack": "4"}',
                     '{"ssh_authorized_keys": null, "rack": "5"}'):
        r = client.post(f"/update?id=1&bootid={bootid}", data={"metadata": document})
        assert r.status_code == 200, r.text
    assert host(db, 1).meta == {"ssh_authorized_keys": operator_key, "rack": "4"}
    with db.read() as s:
        details = [e.detail for e in machines.history(s, 1) if e.kind == "update"]
    assert details == ["metadata.rack; kept as set: metadata.ssh_authorized_keys",
                       "nothing new; kept as set: metadata.rack metadata.ssh_authorized_keys"]


def test_update_refusals_leave_the_host_unchanged(client, db, root):
    boot(client, MAC2)
    boot(client, MAC1)
    set_state(db, 2, "discover")
    bootid = _rotate(db, 2)
    url = f"/update?id=2&bootid={bootid}"
    cases = [
        ({"metadata": "{not json"}, 400),
        ({"metadata": "[1, 2]"}, 400),
        ({"metadata": '{"a": "x\\nshell"}'}, 400),
        ({"metadata": '{"a": "x && shell"}'}, 400),
        ({"metadata": '{"a": NaN}'}, 400),
        ({"mac": "nonsense"}, 400),
        ({"color": "blue"}, 400),
        ({"mac": MAC2, "metadata": '{"a": 1}'}, 409),  # MAC of host 1
    ]
    for data, status in cases:
        r = client.post(url, data=data)
        assert r.status_code == status, (data, r.text)
    h = host(db, 2)
    assert h.meta == {} and h.mac_list == ["52:54:00:00:00:01"]


def test_bootstrap_ipxe_uses_host_header_or_base_url(client, root):
    r = client.get("/bootstrap.ipxe", headers={"Host": "10.1.2.3:5000"})
    assert "chain http://10.1.2.3:5000/bootstrap?net0=${net0/mac:hexhyp}" in r.text
    assert client.get("/bootstrap.ipxe", headers={"Host": "evil&&shell:5000"}).status_code == 400
    from ks.app import create_app

    other = create_app({"ROOT": str(root), "BASE_URL": "http://boot.example:8080/", "DATABASE_URL": "sqlite://"}).test_client()
    assert "chain http://boot.example:8080/bootstrap?" in other.get("/bootstrap.ipxe").text


def test_every_boot_rotates_a_128_bit_bootid(client, db):
    boot(client, MAC1)
    set_state(db, 1, "image1")
    ids = {bootid_of(boot(client, MAC1).text) for _ in range(5)}
    assert len(ids) == 5 and all(len(i) == 32 for i in ids)
    with db.read() as s:
        assert all(len(h) == 64 for h in s.scalars(select(Host.bootid_hash)))


def test_history_records_every_kind(client, db, root):
    boot(client, MAC1, serial="S1")
    boot(client, MAC2, serial="S2")
    boot(client, MAC1, serial="S2")
    set_state(db, 1, "image1")
    bootid = bootid_of(boot(client, MAC1, serial="S1").text)
    client.get(f"/finish?id=1&bootid={bootid}")
    with db.read() as s:
        kinds = set(s.scalars(select(Event.kind).where(Event.host_id == 1)))
        sources = set(s.scalars(select(Event.source).where(Event.host_id == 1)))
    assert kinds == {"register", "boot", "conflict", "state", "finish"}
    assert sources == {"bootstrap", "cli", "finish"}


def test_a_host_learns_at_most_max_macs_however_many_boots_report_new_ones(client, db):
    from ks.core.identity import MAX_MACS

    first = "52-54-00-00-00-01"
    for boot_number in range(4):  # one known MAC and eight new ones each time
        macs = [first] + [f"52-54-00-00-{boot_number + 1:02x}-{i:02x}" for i in range(1, 9)]
        assert boot(client, *macs).status_code == 200
    h = host(db, 1)
    assert len(h.mac_list) == MAX_MACS
    assert count_hosts(db) == 1
    with db.read() as s:
        details = [e.detail for e in machines.history(s, 1) if e.kind == "update"]
    assert "; not learned (a host has at most 16 MACs): " in details[-1]
    assert not any(mac.startswith("52:54:00:00:04:") for mac in h.mac_list)  # the last boot's were all refused
    assert len(details) == 2  # learned on boots 2 and 3; boot 4 wrote nothing
