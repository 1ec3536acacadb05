"""PXELINUX links follow every state change, from the server and from edit-host."""

import os

import pytest

from ks.app import create_app
from ks.cli.edit_host import edit_host
from ks.cli.main import cli
from ks.records import migrate

from helpers import MAC1, MAC2, boot, bootid_of


@pytest.fixture
def tftp(tmp_path):
    root = tmp_path / "tftp"
    (root / "pxelinux.configs").mkdir(parents=True)
    for name in ("new", "local", "wipe", "image1"):
        (root / "pxelinux.configs" / name).write_text(f"DEFAULT {name}\n")
    return root


@pytest.fixture
def pxe_env(tftp, monkeypatch):
    monkeypatch.setenv("KS_TFTP_ROOT", str(tftp))
    return tftp


@pytest.fixture
def pxe_client(root, pxe_env):
    app = create_app({"ROOT": str(root)})
    migrate.upgrade(app.extensions["kiwispray"].db)
    yield app.test_client()
    app.extensions["kiwispray"].db.dispose()


def links(tftp):
    d = tftp / "pxelinux.cfg"
    return {p.name: os.readlink(p) for p in sorted(d.iterdir())} if d.is_dir() else {}


def test_links_follow_registration_state_changes_and_finish(pxe_client, cli_runner, root, tftp):
    boot(pxe_client, MAC1, MAC2, serial="S1")
    assert links(tftp) == {
        "01-52-54-00-00-00-01": "../pxelinux.configs/new",
        "01-52-54-00-00-00-02": "01-52-54-00-00-00-01",
    }
    assert (tftp / "pxelinux.cfg" / "01-52-54-00-00-00-02").read_text() == "DEFAULT new\n"

    assert cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "-s", "wipe,image1"]).exit_code == 0
    assert links(tftp)["01-52-54-00-00-00-01"] == "../pxelinux.configs/wipe"

    bootid = bootid_of(boot(pxe_client, MAC1).text)
    assert pxe_client.get(f"/finish?id=1&bootid={bootid}").status_code == 200
    assert links(tftp)["01-52-54-00-00-00-01"] == "../pxelinux.configs/image1"

    assert cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "-s", "finished"]).exit_code == 0
    assert links(tftp)["01-52-54-00-00-00-01"] == "../pxelinux.configs/local"
    assert (tftp / "pxelinux.cfg" / "01-52-54-00-00-00-02").read_text() == "DEFAULT local\n"


def test_sync_repairs_drift_and_reports_it(pxe_client, cli_runner, root, tftp):
    boot(pxe_client, MAC1, serial="S1")
    boot(pxe_client, MAC2, serial="S2")
    cfg = tftp / "pxelinux.cfg"
    (cfg / "01-52-54-00-00-00-01").unlink()
    (cfg / "01-52-54-00-00-00-02").unlink()
    (cfg / "01-52-54-00-00-00-02").symlink_to("../pxelinux.configs/wipe")
    (cfg / "01-52-54-00-00-00-99").symlink_to("../pxelinux.configs/wipe")  # no such host any more
    (cfg / "default").write_text("DEFAULT menu\n")  # not ours: left alone
    r = cli_runner.invoke(cli, ["--root", str(root), "pxelinux", "sync"])
    assert r.exit_code == 0, r.output
    assert sorted(r.output.splitlines()[:3]) == [
        "changed 01-52-54-00-00-00-02 -> ../pxelinux.configs/new (was -> ../pxelinux.configs/wipe)",
        "created 01-52-54-00-00-00-01 -> ../pxelinux.configs/new",
        "removed 01-52-54-00-00-00-99 (was -> ../pxelinux.configs/wipe)",
    ]
    # The summary comes after the list, on its own line of the same stream.
    assert r.stdout.splitlines()[3] == f"3 link(s) changed in {cfg}" and r.stdout.endswith("\n")
    assert r.stderr == ""
    assert (cfg / "default").read_text() == "DEFAULT menu\n"
    r = cli_runner.invoke(cli, ["--root", str(root), "pxelinux", "sync"])
    assert r.output.strip() == f"0 link(s) changed in {cfg}"


def test_deleting_a_host_removes_its_links(pxe_client, cli_runner, root, tftp):
    boot(pxe_client, MAC1, MAC2)
    assert cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "--delete"]).exit_code == 0
    assert links(tftp) == {}


def test_sync_without_tftp_root_says_what_to_set(cli_runner, tmp_path, monkeypatch):
    monkeypatch.delenv("KS_TFTP_ROOT", raising=False)
    r = cli_runner.invoke(cli, ["--root", str(tmp_path), "pxelinux", "sync"])
    assert r.exit_code == 1 and "set KS_TFTP_ROOT" in r.output


def test_import_legacy_writes_the_links_of_the_imported_hosts(cli_runner, root, tmp_path, pxe_env, tftp):
    source = tmp_path / "known_hosts.json"
    source.write_text('[{"id": 3, "macs": "52:54:00:AA:00:01", "state": "wipe,image1"},'
                      ' {"id": 7, "macs": "52:54:00:AA:00:03", "state": "finished"}]')
    r = cli_runner.invoke(cli, ["--root", str(root), "import-legacy", str(source)])
    assert r.exit_code == 0, r.output
    assert links(tftp) == {
        "01-52-54-00-aa-00-01": "../pxelinux.configs/wipe",
        "01-52-54-00-aa-00-03": "../pxelinux.configs/local",
    }
