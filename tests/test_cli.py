"""edit-host and kiwispray through click's CliRunner: exit codes and output."""

import json
import re

import pytest

from ks.cli.edit_host import edit_host
from ks.cli.main import cli

from helpers import MAC1, MAC2, boot, bootid_of, eh


def test_list_in_the_original_format(cli_runner, root, hosts):
    r = eh(cli_runner, root, "-l")
    assert r.exit_code == 0
    assert r.output == (
        " #Id Hostname             State      Serial#\n"
        "   1 not-set              new        SER1\n"
        "   2 not-set              new        SER2\n"
    )


def test_list_columns_stay_aligned_with_long_values(cli_runner, root, hosts):
    assert (
        eh(cli_runner, root, "-i", "1", "-s", "wipe,image1,wipe,image1", "-n", "a-rather-long-host-name-01").exit_code
        == 0
    )
    r = eh(cli_runner, root, "-l")
    assert r.exit_code == 0
    assert r.output == (
        " #Id Hostname                   State                   Serial#\n"
        "   1 a-rather-long-host-name-01 wipe,image1,wipe,image1 SER1\n"
        "   2 not-set                    new                     SER2\n"
    )


def test_set_chain_metadata_and_name(cli_runner, root, hosts):
    r = eh(
        cli_runner,
        root,
        "-i",
        "1",
        "-s",
        "wipe,image1",
        "-n",
        "node01",
        "-m",
        '{"location": "rack 4", "bmc": {"ip": "10.0.0.9"}}',
    )
    assert r.exit_code == 0, r.output
    assert "   1 node01               wipe,image1 SER1" in r.output
    r = eh(cli_runner, root, "-ll", "-i", "1")
    assert r.output.splitlines()[2:] == [
        "     MAC addrs: 52:54:00:00:00:01",
        "     Metadata:",
        "        location              'rack 4'",
    ]
    r = eh(cli_runner, root, "-lll", "-i", "1")
    assert "        bmc.ip                '10.0.0.9'" in r.output


def test_select_by_mac_and_serial(cli_runner, root, hosts):
    assert eh(cli_runner, root, "--mac", "52:54:00:00:00:02", "-s", "image1").exit_code == 0
    assert eh(cli_runner, root, "--serial", "ser1", "-s", "finished").exit_code == 0
    data = json.loads(eh(cli_runner, root, "--json").output)
    assert [(h["id"], h["state"]) for h in data] == [(1, "finished"), (2, "image1")]
    assert "bootid" not in json.dumps(data)


def test_unknown_image_is_refused_with_exit_1_unless_forced(cli_runner, root, hosts):
    r = eh(cli_runner, root, "-i", "1", "-s", "image9")
    assert r.exit_code == 1
    assert "unknown image 'image9'; known images: image1, wipe" in r.output
    assert "(use --force to set it anyway)" in r.output
    assert json.loads(eh(cli_runner, root, "-i", "1", "--json").output)["state"] == "new"
    assert eh(cli_runner, root, "-i", "1", "-s", "image9", "--force").exit_code == 0


def test_an_image_that_cannot_boot_is_refused_like_an_unknown_one(cli_runner, root, hosts):
    (root / "images" / "broken").mkdir()
    (root / "images" / "broken" / "Broken.append").write_text("console=ttyS0\n")
    r = eh(cli_runner, root, "-i", "1", "-s", "wipe,broken")
    assert r.exit_code == 1
    assert ("image 'broken' cannot boot: images/broken/ has no kernel and no initrd (nor a host.ipxe of its own) "
            "(use --force to set it anyway)") in r.output
    assert json.loads(eh(cli_runner, root, "-i", "1", "--json").output)["state"] == "new"
    # A boot template of its own boots it, whatever it holds.
    (root / "images" / "broken" / "host.ipxe").write_text("#!ipxe\nsanboot http://example.com/disk.iso\n")
    assert eh(cli_runner, root, "-i", "1", "-s", "broken").exit_code == 0


@pytest.mark.parametrize(
    "args, code, message",
    [
        ([], 2, "nothing to do"),
        (["-s", "image1"], 2, "select the host"),
        (["-i", "x"], 2, "is not a valid integer"),
        (["-i", "1", "-m", "{bad"], 2, "not valid JSON"),
        (["-i", "1", "-m", "[1]"], 2, "must be a JSON object"),
        (["-i", "1", "--mac", MAC1], 2, "one of -i"),
        (["-i", "99", "-s", "image1"], 1, "no host with id 99"),
        (["--mac", "zz", "-s", "image1"], 1, "is not a MAC address"),
        (["-i", "1", "-s", "new,image1"], 1, "can only be the last"),
        (["-i", "1", "-n", "bad name"], 1, "hostname 'bad name' is not a hostname: letters, digits and '-'"),
        (["-i", "1", "-n", "web_01"], 1, "hostname 'web_01' is not a hostname: letters, digits and '-'"),
        (["-i", "1", "-n", ""], 1, "hostname '' is not a hostname"),
        (["-i", "1", "--set-macs", MAC2], 1, "already belongs to another host"),
    ],
)
def test_errors_and_exit_codes(cli_runner, root, hosts, args, code, message):
    r = eh(cli_runner, root, *args)
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_history(cli_runner, root, hosts):
    eh(cli_runner, root, "-i", "1", "-s", "image1")
    r = eh(cli_runner, root, "-i", "1", "--history")
    lines = r.output.splitlines()
    assert [line.split()[2] for line in lines] == ["register", "boot", "state"]
    assert "new -> image1" in lines[-1]
    events = json.loads(eh(cli_runner, root, "-i", "1", "--history", "--json").output)
    assert events[-1]["kind"] == "state" and events[-1]["source"] == "cli"


def test_history_columns_stay_aligned_on_post_install_lines(cli_runner, root, client, hosts):
    eh(cli_runner, root, "-i", "1", "-s", "image1")
    script = boot(client, MAC1).text
    assert client.get("/post-install", query_string={"id": 1, "bootid": bootid_of(script)}).status_code == 200
    lines = eh(cli_runner, root, "-i", "1", "--history").output.splitlines()
    assert "post-install" in [line.split()[2] for line in lines]
    # Each column starts where it starts on every other line.
    starts = {tuple(word.start() for word in re.finditer(r"\S+", line))[2:5] for line in lines}
    assert len(starts) == 1, "\n".join(lines)


def test_delete_never_reuses_the_id(cli_runner, root, client, hosts):
    assert eh(cli_runner, root, "-i", "2", "--delete").exit_code == 0
    boot(client, "52-54-00-00-00-07")
    assert [h["id"] for h in json.loads(eh(cli_runner, root, "--json").output)] == [1, 3]


def test_help_reads_well(cli_runner):
    r = cli_runner.invoke(edit_host, ["--help"])
    assert r.exit_code == 0 and "edit-host -i 1 -s wipe,image1" in r.output
    r = cli_runner.invoke(cli, ["serve", "--help"])
    assert r.exit_code == 0 and "0.0.0.0 listens on every interface" in " ".join(r.output.split())
    assert "--running-requests" in r.output


def test_serve_refuses_a_negative_number_of_running_requests(cli_runner, root):
    r = cli_runner.invoke(cli, ["--root", str(root), "serve", "--running-requests", "-1"])
    assert r.exit_code == 2 and "--running-requests" in r.output and "Traceback" not in r.output
    from ks.core import config
    from ks.core.errors import ConfigError

    with pytest.raises(ConfigError, match="RUNNING_REQUESTS"):
        config.resolve({"ROOT": str(root)}, environ={"KS_RUNNING_REQUESTS": "-1"})


def test_render_shows_the_script_without_changing_anything(cli_runner, root, hosts):
    eh(cli_runner, root, "-i", "1", "-s", "image1")
    before = eh(cli_runner, root, "-i", "1", "--history").output
    r = cli_runner.invoke(cli, ["--root", str(root), "render", "-i", "1", "--base-url", "http://10.0.0.1:5000"])
    assert r.exit_code == 0, r.output
    assert "kernel --name kernel http://10.0.0.1:5000/images/image1/pxeboot.kernel" in r.output
    assert "razorurl=http://10.0.0.1:5000/post-install?id=1&bootid=BOOTID" in r.output
    assert eh(cli_runner, root, "-i", "1", "--history").output == before
    r = cli_runner.invoke(cli, ["--root", str(root), "render", "-i", "1", "--post-install"])
    assert r.exit_code == 0 and "finish?id=1&bootid=BOOTID" in r.output


def test_db_upgrade_and_missing_root(cli_runner, tmp_path):
    r = cli_runner.invoke(cli, ["--root", str(tmp_path), "db", "upgrade"])
    from ks.records import migrate

    assert r.exit_code == 0 and f"database at revision {migrate.head()}:" in r.output
    r = cli_runner.invoke(cli, ["--root", str(tmp_path / "nope"), "db", "upgrade"])
    assert r.exit_code == 1 and "is not a directory" in r.output


LEGACY = [
    {"id": 3, "hostname": "node03", "macs": "52:54:00:AA:00:01 52:54:00:AA:00:02", "serial": "CZJ1", "uuid": "",
     "state": "finished", "metadata": {"location": "r1"}, "bootid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
    {"id": 7, "hostname": "not-set", "macs": "52:54:00:AA:00:03", "serial": "TO BE FILLED BY O.E.M.",
     "uuid": "4C4C4544-0042-3510-8056-B4C04F335931", "state": "wipe,image1", "metadata": {}, "bootid": "abc"},
]


def test_import_legacy_keeps_ids_and_bootids(cli_runner, tmp_path, client, public_hosts):
    source = tmp_path / "known_hosts.json"
    source.write_text(json.dumps(LEGACY))
    root = tmp_path / "site"
    r = cli_runner.invoke(cli, ["--root", str(root), "import-legacy", str(source)])
    assert r.exit_code == 0 and "imported 2 hosts" in r.output
    data = json.loads(eh(cli_runner, root, "--json").output)
    assert [(h["id"], ",".join(h["chain"]), h["serial"], h["macs"]) for h in data] == [
        (3, "finished", "CZJ1", ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]),
        (7, "wipe,image1", None, ["52:54:00:aa:00:03"]),
    ]
    # An installation in flight when the site moved can still finish with its old bootid.
    assert client.get("/finish?id=7&bootid=abc").status_code == 200
    assert client.get("/state?id=7").text == "image1\n"
    # New machines continue after the highest imported id.
    boot(client, "52-54-00-00-00-99")
    assert json.loads(eh(cli_runner, root, "--json").output)[-1]["id"] == 8
    # Importing again collides and changes nothing.
    r = cli_runner.invoke(cli, ["--root", str(root), "import-legacy", str(source)])
    assert r.exit_code == 1 and "already in the database" in r.output


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a readable JSON file"),
        ('{"id": 1}', "JSON list of hosts"),
        ('[{"id": "x"}]', "id must be a positive integer"),
        ('[{"id": 1, "macs": "zz"}]', "is not a MAC address"),
        ('[{"id": 1}, {"id": 1}]', "appears twice"),
        ('[{"id": 1, "state": "a,,b"}]', "empty state name"),
        (json.dumps([{"id": 1, "macs": " ".join(f"52:54:00:00:00:{i:02x}" for i in range(1, 18))}]), "at most 16 MAC"),
    ],
)
def test_import_legacy_refuses_bad_files_whole(cli_runner, tmp_path, content, message):
    source = tmp_path / "known_hosts.json"
    source.write_text(content)
    r = cli_runner.invoke(cli, ["--root", str(tmp_path), "import-legacy", str(source)])
    assert r.exit_code == 1 and message in r.output
