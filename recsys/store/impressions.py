"""Impressions: what the service showed, written in bulk, read for training and reports."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Connection, delete, func, select, text

from recsys.store.schema import impressions

# The order of an impression row (a plain tuple: the recorder queues millions of them).
IMPRESSION_COLUMNS = (
    "feed_id",
    "position",
    "user_id",
    "item_id",
    "surface",
    "model_version",
    "ranker",
    "experiment",
    "variant",
    "shown_at",
)


def insert_impressions(conn: Connection, rows: Sequence[tuple[object, ...]]) -> int:
    """Insert impression rows (``IMPRESSION_COLUMNS`` order) with the driver's executemany;
    a row already stored (same feed_id and position, e.g. a retried flush) is skipped.
    Returns how many were new."""
    if not rows:
        return 0
    columns = ", ".join(IMPRESSION_COLUMNS)
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    marks = ", ".join(mark for _ in IMPRESSION_COLUMNS)
    sql = (
        f"INSERT INTO impressions ({columns}) VALUES ({marks}) "
        "ON CONFLICT (feed_id, position) DO NOTHING"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
        count = int(cursor.rowcount)
    finally:
        cursor.close()
    # SQLite reports the rows of every statement; psycopg may report -1 for pipelined
    # statements: then count what the inserts could have added.
    return count if count >= 0 else len(rows)


def prune_impressions(conn: Connection, before: float) -> int:
    """Delete impressions shown before ``before`` (unix seconds); returns how many."""
    result = conn.execute(delete(impressions).where(impressions.c.shown_at < before))
    return int(result.rowcount or 0)


def count_impressions(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(impressions)).scalar_one())


def feed_impressions(conn: Connection, feed_id: str) -> pd.DataFrame:
    """One answer's impressions, in page order."""
    query = (
        select(*(impressions.c[c] for c in IMPRESSION_COLUMNS))
        .where(impressions.c.feed_id == feed_id)
        .order_by(impressions.c.position)
    )
    return pd.DataFrame(conn.execute(query).all(), columns=list(IMPRESSION_COLUMNS))


def user_impressions(conn: Connection, user_id: str, *, limit: int = 50) -> pd.DataFrame:
    """A user's newest impressions (feed and similar items shown to them), newest first:
    "it keeps showing me X" is answered from here."""
    query = (
        select(*(impressions.c[c] for c in IMPRESSION_COLUMNS))
        .where(impressions.c.user_id == user_id)
        .order_by(impressions.c.shown_at.desc(), impressions.c.position)
        .limit(limit)
    )
    return pd.DataFrame(conn.execute(query).all(), columns=list(IMPRESSION_COLUMNS))


def ignored_impressions(
    conn: Connection, *, shown_from: float, shown_before: float, window_seconds: float
) -> pd.DataFrame:
    """Feed impressions shown in [shown_from, shown_before) that the user did not act on
    within ``window_seconds``: no event of theirs on that item in the window (a skip is an
    act and carries its own weight). Columns user_id, item_id, shown_at."""
    query = text(
        "SELECT i.user_id, i.item_id, i.shown_at FROM impressions i "
        "WHERE i.surface = 'feed' AND i.user_id IS NOT NULL "
        "AND i.shown_at >= :shown_from AND i.shown_at < :shown_before "
        "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.user_id = i.user_id "
        "AND e.item_id = i.item_id AND e.timestamp >= i.shown_at "
        "AND e.timestamp < i.shown_at + :window)"
    )
    rows = conn.execute(
        query,
        {"shown_from": shown_from, "shown_before": shown_before, "window": window_seconds},
    ).all()
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "shown_at"])
    frame["shown_at"] = frame["shown_at"].astype("float64")
    return frame


def experiment_exposure(conn: Connection, experiment: str) -> pd.DataFrame:
    """Impressions per (variant, user) of an experiment: columns variant, user_id,
    impressions."""
    query = (
        select(impressions.c.variant, impressions.c.user_id, func.count().label("impressions"))
        .where(impressions.c.experiment == experiment, impressions.c.surface == "feed")
        .group_by(impressions.c.variant, impressions.c.user_id)
    )
    return pd.DataFrame(conn.execute(query).all(), columns=["variant", "user_id", "impressions"])


def experiment_events(conn: Connection, experiment: str) -> pd.DataFrame:
    """Events attributed to an experiment's feed answers (their feed_id is one of its
    pages), with the variant that served the page and the item's length (for views)."""
    query = text(
        "SELECT p.variant, e.user_id, e.item_id, e.type, e.timestamp, e.dwell_seconds, "
        "e.value, it.duration_seconds "
        "FROM events e "
        "JOIN (SELECT DISTINCT feed_id, variant FROM impressions "
        "      WHERE experiment = :experiment AND surface = 'feed') p ON e.feed_id = p.feed_id "
        "LEFT JOIN items it ON it.item_id = e.item_id"
    )
    columns = [
        "variant",
        "user_id",
        "item_id",
        "type",
        "timestamp",
        "dwell_seconds",
        "value",
        "duration_seconds",
    ]
    frame = pd.DataFrame(conn.execute(query, {"experiment": experiment}).all(), columns=columns)
    for column in ("timestamp", "dwell_seconds", "value", "duration_seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame
