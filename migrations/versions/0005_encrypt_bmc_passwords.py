"""encrypt bmc passwords

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:30:00

BMC passwords were stored in clear; from here on they are Fernet tokens under
the site's key (ks.core.vault), which ``ks.records.migrate.upgrade`` hands over. The column
widens to hold a token of the longest password the old column took (255 bytes).
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy import text

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _rewrite(change) -> None:
    connection = op.get_bind()
    rows = connection.execute(text("SELECT id, bmc_password FROM hosts WHERE bmc_password <> ''")).fetchall()
    if not rows:
        return
    vault = context.config.attributes.get("vault")
    if vault is None:
        raise RuntimeError("BMC passwords are stored: migrate with `kiwispray db upgrade`, which knows the site's key")
    for host_id, value in rows:
        connection.execute(text("UPDATE hosts SET bmc_password = :value WHERE id = :id"),
                           {"value": change(vault, value), "id": host_id})


def _width(length: int) -> None:
    # SQLite rebuilds the table for this: keep the ids of deleted hosts retired.
    with op.batch_alter_table('hosts', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.alter_column('bmc_password', type_=sa.String(length=length))


def upgrade() -> None:
    _width(1024)
    _rewrite(lambda vault, password: vault.encrypt(password))


def downgrade() -> None:
    _rewrite(lambda vault, token: vault.decrypt(token))
    _width(255)
