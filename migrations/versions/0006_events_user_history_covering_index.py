"""a user's history read from the index alone

The feed reads a user's newest events on every request. With the index on (user_id,
timestamp) alone, each event row was a lookup in the table; an index that also holds the
columns the read returns answers it without touching the table (SQLite: 0.67 -> 0.19 ms
for a user with about 400 events). It replaces the narrower index, which is its prefix.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 02:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HISTORY_COLUMNS = ["user_id", "timestamp", "item_id", "type", "dwell_seconds", "value"]


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_" + "_".join(HISTORY_COLUMNS)), HISTORY_COLUMNS, unique=False
        )
        batch_op.drop_index(batch_op.f("ix_events_user_id_timestamp"))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_user_id_timestamp"), ["user_id", "timestamp"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_events_" + "_".join(HISTORY_COLUMNS)))
