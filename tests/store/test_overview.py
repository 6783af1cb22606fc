"""The console's aggregates, on SQLite and PostgreSQL: the same numbers from both, days cut
at UTC midnight, and the type mix of the newest events only."""

from __future__ import annotations

import pandas as pd

from recsys.config import Settings
from recsys.events import validate_events
from recsys.store import Store
from recsys.store.events import insert_events
from recsys.store.overview import (
    DAY,
    events_per_day,
    item_events_per_day,
    recent_type_mix,
    store_counts,
)

TYPES = Settings(_env_file=None).event_types  # type: ignore[call-arg]
MIDNIGHT = 1_764_547_200.0  # 2025-12-01T00:00:00Z


def _store_with(store: Store, rows: list[tuple[str, str, str, float]]) -> None:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp"])
    checked = validate_events(frame, event_types=TYPES)
    assert checked.rejects.empty
    with store.transaction() as conn:
        insert_events(conn, checked.valid)


def test_counts_days_and_mixes(store: Store) -> None:
    rows = [
        # Day 0: the first second and the last of it.
        ("u1", "a", "like", MIDNIGHT),
        ("u1", "b", "skip", MIDNIGHT + DAY - 0.5),
        # Day 1: three events, one of them on item a.
        ("u2", "a", "play", MIDNIGHT + DAY),
        ("u2", "c", "like", MIDNIGHT + DAY + 10),
        ("u3", "c", "like", MIDNIGHT + DAY + 20),
        # Day 3 (day 2 has none): a's last event.
        ("u3", "a", "dislike", MIDNIGHT + 3 * DAY + 1),
    ]
    _store_with(store, rows)
    with store.read() as conn:
        counts = store_counts(conn)
        assert counts["events"] == 6 and counts["users"] == 3
        days = [MIDNIGHT + DAY * d for d in range(4)]
        assert events_per_day(conn, days) == [2, 3, 0, 1]
        # The newest three events: a dislike and two likes.
        assert recent_type_mix(conn, newest=3) == {"dislike": 1, "like": 2}
        assert sum(recent_type_mix(conn).values()) == 6
        item = item_events_per_day(conn, "a")
        assert item.to_dict("records") == [
            {"day": int(MIDNIGHT), "type": "like", "events": 1},
            {"day": int(MIDNIGHT + DAY), "type": "play", "events": 1},
            {"day": int(MIDNIGHT + 3 * DAY), "type": "dislike", "events": 1},
        ]
        assert item_events_per_day(conn, "nobody-touched-this").empty
