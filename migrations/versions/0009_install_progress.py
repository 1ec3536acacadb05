"""install progress

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:00:00

How far the machine's current boot got, for listings and the dashboard:
``download_sent`` and ``download_size`` of its image's disk (written every few
seconds or every 10 % while it downloads, never per chunk), ``post_install_at``
when the installed system fetched its post-install script. A boot resets all three.
``chain_set_at``: when an operator last set the host's chain (until its next boot,
the host waits: the progress of the boot before belongs to the old chain).
"""

import sqlalchemy as sa
from alembic import op

import ks.records.models

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite rebuilds the table for this: keep the ids of deleted hosts retired.
    with op.batch_alter_table('hosts', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(sa.Column('download_sent', sa.BigInteger(), nullable=False, server_default=sa.text('0')))
        batch_op.add_column(sa.Column('download_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('post_install_at', ks.records.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('chain_set_at', ks.records.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column('chain_set_at')
        batch_op.drop_column('post_install_at')
        batch_op.drop_column('download_size')
        batch_op.drop_column('download_sent')
