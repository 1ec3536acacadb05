"""BMCs given by MAC: the neighbour table, the sweep of KS_BMC_SUBNETS, and the real thing
in a network namespace with ipmi_sim behind a veth pair."""

import ipaddress
import json
import socket
import subprocess
import sys

import pytest

from ks import power
from ks.app import create_app
from ks.cli.edit_host import edit_host
from ks.cli.main import cli
from ks.core.errors import BMCNotFound, ConfigError, InvalidBMCAddress
from ks.fleet import tokens
from ks.power import PowerStatus, discovery, parse_bmc_address

from helpers import MAC1, MAC2, boot, cli_env, eh

BMC_MAC = "52:54:00:aa:bb:cc"


def entry(dst, lladdr=None, *state):
    """One entry as ``ip -json neigh`` prints it."""
    found = {"dst": dst, "dev": "eth0", "state": list(state)}
    if lladdr:
        found["lladdr"] = lladdr
    return found


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], {}),
        ([entry("10.0.0.5", "52:54:00:AA:BB:CC", "REACHABLE")], {BMC_MAC: "10.0.0.5"}),
        ([entry("10.0.0.5", BMC_MAC, "STALE")], {BMC_MAC: "10.0.0.5"}),
        ([entry("10.0.0.5", BMC_MAC, "PERMANENT")], {BMC_MAC: "10.0.0.5"}),
        # No usable link address: still being asked, or nobody answered.
        ([entry("10.0.0.5", None, "INCOMPLETE"), entry("10.0.0.6", None, "FAILED")], {}),
        ([entry("10.0.0.5", BMC_MAC, "FAILED")], {}),
        # A BMC that moved to a new lease: the address that answered last wins...
        ([entry("10.0.0.5", BMC_MAC, "STALE"), entry("10.0.0.9", BMC_MAC, "REACHABLE")], {BMC_MAC: "10.0.0.9"}),
        ([entry("10.0.0.9", BMC_MAC, "DELAY"), entry("10.0.0.5", BMC_MAC, "REACHABLE")], {BMC_MAC: "10.0.0.5"}),
        # ...and between equals, the lowest address, so the answer does not depend on order.
        ([entry("10.0.0.9", BMC_MAC, "STALE"), entry("10.0.0.10", BMC_MAC, "STALE")], {BMC_MAC: "10.0.0.9"}),
        # Not IPv4, not Ethernet: never a BMC found here.
        ([entry("fd00::5", BMC_MAC, "REACHABLE"),
          entry("10.0.0.7", "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03", "REACHABLE")], {}),
        ([entry("10.0.0.5", BMC_MAC, "REACHABLE"), entry("10.0.0.6", "52:54:00:00:00:01", "STALE")],
         {BMC_MAC: "10.0.0.5", "52:54:00:00:00:01": "10.0.0.6"}),
    ],
)
def test_parse_neighbours(entries, expected):
    assert discovery.parse_neighbours(json.dumps(entries)) == expected


def test_parse_neighbours_of_an_empty_table():
    assert discovery.parse_neighbours("") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("10.0.0.0/24", ["10.0.0.0/24"]),
        (" 10.0.0.7/24 , 10.0.1.0/25,", ["10.0.0.0/24", "10.0.1.0/25"]),
        ("10.0.0.0/22", ["10.0.0.0/22"]),
        ("10.0.0.5", ["10.0.0.5/32"]),
    ],
)
def test_parse_subnets(text, expected):
    assert discovery.parse_subnets(text) == [ipaddress.ip_network(s) for s in expected]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0/21", "larger than /22"),
        ("0.0.0.0/0", "larger than /22"),
        ("fd00::/120", "IPv6"),
        ("10.0.0.0/33", "not a subnet"),
        ("bmc-network", "not a subnet"),
        ("10.0.0.0/22,10.0.4.0/30", "more than 1024 addresses"),
    ],
)
def test_parse_subnets_refuses(text, message):
    with pytest.raises(ConfigError, match=message):
        discovery.parse_subnets(text)


@pytest.mark.parametrize(
    ("text", "mac", "port", "canonical"),
    [
        ("ipmi://52-54-00-AA-BB-CC", BMC_MAC, 623, "ipmi://52-54-00-aa-bb-cc:623"),
        ("ipmi://52-54-00-aa-bb-cc:6230", BMC_MAC, 6230, "ipmi://52-54-00-aa-bb-cc:6230"),
        ("redfish://52-54-00-aa-bb-cc/redfish/v1/Systems/1", BMC_MAC, 443,
         "redfish+https://52-54-00-aa-bb-cc:443/redfish/v1/Systems/1"),
        ("ipmi://10.0.0.5", None, 623, "ipmi://10.0.0.5:623"),
        ("ipmi://bmc-52-54-00-aa-bb-cc", None, 623, "ipmi://bmc-52-54-00-aa-bb-cc:623"),
        ("ipmi://[fd00::1:2:3:4:5]", None, 623, "ipmi://[fd00::1:2:3:4:5]:623"),
    ],
)
def test_bmc_given_by_mac(text, mac, port, canonical):
    address = parse_bmc_address(text)
    assert (address.mac, address.port, str(address)) == (mac, port, canonical)
    if mac:
        assert str(address.at("10.0.0.9")) == canonical.replace("52-54-00-aa-bb-cc", "10.0.0.9")
        assert address.at("10.0.0.9").mac is None


@pytest.mark.parametrize("text", ["ipmi://52:54:00:aa:bb:cc", "ipmi://52:54:00:AA:BB:CC:623", "ipmi://[52:54:00:aa:bb:cc]"])
def test_a_mac_with_colons_is_refused_with_the_dashed_form(text):
    with pytest.raises(InvalidBMCAddress, match="dashes, e.g. ipmi://52-54-00-aa-bb-cc"):
        parse_bmc_address(text)


@pytest.fixture
def table(monkeypatch):
    """A fake neighbour table, and a sweep that fills it from ``table["answers"]``."""
    state = {"now": {}, "answers": {}, "sweeps": 0}

    def sweep(subnets):
        state["sweeps"] += 1
        state["now"].update(state["answers"])

    monkeypatch.setattr(discovery, "neighbours", lambda: dict(state["now"]))
    monkeypatch.setattr(discovery, "sweep", sweep)
    monkeypatch.setattr(discovery, "SWEEP_WAIT", 0.3)
    monkeypatch.setattr(discovery, "_swept", {})
    return state


SUBNETS = [ipaddress.ip_network("10.0.0.0/29")]


def test_locate_sweeps_only_for_what_is_missing(table):
    table["now"] = {BMC_MAC: "10.0.0.2"}
    assert discovery.locate([BMC_MAC], SUBNETS) == {BMC_MAC: "10.0.0.2"}
    assert table["sweeps"] == 0
    table["answers"] = {"52:54:00:00:00:09": "10.0.0.3"}
    assert discovery.locate([BMC_MAC, "52:54:00:00:00:09"], SUBNETS) == {
        BMC_MAC: "10.0.0.2",
        "52:54:00:00:00:09": "10.0.0.3",
    }
    assert table["sweeps"] == 1
    # A MAC nobody answers for: no second sweep right after the first.
    assert discovery.locate(["52:54:00:00:00:0a"], SUBNETS) == {}
    assert table["sweeps"] == 1
    # Discovery sweeps whenever it is asked, and without subnets nothing is swept.
    assert discovery.locate([], SUBNETS, force=True) == {}
    assert table["sweeps"] == 2
    assert discovery.locate(["52:54:00:00:00:0b"], []) == {}
    assert table["sweeps"] == 2


def test_power_names_the_mac_and_what_to_configure(table):
    with pytest.raises(BMCNotFound, match=f"BMC {BMC_MAC} is not in this server's neighbour table; set KS_BMC_SUBNETS"):
        power.run("ipmi://52-54-00-aa-bb-cc", "admin", "secret", "status", timeout=5)
    with pytest.raises(BMCNotFound, match=f"BMC {BMC_MAC} did not answer a sweep of 10.0.0.0/29; .* KS_BMC_SUBNETS"):
        power.run("ipmi://52-54-00-aa-bb-cc", "admin", "secret", "on", timeout=5, subnets=SUBNETS)
    assert table["sweeps"] == 1


def test_listing_resolves_every_mac_with_one_sweep(table, start_bmc):
    bmc = start_bmc("ipmi", power=True)
    table["answers"] = {BMC_MAC: "127.0.0.1"}
    mac_url = bmc.url.replace("127.0.0.1", "52-54-00-aa-bb-cc")
    results = power.status_many(
        [
            (mac_url, bmc.username, bmc.password),
            ("ipmi://52-54-00-00-00-0a", "a", "b"),
            (bmc.url, bmc.username, bmc.password),
        ],
        timeout=3,
        subnets=SUBNETS,
    )
    assert results[0] == results[2] == PowerStatus("on")
    assert results[1].state == "unknown" and "BMC 52:54:00:00:00:0a did not answer a sweep" in results[1].error
    assert table["sweeps"] == 1


def test_sweep_sends_a_presence_ping_to_every_address(monkeypatch):
    received = []
    udp = (socket.AF_INET, socket.SOCK_DGRAM)
    with socket.socket(*udp) as first, socket.socket(*udp) as second:
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        second.bind(("127.0.0.2", port))
        monkeypatch.setattr(discovery, "RMCP_PORT", port)
        monkeypatch.setattr(discovery, "BATCH", 1)  # every address through its own socket as well
        discovery.sweep([ipaddress.ip_network("127.0.0.0/30")])
        for listener in (first, second):
            listener.settimeout(2)
            received.append(listener.recvfrom(64)[0])
    assert received == [discovery.RMCP_PING] * 2


def test_api_and_cli_discovery_need_subnets(client, app, db, cli_runner, root, table):
    boot(client, MAC1)
    boot(client, MAC2)
    token = db.write(lambda s: tokens.create(s, "t"))
    auth = {"Authorization": f"Bearer {token}"}
    client.patch(
        "/api/v1/hosts/1", json={"bmc": {"address": "ipmi://52-54-00-aa-bb-cc", "username": "admin"}}, headers=auth
    )
    client.patch("/api/v1/hosts/2", json={"bmc": {"address": "ipmi://10.0.0.5"}}, headers=auth)
    r = client.patch("/api/v1/discovery", headers=auth)
    assert r.status_code == 409 and "set KS_BMC_SUBNETS" in r.json["error"]
    table["now"] = {BMC_MAC: "10.0.0.2"}
    r = client.get("/api/v1/discovery", headers=auth)
    assert r.json == {"subnets": [], "bmcs": [{"host": 1, "hostname": "not-set", "mac": BMC_MAC, "ip": "10.0.0.2"}]}
    assert table["sweeps"] == 0
    r = cli_runner.invoke(cli, ["--root", str(root), "bmc", "discover"])
    assert r.exit_code == 1 and "no BMC subnets to sweep; set KS_BMC_SUBNETS" in r.output
    r = cli_runner.invoke(cli, ["--root", str(root), "bmc", "discover"], env={"KS_BMC_SUBNETS": "10.0.0.0/16"})
    assert r.exit_code == 1 and "10.0.0.0/16 is larger than /22" in r.output
    r = cli_runner.invoke(
        cli, ["--root", str(root), "bmc", "discover", "--json"], env={"KS_BMC_SUBNETS": "10.0.0.0/29"}
    )
    assert r.exit_code == 0 and json.loads(r.output)["bmcs"][0]["ip"] == "10.0.0.2"
    assert table["sweeps"] == 1


def test_edit_host_refuses_a_mac_with_colons(cli_runner, root, client):
    boot(client, MAC1)
    r = cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "--bmc", "ipmi://52:54:00:aa:bb:cc"])
    assert r.exit_code == 2 and "ipmi://52-54-00-aa-bb-cc" in r.output


# --- the real thing: ipmi_sim in a network namespace, found by its MAC -------------------

FAR_MAC = "52:54:00:21:3a:02"


@pytest.fixture
def bmc_network():
    from netns import veth_namespace

    with veth_namespace(FAR_MAC) as veth:
        yield veth


@pytest.mark.e2e
def test_bmc_given_by_mac_is_found_by_a_sweep_and_powered(bmc_network, start_bmc, cli_runner, root, client, tmp_path):
    from server import ServerProcess

    net = bmc_network
    bmc = start_bmc("ipmi", power=False, address=net.far_ip, port=623, prefix=net.prefix)
    boot(client, MAC1)
    boot(client, MAC2)
    password = {"KS_BMC_PASSWORD": bmc.password}
    r = eh(cli_runner, root, "-i", "1", "--bmc", "ipmi://52-54-00-21-3A-02", "--bmc-user", bmc.username, env=password)
    assert r.exit_code == 0, r.output
    # Nothing on this side has talked to the BMC yet.
    assert FAR_MAC not in discovery.neighbours()

    # Without subnets there is nothing to sweep: a clear refusal, and no traffic.
    r = eh(cli_runner, root, "-i", "1", "--power", "status")
    assert r.exit_code == 1 and f"BMC {FAR_MAC} is not in this server's neighbour table; set KS_BMC_SUBNETS" in r.output
    assert FAR_MAC not in discovery.neighbours()

    subnets = {"KS_BMC_SUBNETS": str(net.subnet)}
    r = eh(cli_runner, root, "-i", "1", "--power", "status", env=subnets)
    assert r.exit_code == 0 and r.output.startswith("host 1: power off"), r.output
    assert discovery.neighbours()[FAR_MAC] == net.far_ip
    assert eh(cli_runner, root, "-i", "1", "--power", "on", env=subnets).exit_code == 0
    bmc.wait_history([True])
    assert "     BMC:       ipmi://52-54-00-21-3A-02  power: on" in eh(cli_runner, root, "-ll", env=subnets).output

    # A MAC that nothing on the subnet has: the sweep says where it looked.
    r = eh(cli_runner, root, "-i", "2", "--bmc", "ipmi://52-54-00-21-3a-09", "--bmc-user", "admin", env=password)
    assert r.exit_code == 0, r.output
    r = eh(cli_runner, root, "-i", "2", "--power", "on", env=subnets)
    assert r.exit_code == 1 and f"BMC 52:54:00:21:3a:09 did not answer a sweep of {net.subnet}" in r.output

    # kiwispray bmc discover fills an empty table and says where each BMC is.
    net.flush_neighbours()
    assert FAR_MAC not in discovery.neighbours()
    r = cli_runner.invoke(cli, ["--root", str(root), "bmc", "discover"], env=subnets)
    assert r.exit_code == 0, r.output
    assert f"1   not-set  {FAR_MAC}  {net.far_ip}" in r.output
    assert "2   not-set  52:54:00:21:3a:09  not found" in r.output
    assert f"swept {net.subnet}: 1 of 2 BMC(s) given by MAC found" in r.output
    assert discovery.neighbours()[FAR_MAC] == net.far_ip

    # PXE Pilot's PATCH /v1/discovery, here under /api/v1.
    net.flush_neighbours()
    app = create_app({"ROOT": str(root), "BMC_SUBNETS": str(net.subnet)})
    api = app.test_client()
    auth = {"Authorization": f"Bearer {app.extensions['kiwispray'].db.write(lambda s: tokens.create(s, 't'))}"}
    assert api.patch("/api/v1/discovery", headers=auth).status_code == 204
    bmcs = api.get("/api/v1/discovery", headers=auth).json["bmcs"]
    assert [(b["mac"], b["ip"]) for b in bmcs] == [(FAR_MAC, net.far_ip), ("52:54:00:21:3a:09", None)]
    r = api.post("/api/v1/hosts/1/power", json={"action": "off"}, headers=auth)
    assert r.json == {"host": 1, "action": "off", "power": "off"}
    bmc.wait_history([True, False])
    token = app.extensions["kiwispray"].db.write(lambda s: tokens.create(s, "remote"))
    app.extensions["kiwispray"].db.dispose()

    # With --server, the server sweeps (its neighbour table is the one that counts), not the caller.
    net.flush_neighbours()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with ServerProcess(root, env={"KS_BMC_SUBNETS": str(net.subnet)}) as server:
        r = subprocess.run([sys.executable, "-m", "ks", "bmc", "discover", "--json"], capture_output=True, text=True,
                           env=cli_env(elsewhere, {"KS_SERVER": server.url, "KS_TOKEN": token}))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bmcs"][0] == {"host": 1, "hostname": "not-set", "mac": FAR_MAC, "ip": net.far_ip}
