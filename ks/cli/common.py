"""What every command shares: the global options, settings, the database, help listings, tables."""

from collections.abc import Callable
from functools import cache, cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from sqlalchemy.engine import make_url

from ks.core import config, vault
from ks.core.config import Settings
from ks.core.errors import KSError
from ks.fleet.sitedb import open_database
from ks.records.db import Database

F = TypeVar("F", bound=Callable[..., Any])

_ROOT = config.declared("ROOT")
ROOT_HELP = f"{_ROOT.help.removesuffix('.')} (env {_ROOT.env}; default: the current directory)."
SERVER_HELP = "Drive the server at URL through its admin API ('host', 'config' and 'bmc' commands) (env KS_SERVER)."
TOKEN_FILE_HELP = ("File holding the API token for --server [default: ~/.config/kiwispray/token]; "
                   "KS_TOKEN takes precedence (env KS_TOKEN_FILE).")
DEFAULT_TOKEN_FILE = "~/.config/kiwispray/token"

def setting_option(name: str, **extra: Any) -> Callable[[F], F]:
    """The ``kiwispray serve`` option of setting ``name``: flag, help, variable and bounds as ks.core.config says.

    Its value is None unless given, so that ``config.resolve`` layers it over the environment and the default.
    """
    d = config.declared(name)
    if d.option is None:
        raise ValueError(f"setting {name} is no option")
    kind: Any = d.type
    if d.type is int:
        kind = click.IntRange(None if d.low is None else int(d.low), None if d.high is None else int(d.high))
    elif d.type is float:
        kind = click.FloatRange(d.low, d.high)
    shown = f" [default: {d.default:g}]" if d.type in (int, float) else ""
    help = f"{d.help.removesuffix('.')}{shown} (env {d.env})."
    if d.type is bool:
        return click.option(d.option, d.attr, is_flag=True, default=None, envvar=d.env, help=help, **extra)
    return click.option(d.option, d.attr, type=kind, default=None, envvar=d.env, help=help, **extra)


root_option = click.option(
    "--root", "root", envvar=_ROOT.env, type=click.Path(file_okay=False), default=None, help=ROOT_HELP
)


class Site:
    """Settings and database of the site a command works on, created on first use.

    ``options`` are the global options (``root``, ``server``, ``token_file``),
    given before the subcommand or after it (see ``accept_after``).
    """

    def __init__(self, root: str | None, server: str | None = None, token_file: str | None = None):
        self.options = {"root": root, "server": server, "token_file": token_file}

    @cached_property
    def settings(self) -> Settings:
        return config.resolve({"ROOT": self.options["root"]})

    @property
    def root(self) -> str:
        return self.settings.root

    @cached_property
    def db(self) -> Database:
        db = open_database(self.settings)
        # Close pooled connections when the command ends, not whenever the
        # collector gets to them (commands run in-process in tests, too).
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.call_on_close(db.dispose)
        return db

    def migrated_db(self, create: bool = False) -> Database:
        """The database, brought to the current schema first; a directory that is no site is refused
        (``require``) unless ``create``."""
        from ks.records import migrate

        if not create:
            self.require()
        migrate.upgrade(self.db, vault=vault.of(self.settings))
        return self.db

    def require(self) -> None:
        """Refuse to work on a directory that is no site: its SQLite file does not exist.

        A command run in the wrong directory must not answer from a new, empty
        database, nor leave files behind there.
        """
        missing = self._missing_database()
        if missing:
            raise click.ClickException(
                f"no database at {missing}: {self.root} is not a KIWIspray site (yet). Run the command in the "
                "site's directory or point --root (env KS_ROOT) at it; to start a new site here, create the "
                "database with `kiwispray db upgrade`."
            )

    def _missing_database(self) -> Path | None:
        """The SQLite file of the site if it does not exist; None when it does or is no file."""
        url = make_url(self.settings.database_url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        path = Path(url.database)
        return None if path.exists() else path


@cache
def _failure(exit_code: int) -> type[click.ClickException]:
    """The ClickException of one exit status: click declares ``exit_code`` per class, not per instance."""
    made = type(f"Failed{exit_code}", (click.ClickException,), {"exit_code": exit_code})
    return cast(type[click.ClickException], made)


def failed(error: KSError) -> click.ClickException:
    """A KIWIspray error as a one-line command failure with its exit status: the one place errors meet exit codes."""
    return _failure(error.exit_code)(str(error))


class Command(click.Command):
    """A command whose KIWIspray errors end it with their message and exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KSError as exc:
            raise failed(exc) from None


class Group(click.Group):
    """A command group whose listing shows each command's first sentence whole (wrapped), never cut off.

    KIWIspray errors of the group's commands end them as ``Command`` does.
    """

    command_class = Command
    group_class = type

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KSError as exc:
            raise failed(exc) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        rows = [(name, command.get_short_help_str(limit=10**6)) for name, command in commands
                if command is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _given_after(ctx: click.Context, param: click.Parameter, value):
    """A global option given after the subcommand: it wins over one given before."""
    if value is not None and param.name is not None:
        site_of(ctx).options[param.name] = value


def site_of(ctx: click.Context) -> Site:
    """The site of the running command (``kiwispray``'s group puts it on the context)."""
    site = ctx.find_object(Site)
    if site is None:
        raise RuntimeError("no Site on the click context: the command runs outside its group")
    return site


def root_after() -> click.Option:
    """``--root`` for a subcommand."""
    return click.Option(["--root", "root"], type=click.Path(file_okay=False), default=None, expose_value=False,
                        callback=_given_after, help=ROOT_HELP.replace(f"env {_ROOT.env}", "also before the command"))


def server_after() -> click.Option:
    """``--server`` for a subcommand that can drive a remote server."""
    return click.Option(["--server", "server"], metavar="URL", default=None, expose_value=False,
                        callback=_given_after,
                        help="Drive the server at URL through its admin API (also before the command).")


def token_file_after() -> click.Option:
    """``--token-file`` for a subcommand that can drive a remote server."""
    return click.Option(["--token-file", "token_file"], type=click.Path(dir_okay=False), default=None,
                        expose_value=False, callback=_given_after,
                        help=f"File holding the API token for --server [default: {DEFAULT_TOKEN_FILE}] "
                             "(also before the command).")


# The commands that can work on a remote server (--server); every other one works on the site here.
REMOTE_COMMANDS = ("host", "config", "bmc")


def server_refused(command: str, given: str) -> click.UsageError:
    """``--server`` (or ``KS_SERVER``, as ``given`` says) on a command that works on this machine's site only."""
    unset = " and unset KS_SERVER" if given == "KS_SERVER" else ""
    return click.UsageError(f"{given} is for the {', '.join(REMOTE_COMMANDS)} commands; '{command}' works on the "
                            f"site on this machine (--root), so run it there{unset}")


def _refuse_server(ctx: click.Context, param: click.Parameter, value):
    if value is not None:
        while ctx.parent is not None and ctx.parent.parent is not None:
            ctx = ctx.parent
        raise server_refused(ctx.info_name or "", "--server")


def no_server_after() -> click.Option:
    """``--server`` after a command that cannot use it: refused with a sentence, not "no such option"."""
    return click.Option(["--server", "server"], metavar="URL", default=None, expose_value=False, hidden=True,
                        callback=_refuse_server)


def accept_after(command: click.Command, *options) -> None:
    """Let ``command`` and every command under it take the global ``options`` too (each a factory)."""
    command.params.extend(make() for make in options)
    for sub in getattr(command, "commands", {}).values():
        accept_after(sub, *options)


def table(rows: list, header: list[str]) -> str:
    """Rows under a header, each column as wide as its widest cell, two spaces apart."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), *map(line, rows)])
