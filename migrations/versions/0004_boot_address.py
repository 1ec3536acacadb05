"""boot address

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('boot_address', sa.String(length=45), nullable=True))
        batch_op.create_index(batch_op.f('ix_hosts_boot_address'), ['boot_address'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_boot_address'))
        batch_op.drop_column('boot_address')
