"""Table definitions: the single source of truth that Alembic migrations are checked against.

Times are stored as unix seconds in double precision. That keeps bulk reads vectorized (one
float column straight into numpy), is identical on SQLite and PostgreSQL, and is exact to
the microsecond for any date this product will see.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from recsys.columns import FEED_ID_LENGTH, MAX_EVENT_TYPE_LENGTH, MAX_ID_LENGTH

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

items = Table(
    "items",
    metadata,
    Column("item_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("title", Text, nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("tags", JSON, nullable=False),
    Column("category", String(MAX_ID_LENGTH), nullable=True),
    Column("created_at", Float(precision=53), nullable=True),
    Column("duration_seconds", Float(precision=53), nullable=True),
    Column("attributes", JSON, nullable=False),
    Column("updated_at", Float(precision=53), nullable=False),
    # When the item was taken out of circulation (None while it is in): it leaves every
    # feed and similar-items list but stays in the history.
    Column("retired_at", Float(precision=53), nullable=True),
    # The store-side order of catalogue changes: every transaction that writes items takes
    # the next number of the "items" counter (see recsys.store.catalog.next_item_revision)
    # and stamps it on the rows it writes. Serving processes index what is newer than the
    # revision they have, so no writer's clock or commit delay can hide an item from them.
    Column("revision", BigInteger, nullable=False, server_default="0"),
    Index(None, "created_at"),
    Index(None, "revision"),
)

# Named counters that hand out numbers in commit order: the row's lock is held until the
# writing transaction ends, so a reader that sees number n has seen every number below it.
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("first_seen", Float(precision=53), nullable=False),
    Column("attributes", JSON, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("event_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("user_id", String(MAX_ID_LENGTH), nullable=False),
    Column("item_id", String(MAX_ID_LENGTH), nullable=False),
    Column("type", String(MAX_EVENT_TYPE_LENGTH), nullable=False),
    Column("timestamp", Float(precision=53), nullable=False),
    Column("dwell_seconds", Float(precision=53), nullable=True),
    Column("value", Float(precision=53), nullable=True),
    Column("ingested_at", Float(precision=53), nullable=False),
    # The answer (a feed or similar-items page) the event acts on, when the client says:
    # it attributes the event to that page's impressions and experiment variant.
    Column("feed_id", String(FEED_ID_LENGTH), nullable=True),
    # A user's history in time order: the feed's seen-filter and real-time fold-in.
    Index(None, "user_id", "timestamp"),
    # Time-window scans: training windows, trending, "events since the last run".
    Index(None, "timestamp"),
    Index(None, "ingested_at"),
    Index(None, "feed_id"),
    # An item's interactions over time (the console's item page, an item's audience).
    Index(None, "item_id", "timestamp"),
)

# What the service showed: one row per item of every feed and similar-items answer,
# written off the request path in bulk (recsys.serving.impressions).
impressions = Table(
    "impressions",
    metadata,
    Column("feed_id", String(FEED_ID_LENGTH), primary_key=True),
    Column("position", Integer, primary_key=True),
    # None for a similar-items answer asked without a user.
    Column("user_id", String(MAX_ID_LENGTH), nullable=True),
    Column("item_id", String(MAX_ID_LENGTH), nullable=False),
    # feed | similar
    Column("surface", String(16), nullable=False),
    Column("model_version", String(64), nullable=True),
    # learned | blend | popularity | degraded (for similar items: the similarity kind)
    Column("ranker", String(16), nullable=False),
    Column("experiment", String(64), nullable=True),
    Column("variant", String(64), nullable=True),
    Column("shown_at", Float(precision=53), nullable=False),
    # Ignored impressions per user (training), retention (by time), experiments' reports.
    Index(None, "user_id", "shown_at"),
    Index(None, "shown_at"),
    Index(None, "experiment", "variant"),
)

experiments = Table(
    "experiments",
    metadata,
    Column("name", String(64), primary_key=True),
    # running | stopped
    Column("status", String(16), nullable=False),
    # True while running, NULL after: a unique column holds one True at most, so the
    # database itself refuses a second running experiment (NULLs never clash).
    Column("running", Boolean, nullable=True, unique=True),
    Column("variants", JSON, nullable=False),
    Column("started_at", Float(precision=53), nullable=False),
    Column("stopped_at", Float(precision=53), nullable=True),
)

model_runs = Table(
    "model_runs",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("started_at", Float(precision=53), nullable=False),
    Column("finished_at", Float(precision=53), nullable=True),
    Column("published_at", Float(precision=53), nullable=True),
    # running | failed | refused | completed | published
    Column("status", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("data_stats", JSON, nullable=False),
    Column("timings", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("artifact_uri", Text, nullable=True),
    Column("message", Text, nullable=True),
    Index(None, "started_at"),
)
