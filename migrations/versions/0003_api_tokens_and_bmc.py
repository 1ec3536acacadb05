"""api tokens and bmc

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 23:55:34.824582
"""

import sqlalchemy as sa
from alembic import op

import ks.records.models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', ks.records.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', ks.records.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', ks.records.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bmc_address', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('bmc_username', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('bmc_password', sa.String(length=255), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('bmc_password')
        batch_op.drop_column('bmc_username')
        batch_op.drop_column('bmc_address')

    op.drop_table('api_tokens')
