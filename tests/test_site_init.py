"""kiwispray init (a new site), kiwispray dnsmasq-config (dnsmasq for it) and what
kiwispray demo asks for before it starts, through click's CliRunner."""

from pathlib import Path

import pytest

from ks.cli import site as site_cli
from ks.cli.main import cli
from ks.core import config, dnsmasq
from ks.fleet import tokens
from ks.lab import demo
from ks.runtime import open_database


@pytest.fixture(autouse=True)
def no_site_variables(monkeypatch):
    for name in ("KS_ROOT", "KS_DATABASE_URL", "KS_SERVER"):
        monkeypatch.delenv(name, raising=False)


def active(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_init_makes_a_site_that_rules_check_accepts(cli_runner, tmp_path):
    site = tmp_path / "new" / "site"
    done = cli_runner.invoke(cli, ["init", str(site)])
    assert done.exit_code == 0, done.output
    assert {p.name for p in site.iterdir()} >= {"images", "templates", "rules.toml", "kiwispray.db"}
    assert "kiwispray image import" in (site / "images" / "README.md").read_text()
    assert "templates/STATE.ipxe" in (site / "templates" / "README.md").read_text()
    assert "[[rule]]" in (site / "rules.toml").read_text()
    token = done.output.split("keep it): ", 1)[1].split()[0]
    db = open_database(config.resolve({"ROOT": str(site)}))
    try:
        signed_in = db.write(lambda session: (lambda t: t and (t.name, tokens.role_of(t).label))(
            tokens.verify(session, token)))
    finally:
        db.dispose()
    assert signed_in == ("dashboard", "admin")
    assert "next steps:" in done.output and f"--root {site} serve --host 0.0.0.0" in done.output
    checked = cli_runner.invoke(cli, ["--root", str(site), "rules", "check"])
    assert checked.exit_code == 0, checked.output
    assert "0 rule(s), no mistakes" in checked.output


def test_init_refuses_a_site_and_changes_nothing(cli_runner, tmp_path):
    assert cli_runner.invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    (tmp_path / "rules.toml").write_text("# mine\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    done = cli_runner.invoke(cli, ["init", str(tmp_path)])
    assert done.exit_code == 1
    assert "is a KIWIspray site already" in done.output
    assert "rules.toml" in done.output and "kiwispray.db" in done.output
    assert "Traceback" not in done.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_init_completes_a_directory_where_nothing_would_be_overwritten(cli_runner, tmp_path, monkeypatch):
    (tmp_path / "images" / "image1").mkdir(parents=True)
    (tmp_path / "images" / "image1" / "host.ipxe").write_text("#!ipxe\n")
    monkeypatch.chdir(tmp_path)
    done = cli_runner.invoke(cli, ["init"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "images" / "image1" / "host.ipxe").read_text() == "#!ipxe\n"
    assert (tmp_path / "rules.toml").exists()
    assert "--root" not in done.output  # the site is the current directory


def test_init_in_a_file_is_a_one_line_failure(cli_runner, tmp_path):
    (tmp_path / "file").write_text("x")
    done = cli_runner.invoke(cli, ["init", str(tmp_path / "file" / "site")])
    assert done.exit_code == 1
    assert done.output.startswith("Error: cannot make the site's directory: ")


@pytest.mark.parametrize("proxy", [False, True])
def test_dnsmasq_config_fills_in_interface_subnet_and_server(cli_runner, tmp_path, proxy):
    out = tmp_path / "kiwispray.conf"
    args = ["dnsmasq-config", "--interface", "enp3s0", "--subnet", "10.20.30.1/24",
            "--server", "http://10.20.30.1:8080", "--tftp-root", "/var/tftp", "-o", str(out)]
    done = cli_runner.invoke(cli, args + (["--proxy"] if proxy else []))
    assert done.exit_code == 0, done.output
    lines = active(out.read_text())
    assert "interface=enp3s0" in lines and "tftp-root=/var/tftp" in lines
    ranges = [line for line in lines if line.startswith("dhcp-range=")]
    boots = [line for line in lines if "bootstrap.ipxe" in line]
    assert all("http://10.20.30.1:8080/bootstrap.ipxe" in line for line in boots)
    if proxy:
        assert ranges == ["dhcp-range=10.20.30.0,proxy"]
        assert len(boots) == 3 and not any(line.startswith("dhcp-boot=") for line in lines)
    else:
        assert ranges == ["dhcp-range=10.20.30.128,10.20.30.254,12h"]
        assert boots == ["dhcp-boot=tag:ipxe,http://10.20.30.1:8080/bootstrap.ipxe"]
    assert "eth1" not in "\n".join(lines)


def test_dnsmasq_config_without_dnsmasq_says_it_did_not_check(cli_runner, monkeypatch):
    monkeypatch.setattr(site_cli.shutil, "which", lambda name: None)
    done = cli_runner.invoke(cli, ["dnsmasq-config", "--interface", "eth1", "--subnet", "192.168.7.0/24"])
    assert done.exit_code == 0, done.output
    assert "dhcp-range=192.168.7.128,192.168.7.254,12h" in done.output
    assert "dnsmasq is not installed here: not checked" in done.output


@pytest.mark.parametrize("args, message", [
    (["--subnet", "10.0.0.0/33"], "is not a subnet"),
    (["--subnet", "fd00::/64"], "IPv4"),
    (["--subnet", "10.0.0.0/31"], "too small"),
    (["--subnet", "10.0.0.0/24", "--server", "10.0.0.1:5000"], "is not a server URL"),
    (["--subnet", "10.0.0.0/24", "--server", "http://x/y"], "is not a server URL"),
    (["--subnet", "10.0.0.0/24", "--interface", "eth1\ndhcp-range=1"], "is not an interface name"),
])
def test_dnsmasq_config_refuses_what_is_not_a_configuration(cli_runner, args, message):
    done = cli_runner.invoke(cli, ["dnsmasq-config", "--interface", "eth1", *args])
    assert done.exit_code != 0
    assert message in done.output and "Traceback" not in done.output


def test_the_documented_pool_is_the_upper_half():
    assert dnsmasq.pool(dnsmasq.subnet_of("192.168.100.0/24")) == ("192.168.100.128", "192.168.100.254")
    assert dnsmasq.pool(dnsmasq.subnet_of("10.1.2.0/23")) == ("10.1.3.0", "10.1.3.254")


def test_demo_names_what_it_lacks_and_how_to_get_it(tmp_path):
    cache = tmp_path / "cache"
    everything = dict(which=lambda c: f"/usr/bin/{c}", exists=lambda p: True)
    assert demo.requirements(False, **everything, cache=cache, firmware="bios")[0].startswith(
        "kiwispray demo needs root")
    lacking = demo.requirements(True, lambda c: None if c == "dnsmasq" else c, lambda p: "undionly" not in p,
                                cache, "bios")
    assert lacking[0].startswith("missing dnsmasq, /usr/lib/ipxe/undionly.kpxe: ")
    assert "scripts/install-system-deps.sh" in lacking[0]
    assert "scripts/build-test-guest.sh" in lacking[1] and str(cache) in lacking[1]
    cache.mkdir()
    (cache / "KSTest.x86_64-1.0.0.install.tar").write_bytes(b"")
    assert demo.requirements(True, **everything, cache=cache, firmware="uefi") == []


def test_demo_refuses_to_start_without_what_it_needs(cli_runner, monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "is_root", lambda: False)
    done = cli_runner.invoke(cli, ["demo"])
    assert done.exit_code == 1
    assert "needs root" in done.output and "Traceback" not in done.output
    monkeypatch.setattr(demo, "is_root", lambda: True)
    monkeypatch.setenv("KS_E2E_CACHE", str(tmp_path / "nothing"))
    done = cli_runner.invoke(cli, ["demo"])
    assert done.exit_code == 1
    assert "build-test-guest.sh" in done.output and len(done.output.strip().splitlines()) <= 2


def test_the_commands_have_help(cli_runner):
    for command in ("init", "dnsmasq-config", "demo"):
        done = cli_runner.invoke(cli, [command, "--help"])
        assert done.exit_code == 0 and "Usage:" in done.output
    assert Path(config.shipped("dnsmasq.conf.example")).is_file()
