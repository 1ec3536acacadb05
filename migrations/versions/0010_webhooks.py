"""webhooks, their delivery log, leases; events ids never reused on SQLite

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:00:00

``webhooks``: receivers of history events, each with its cursor (the last event
id passed) and its encrypted secret. ``webhook_deliveries``: every attempt.
``leases``: one row per kind of work only one process of all servers does at a
time (the webhook sender). ``events`` is rebuilt on SQLite with AUTOINCREMENT,
so that the id of a deleted event (a deleted host's history) is never handed out
again and no reader's cursor passes over a new event.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from ks.records.models import UTCDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('events', recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    op.create_table(
        'webhooks',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('kinds', sa.String(length=255), nullable=False),
        sa.Column('secret', sa.String(length=1024), nullable=False),
        sa.Column('delivered_id', sa.BigInteger(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', UTCDateTime(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks')),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('webhook_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('event_id', sa.BigInteger(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('status', sa.Integer(), nullable=True),
        sa.Column('error', sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    )
    op.create_index('ix_webhook_deliveries_webhook_id_id', 'webhook_deliveries', ['webhook_id', 'id'], unique=False)
    leases = op.create_table(
        'leases',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('holder', sa.String(length=128), nullable=False),
        sa.Column('expires_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_leases')),
    )
    op.bulk_insert(leases, [{"name": "webhooks", "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}])


def downgrade() -> None:
    op.drop_table('leases')
    op.drop_index('ix_webhook_deliveries_webhook_id_id', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhooks')
