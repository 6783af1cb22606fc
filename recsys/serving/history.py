"""A user's recent events, read from the store on every request so that a like or a skip
shapes the very next page, and what they say about the user: weights, likes, consumption."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.columns import DWELL, ITEM_ID, TIMESTAMP, TYPE
from recsys.config import Settings
from recsys.serving.catalogue import Catalogue
from recsys.signals import event_weights
from recsys.store import Store
from recsys.store.events import HISTORY_COLUMNS, consumed_items, user_event_columns


@dataclass(frozen=True, slots=True)
class History:
    """A user's recent events, newest first, as arrays: a page reads them a dozen ways, and
    numpy masks cost microseconds where DataFrame indexing costs a millisecond."""

    item_ids: np.ndarray  # object
    types: np.ndarray  # object
    timestamps: np.ndarray
    dwell: np.ndarray
    weights: np.ndarray  # signed signal weight per event (0 where not computed)
    rows: np.ndarray  # catalogue row per event, -1 if unknown

    @classmethod
    def of(
        cls,
        events: Mapping[str, np.ndarray],
        weights: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> History:
        n = len(events[ITEM_ID])
        return cls(
            item_ids=np.asarray(events[ITEM_ID], dtype=object),
            types=np.asarray(events[TYPE], dtype=object),
            timestamps=np.asarray(events[TIMESTAMP], dtype=np.float64),
            dwell=np.asarray(events[DWELL], dtype=np.float64),
            weights=np.zeros(n) if weights is None else weights,
            rows=np.full(n, -1, dtype=np.int64) if rows is None else rows,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def items_where(self, mask: np.ndarray) -> list[str]:
        """Distinct item ids of the masked events, newest first."""
        return list(dict.fromkeys(self.item_ids[mask].tolist()))

    def liked_and_disliked(self) -> tuple[list[str], list[str]]:
        """Items whose events add up to a positive weight, and to a negative one, each most
        recently touched first: a like followed by a dislike of the same item is not a like."""
        if not len(self):
            return [], []
        codes, items = pd.factorize(self.item_ids)  # first seen = newest
        net = np.bincount(codes, weights=self.weights, minlength=len(items))
        return items[net > 0].tolist(), items[net < 0].tolist()


def read_user_events(
    store: Store, user_id: str, limit: int, until: float | None = None
) -> dict[str, np.ndarray]:
    """The user's ``limit`` newest events (before ``until``: the user as of that moment)."""
    with store.read() as conn:
        return user_event_columns(conn, user_id, limit=limit, columns=HISTORY_COLUMNS, until=until)


def user_history(
    store: Store,
    settings: Settings,
    catalogue: Catalogue,
    reference_dwell: float,
    user_id: str,
    limit: int,
    until: float | None = None,
    hidden: frozenset[str] = frozenset(),
) -> History:
    """The ``limit`` most recent events (before ``until``) with their signal weights and
    catalogue rows, newest first. Training reads users as of a past moment this way, so
    its features come from the same code as a served page's; ``hidden`` items' events are
    left out (the ranker's labels, when they lie among the user's other events)."""
    events = read_user_events(store, user_id, limit + len(hidden), until)
    if hidden:
        shown = np.fromiter(
            (item not in hidden for item in events[ITEM_ID]), dtype=bool, count=len(events[ITEM_ID])
        )
        events = {name: np.asarray(values)[shown][:limit] for name, values in events.items()}
    if not len(events[ITEM_ID]):
        return History.of(events)
    rows = catalogue.rows(events[ITEM_ID])
    durations = np.where(rows >= 0, catalogue.durations[np.maximum(rows, 0)], np.nan)
    weights = event_weights(
        events,
        settings.signals,
        item_durations=durations,
        reference_dwell=reference_dwell,
        custom_weights=settings.custom_event_types,
    )
    return History.of(events, weights, rows)


def consumed(
    store: Store,
    user_id: str,
    history: History,
    history_events: int,
    seen_view_seconds: float,
    until: float | None = None,
    hidden: frozenset[str] = frozenset(),
) -> list[str]:
    """Items that never come back: everything touched except bounced views (and the
    ``hidden`` items, which ``history`` was read without).

    The recent history answers when it holds the user's whole log; a longer log is
    asked of the store, so an item consumed long ago stays filtered too.
    """
    if len(history) >= history_events:
        with store.read() as conn:
            items = consumed_items(conn, user_id, min_view_seconds=seen_view_seconds, until=until)
        return [item for item in items if item not in hidden] if hidden else items
    if not len(history):
        return []
    bounced = (history.types == "view") & (history.dwell < seen_view_seconds)
    return history.items_where(~bounced)
