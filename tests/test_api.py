"""The admin API: tokens, hosts, history, configurations and PXE Pilot's deploy call."""

import dataclasses
import logging

import pytest
import requests

from ks.fleet import tokens

from bmc import silent_udp_port
from helpers import schema_errors, wait_for
from server import ServerProcess

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


ROUTES = [
    ("GET", "/hosts", None),
    ("GET", "/hosts/1", None),
    ("PATCH", "/hosts/1", {"hostname": "x"}),
    ("DELETE", "/hosts/1", None),
    ("GET", "/hosts/1/history", None),
    ("POST", "/hosts/1/power", {"action": "status"}),
    ("PATCH", "/hosts/1/reboot", None),
    ("GET", "/configurations", None),
    ("GET", "/configurations/image1", None),
    ("PUT", "/configurations/image1/deploy", {"hosts": [{"name": "1"}]}),
]


@pytest.mark.parametrize("method, path, document", ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer ks_wrong", "Basic dXNlcjpwYXNz", "Bearer "])
def test_every_route_needs_a_valid_token(client, db, hosts, method, path, document, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = client.open("/api/v1" + path, method=method, json=document, headers=headers)
    assert r.status_code == 401
    assert r.json["status"] == 401 and "token" in r.json["error"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    with db.read() as s:
        from ks.fleet import machines

        assert [(h.hostname, h.state) for h in machines.list_hosts(s)] == [("not-set", "new")] * 2


@pytest.mark.parametrize("method, path, document", [r for r in ROUTES if "power" not in r[1] and "reboot" not in r[1]])
def test_every_route_works_with_a_token(api, client, hosts, method, path, document):
    r = getattr(api, method.lower())(path, json=document)
    assert r.status_code in (200, 204), (path, r.status_code, r.data)
    openapi = client.get("/api/v1/openapi.json").json
    assert schema_errors(openapi, method, path, r.status_code, r.json if r.data else None) == []


def test_revoked_token_stops_working(api, client, db, token, hosts):
    assert api.get("/hosts").status_code == 200
    db.write(lambda s: tokens.revoke(s, "tests"))
    assert api.get("/hosts").status_code == 401


def test_openapi_document_is_public_and_lists_every_route(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.json["openapi"].startswith("3.")
    paths = r.json["paths"]
    documented = {(m.upper(), "/api/v1" + p.replace("{ref}", "1").replace("{name}", "image1"))
                  for p, ops in paths.items() for m in ops if m != "parameters"}
    assert {(m, "/api/v1" + p) for m, p, _ in ROUTES} <= documented


def test_list_and_filter_hosts(api, hosts):
    r = api.get("/hosts")
    assert r.json["total"] == 2 and [h["id"] for h in r.json["hosts"]] == [1, 2]
    assert r.json["hosts"][1]["macs"] == ["52:54:00:00:00:02", "52:54:00:00:00:03"]
    assert "bootid" not in r.text and "bootid_hash" not in r.text
    assert [h["id"] for h in api.get("/hosts?mac=52-54-00-00-00-03").json["hosts"]] == [2]
    assert [h["id"] for h in api.get("/hosts?serial=ser1").json["hosts"]] == [1]
    assert api.get("/hosts?state=image1").json["total"] == 0
    assert [h["id"] for h in api.get("/hosts?limit=1&offset=1").json["hosts"]] == [2]
    assert api.get("/hosts?mac=52-54-00-00-00-99").status_code == 404
    assert api.get("/hosts?limit=0").status_code == 400
    assert api.get("/hosts?state=a,,b").status_code == 400


def test_get_host_by_id_mac_or_name(api, hosts):
    api.patch("/hosts/2", json={"hostname": "node02"})
    for ref in ("2", "52:54:00:00:00:03", "52-54-00-00-00-02", "node02"):
        assert api.get(f"/hosts/{ref}").json["id"] == 2
    assert api.get("/hosts/99").status_code == 404
    assert api.get("/hosts/nobody").status_code == 404
    api.patch("/hosts/1", json={"hostname": "node02"})
    assert api.get("/hosts/node02").status_code == 409


def test_patch_is_all_or_nothing(api, hosts):
    r = api.patch("/hosts/1", json={"hostname": "node01", "metadata": {"rack": "4"}, "state": "wipe,image1"})
    assert r.status_code == 200
    assert (r.json["hostname"], r.json["metadata"], r.json["chain"]) == ("node01", {"rack": "4"}, ["wipe", "image1"])
    for bad in [
        {"hostname": "other", "state": "image9"},
        {"hostname": "other", "state": "new,image1"},
        {"hostname": "other", "metadata": [1]},
        {"hostname": "bad name"},
        {"hostname": "other", "colour": "red"},
        {"hostname": "other", "state": 5},
        {"hostname": "other", "force": "yes"},
        {"hostname": "other", "bmc": {"address": "telnet://x"}},
    ]:
        r = api.patch("/hosts/1", json=bad)
        assert r.status_code == 400, (bad, r.json)
    r = api.get("/hosts/1").json
    assert (r["hostname"], r["chain"]) == ("node01", ["wipe", "image1"])
    assert api.patch("/hosts/1", json={"state": ["image9"], "force": True}).json["state"] == "image9"
    assert api.patch("/hosts/1", data="not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert api.patch("/hosts/1", data="{}", headers={"Content-Type": "text/plain"}).status_code == 400


def test_an_unknown_image_says_how_the_api_forces_it(api, hosts):
    r = api.patch("/hosts/1", json={"state": "image9"})
    assert r.status_code == 400
    assert '(use "force": true to set it anyway)' in r.json["error"] and "--force" not in r.json["error"]


def test_an_image_that_cannot_boot_is_refused_unless_forced(api, client, hosts, root, caplog):
    (root / "images" / "broken").mkdir()
    r = api.patch("/hosts/1", json={"state": "broken"})
    assert r.status_code == 400
    assert r.json["error"] == ("image 'broken' cannot boot: images/broken/ has no kernel and no initrd (nor a "
                               'host.ipxe of its own) (use "force": true to set it anyway)')
    assert api.patch("/hosts/1", json={"state": "broken", "force": True}).status_code == 200
    # Booted into it anyway, the machine fails to boot: the log says which one, in what state, and why.
    with caplog.at_level(logging.ERROR, logger="ks.boot.views"):
        assert client.get("/bootstrap", query_string={"net0": "52-54-00-00-00-01"}).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "host 1 boots into state broken, which cannot boot: images/broken/ has no kernel and no initrd (nor a "
        "host.ipxe of its own); it reboots and asks again until its chain changes"]


def test_bmc_is_shown_without_its_password(api, hosts):
    r = api.patch("/hosts/1", json={"bmc": {"address": "ipmi://10.0.0.9", "username": "admin", "password": "s3cret"}})
    assert r.status_code == 200, r.json
    assert r.json["bmc"] == {"address": "ipmi://10.0.0.9", "username": "admin"}
    assert "s3cret" not in api.get("/hosts").text and "s3cret" not in api.get("/hosts/1/history").text
    assert api.patch("/hosts/1", json={"bmc": None}).json["bmc"] is None


def test_history_and_delete(api, hosts):
    api.patch("/hosts/1", json={"state": "image1"})
    events = api.get("/hosts/1/history").json["events"]
    assert [e["kind"] for e in events] == ["register", "boot", "state"]
    assert events[-1]["source"] == "api" and events[-1]["to"] == "image1"
    assert api.delete("/hosts/1").status_code == 204
    assert api.get("/hosts/1").status_code == 404
    assert api.get("/hosts/1/history").status_code == 404


def test_configurations(api, root):
    r = api.get("/configurations")
    assert r.json == {"configurations": [
        {"name": "image1", "kind": "image"}, {"name": "wipe", "kind": "image"},
        {"name": "new", "kind": "builtin"}, {"name": "finished", "kind": "builtin"},
    ]}
    assert "pxeboot.kernel" in api.get("/configurations/image1").json["files"]
    assert api.get("/configurations/nope").status_code == 404


def test_pxe_pilot_deploy_in_all_three_host_forms(api, hosts):
    api.patch("/hosts/2", json={"hostname": "h2"})
    r = api.put("/configurations/image1/deploy", json={"hosts": [{"name": "h2"}, {"macAddress": "52:54:00:00:00:01"}]})
    assert r.status_code == 204
    assert [h["state"] for h in api.get("/hosts").json["hosts"]] == ["image1", "image1"]
    r = api.put("/configurations/wipe/deploy", json={"hosts": [{"mac_address": "52-54-00-00-00-03"}], "reboot": False})
    assert r.status_code == 204
    assert api.get("/hosts/2").json["state"] == "wipe"
    history = api.get("/hosts/2/history").json["events"]
    assert history[-1]["source"] == "api"


@pytest.mark.parametrize(
    "config, document, status",
    [
        ("nope", {"hosts": [{"name": "h1"}]}, 404),
        ("image1", {"hosts": [{"name": "h1"}, {"name": "ghost"}]}, 404),
        ("image1", {"hosts": [{"name": "h1"}, {"macAddress": "52:54:00:99:99:99"}]}, 404),
        ("image1", {"hosts": [{"name": "h1"}, {"macAddress": "not-a-mac"}]}, 400),
        ("image1", {"hosts": []}, 400),
        ("image1", {"hosts": "h1"}, 400),
        ("image1", {"hosts": [{"name": "h1", "mac_address": "52:54:00:00:00:01"}]}, 400),
        ("image1", {"hosts": [{"id": 1}]}, 400),
        ("image1", {"hosts": [{"name": "h1"}], "reboot": "yes"}, 400),
        ("image1", {"hosts": [{"name": "h1"}], "extra": 1}, 400),
        ("image1", {}, 400),
    ],
)
def test_deploy_refusals_change_nothing(api, hosts, config, document, status):
    api.patch("/hosts/1", json={"hostname": "h1"})
    r = api.put(f"/configurations/{config}/deploy", json=document)
    assert r.status_code == status, r.json
    assert [h["state"] for h in api.get("/hosts").json["hosts"]] == ["new", "new"]


def test_power_without_bmc_is_a_clear_409(api, hosts):
    r = api.post("/hosts/1/power", json={"action": "status"})
    assert r.status_code == 409 and "has no BMC" in r.json["error"]
    assert 'PATCH /api/v1/hosts/1 {"bmc"' in r.json["error"] and "edit-host" not in r.json["error"]
    assert api.post("/hosts/1/power", json={"action": "explode"}).status_code == 400
    r = api.put("/configurations/image1/deploy", json={"hosts": [{"name": "1"}], "reboot": True})
    assert r.status_code == 409 and "deployed, but the reboot failed" in r.json["error"]
    assert [f["host"] for f in r.json["reboot_failures"]] == [1] and "has no BMC" in r.json["reboot_failures"][0][
        "error"
    ]
    assert api.get("/hosts/1").json["state"] == "image1"


POWER_FAILURES = [
    # (what, host 1's BMC, the host asked for, the body, the answer's status, words of its error)
    ("BMC that does not answer", "dead", "1", {"action": "on"}, 504, "no answer within 1 s"),
    (
        "BMC that rejects the login",
        "wrong password",
        "1",
        {"action": "status"},
        502,
        "check the BMC username and password",
    ),
    ("unknown host", "dead", "99", {"action": "status"}, 404, "no host with id 99"),
    ("unknown action", "dead", "1", {"action": "explode"}, 400, 'send {"action": "status"'),
    ("host without BMC", None, "1", {"action": "status"}, 409, "has no BMC"),
]


@pytest.mark.parametrize(("bmc", "ref", "document", "status", "words"), [case[1:] for case in POWER_FAILURES],
                         ids=[case[0] for case in POWER_FAILURES])
def test_each_power_failure_answers_with_the_status_of_its_error(api, app, hosts, start_bmc, bmc, ref, document,
                                                                 status, words):
    runtime = app.extensions["kiwispray"]
    # 1 s for the BMC that never answers; a live one that refuses the login answers at once, and is
    # given time enough for that on a loaded machine (502 is its status, not the timeout's 504).
    timeout = 10.0 if bmc == "wrong password" else 1.0
    runtime.settings = dataclasses.replace(runtime.settings, power_timeout=timeout)
    with silent_udp_port() as dead_port:
        if bmc == "dead":
            api.patch("/hosts/1", json={"bmc": {"address": f"ipmi://127.0.0.1:{dead_port}", "username": "admin"}})
        elif bmc == "wrong password":
            simulator = start_bmc("ipmi", power=True)
            api.patch("/hosts/1", json={"bmc": {"address": simulator.url, "username": simulator.username,
                                                "password": "wrong"}})
        r = api.post(f"/hosts/{ref}/power", json=document)
    assert (r.status_code, r.json["status"]) == (status, status), r.json
    assert words in r.json["error"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tokens_never_reach_the_logs(api, token, hosts, caplog, root, database_url, log_format):
    caplog.set_level(logging.DEBUG)
    api.get("/hosts")
    api.patch("/hosts/1", json={"state": "image1"})
    assert token not in caplog.text
    # gunicorn's access log has every request header at hand ({authorization}i): a real server logging requests.
    with ServerProcess(root, "--workers", "1", "--access-log", "--log-format", log_format,
                       env={"KS_DATABASE_URL": database_url}) as srv:
        r = requests.get(srv.url + "/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200
        log = wait_for(lambda: "/api/v1/hosts" in srv.log() and srv.log(), 10, "the access log line")
    assert token not in log
