"""Settings are declared once (ks.core.config.Settings): the manual's table and `kiwispray serve` follow."""

import re
from pathlib import Path

import click
import pytest

from ks.cli.main import cli, serve
from ks.core import config
from ks.core.errors import ConfigError

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def settings_table() -> dict[str, list[str]]:
    """The settings table of docs/configuration.md: each row's cells, by the environment variables the row names."""
    text = PAGE.read_text()
    start = text.index("| flag | env | default | meaning |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for var in re.findall(r"`(KS_[A-Z_]+)`", cells[1]):
            rows[var] = cells
    return rows


def serve_options() -> dict[str, click.Option]:
    return {param.name: param for param in serve.params if isinstance(param, click.Option) and param.name}


@pytest.mark.parametrize("declared", config.declarations(), ids=lambda d: d.name)
def test_every_setting_is_in_the_readme_table(declared):
    rows = settings_table()
    assert declared.env in rows, f"docs/configuration.md's settings table has no row for {declared.env}"
    option, _, default, _ = rows[declared.env][:4]
    if declared.option is not None:
        assert f"serve {declared.option}" in option, f"the row of {declared.env} should name serve {declared.option}"
    if declared.type in (int, float):
        assert f"`{declared.default:g}`" in default, f"the row of {declared.env} should say its default"


@pytest.mark.parametrize("declared", [d for d in config.declarations() if d.option], ids=lambda d: d.name)
def test_serve_options_come_from_the_declaration(cli_runner, declared):
    option = serve_options()[declared.attr]
    assert option.opts == [declared.option] and option.envvar == declared.env
    assert option.help is not None and option.help.startswith(declared.help.removesuffix("."))
    assert option.default is None, "unset, the environment and the declared default apply (config.resolve)"
    shown = " ".join(cli_runner.invoke(cli, ["serve", "--help"]).output.split())
    assert declared.option in shown and f"(env {declared.env})" in shown
    assert " ".join(declared.help.removesuffix(".").split()) in shown


def test_resolve_layers_defaults_environment_and_explicit_values(tmp_path):
    settings = config.resolve({"ROOT": str(tmp_path)}, environ={})
    assert settings.poll_interval == config.declared("POLL_INTERVAL").default == 30
    env = {"KS_POLL_INTERVAL": "45", "KS_PUBLIC_HOSTS": "yes", "KS_HEADER_TIMEOUT": "2"}
    settings = config.resolve({"ROOT": str(tmp_path)}, environ=env)
    assert (settings.poll_interval, settings.public_hosts, settings.header_timeout) == (45, True, 2.0)
    settings = config.resolve({"ROOT": str(tmp_path), "POLL_INTERVAL": 5, "PUBLIC_HOSTS": None}, environ=env)
    assert (settings.poll_interval, settings.public_hosts) == (5, True)
    with pytest.raises(AttributeError):
        settings.poll_interval = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, environ, words",
    [
        ({}, {"KS_POLL_INTERVAL": "0"}, "POLL_INTERVAL must be from 1 to 3600"),
        ({"POLL_INTERVAL": 4000}, {}, "POLL_INTERVAL must be from 1 to 3600"),
        ({}, {"KS_SEND_TIMEOUT": "-1"}, "SEND_TIMEOUT must be 0 or more"),
        ({}, {"KS_POWER_TIMEOUT": "soon"}, "KS_POWER_TIMEOUT='soon' is not a valid float"),
        ({}, {"KS_PUBLIC_HOSTS": "maybe"}, "not a valid flag"),
        ({"NO_SUCH": 1}, {}, "NO_SUCH is not a setting"),
    ],
)
def test_bad_values_are_refused_with_their_name(tmp_path, overrides, environ, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        config.resolve({"ROOT": str(tmp_path), **overrides}, environ=environ)


def test_the_global_root_option_comes_from_the_declaration():
    declared = config.declared("ROOT")
    option = next(p for p in cli.params if p.name == "root")
    assert option.envvar == declared.env
    assert option.help is not None and option.help.startswith(declared.help.removesuffix("."))
