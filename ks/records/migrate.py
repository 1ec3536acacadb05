"""Bring a database to the current schema with Alembic, without an alembic.ini."""

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from ks.core.config import shipped
from ks.core.vault import Vault
from ks.records.db import Database

# Any constant: two servers starting at once on PostgreSQL migrate one after the other.
_PG_LOCK_KEY = 0x6B697769


def alembic_config(db: Database, connection=None, vault: Vault | None = None) -> Config:
    """An Alembic configuration for ``db``, pointing at the shipped migrations.

    ``vault``: the site's key, for migrations that encrypt stored secrets.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(shipped("migrations")))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["vault"] = vault
    return cfg


def upgrade(db: Database, revision: str = "head", vault: Vault | None = None) -> None:
    """Migrate ``db`` to ``revision`` (default: the newest); ``vault`` encrypts stored BMC passwords."""
    with db.refusals(), db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(alembic_config(db, conn, vault), revision)
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()


def head() -> str:
    """The newest revision the shipped migrations know."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(shipped("migrations")))
    found = ScriptDirectory.from_config(cfg).get_current_head()
    if found is None:
        raise RuntimeError(f"no migrations in {shipped('migrations')}")
    return found


def current(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with db.refusals(), db.read_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check(db: Database) -> None:
    """Raise if the models and the migrations disagree (``alembic check``)."""
    with db.engine.connect() as conn:
        command.check(alembic_config(db, conn))
