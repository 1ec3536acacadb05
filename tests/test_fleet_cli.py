"""``kiwispray host``/``config``/``token``: locally, and remotely against a real server."""

import json
import subprocess
import sys

import pytest

from ks.cli.main import cli

from helpers import MAC1, MAC2, boot, cli_env, free_port
from server import ServerProcess


@pytest.fixture
def two_hosts(client):
    boot(client, MAC1, serial="S1")
    boot(client, MAC2, serial="S2")


def ks(runner, root, *args, env=None):
    return runner.invoke(cli, ["--root", str(root), *args], env=env)


def test_local_verbs(cli_runner, root, two_hosts):
    r = ks(cli_runner, root, "host", "list", "--no-power")
    assert r.exit_code == 0
    assert r.output.splitlines()[0].split() == ["ID", "NAME", "STATE", "MAC", "ADDRESSES", "BMC", "POWER", "LABELS"]
    assert r.output.splitlines()[1].split() == ["1", "not-set", "new", "52:54:00:00:00:01"]
    assert ks(cli_runner, root, "host", "set", "52:54:00:00:00:02", "wipe,image1").output == "host 2: wipe,image1\n"
    r = ks(cli_runner, root, "config", "list")
    assert [line.split()[0] for line in r.output.splitlines()[1:]] == ["image1", "wipe", "new", "finished"]
    r = ks(cli_runner, root, "config", "deploy", "image1", "1", "52-54-00-00-00-02")
    assert r.exit_code == 0, r.output
    hosts = json.loads(ks(cli_runner, root, "host", "list", "--json", "--no-power").output)
    assert [h["state"] for h in hosts] == ["image1", "image1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["config", "deploy", "nope", "1"], "configuration 'nope' not found"),
        (["config", "deploy", "wipe", "1", "99"], "no host with id 99"),
        (["host", "set", "1", "image9"], "unknown image 'image9'"),
        (["host", "on", "1"], "host 1 has no BMC"),
    ],
)
def test_local_refusals_are_one_line(cli_runner, root, two_hosts, args, message):
    r = ks(cli_runner, root, *args)
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and message in r.output
    hosts = json.loads(ks(cli_runner, root, "host", "list", "--json", "--no-power").output)
    assert [h["state"] for h in hosts] == ["new", "new"]


def test_tokens(cli_runner, root):
    assert ks(cli_runner, root, "db", "upgrade").exit_code == 0
    r = ks(cli_runner, root, "token", "create", "ci")
    assert r.exit_code == 0
    value = r.stdout.strip()
    assert value.startswith("ks_") and len(value) > 40
    # Where the remote CLI will look for it.
    assert "reads it from ~/.config/kiwispray/token" in r.stderr
    assert "--token-file or KS_TOKEN_FILE" in r.stderr and "KS_TOKEN, which comes first" in r.stderr
    assert ks(cli_runner, root, "token", "create", "ci").exit_code == 1
    listing = json.loads(ks(cli_runner, root, "token", "list", "--json").output)
    assert [t["name"] for t in listing] == ["ci"] and value not in json.dumps(listing)
    assert ks(cli_runner, root, "token", "revoke", "ci").exit_code == 0
    assert json.loads(ks(cli_runner, root, "token", "list", "--json").output)[0]["revoked_at"]
    assert ks(cli_runner, root, "token", "revoke", "nobody").exit_code == 1


@pytest.mark.e2e
def test_remote_cli_against_a_real_server(cli_runner, root, two_hosts, tmp_path):
    token = ks(cli_runner, root, "token", "create", "remote").stdout.strip()
    with ServerProcess(root) as srv:
        def remote(*args, token_value=token):
            env = cli_env(tmp_path / "elsewhere", {"KS_SERVER": srv.url, "KS_TOKEN": token_value})
            (tmp_path / "elsewhere").mkdir(exist_ok=True)
            return subprocess.run([sys.executable, "-m", "ks", *args], env=env, capture_output=True, text=True)

        r = remote("host", "list", "--no-power")
        assert r.returncode == 0, r.stderr
        assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["1", "2"]
        r = remote("config", "deploy", "wipe", "52:54:00:00:00:01", "2")
        assert r.returncode == 0, r.stderr
        assert "wipe" in r.stdout
        r = remote("host", "list", "--json", "--no-power")
        assert [h["state"] for h in json.loads(r.stdout)] == ["wipe", "wipe"]
        assert remote("host", "set", "1", "image1").stdout == "host 1: image1\n"
        assert [line.split()[0] for line in remote("config", "list").stdout.splitlines()[1:]] == [
            "image1", "wipe", "new", "finished"]

        r = remote("config", "deploy", "nope", "1")
        assert (
            r.returncode == 1
            and r.stderr.strip() == "Error: server: configuration 'nope' not found; `config list` shows them (404)"
        )
        r = remote("host", "reboot", "2")
        assert r.returncode == 1 and "host 2 has no BMC" in r.stderr and r.stderr.count("\n") == 1
        # A reboot that fails after the deploy: the CLI reads the server's reboot_failures, not its sentence.
        r = remote("config", "deploy", "image1", "1", "--reboot")
        assert (r.returncode, r.stdout.split()) == (1, ["HOST", "CONFIGURATION", "1", "image1"])
        assert r.stderr == ("Error: deployed, but the reboot failed: host 1: host 1 has no BMC; set one with "
                            'PATCH /api/v1/hosts/1 {"bmc": {"address": URL, ...}}\n')
        # Labels and selectors, through the server's API.
        assert remote("host", "set", "2", "--label", "rack=4").stdout == "host 2: wipe rack=4\n"
        r = remote("host", "list", "--no-power", "--select", "rack=4", "--json")
        assert [h["id"] for h in json.loads(r.stdout)] == [2]
        r = remote("host", "set", "--select", "rack=4", "finished", "--dry-run")
        assert r.returncode == 0 and r.stderr == "dry run: the change would touch these 1 host(s); nothing changed\n"
        r = remote("config", "deploy", "finished", "--select", "rack=4,mac=52-54-00-00-00-0?")
        assert r.returncode == 0, r.stderr
        r = remote("host", "set", "--select", "id=*", "--label", "site=b", "--json")
        assert [(h["id"], h["state"], h["labels"]) for h in json.loads(r.stdout)] == [
            (1, "image1", {"site": "b"}), (2, "finished", {"rack": "4", "site": "b"})]
        r = remote("host", "list", "--select", "rack=4,,x")
        assert r.returncode == 2 and r.stderr == "Error: selector 'rack=4,,x': empty term at position 8\n"
        r = remote("host", "set", "--select", "rack=4", "image9")
        assert r.returncode == 1 and "unknown image 'image9'" in r.stderr
        # The server's refusal says how this command insists, not how the API does.
        assert "(use --force to set it anyway)" in r.stderr and '"force"' not in r.stderr
        r = remote("host", "set", "1", "image9")
        assert r.returncode == 1 and "(use --force to set it anyway)" in r.stderr, r.stderr
        r = remote("host", "list", token_value="ks_wrong")
        assert r.returncode == 1 and "a valid API token is required" in r.stderr
    assert token not in srv.log()


@pytest.mark.parametrize("given", ["127.0.0.1:{port}", "http://127.0.0.1:{port}/"])
def test_a_server_without_scheme_is_http_and_a_refused_connection_is_one_line(cli_runner, given):
    port = free_port()
    r = cli_runner.invoke(cli, ["--server", given.format(port=port), "host", "list"], env={"KS_TOKEN": "ks_x"})
    assert r.exit_code == 1
    assert r.output == f"Error: cannot reach http://127.0.0.1:{port}: connection refused\n"


def test_a_server_url_of_another_scheme_is_refused_clearly(cli_runner):
    r = cli_runner.invoke(cli, ["--server", "ftp://127.0.0.1:5000", "host", "list"], env={"KS_TOKEN": "ks_x"})
    assert r.exit_code == 1
    assert r.output == ("Error: --server 'ftp://127.0.0.1:5000' is not a server's URL; give http://HOST:PORT or "
                        "https://HOST:PORT\n")
