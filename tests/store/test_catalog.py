"""Catalogue validation: what a store of either kind can hold, decided per row."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.store import Store
from recsys.store.catalog import load_items, upsert_items, validate_items


def test_bad_items_are_rejected_per_row_and_the_rest_stored(store: Store) -> None:
    # Regression: a category longer than its column passed validation; PostgreSQL then
    # refused the whole chunk, good rows included. A far-future date crashed the parse.
    frame = pd.DataFrame(
        [
            {"item_id": "ok-1", "title": "Fine", "category": "jazz"},
            {"item_id": "long-category", "title": "Too wide", "category": "c" * 513},
            {"item_id": "far-future", "title": "Dated", "created_at": "9999-12-31"},
            {"item_id": "endless", "title": "Forever", "duration_seconds": "inf"},
            {"item_id": "ok-2", "title": "Also fine", "category": "c" * 512},
        ]
    )
    checked = validate_items(frame)
    assert checked.rejects[["row", "field"]].values.tolist() == [
        [1, "category"],
        [3, "duration_seconds"],
    ]
    assert checked.valid["item_id"].tolist() == ["ok-1", "far-future", "ok-2"]
    assert checked.valid["created_at"].iloc[1] == pytest.approx(253_402_214_400.0)
    with store.transaction() as conn:
        assert upsert_items(conn, checked.valid) == (3, 0)
    with store.read() as conn:
        stored = load_items(conn)
    assert sorted(stored["item_id"]) == ["far-future", "ok-1", "ok-2"]
    assert stored.set_index("item_id").loc["ok-2", "category"] == "c" * 512
