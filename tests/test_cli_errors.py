"""The one mapping of errors to exit codes: a KIWIspray error raised under any command ends it
with the error's message on stderr and the error's exit status, whatever the command."""

import click
import pytest

from ks.boot import booting, pxelinux
from ks.cli.common import Command, Group
from ks.cli.edit_host import edit_host
from ks.cli.main import cli
from ks.core import config, states
from ks.core.errors import KSError
from ks.fleet import legacy, machines, operations, tokens
from ks.kiwi import importer, inventory

from helpers import MAC1, boot

MESSAGE = "a distinct failure; nothing was done"


class Distinct(KSError):
    """An error no command knows, with an exit status no other error has."""

    exit_code = 7


def refuse(*args, **kwargs):
    raise Distinct(MESSAGE)


class RefusingLinks:
    link_dir = "pxelinux.cfg"

    def sync(self, db):
        raise Distinct(MESSAGE)


RULE = '[[rule]]\nname = "any"\nmatch = { mac = "52:54:00:*" }\nchain = "wipe"\n'

# What a command calls, the command line after `kiwispray --root ROOT` (None: `edit-host -l`), files it needs.
CASES = {
    "token create": ((tokens, "create"), ["token", "create", "ci"], {}),
    "token revoke": ((tokens, "revoke"), ["token", "revoke", "ci"], {}),
    "import-legacy": ((legacy, "read"), ["import-legacy", "{root}/known_hosts.json"], {"known_hosts.json": "{}"}),
    "render": ((machines, "get_host"), ["render", "-i", "1", "--base-url", "http://ks.example:5000"], {}),
    "timeouts check": ((operations, "check_timeouts"), ["timeouts", "check"], {}),
    "pxelinux sync": ((pxelinux, "from_settings"), ["pxelinux", "sync"], {}),
    "image import": ((importer, "import_image"), ["image", "import", "new", "source.tar"], {}),
    "image check": ((inventory, "check"), ["image", "check", "image1"], {}),
    "rules test": ((booting, "peek_seq"), ["rules", "test", "--mac", MAC1], {"rules.toml": RULE}),
    "serve": ((states, "parse_chain"), ["serve"], {}),
    "host list": ((machines, "list_hosts"), ["host", "list", "--no-power"], {}),
    "the settings of any command": ((config, "resolve"), ["token", "list"], {}),
    "edit-host": ((machines, "list_hosts"), None, {}),
    "edit-host's settings": ((config, "resolve"), None, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_ks_error_ends_every_command_with_its_own_exit_status(cli_runner, root, client, monkeypatch, case):
    (module, name), args, files = CASES[case]
    boot(client, MAC1, serial="SER1")
    for file, text in files.items():
        (root / file).write_text(text)
    if case == "pxelinux sync":
        monkeypatch.setattr(pxelinux, "from_settings", lambda settings: RefusingLinks())
    else:
        monkeypatch.setattr(module, name, refuse)
    if args is None:
        r = cli_runner.invoke(edit_host, ["--root", str(root), "-l"])
    else:
        args = [arg.format(root=root) for arg in args]
        r = cli_runner.invoke(cli, ["--root", str(root), *args], catch_exceptions=False)
    assert (r.exit_code, r.stderr, r.stdout) == (7, f"Error: {MESSAGE}\n", "")


def commands(command: click.Command, path: str = ""):
    yield path or command.name, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, f"{path} {name}".strip())


def test_every_command_is_one_of_the_classes_that_map_errors():
    found = dict(commands(cli))
    found["edit-host"] = edit_host
    assert len(found) > 30
    assert [path for path, command in found.items() if not isinstance(command, Command | Group)] == []
