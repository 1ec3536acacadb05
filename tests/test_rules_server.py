"""Enrollment rules from the outside: `kiwispray rules check|test`, `serve` refusing a bad file,
a running server reading the file again, and seq under concurrent registrations."""

import json
import subprocess
import sys
import threading

import pytest
import requests

from ks.cli.main import cli

from helpers import RACK4_RULES, cli_env, run_edit_host, wait_for
from server import ServerProcess

RULES = RACK4_RULES
BROKEN = RULES.replace('"wipe,image1"', '"wipe,image9"') + '\n[[rule]]\nname = "x"\nmatch = { mac = 1 }\n'


def invoke(runner, root, *args):
    return runner.invoke(cli, ["--root", str(root), "rules", *args])


def test_rules_check_accepts_a_good_file_and_no_file(cli_runner, root):
    r = invoke(cli_runner, root, "check")
    assert r.exit_code == 0 and "no rules file; every unknown machine gets the initial chain 'new'" in r.stdout
    (root / "rules.toml").write_text(RULES)
    r = invoke(cli_runner, root, "check")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{root / 'rules.toml'}: 1 rule(s), no mistakes: rack4\n"


def test_rules_check_lists_each_mistake_on_one_line_with_its_position(cli_runner, root):
    (root / "rules.toml").write_text(BROKEN)
    r = invoke(cli_runner, root, "check")
    assert r.exit_code == 1
    path = root / "rules.toml"
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{path}:4: rule 1 'rack4', chain: unknown image 'image9'")
    assert lines[1].startswith(f"{path}:10: rule 2 'x', match.mac: must be a glob")
    assert len(lines) == 2 and "Traceback" not in r.output
    (root / "rules.toml").write_text("[[rule]\n")
    r = invoke(cli_runner, root, "check")
    assert (r.exit_code, r.stderr) == (1, f"{path}:1:7: Expected ']]' at the end of an array declaration (not valid "
                                          "TOML)\n")
    (root / "rules.toml").write_bytes(b"\xff\xfe")
    r = invoke(cli_runner, root, "check")
    assert r.exit_code == 1 and f"{path}: cannot be read" in r.stderr


def test_rules_test_shows_what_a_machine_would_get_and_changes_nothing(cli_runner, root):
    (root / "rules.toml").write_text(RULES)
    args = ["test", "--mac", "52-54-00-04-00-07", "--serial", "S7", "--fact", "product=PowerEdge R640"]
    r = invoke(cli_runner, root, *args)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "FIELD     VALUE",
        "rule      rack4 (rule 1 of 1)",
        "chain     wipe,image1",
        "hostname  rack4-1 (seq 1)",
        "labels    rack=4",
    ]
    assert not (root / "kiwispray.db").exists()
    r = invoke(cli_runner, root, *args, "--json")
    assert json.loads(r.stdout) == {"rule": "rack4", "position": 1, "seq": 1, "chain": ["wipe", "image1"],
                                    "hostname": "rack4-1", "labels": {"rack": "4"}, "problem": ""}
    r = invoke(cli_runner, root, "test", "--mac", "52:54:00:04:00:07", "--json")
    assert json.loads(r.stdout)["rule"] is None and json.loads(r.stdout)["chain"] == ["new"]
    r = invoke(cli_runner, root, "test", "--mac", "52:54:00:04:00:07")
    assert "none of 1 rule(s) matches: the server's initial chain" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--mac", "nonsense"], "'nonsense' is not a MAC address"),
    (["--mac", "52:54:00:04:00:07", "--fact", "product"], "is not KEY=VALUE"),
    (["--mac", "52:54:00:04:00:07", "--fact", "Product=x"], "cannot name a fact"),
    (["--mac", "52:54:00:04:00:07", "--uuid", "x"], "is not a UUID"),
    ([], "Missing option '--mac'"),
])
def test_rules_test_refuses_bad_values_with_usage_errors(cli_runner, root, args, message):
    r = invoke(cli_runner, root, "test", *args)
    assert r.exit_code == 2 and message in r.stderr, r.output


def test_rules_test_with_a_bad_file_fails_in_one_line(cli_runner, root):
    (root / "rules.toml").write_text(BROKEN)
    r = invoke(cli_runner, root, "test", "--mac", "52:54:00:04:00:07")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: ") and "`kiwispray rules check` lists them" in r.stderr


def test_serve_refuses_to_start_with_a_bad_rules_file(root):
    (root / "rules.toml").write_text(BROKEN)
    done = subprocess.run([sys.executable, "-m", "ks", "serve", "--port", "1"], env=cli_env(root),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{root / 'rules.toml'} has mistakes; not starting until they are corrected" in done.stderr
    assert f"{root / 'rules.toml'}:4: rule 1 'rack4', chain: unknown image 'image9'" in done.stderr
    assert "Traceback" not in done.stderr


def boot(srv, mac: str, **facts) -> requests.Response:
    r = requests.get(srv.url + "/bootstrap", params={"net0": mac, **facts}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def hosts(root) -> dict[str, dict]:
    return {h["macs"][0]: h for h in json.loads(run_edit_host(root, "--json").stdout)}


def test_a_running_server_reads_the_rules_again_and_keeps_the_last_good_ones(root):
    (root / "rules.toml").write_text(RULES)
    with ServerProcess(root, "--workers", "2", env={"KS_RULES_CHECK_INTERVAL": "0.2"}) as srv:
        boot(srv, "52-54-00-04-00-01", product="PowerEdge R640")
        (root / "rules.toml").write_text(RULES.replace('"rack4-{{ seq }}"', '"r4-{{ seq }}-{{ facts.asset }}"'))
        # Both workers read the new file, also the one that registers nothing meanwhile.
        wait_for(lambda: srv.log().count("rules: 1 rule in force") >= 2, what="both workers reading the file")
        boot(srv, "52-54-00-04-00-02", product="PowerEdge R640", asset="A7")
        (root / "rules.toml").write_text(BROKEN)
        boot(srv, "52-54-00-04-00-03", product="PowerEdge R640", asset="A8")
        wait_for(lambda: "previous 1 rule stays in force" in srv.log(), what="the warning")
        log = srv.log()
    found = hosts(root)
    assert [found[f"52:54:00:04:00:0{i}"]["hostname"] for i in (1, 2, 3)] == ["rack4-1", "r4-2-A7", "r4-3-A8"]
    assert found["52:54:00:04:00:03"]["labels"] == {"rack": "4"}
    assert f"rules file {root / 'rules.toml'} has mistakes; the previous 1 rule stays in force" in log
    assert f"{root / 'rules.toml'}:10: rule 2 'x', match.mac: must be a glob" in log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_registrations_never_share_a_seq(root, database_url):
    (root / "rules.toml").write_text(RULES)
    count = 24
    # All from this test's one address: no bound on one address's registrations.
    with ServerProcess(root, "--workers", "2", "--registrations-per-source", "0",
                       env={"KS_DATABASE_URL": database_url}) as srv:
        start = threading.Barrier(count)
        failures = []

        def register(i: int) -> None:
            start.wait()
            try:
                boot(srv, f"52-54-00-04-01-{i:02x}", product="PowerEdge R640")
            except Exception as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=register, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    names = sorted(h["hostname"] for h in json.loads(run_edit_host(root, "--json",
                                                                   env={"KS_DATABASE_URL": database_url}).stdout))
    assert names == sorted(f"rack4-{n}" for n in range(1, count + 1))
