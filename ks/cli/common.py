"""What every command shares: the site root option, settings, the database, tables."""

from functools import cached_property

import click

from ks import config, vault
from ks.db import Database
from ks.services import open_database
from ks.errors import KSError

root_option = click.option(
    "--root",
    "root",
    envvar="KS_ROOT",
    type=click.Path(file_okay=False),
    default=None,
    help="Site root holding images/, templates/ and kiwispray.db (env KS_ROOT; default: the current directory).",
)


class Site:
    """Settings and database of the site a command works on, created on first use."""

    def __init__(self, root: str | None):
        self._root = root

    @cached_property
    def settings(self) -> dict:
        try:
            return config.resolve({"ROOT": self._root})
        except KSError as exc:
            raise click.ClickException(str(exc)) from None

    @property
    def root(self) -> str:
        return self.settings["ROOT"]

    @cached_property
    def db(self) -> Database:
        db = open_database(self.settings)
        # Close pooled connections when the command ends, not whenever the
        # collector gets to them (commands run in-process in tests, too).
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.call_on_close(db.dispose)
        return db

    def migrated_db(self) -> Database:
        """The database, brought to the current schema first."""
        from ks import migrate

        migrate.upgrade(self.db, vault=vault.of(self.settings))
        return self.db


def fail(exc: Exception) -> click.ClickException:
    """A KIWIspray error as a one-line command failure."""
    return click.ClickException(str(exc))


def table(rows: list, header: list[str]) -> str:
    """Rows under a header, each column as wide as its widest cell, two spaces apart."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), *map(line, rows)])
