"""Aggregates for operators: how much is stored, events per day and type, one item's
interactions over time. Each is one indexed query (the console's pages must stay fast on
millions of events)."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import ColumnElement, Connection, Integer, cast, func, select

from recsys.store.schema import events, items, users

DAY = 86_400


def store_counts(conn: Connection) -> dict[str, int]:
    """Users, items and events stored."""
    return {
        name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for name, table in (("users", users), ("items", items), ("events", events))
    }


def _per_day(query_filter: list[ColumnElement[bool]], conn: Connection) -> pd.DataFrame:
    days = events.c.timestamp / DAY
    # SQLite may lack floor(); its CAST truncates, which is the floor for times after 1970.
    # PostgreSQL's CAST rounds, so it gets floor().
    day = (cast(days, Integer) if conn.dialect.name == "sqlite" else func.floor(days)).label("day")
    query = (
        select(day, events.c.type, func.count().label("events"))
        .where(*query_filter)
        .group_by(day, events.c.type)
        .order_by(day)
    )
    frame = pd.DataFrame(conn.execute(query).all(), columns=["day", "type", "events"])
    frame["day"] = frame["day"].astype("int64") * DAY
    frame["events"] = frame["events"].astype("int64")
    return frame


def events_per_day(conn: Connection, since: float) -> pd.DataFrame:
    """Events from ``since`` on, per UTC day and type: columns day (the day's start, unix
    seconds), type, events."""
    return _per_day([events.c.timestamp >= since], conn)


def item_events_per_day(conn: Connection, item_id: str) -> pd.DataFrame:
    """One item's events per UTC day and type (the same columns)."""
    return _per_day([events.c.item_id == item_id], conn)
