"""Power through edit-host, the API and deploy, observed on real BMC simulators."""

import json
import time

import pytest

from ks.app import create_app
from ks.cli.edit_host import edit_host
from ks.fleet import tokens

from helpers import MAC1, MAC2, boot, eh

pytestmark = pytest.mark.e2e


@pytest.fixture
def host(client):
    boot(client, MAC1, serial="S1")
    return 1


def attach(runner, root, bmc, host_id=1):
    r = eh(runner, root, "-i", str(host_id), "--bmc", bmc.url, "--bmc-user", bmc.username,
           env={"KS_BMC_PASSWORD": bmc.password})
    assert r.exit_code == 0, r.output


def test_edit_host_power_and_deploy_now_on_ipmi(cli_runner, root, host, start_bmc):
    bmc = start_bmc("ipmi", power=False)
    attach(cli_runner, root, bmc)
    assert eh(cli_runner, root, "-i", "1", "--power", "status").output.startswith("host 1: power off")
    assert eh(cli_runner, root, "-i", "1", "--power", "on").exit_code == 0
    bmc.wait_history([True])
    r = eh(cli_runner, root, "-ll")
    assert f"     BMC:       {bmc.url}  power: on" in r.output
    assert eh(cli_runner, root, "-i", "1", "--power", "off").exit_code == 0
    bmc.wait_history([True, False])
    assert eh(cli_runner, root, "-i", "1", "--power", "on").exit_code == 0
    bmc.wait_history([True, False, True])

    # The "deploy now" gesture: state first, then a power cycle.
    r = eh(cli_runner, root, "-i", "1", "-s", "image1", "--reboot")
    assert r.exit_code == 0 and "host 1: power cycled, now on" in r.output, r.output
    bmc.wait_history([True, False, True, False, True])
    data = json.loads(eh(cli_runner, root, "-i", "1", "--json").output)
    assert data["state"] == "image1" and data["bmc"] == {"address": bmc.url, "username": bmc.username}
    history = eh(cli_runner, root, "-i", "1", "--history").output
    assert "cycle sent" in history and bmc.password not in history


def test_password_from_stdin_and_removal(cli_runner, root, host, start_bmc):
    bmc = start_bmc("ipmi", power=True)
    r = cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "--bmc", bmc.url, "--bmc-user", bmc.username,
                                      "--bmc-password", "-"], input=bmc.password + "\n")
    assert r.exit_code == 0, r.output
    assert "power on" in eh(cli_runner, root, "-i", "1", "--power", "status").output
    assert eh(cli_runner, root, "-i", "1", "--bmc", "").exit_code == 0
    r = eh(cli_runner, root, "-i", "1", "--power", "status")
    assert r.exit_code == 1 and "has no BMC; set one with edit-host -i 1 --bmc URL" in r.output


def test_dead_bmc_keeps_the_state_change_and_fails_clearly(cli_runner, root, host, monkeypatch):
    from bmc import silent_udp_port

    with silent_udp_port() as port:
        assert eh(cli_runner, root, "-i", "1", "--bmc", f"ipmi://127.0.0.1:{port}", "--bmc-user", "admin",
                  env={"KS_BMC_PASSWORD": "x"}).exit_code == 0
        started = time.monotonic()
        r = eh(cli_runner, root, "-i", "1", "-s", "wipe", "--reboot", env={"KS_POWER_TIMEOUT": "2"})
        elapsed = time.monotonic() - started
    assert r.exit_code == 1 and "no answer within 2 s" in r.output, r.output
    assert elapsed < 2 + 5
    assert json.loads(eh(cli_runner, root, "-i", "1", "--json").output)["state"] == "wipe"
    r = eh(cli_runner, root, "-ll", env={"KS_POWER_STATUS_TIMEOUT": "1"})
    assert "power: unknown" in r.output


def test_api_power_and_deploy_reboot_on_redfish(root, start_bmc, tmp_path):
    bmc = start_bmc("redfish", power=True)
    app = create_app({"ROOT": str(root), "BMC_VERIFY": str(bmc.verify)})
    from ks.records import migrate

    db = app.extensions["kiwispray"].db
    migrate.upgrade(db)
    client = app.test_client()
    boot(client, MAC1)
    boot(client, MAC2)
    token = db.write(lambda s: tokens.create(s, "t"))
    auth = {"Authorization": f"Bearer {token}"}
    r = client.patch("/api/v1/hosts/1", json={"bmc": {"address": bmc.url, "username": bmc.username,
                                                      "password": bmc.password}}, headers=auth)
    assert r.status_code == 200, r.json
    r = client.post("/api/v1/hosts/1/power", json={"action": "status"}, headers=auth)
    assert r.json == {"host": 1, "action": "status", "power": "on"}
    listing = client.get("/api/v1/hosts?power=1", headers=auth).json["hosts"]
    assert [h["power"] for h in listing] == ["on", None]
    r = client.put(
        "/api/v1/configurations/image1/deploy", json={"hosts": [{"name": "1"}], "reboot": True}, headers=auth
    )
    assert r.status_code == 204, r.data
    bmc.wait_history([False, True])
    assert client.patch("/api/v1/hosts/1/reboot", headers=auth).status_code == 204
    # Host 2 has no BMC: the deploy stands, the reboot failure is a clear 409.
    r = client.put("/api/v1/configurations/wipe/deploy", json={"hosts": [{"name": "2"}], "reboot": True}, headers=auth)
    assert r.status_code == 409 and "host 2 has no BMC" in r.json["error"]
    assert client.get("/api/v1/hosts/2", headers=auth).json["state"] == "wipe"
    db.dispose()
