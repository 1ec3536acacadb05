"""Labels and changes of many hosts by selector: edit-host, kiwispray host/config, the admin API.

Bulk changes are one unit of work: 1,000 hosts change together or not at all,
and --dry-run writes nothing.
"""

import json

import pytest
from sqlalchemy import insert, text

from ks.cli.main import cli
from ks.fleet import deploys
from ks.records.models import Host, HostMac, utcnow

from helpers import MAC1, boot, eh, schema_errors

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def env(database_url):
    """The environment that points a command at the test's database (SQLite or PostgreSQL)."""
    return {"KS_DATABASE_URL": database_url}


def populate(db, count: int) -> None:
    """``count`` hosts: rack = id % 10, role=db on every third, a product fact, one MAC each."""
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(insert(Host), [
            {"id": i, "hostname": f"node{i}", "state": "new", "meta": {}, "boot_finished": False,
             "created_at": now, "updated_at": now, "serial": f"S{i}",
             "labels": {"rack": str(i % 10), **({"role": "db"} if i % 3 == 0 else {})},
             "facts": {"product": "PowerEdge R640" if i % 2 else "QEMU"}} for i in range(1, count + 1)])
        conn.execute(insert(HostMac), [{"mac": f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}", "host_id": i, "position": 0}
                                       for i in range(1, count + 1)])
    if db.engine.dialect.name == "postgresql":  # explicit ids leave the sequence behind
        with db.engine.begin() as conn:
            conn.execute(text("SELECT setval('hosts_id_seq', (SELECT max(id) FROM hosts))"))


def snapshot(db) -> dict:
    """Every row of the hosts, their MACs and their history."""
    with db.engine.connect() as conn:
        return {table: [tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]
                for table in ("hosts", "host_macs", "events")}


def states_of(db) -> dict[int, str]:
    with db.engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, state FROM hosts")).all())


# -- labels ---------------------------------------------------------------------


def test_labels_with_edit_host(cli_runner, root, hosts, db):
    r = eh(cli_runner, root, "-i", "1", "--label", "rack=4", "--label", "role=db", "--label", "site/room=b 2")
    assert r.exit_code == 0, r.output
    r = eh(cli_runner, root, "-i", "1", "--unlabel", "role", "--json")
    assert json.loads(r.output)["labels"] == {"rack": "4", "site/room": "b 2"}
    with db.engine.begin() as conn:
        facts = json.dumps({"product": "PowerEdge R640", "platform": "efi"})
        conn.execute(text("UPDATE hosts SET facts = :facts WHERE id = 1"), {"facts": facts})
    # -l stays the original's table; -ll adds labels and facts.
    assert eh(cli_runner, root, "-l").output.splitlines()[1] == "   1 not-set              new        SER1"
    r = eh(cli_runner, root, "-ll")
    assert r.output.splitlines()[1:5] == [
        "   1 not-set              new        SER1",
        "     MAC addrs: 52:54:00:00:00:01",
        "     Labels:    rack=4,site/room=b 2",
        "     Facts:     platform=efi,product=PowerEdge R640",
    ]
    history = eh(cli_runner, root, "-i", "1", "--history", "--json")
    assert [(e["kind"], e["detail"]) for e in json.loads(history.output)][-2:] == [
        ("label", "labels rack=4 role=db site/room=b 2"), ("label", "labels -role")]
    # The same labels again change nothing and write no history line.
    eh(cli_runner, root, "-i", "1", "--label", "rack=4")
    again = eh(cli_runner, root, "-i", "1", "--history", "--json")
    assert len(json.loads(again.output)) == len(json.loads(history.output))


@pytest.mark.parametrize("args, message", [
    (["--label", "rack"], "--label 'rack': give KEY=VALUE"),
    (["--label", "ra ck=4"], "label name 'ra ck' is invalid"),
    (["--label", "-x=4"], "label name '-x' is invalid"),
    (["--label", "rack=$(reboot)"], "contains the character '$'"),
    (["--label", "rack=" + "x" * 256], "longer than 255"),
    (["--label", "rack=4", "--unlabel", "rack"], "label 'rack' is both set and removed"),
])
def test_bad_labels_are_usage_errors(cli_runner, root, hosts, db, args, message):
    before = snapshot(db)
    r = eh(cli_runner, root, "-i", "1", *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert snapshot(db) == before


def test_a_host_holds_at_most_64_labels(cli_runner, root, hosts, db):
    args = [a for i in range(40) for a in ("--label", f"k{i}=v")]
    assert eh(cli_runner, root, "-i", "1", *args).exit_code == 0
    before = snapshot(db)
    r = eh(cli_runner, root, "-i", "1", *[a for i in range(40, 70) for a in ("--label", f"k{i}=v")])
    assert r.exit_code == 1 and "host 1 would hold 70 labels; a host has at most 64" in r.output
    assert snapshot(db) == before


@BOTH
def test_labels_through_the_api(api, client, hosts):
    r = api.patch("/hosts/1", json={"labels": {"rack": "4", "role": "db"}})
    assert r.status_code == 200 and r.json["labels"] == {"rack": "4", "role": "db"}
    openapi = client.get("/api/v1/openapi.json").json
    assert schema_errors(openapi, "PATCH", "/hosts/1", 200, r.json) == []
    r = api.patch("/hosts/1", json={"labels": {"role": None, "rack": "5"}})
    assert r.json["labels"] == {"rack": "5"}
    assert api.get("/hosts/1").json["labels"] == {"rack": "5"}
    events = api.get("/hosts/1/history").json["events"]
    assert [(e["kind"], e["source"], e["detail"]) for e in events if e["kind"] == "label"] == [
        ("label", "api", "labels rack=4 role=db"), ("label", "api", "labels rack=5 -role")]
    for labels, message in [("rack=4", "labels must be an object"), ({"ra ck": "4"}, "label name 'ra ck' is invalid"),
                            ({"rack": 4}, "must be a string"), ({"rack": "${x}"}, "contains the character '$'")]:
        r = api.patch("/hosts/1", json={"labels": labels, "hostname": "changed"})
        assert r.status_code == 400 and message in r.json["error"], r.json
    assert api.get("/hosts/1").json["hostname"] == "not-set"


# -- selectors: listing -----------------------------------------------------------


@BOTH
def test_listings_filtered_by_selector(cli_runner, root, db, api, env):
    populate(db, 30)
    r = eh(cli_runner, root, "-l", "--select", "rack=4,role!=db", env=env)
    assert r.exit_code == 0, r.output
    assert [line.split()[0] for line in r.output.splitlines()[1:]] == ["4", "14"]
    r = eh(cli_runner, root, "--select", "mac=52-54-00-00-00-1?,product=QEMU", "--json", env=env)
    assert [h["id"] for h in json.loads(r.output)] == [16, 18, 20, 22, 24, 26, 28, 30]  # MACs ..:00:10 to ..:00:1f
    r = cli_runner.invoke(cli, ["--root", str(root), "host", "list", "--no-power", "--select", "rack=4", "--json"],
                          env=env)
    assert [h["id"] for h in json.loads(r.output)] == [4, 14, 24]
    r = api.get("/hosts", query_string={"selector": "rack=4,role!=db", "limit": 1, "offset": 1})
    assert r.status_code == 200 and r.json["total"] == 2 and [h["id"] for h in r.json["hosts"]] == [14]
    assert api.get("/hosts", query_string={"selector": "rack=4", "state": "image1"}).json["total"] == 0
    r = api.get("/hosts", query_string={"selector": "rack=4,,x"})
    assert r.status_code == 400 and r.json["error"] == "selector 'rack=4,,x': empty term at position 8"
    assert api.get("/hosts", query_string={"selector": "rack=4", "mac": MAC1}).status_code == 400


def test_malformed_selector_is_one_line_exit_2(cli_runner, root, hosts, db):
    before = snapshot(db)
    for args in (["-l", "--select", "rack=4,,x"], ["--select", "rack=4,,x", "-s", "image1"]):
        r = eh(cli_runner, root, *args)
        assert r.exit_code == 2 and r.output == "Error: selector 'rack=4,,x': empty term at position 8\n"
    r = cli_runner.invoke(cli, ["--root", str(root), "config", "deploy", "wipe", "--select", "a"])
    assert r.exit_code == 2 and r.output == "Error: selector 'a': term 'a' has no '=' or '!=' at position 1\n"
    assert snapshot(db) == before


# -- selectors: changes -----------------------------------------------------------


@BOTH
def test_one_select_change_of_1000_hosts(cli_runner, root, db, env):
    populate(db, 1700)
    selected = [i for i in range(1, 1701) if i % 10 != 0 and i % 3 != 0][:1000]
    assert len(selected) == 1000
    with db.engine.begin() as conn:  # a fact on exactly 1,000 of those without role=db
        ids = ",".join(map(str, selected))
        conn.execute(text(f"UPDATE hosts SET facts = '{{\"batch\": \"one\"}}' WHERE id IN ({ids})"))
    r = eh(cli_runner, root, "--select", "batch=one,role!=db", "-s", "wipe,image1", "--label", "done=yes",
           "--unlabel", "rack", "--json", env=env)
    assert r.exit_code == 0, r.output
    changed = json.loads(r.stdout)
    assert [h["id"] for h in changed] == selected
    assert all(h["chain"] == ["wipe", "image1"] and h["labels"] == {"done": "yes"} for h in changed)
    assert r.stderr == "1000 host(s) changed\n"
    states = states_of(db)
    assert [i for i, s in sorted(states.items()) if s == "wipe,image1"] == selected
    with db.engine.connect() as conn:
        kinds = conn.execute(text("SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")).all()
    assert [tuple(k) for k in kinds] == [("label", 1000), ("state", 1000)]
    # The table for people: the original's columns, one line per changed host.
    r = eh(cli_runner, root, "--select", "done=yes", "-s", "image1", env=env)
    assert r.stdout.splitlines()[0].split() == ["#Id", "Hostname", "State", "Serial#"]
    assert r.stdout.splitlines()[1].split() == ["1", "node1", "image1", "S1"] and len(r.stdout.splitlines()) == 1001


TRIGGERS = {
    "sqlite": ["CREATE TRIGGER refuse_one BEFORE UPDATE ON hosts WHEN OLD.id = 500 "
               "BEGIN SELECT RAISE(ABORT, 'host 500 is frozen'); END"],
    "postgresql": ["CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'host % is frozen', OLD.id; END $$ LANGUAGE plpgsql",
                   "CREATE TRIGGER refuse_one BEFORE UPDATE ON hosts FOR EACH ROW WHEN (OLD.id = 500) "
                   "EXECUTE FUNCTION refuse_one()"],
}


@BOTH
def test_a_failure_midway_leaves_every_host_as_it_was(cli_runner, root, db, api, env, backend):
    populate(db, 1000)
    eh(cli_runner, root, "-i", "3", "-s", "image1", env=env)  # some history to keep
    with db.engine.begin() as conn:
        for statement in TRIGGERS[backend]:
            conn.execute(text(statement))
    before = snapshot(db)
    r = eh(cli_runner, root, "--select", "id=*", "-s", "wipe", "--label", "rack=x", env=env)
    assert r.exit_code == 1
    assert "host 500 is frozen" in r.output and "nothing was changed" in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert snapshot(db) == before
    r = api.patch("/hosts", query_string={"selector": "rack=?"}, json={"state": "wipe", "labels": {"x": "y"}})
    assert r.status_code == 409 and "host 500 is frozen" in r.json["error"]
    r = api.put("/configurations/wipe/deploy", json={"selector": "product=*"})
    assert r.status_code == 409 and "host 500 is frozen" in r.json["error"]
    assert snapshot(db) == before


@BOTH
def test_dry_run_touches_nothing(cli_runner, root, db, api, client, env):
    populate(db, 50)
    before = snapshot(db)
    r = eh(cli_runner, root, "--select", "rack=4", "-s", "image1", "--label", "x=y", "--dry-run", env=env)
    assert r.exit_code == 0, r.output
    assert [line.split()[:3] for line in r.stdout.splitlines()[1:]] == [
        [str(i), f"node{i}", "new"] for i in (4, 14, 24, 34, 44)]
    assert r.stderr == "dry run: the change would touch these 5 host(s); nothing changed\n"
    r = api.patch("/hosts", query_string={"selector": "rack=4", "dry_run": "1"}, json={"state": "image1"})
    assert r.status_code == 200 and r.json["dry_run"] is True and r.json["total"] == 5
    assert [h["state"] for h in r.json["hosts"]] == ["new"] * 5
    openapi = client.get("/api/v1/openapi.json").json
    assert schema_errors(openapi, "PATCH", "/hosts", 200, r.json) == []
    r = cli_runner.invoke(cli, ["--root", str(root), "host", "set", "--select", "rack=4", "image1", "--dry-run"],
                          env=env)
    assert r.exit_code == 0 and "nothing changed" in r.stderr
    assert snapshot(db) == before


@BOTH
def test_bulk_changes_through_the_api_and_kiwispray(api, client, db, root, cli_runner, env):
    populate(db, 40)
    r = api.patch("/hosts", query_string={"selector": "rack=4,role!=db"},
                  json={"state": ["wipe", "image1"], "labels": {"stage": "install"}, "metadata": {"owner": "ops"}})
    assert r.status_code == 200, r.json
    assert [(h["id"], h["state"], h["labels"]["stage"], h["metadata"]) for h in r.json["hosts"]] == [
        (4, "wipe", "install", {"owner": "ops"}), (14, "wipe", "install", {"owner": "ops"}),
        (34, "wipe", "install", {"owner": "ops"})]
    assert r.json["total"] == 3 and r.json["dry_run"] is False
    assert schema_errors(client.get("/api/v1/openapi.json").json, "PATCH", "/hosts", 200, r.json) == []
    r = api.patch("/hosts", query_string={"selector": "nothing=here"}, json={"state": "image1"})
    assert r.status_code == 200 and r.json["hosts"] == []
    # PXE Pilot's deploy by selector
    assert api.put("/configurations/image1/deploy", json={"selector": "stage=install"}).status_code == 204
    assert [i for i, s in sorted(states_of(db).items()) if s == "image1"] == [4, 14, 34]
    # kiwispray host set / config deploy on this site
    ks = lambda *args: cli_runner.invoke(cli, ["--root", str(root), *args], env=env)  # noqa: E731
    r = ks("host", "set", "--select", "rack=5", "finished", "--label", "done=1", "--json")
    assert r.exit_code == 0, r.output
    assert [(h["id"], h["state"], h["labels"]["done"]) for h in json.loads(r.stdout)] == [
        (5, "finished", "1"), (15, "finished", "1"), (25, "finished", "1"), (35, "finished", "1")]
    r = ks("host", "set", "7", "--label", "rack=77")
    assert r.exit_code == 0 and r.output == "host 7: new rack=77\n"
    r = ks("config", "deploy", "wipe", "--select", "rack=77")
    assert r.exit_code == 0, r.output
    assert states_of(db)[7] == "wipe"


@pytest.mark.parametrize("args, message", [
    (["--select", "rack=4", "-n", "x"], "-n/--hostname belongs to one host and cannot be given with --select"),
    (["--select", "rack=4", "--delete"], "--delete belongs to one host"),
    (["--select", "rack=4", "--set-macs", MAC1], "--set-macs belongs to one host"),
    (["--select", "rack=4", "--bmc", "ipmi://10.0.0.1"], "--bmc belongs to one host"),
    (["--select", "rack=4", "--history"], "--history belongs to one host"),
    (["--select", "rack=4", "-i", "1", "-s", "image1"], "give either -i/--mac/--serial (one host) or --select"),
    (["-i", "1", "-s", "image1", "--dry-run"], "--dry-run goes with --select"),
    (["--select", "rack=4", "--dry-run"], "--dry-run shows what a change would touch"),
])
def test_select_refuses_what_belongs_to_one_host(cli_runner, root, hosts, db, args, message):
    before = snapshot(db)
    r = eh(cli_runner, root, *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert snapshot(db) == before


def test_api_bulk_refusals(api, client, db, root, cli_runner):
    populate(db, 20)
    before = snapshot(db)
    for query, document, message in [
        ({}, {"state": "image1"}, "selector is required"),
        ({"selector": "rack=4"}, {"hostname": "same"}, "hostname belongs to one host"),
        ({"selector": "rack=4"}, {"bmc": None}, "bmc belongs to one host"),
        ({"selector": "rack=4"}, {"state": "image9"}, "unknown image 'image9'"),
        ({"selector": "rack=4", "dry_run": "maybe"}, {"state": "image1"}, "dry_run must be 1 or 0"),
        ({"selector": "rack=4&x"}, {"state": "image1"}, "value may not hold '&' (values"),
    ]:
        r = api.patch("/hosts", query_string=query, json=document)
        assert r.status_code == 400 and message in r.json["error"], (query, r.json)
    r = api.put("/configurations/wipe/deploy", json={"selector": "rack=4", "hosts": [{"name": "1"}]})
    assert r.status_code == 400 and "either hosts or selector" in r.json["error"]
    assert snapshot(db) == before


def test_a_selector_change_is_bounded(api, db, root, cli_runner, monkeypatch):
    monkeypatch.setattr(deploys, "MAX_SELECTED_HOSTS", 5)
    populate(db, 20)
    before = snapshot(db)
    r = eh(cli_runner, root, "--select", "rack=?", "-s", "image1")
    assert r.exit_code == 1 and "selector 'rack=?' matches 20 hosts; one change takes at most 5" in r.output
    r = api.put("/configurations/wipe/deploy", json={"selector": "product=*"})
    assert r.status_code == 400 and "matches 20 hosts" in r.json["error"]
    assert snapshot(db) == before
    assert eh(cli_runner, root, "--select", "rack=1", "-s", "image1").exit_code == 0


def test_retry_of_many_needs_every_host_failed(cli_runner, root, db):
    populate(db, 4)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE hosts SET failed_at = created_at WHERE id IN (1, 2)"))
    before = snapshot(db)
    r = eh(cli_runner, root, "--select", "id=*", "--retry")
    assert r.exit_code == 1 and "host 3 has not failed" in r.output
    assert snapshot(db) == before
    r = eh(cli_runner, root, "--select", "id!=3,id!=4", "--retry", "--json")
    assert r.exit_code == 0 and [h["failed"] for h in json.loads(r.stdout)] == [False, False]


def test_hosts_registered_by_boot_can_be_selected_by_mac(cli_runner, root, client):
    boot(client, MAC1, serial="SER1")
    r = eh(cli_runner, root, "--select", "mac=52:54:00:00:00:0?", "--label", "seen=yes")
    assert r.exit_code == 0 and r.stderr == "1 host(s) changed\n"


def test_bulk_change_needs_a_token(client, db):
    populate(db, 3)
    before = snapshot(db)
    r = client.patch("/api/v1/hosts", query_string={"selector": "id=*"}, json={"state": "image1"})
    assert r.status_code == 401
    assert snapshot(db) == before
