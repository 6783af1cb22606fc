"""The one set of column names used by every DataFrame that crosses a module boundary."""

from __future__ import annotations

USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_ID = "event_id"
TYPE = "type"
TIMESTAMP = "timestamp"
DWELL = "dwell_seconds"
VALUE = "value"
WEIGHT = "weight"

ITEM_COLUMNS = (
    "item_id",
    "title",
    "text",
    "tags",
    "category",
    "created_at",
    "duration_seconds",
)
EVENT_COLUMNS = (EVENT_ID, USER_ID, ITEM_ID, TYPE, TIMESTAMP, DWELL, VALUE)

# Ids are user-supplied text; 512 characters leaves room for URLs and composite keys while
# staying inside PostgreSQL's btree row limit.
MAX_ID_LENGTH = 512

# Width of the events table's type column: a custom event type name may not exceed it.
MAX_EVENT_TYPE_LENGTH = 64
