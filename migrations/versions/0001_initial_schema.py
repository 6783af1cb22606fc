"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 12:43:34.339605
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('events',
    sa.Column('event_id', sa.String(length=512), nullable=False),
    sa.Column('user_id', sa.String(length=512), nullable=False),
    sa.Column('item_id', sa.String(length=512), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('timestamp', sa.Float(precision=53), nullable=False),
    sa.Column('dwell_seconds', sa.Float(precision=53), nullable=True),
    sa.Column('value', sa.Float(precision=53), nullable=True),
    sa.Column('ingested_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_ingested_at'), ['ingested_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_timestamp'), ['timestamp'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_user_id_timestamp'), ['user_id', 'timestamp'], unique=False)

    op.create_table('items',
    sa.Column('item_id', sa.String(length=512), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('category', sa.String(length=512), nullable=True),
    sa.Column('created_at', sa.Float(precision=53), nullable=True),
    sa.Column('duration_seconds', sa.Float(precision=53), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('item_id', name=op.f('pk_items'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_items_created_at'), ['created_at'], unique=False)

    op.create_table('model_runs',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.Float(precision=53), nullable=False),
    sa.Column('finished_at', sa.Float(precision=53), nullable=True),
    sa.Column('published_at', sa.Float(precision=53), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('data_stats', sa.JSON(), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('artifact_uri', sa.Text(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_model_runs'))
    )
    with op.batch_alter_table('model_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_runs_started_at'), ['started_at'], unique=False)

    op.create_table('users',
    sa.Column('user_id', sa.String(length=512), nullable=False),
    sa.Column('first_seen', sa.Float(precision=53), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_users'))
    )


def downgrade() -> None:
    op.drop_table('users')
    with op.batch_alter_table('model_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_runs_started_at'))

    op.drop_table('model_runs')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_items_created_at'))

    op.drop_table('items')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_user_id_timestamp'))
        batch_op.drop_index(batch_op.f('ix_events_timestamp'))
        batch_op.drop_index(batch_op.f('ix_events_ingested_at'))

    op.drop_table('events')
