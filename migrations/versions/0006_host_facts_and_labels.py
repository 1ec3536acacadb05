"""host facts and labels

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 14:00:00

``facts``: what the machine's firmware reports at each boot (SMBIOS, architecture,
platform), refreshed by every boot. ``labels``: the operator's key=value tags.
Both JSON objects, empty for existing hosts.
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite rebuilds the table for this: keep the ids of deleted hosts retired.
    with op.batch_alter_table('hosts', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(sa.Column('facts', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('labels', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column('labels')
        batch_op.drop_column('facts')
