"""PXE Pilot's REST API against a real ``kiwispray serve --pxepilot-api``, called as PXE Pilot's users call it.

The curl lines are PXE Pilot's own (its USECASE's post-install call, the calls its
README documents), run by curl byte for byte but the server's address; the
client's requests are what its ``cli.go`` sends (``common/http``: a JSON body,
``null`` when it has none, every host field even when empty).
"""

import base64
import json
import subprocess
import sys

import pytest
import requests
from sqlalchemy import select

from ks.app import create_app
from ks.core import config, states
from ks.core.errors import ConfigError
from ks.fleet import machines, tokens
from ks.records import migrate
from ks.records.db import Database
from ks.records.models import Event, HostMac
from ks.web import ADMIN, BOOT, LISTENER

from helpers import cli_env, make_image, require_command
from server import ServerProcess, from_address

PXE_SERVER = "http://pxe-server:3478"
# USECASE.md, "Finally": the post-install script's call that ends the reinstall loop. Its MAC is a
# multicast address no network card has; the machine's own MAC replaces it where the call must work.
USECASE_MAC = "23:34:a3:e9:09:cc"
USECASE = """curl -i -X PUT http://pxe-server:3478/configurations/local/deploy -d '
{
    "hosts": [
        {
            "macAddress": "23:34:a3:e9:09:cc"
        }
    ]
}'"""
# README.md's deploy body ("PUT /v1/configurations/<configuration_name>/deploy").
README_DEPLOY = """{
  "hosts": [
    {
      "name": "h1"
    },
    {
      "name": "h2"
    },
    {
      "mac_address": "52:54:0b:00:00:31"
    }
  ]
}"""
MACS = {"h1": ["52:54:0b:00:00:11"], "h2": ["52:54:0b:00:00:21"], "h3": ["52:54:0b:00:00:31", "52:54:0b:00:00:32"]}
OTHER_ADDRESS = "127.0.0.2"  # loopback too: a second machine of the boot network


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("pxepilot") / "site"
    root.mkdir()
    make_image(root, "ubuntu-16.04", "Ubuntu")
    make_image(root, "grml-2017.05", "Grml")
    return root


@pytest.fixture(scope="module")
def server(site):
    with ServerProcess(site, "--workers", "1", "--threads", "8", "--pxepilot-api") as srv:
        yield srv


@pytest.fixture(scope="module")
def db(site, server):
    database = Database(f"sqlite:///{site / 'kiwispray.db'}")
    yield database
    database.dispose()


def create_token(site, name: str, role: str = "operator") -> str:
    done = subprocess.run([sys.executable, "-m", "ks", "token", "create", name, "--role", role], env=cli_env(site),
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def token(site, server):
    return create_token(site, "pxepilot")


@pytest.fixture
def fleet(server, db):
    """h1, h2 (booted from OTHER_ADDRESS) and h3 (two MACs), as PXE Pilot's README has them: local, none, local."""
    for name, macs in MACS.items():
        session = from_address(OTHER_ADDRESS) if name == "h2" else requests.Session()
        query = {f"net{i}": mac for i, mac in enumerate(macs)}
        assert session.get(server.url + "/bootstrap", params=query, timeout=10).status_code == 200
        chain = {"h1": "finished", "h2": "new", "h3": "finished"}[name]

        def name_it(s, mac=macs[0], name=name, chain=chain):
            host = machines.find_by(s, mac=mac)
            machines.set_hostname(s, host, name, "cli")
            machines.set_state(s, host, states.parse_chain(chain), "cli")

        db.write(name_it)
    return {name: host_of(db, macs[0]) for name, macs in MACS.items()}


def host_of(db, mac: str) -> int:
    with db.read() as session:
        return session.scalars(select(HostMac.host_id).where(HostMac.mac == mac)).one()


def state_of(db, host_id: int) -> str:
    with db.read() as session:
        return machines.get_host(session, host_id).state


def curl(server, line: str) -> tuple[int, dict, bytes]:
    """Run a curl line (with ``-i``) as a shell would, against ``server``: status, headers, body."""
    require_command("curl", "curl")
    done = subprocess.run(["sh", "-c", line.replace(PXE_SERVER, server.url)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


# --- the USECASE: a post-install script ends its machine's reinstall loop, without a token ---------


def test_the_usecase_post_install_call_deploys_local_to_the_machine_that_makes_it(server, db, fleet):
    db.write(lambda s: machines.set_state(s, machines.get_host(s, fleet["h1"]), ("ubuntu-16.04",), "cli"))
    status, headers, body = curl(server, USECASE.replace(USECASE_MAC, MACS["h1"][0]))
    assert (status, body) == (200, b"")
    assert "content-type" not in headers
    assert state_of(db, fleet["h1"]) == "finished"
    with db.read() as session:
        last = session.scalars(select(Event).where(Event.host_id == fleet["h1"]).order_by(Event.id.desc())).first()
    assert (last.kind, last.source, last.to_state) == ("state", "pxepilot", "finished")


@pytest.mark.parametrize("line", [
    USECASE.replace("curl ", f"curl --interface {OTHER_ADDRESS} ", 1).replace(USECASE_MAC, MACS["h1"][0]),
    USECASE.replace(USECASE_MAC, MACS["h2"][0]),
    USECASE,
    USECASE.replace("/local/", "/ubuntu-16.04/").replace(USECASE_MAC, MACS["h1"][0]),
], ids=["from another machine", "for another machine", "for a MAC no host has", "another configuration"])
def test_without_a_token_a_machine_may_deploy_only_local_and_only_to_itself(server, db, fleet, line):
    for host_id in fleet.values():
        db.write(lambda s, i=host_id: machines.set_state(s, machines.get_host(s, i), ("grml-2017.05",), "cli"))
    status, headers, body = curl(server, line)
    assert status == 401 and headers["content-type"] == "application/json"
    assert "without an API token" in json.loads(body)["Message"] or "needs an API token" in json.loads(body)["Message"]
    assert {state_of(db, i) for i in fleet.values()} == {"grml-2017.05"}


def test_a_machine_that_booted_from_another_address_deploys_local_from_there(server, db, fleet):
    db.write(lambda s: machines.set_state(s, machines.get_host(s, fleet["h2"]), ("ubuntu-16.04",), "cli"))
    status, _, _ = curl(server, USECASE.replace(USECASE_MAC, MACS["h2"][0]))  # from 127.0.0.1: not h2's
    assert status == 401 and state_of(db, fleet["h2"]) == "ubuntu-16.04"
    line = USECASE.replace("curl ", f"curl --interface {OTHER_ADDRESS} ", 1).replace(USECASE_MAC, MACS["h2"][0])
    status, _, body = curl(server, line)
    assert (status, body) == (200, b"") and state_of(db, fleet["h2"]) == "finished"


# --- the README's calls, with a token -------------------------------------------------------------


def test_the_readme_calls_answer_pxe_pilots_shapes_with_and_without_v1(server, db, fleet, token):
    auth = f"-H 'Authorization: Bearer {token}'"
    for prefix in ("/v1", ""):
        status, headers, body = curl(server, f"curl -s -i {auth} {PXE_SERVER}{prefix}/configurations")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body) == [{"name": "grml-2017.05"}, {"name": "local"}, {"name": "ubuntu-16.04"}]
        status, _, body = curl(server, f"curl -s -i {auth} {PXE_SERVER}{prefix}/hosts")
        listed = {h["name"]: h for h in json.loads(body) if h["name"] in MACS}
        assert status == 200 and listed == {
            "h1": {"name": "h1", "macAddresses": MACS["h1"], "configuration": {"name": "local"}, "ipmi": None},
            "h2": {"name": "h2", "macAddresses": MACS["h2"], "configuration": None, "ipmi": None},
            "h3": {"name": "h3", "macAddresses": MACS["h3"], "configuration": {"name": "local"}, "ipmi": None},
        }
        status, _, body = curl(server, f"curl -s -i {PXE_SERVER}{prefix}/healthcheck")
        assert (status, body) == (204, b"")


def test_the_readme_deploy_gives_every_listed_host_the_configuration(server, db, fleet, token):
    line = f"curl -s -i -X PUT -H 'Authorization: Bearer {token}' {PXE_SERVER}/v1/configurations/ubuntu-16.04/deploy " \
           f"-d '{README_DEPLOY}'"
    status, _, body = curl(server, line)
    assert (status, body) == (200, b"")
    assert {state_of(db, i) for i in fleet.values()} == {"ubuntu-16.04"}


@pytest.mark.parametrize(("path", "body", "status", "said"), [
    ("/v1/configurations/nope/deploy", '{"hosts": [{"name": "h1"}]}', 404, "Configuration 'nope' does not exists"),
    ("/v1/configurations/local/deploy", '{"hosts": [{"name": "h9"}]}', 404, "No host declared for name <h9>"),
    ("/v1/configurations/local/deploy", '{"hosts": [{"macAddress": "52:54:0b:00:00:99"}]}', 404,
     "No host declared with MAC address <52:54:0b:00:00:99>"),
    ("/v1/configurations/local/deploy", '{"hosts": [{"name": "h1", "macAddress": "52:54:0b:00:00:21"}]}', 409,
     "Host <h1> does not match MAC address <52:54:0b:00:00:21>"),
    ("/v1/configurations/local/deploy", '{"hosts": [{"name": "h1"}, {"macAddress": "52:54:0b:00:00:11"}]}', 409,
     "Host <h1> appears several times in query"),
    ("/v1/configurations/local/deploy", '{"hosts": [{"name": "h1", "configuration": "grml-2017.05"}]}', 409,
     "Configuration attribute for a host in this context is not allowed"),
    ("/v1/configurations/local/deploy", '{"hosts": [{"name": ""}]}', 400,
     "Either Name or MACAddress must be provided for each Host"),
    ("/v1/configurations/local/deploy", '{"hosts": [', 400, "not valid JSON"),
    ("/configurations/local/deploy", '{"hosts": "h1"}', 400, "hosts must be a list"),
], ids=["unknown configuration", "unknown name", "unknown MAC", "MAC of another host", "host twice",
        "configuration attribute", "neither name nor MAC", "broken JSON", "hosts not a list"])
def test_a_refused_deploy_answers_pxe_pilots_status_and_message_and_changes_nothing(server, db, fleet, token,
                                                                                  path, body, status, said):
    line = f"curl -s -i -X PUT -H 'Authorization: Bearer {token}' {PXE_SERVER}{path} -d '{body}'"
    got, headers, answer = curl(server, line)
    assert got == status and headers["content-type"] == "application/json"
    assert said in json.loads(answer)["Message"]
    assert [state_of(db, fleet[n]) for n in ("h1", "h2", "h3")] == ["finished", "new", "finished"]


def test_reboot_and_discovery_answer_with_pxe_pilots_codes(server, fleet, token):
    auth = f"-H 'Authorization: Bearer {token}'"
    status, _, body = curl(server, f"curl -s -i -X PATCH {auth} {PXE_SERVER}/v1/hosts/h9/reboot")
    assert status == 404 and "'h9'" in json.loads(body)["Message"]
    status, _, body = curl(server, f"curl -s -i -X PATCH {auth} {PXE_SERVER}/v1/hosts/h1/reboot")
    assert status == 409 and "has no BMC" in json.loads(body)["Message"]
    status, _, body = curl(server, f"curl -s -i -X PATCH {auth} {PXE_SERVER}/v1/discovery")
    assert status == 409 and "KS_BMC_SUBNETS" in json.loads(body)["Message"]


def test_every_call_but_the_local_deploy_and_the_healthcheck_needs_a_valid_token(server, site, fleet, token):
    viewer = create_token(site, "pxepilot-viewer", "viewer")
    for method, path in [("GET", "/v1/hosts"), ("GET", "/configurations"), ("PATCH", "/v1/hosts/h1/reboot"),
                         ("PATCH", "/discovery"), ("PUT", "/v1/configurations/grml-2017.05/deploy")]:
        for headers in ({}, {"Authorization": "Bearer ks_wrong"}, {"Authorization": f"Basic {token}"}):
            r = requests.request(method, server.url + path, headers=headers, data='{"hosts": [{"name": "h1"}]}',
                                 timeout=30)
            assert r.status_code == 401 and "API token" in r.json()["Message"], (method, path, headers)
    r = requests.put(server.url + "/v1/configurations/grml-2017.05/deploy", data='{"hosts": [{"name": "h1"}]}',
                     headers={"Authorization": f"Bearer {viewer}"}, timeout=30)
    assert r.status_code == 403 and "operator" in r.json()["Message"]
    assert requests.get(server.url + "/v1/hosts", headers={"Authorization": f"Bearer {viewer}"},
                        timeout=30).status_code == 200


# --- PXE Pilot's client, as cli.go and common/http send its requests ---------------------------------


def client_request(server, token: str, method: str, path: str, data=None) -> requests.Response:
    """``http.Request`` of PXE Pilot's client with ``--server http://pxepilot:<token>@host:port``.

    Go encodes ``data`` (``null`` for none) with a newline and sets the JSON type; the
    URL's user information becomes Basic auth, as Go's HTTP client sends it.
    """
    basic = base64.b64encode(f"pxepilot:{token}".encode()).decode()
    return requests.request(method, server.url + path, data=json.dumps(data, separators=(",", ":")) + "\n",
                            headers={"Content-Type": "application/json", "Authorization": f"Basic {basic}"},
                            timeout=30)


def test_pxe_pilots_client_lists_deploys_and_reboots_through_its_server_url(server, db, fleet, token):
    r = client_request(server, token, "GET", "/v1/configurations")
    assert r.status_code == 200 and [c["name"] for c in r.json()] == ["grml-2017.05", "local", "ubuntu-16.04"]
    r = client_request(server, token, "GET", "/v1/hosts")
    assert r.status_code == 200 and {"h1", "h2", "h3"} <= {h["name"] for h in r.json()}
    # config deploy grml-2017.05 h2 h3: every field of model.HostQuery, empty or not.
    query = {"hosts": [{"name": n, "macAddress": "", "configuration": ""} for n in ("h2", "h3")]}
    r = client_request(server, token, "PUT", "/v1/configurations/grml-2017.05/deploy", query)
    assert r.status_code == 200, r.text  # the only status the client counts as deployed
    assert [state_of(db, fleet[n]) for n in ("h1", "h2", "h3")] == ["finished", "grml-2017.05", "grml-2017.05"]
    r = client_request(server, token, "PUT", "/v1/configurations/nope/deploy", query)
    assert r.status_code == 404 and r.json() == {"Message": "Configuration 'nope' does not exists"}
    r = client_request(server, token, "PATCH", "/v1/hosts/h1/reboot")
    assert r.status_code == 409


# --- who may call it: off unless switched on; tokens over HTTPS once TLS is configured ---------------


def test_the_routes_are_off_unless_the_operator_switches_them_on(root):
    app = create_app({"ROOT": str(root)})
    for path in ("/v1/hosts", "/v1/configurations", "/healthcheck", "/configurations"):
        assert app.test_client().get(path).status_code in (403, 404)  # /hosts without /v1: the original's listing
    assert app.test_client().put("/configurations/local/deploy", data="{}").status_code == 404
    with pytest.raises(ConfigError, match="both answer GET /hosts"):
        config.resolve({"ROOT": str(root), "PUBLIC_HOSTS": True, "PXEPILOT_API": True})


def test_with_tls_tokens_go_to_the_https_port_and_the_local_deploy_stays_on_the_boot_port(root):
    app = create_app({"ROOT": str(root), "PXEPILOT_API": True, "TLS_CERT": "c.pem", "TLS_KEY": "k.pem",
                      "ADMIN_PORT": 8443})
    database = app.extensions["kiwispray"].db
    migrate.upgrade(database)
    token = database.write(lambda session: tokens.create(session, "tls"))
    client, auth = app.test_client(), {"Authorization": f"Bearer {token}"}
    r = client.get("/v1/hosts", headers=auth, environ_base={LISTENER: BOOT})
    assert r.status_code == 403 and "HTTPS to port 8443" in r.json["Message"]
    assert client.get("/v1/hosts", headers=auth, environ_base={LISTENER: ADMIN}).status_code == 200
    r = client.put("/configurations/local/deploy", data='{"hosts": []}', environ_base={LISTENER: BOOT})
    assert r.status_code == 200
    app.extensions["kiwispray"].db.dispose()
