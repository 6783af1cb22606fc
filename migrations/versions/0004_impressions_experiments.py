"""impressions, experiments and events.feed_id: what was shown, and what it was shown for

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_events_feed_id"), ["feed_id"], unique=False)
    op.create_table(
        "impressions",
        sa.Column("feed_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=512), nullable=True),
        sa.Column("item_id", sa.String(length=512), nullable=False),
        sa.Column("surface", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("ranker", sa.String(length=16), nullable=False),
        sa.Column("experiment", sa.String(length=64), nullable=True),
        sa.Column("variant", sa.String(length=64), nullable=True),
        sa.Column("shown_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("feed_id", "position", name=op.f("pk_impressions")),
    )
    op.create_index(
        op.f("ix_impressions_user_id_shown_at"), "impressions", ["user_id", "shown_at"]
    )
    op.create_index(op.f("ix_impressions_shown_at"), "impressions", ["shown_at"])
    op.create_index(
        op.f("ix_impressions_experiment_variant"), "impressions", ["experiment", "variant"]
    )
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("running", sa.Boolean(), nullable=True),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.Float(precision=53), nullable=False),
        sa.Column("stopped_at", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_experiments")),
        sa.UniqueConstraint("running", name=op.f("uq_experiments_running")),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_index(op.f("ix_impressions_experiment_variant"), table_name="impressions")
    op.drop_index(op.f("ix_impressions_shown_at"), table_name="impressions")
    op.drop_index(op.f("ix_impressions_user_id_shown_at"), table_name="impressions")
    op.drop_table("impressions")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_feed_id"))
        batch_op.drop_column("feed_id")
