"""The nightly job reads what the service showed: ignored impressions become weak
negatives, and impressions past the retention are pruned."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipelines.train import train
from recsys.store.impressions import count_impressions, insert_impressions
from tests.pipelines.test_train import _small_store

DAY = 86_400.0


def _impression(feed: str, position: int, user: str, item: str, shown_at: float) -> tuple:
    return (feed, position, user, item, "feed", "v0", "blend", None, None, shown_at)


def _world(home: Path):
    catalogue = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(30)], "title": [f"song {i} jazz" for i in range(30)]}
    )
    events = [
        (f"u{u}", f"i{(u + k) % 30}", "like", 1.7e9 + 10 * k + u)
        for u in range(20)
        for k in range(9)
    ]
    now = time.time()
    shown = now - 3 * DAY
    # u0 was shown i20..i24 three days ago and acted on i20 (a like an hour later) and i21
    # (a skip: an act with its own weight); i22..i24 were ignored.
    events += [("u0", "i20", "like", shown + 3600), ("u0", "i21", "skip", shown + 60)]
    # u1 acted on i25 two days after being shown it: outside the 24 h window, so ignored.
    events += [("u1", "i25", "like", shown + 2 * DAY)]
    store, settings = _small_store(home, events, catalogue)
    rows = [_impression("f0", p, "u0", f"i{20 + p}", shown) for p in range(5)]
    rows += [_impression("f1", 0, "u1", "i25", shown)]
    # Shown an hour ago: the user may still act, so it is not judged yet.
    rows += [_impression("f2", 0, "u2", "i26", now - 3600)]
    # A similar-items answer is not a feed the user scrolled.
    rows += [("f3", 0, "u3", "i27", "similar", "v0", "i2i", None, None, shown)]
    # Older than the 90-day retention: pruned before training reads.
    rows += [_impression("f4", 0, "u4", "i28", now - 100 * DAY)]
    with store.transaction() as conn:
        assert insert_impressions(conn, rows) == 9
    return store, settings


def test_ignored_impressions_are_counted_as_weak_negatives_and_old_ones_pruned(
    tmp_path: Path,
) -> None:
    store, settings = _world(tmp_path / "on")
    result = train(store, settings)
    assert result.published
    # u0's i22, i23, i24 and u1's i25: four.
    assert result.data_stats["ignored_impressions"] == 4
    assert result.data_stats["pruned_impressions"] == 1
    with store.read() as conn:
        assert count_impressions(conn) == 8


def test_training_can_leave_impressions_out_and_keep_them_forever(tmp_path: Path) -> None:
    store, settings = _world(tmp_path / "off")
    settings = settings.model_copy(
        update={
            "impressions": settings.impressions.model_copy(
                update={"train_on_ignored": False, "retention_days": 0.0}
            )
        }
    )
    result = train(store, settings)
    assert result.data_stats["ignored_impressions"] == 0
    assert result.data_stats["pruned_impressions"] == 0
    with store.read() as conn:
        assert count_impressions(conn) == 9
