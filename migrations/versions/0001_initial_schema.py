"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:34:19.044220
"""

import sqlalchemy as sa
from alembic import op

import ks.records.models

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hosts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=True),
    sa.Column('uuid', sa.String(length=36), nullable=True),
    sa.Column('state', sa.String(length=1100), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('bootid_hash', sa.String(length=64), nullable=True),
    sa.Column('boot_finished', sa.Boolean(), nullable=False),
    sa.Column('created_at', ks.records.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ks.records.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_boot_at', ks.records.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', ks.records.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('serial', name=op.f('uq_hosts_serial')),
    sa.UniqueConstraint('uuid', name=op.f('uq_hosts_uuid')),
    sqlite_autoincrement=True
    )
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('host_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', ks.records.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('from_state', sa.String(length=1100), nullable=True),
    sa.Column('to_state', sa.String(length=1100), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_events_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_host_id_id', ['host_id', 'id'], unique=False)

    op.create_table('host_macs',
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('host_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_host_macs_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('mac', name=op.f('pk_host_macs'))
    )
    with op.batch_alter_table('host_macs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_macs_host_id'), ['host_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('host_macs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_host_macs_host_id'))

    op.drop_table('host_macs')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_host_id_id')

    op.drop_table('events')
    op.drop_table('hosts')
