"""dashboard logouts end sessions server-side

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 01:30:00

``api_tokens.sessions_ended`` counts the dashboard logouts made with a token. A
session remembers the count it started at; once a logout has counted it up, a
cookie of that session (a saved copy included) no longer opens a page in any
worker process or server.
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sessions_ended', sa.Integer(), nullable=False, server_default=sa.text('0')))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('sessions_ended')
