"""provisioning deadlines and failures

A host booted into an image gets a deadline for its /finish; the timeout check
flags it failed when the deadline passes. Both columns are empty for existing
hosts: their next boot into an image sets a deadline.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:58:46.948980
"""

import sqlalchemy as sa
from alembic import op

import ks.records.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deadline_at', ks.records.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('failed_at', ks.records.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_hosts_deadline_at'), ['deadline_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_deadline_at'))
        batch_op.drop_column('failed_at')
        batch_op.drop_column('deadline_at')
