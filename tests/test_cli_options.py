"""Where the commands' global options go, what happens without a database, and help texts."""

import pytest

from ks.cli.edit_host import edit_host
from ks.cli.main import cli


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The current directory: an empty one that is no site, and no KS_* setting pointing at one."""
    for var in ("KS_ROOT", "KS_DATABASE_URL", "KS_SERVER", "KS_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    return empty


@pytest.mark.parametrize(
    "args",
    [
        ["host", "list", "--no-power", "--root", "{root}"],
        ["host", "--root", "{root}", "list", "--no-power"],
        ["render", "-i", "1", "--root", "{root}"],
        ["timeouts", "check", "--root", "{root}"],
        ["token", "list", "--root", "{root}"],
        ["config", "list", "--root", "{root}"],
        ["db", "upgrade", "--root", "{root}"],
        ["image", "list", "--root", "{root}"],
    ],
)
def test_root_may_follow_the_command(cli_runner, root, hosts, elsewhere, args):
    r = cli_runner.invoke(cli, [a.format(root=root) for a in args])
    assert r.exit_code == 0, r.output
    assert not (elsewhere / "kiwispray.db").exists()


def test_root_after_the_command_wins_over_the_one_before(cli_runner, root, hosts, elsewhere):
    r = cli_runner.invoke(cli, ["--root", str(elsewhere), "host", "list", "--no-power", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert [line.split()[0] for line in r.output.splitlines()[1:]] == ["1", "2"]


def test_serve_takes_root_after_the_command(cli_runner, tmp_path, elsewhere):
    # A root that is not a directory stops serve before it binds: the option was read.
    r = cli_runner.invoke(cli, ["serve", "--root", str(tmp_path / "nope")])
    assert r.exit_code == 1 and f"site root {tmp_path / 'nope'} is not a directory" in r.output


@pytest.mark.parametrize(
    "command, args",
    [
        (edit_host, ["-l"]),
        (edit_host, ["-i", "1", "-s", "image1"]),
        (cli, ["host", "list", "--no-power"]),
        (cli, ["render", "-i", "1"]),
        (cli, ["token", "create", "ci"]),
        (cli, ["token", "list"]),
        (cli, ["timeouts", "check"]),
        (cli, ["config", "deploy", "wipe", "1"]),
    ],
)
def test_no_database_here_is_an_error_not_an_empty_fleet(cli_runner, elsewhere, command, args):
    r = cli_runner.invoke(command, args)
    assert r.exit_code == 1, r.output
    assert f"no database at {elsewhere / 'kiwispray.db'}" in r.output
    assert "--root" in r.output and "kiwispray db upgrade" in r.output
    assert "Traceback" not in r.output
    assert list(elsewhere.iterdir()) == []  # nothing left behind


def test_db_upgrade_creates_the_database_here(cli_runner, elsewhere):
    assert cli_runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    r = cli_runner.invoke(edit_host, ["-l"])
    assert r.exit_code == 0 and r.output == " #Id Hostname             State      Serial#\n"


@pytest.mark.parametrize(
    "args, env, given",
    [
        (["--server", "http://ks.example:5000", "render", "-i", "1"], {}, "--server"),
        (["--server", "http://ks.example:5000", "image", "list"], {}, "--server"),
        (["--server", "http://ks.example:5000", "token", "create", "ci"], {}, "--server"),
        (["token", "list"], {"KS_SERVER": "http://ks.example:5000"}, "KS_SERVER"),
    ],
)
def test_server_on_a_command_that_cannot_use_it_is_a_usage_error(cli_runner, elsewhere, args, env, given):
    r = cli_runner.invoke(cli, args, env=env)
    assert r.exit_code == 2, r.output
    command = args[2] if given == "--server" else args[0]
    assert f"{given} is for the host, config, bmc commands; '{command}' works on the site on this machine" in r.output
    assert list(elsewhere.iterdir()) == []  # no stray database


@pytest.mark.parametrize("args", [["render", "-i", "1"], ["image", "list"], ["db", "upgrade"]])
def test_server_after_a_local_only_command_is_refused_too(cli_runner, elsewhere, args):
    r = cli_runner.invoke(cli, [*args, "--server", "http://ks.example:5000"])
    assert r.exit_code == 2, r.output
    assert f"--server is for the host, config, bmc commands; '{args[0]}' works on the site on this machine" in r.output
    assert list(elsewhere.iterdir()) == []


def test_server_may_follow_a_remote_command(cli_runner, root, hosts, monkeypatch):
    monkeypatch.setenv("KS_TOKEN", "t")
    # Port 9 (discard) on loopback: nothing answers, so the error shows the URL was taken.
    r = cli_runner.invoke(cli, ["--root", str(root), "host", "list", "--server", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "cannot reach http://127.0.0.1:9: " in r.output


@pytest.mark.parametrize(
    "args, env, url",
    [
        ([], {"KS_BASE_URL": "http://10.0.0.7:5000"}, "http://10.0.0.7:5000"),
        (["--base-url", "http://10.0.0.8:8080"], {"KS_BASE_URL": "http://10.0.0.7:5000"}, "http://10.0.0.8:8080"),
    ],
)
def test_render_uses_the_configured_base_url(cli_runner, root, hosts, args, env, url):
    cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "-s", "image1"])
    r = cli_runner.invoke(cli, ["--root", str(root), "render", "-i", "1", *args], env=env)
    assert r.exit_code == 0, r.output
    assert f"razorurl={url}/post-install?id=1&bootid=BOOTID" in r.stdout
    assert "SERVER" not in r.stdout and "placeholder" not in r.stderr


def test_render_says_when_the_base_url_is_a_placeholder(cli_runner, root, hosts, monkeypatch):
    monkeypatch.delenv("KS_BASE_URL", raising=False)
    cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", "-s", "image1"])
    r = cli_runner.invoke(cli, ["--root", str(root), "render", "-i", "1"])
    assert r.exit_code == 0, r.output
    assert "razorurl=http://SERVER:5000/post-install" in r.stdout
    assert "# base URL: http://SERVER:5000, a placeholder" in r.stderr
    assert "set KS_BASE_URL or pass --base-url" in r.stderr


def _first_sentences(group):
    for name, command in group.commands.items():
        first = " ".join(command.help.split("\n\n")[0].split())
        yield name, first[: first.index(".") + 1] if "." in first else first


@pytest.mark.parametrize("path", [[], ["host"], ["image"], ["timeouts"]])
def test_help_lists_every_command_with_its_whole_first_sentence(cli_runner, path):
    r = cli_runner.invoke(cli, [*path, "--help"], terminal_width=80)
    assert r.exit_code == 0
    listing = " ".join(r.output.split("Commands:")[1].split())
    assert "..." not in listing and "…" not in listing
    group = cli
    for name in path:
        group = group.commands[name]
    for name, sentence in _first_sentences(group):
        assert f"{name} {sentence}" in listing
