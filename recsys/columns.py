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
FEED_ID = "feed_id"

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
# What the store keeps of an event: the columns above and, when the client sent one, the
# feed_id of the answer the event acts on (attribution; None otherwise).
STORED_EVENT_COLUMNS = (*EVENT_COLUMNS, FEED_ID)

# Ids are user-supplied text; 512 characters leaves room for URLs and composite keys while
# staying inside PostgreSQL's btree row limit.
MAX_ID_LENGTH = 512

# A feed_id is 32 hex digits (a UUID4 without dashes); events may carry any client-side id
# of up to this length, which then simply matches no impression.
FEED_ID_LENGTH = 64

# Width of the events table's type column: a custom event type name may not exceed it.
MAX_EVENT_TYPE_LENGTH = 64
