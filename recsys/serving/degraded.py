"""The page served when the vector index cannot answer (or no version is live yet): the most
interacted items straight from the store, still without anything the user consumed and
without anything this session has served."""

from __future__ import annotations

from recsys.config import FeedConfig
from recsys.serving.cursor import item_hash, next_cursor, request_key
from recsys.serving.history import History, consumed, read_user_events
from recsys.serving.types import FeedFilters, FeedItem, FeedPage
from recsys.store import Store
from recsys.store.activity import most_active_items


def degraded_feed(
    store: Store,
    config: FeedConfig,
    user_id: str,
    limit: int,
    served: set[bytes],
    page: int,
    filters: FeedFilters | None,
    *,
    model_version: str | None,
    history: History | None = None,
) -> FeedPage:
    if history is None:
        history = History.of(read_user_events(store, user_id, config.history_events))
    excluded = set(
        consumed(store, user_id, history, config.history_events, config.seen_view_seconds)
    )
    excluded |= set((filters.exclude_ids or []) if filters else [])
    with store.read() as conn:
        rows = most_active_items(
            conn,
            limit + len(excluded) + len(served) + 50,
            categories=filters.categories if filters else None,
            tags=filters.tags if filters else None,
        )
    items = [
        FeedItem(item_id=i, score=float(n), sources=["popular"], reason="popular right now")
        for i, n in rows
        if i not in excluded and item_hash(i) not in served
    ][:limit]
    return FeedPage(
        user_id=user_id,
        items=items,
        model_version=model_version,
        next_cursor=next_cursor(
            served, (i.item_id for i in items), page, request_key(user_id, filters)
        ),
        degraded=True,
    )
