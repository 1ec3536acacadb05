"""token roles

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 14:00:00

Each API token gets a role: viewer, operator or admin (ks.core.roles). Tokens made
before could do everything and become admin.
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False, server_default='admin'))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('role')
