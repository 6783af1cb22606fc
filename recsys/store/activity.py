"""Aggregate reads of positive activity: what the feed's trending score and its degraded
(index down) popularity are made of."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from sqlalchemy import Connection, func, select

from recsys.store.catalog import items_with_any_tag
from recsys.store.schema import events, items

# Event types that can signal interest. A view or rating may still be negative once weighed;
# these reads are coarse on purpose: they serve only while nothing finer is available.
ACTIVE_TYPES = ("like", "play", "rating", "view")


def recent_activity(
    conn: Connection, days: float, *, limit: int = 2_000_000
) -> tuple[float | None, list[str], np.ndarray]:
    """The newest event time, and the item and time of each active event in the ``days``
    before it (at most ``limit`` of them)."""
    newest = conn.execute(select(func.max(events.c.timestamp))).scalar()
    if newest is None:
        return None, [], np.zeros(0)
    rows = conn.execute(
        select(events.c.item_id, events.c.timestamp)
        .where(events.c.timestamp >= newest - days * 86_400)
        .where(events.c.type.in_(ACTIVE_TYPES))
        .limit(limit)
    ).all()
    return (
        float(newest),
        [item_id for item_id, _ in rows],
        np.fromiter((t for _, t in rows), np.float64, len(rows)),
    )


def most_active_items(
    conn: Connection,
    limit: int,
    *,
    categories: Collection[str] | None = None,
    tags: Collection[str] | None = None,
) -> list[tuple[str, int]]:
    """Items by their number of active events, most first, within the given categories and
    tags (any of each)."""
    query = (
        select(events.c.item_id, func.count().label("n"))
        .where(events.c.type.in_(ACTIVE_TYPES))
        .group_by(events.c.item_id)
        .order_by(func.count().desc())
        .limit(limit)
    )
    # Retired items are out of circulation, here as everywhere.
    retired = select(items.c.item_id).where(items.c.retired_at.is_not(None))
    query = query.where(events.c.item_id.not_in(retired))
    if categories:
        query = query.join(items, items.c.item_id == events.c.item_id).where(
            items.c.category.in_(list(categories))
        )
    if tags:
        query = query.where(events.c.item_id.in_(items_with_any_tag(conn.dialect.name, tags)))
    return [(str(item_id), int(n)) for item_id, n in conn.execute(query).all()]
