"""enrollment rule sequences

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 15:00:00

``rule_sequences``: per enrollment rule (by name), the last ``seq`` it gave a
machine, counted up in the registration's transaction.
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rule_sequences',
        sa.Column('rule', sa.String(length=64), nullable=False),
        sa.Column('last', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.PrimaryKeyConstraint('rule', name=op.f('pk_rule_sequences')),
    )


def downgrade() -> None:
    op.drop_table('rule_sequences')
