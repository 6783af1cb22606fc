"""Catalogue validation: what a store of either kind can hold, decided per row."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from sqlalchemy import select

from recsys.store import Store
from recsys.store.catalog import (
    item_revision,
    items_with_any_tag,
    load_items,
    retire_items,
    upsert_items,
    validate_items,
)
from recsys.store.schema import items


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


def test_items_with_any_tag_on_either_store(store: Store) -> None:
    frame = pd.DataFrame(
        [
            {"item_id": "a", "title": "A", "tags": ["jazz", "live"]},
            {"item_id": "b", "title": "B", "tags": ["rock"]},
            {"item_id": "c", "title": "C", "tags": []},
            {"item_id": "d", "title": "D", "tags": ["live", "o'quote"]},
        ]
    )
    with store.transaction() as conn:
        upsert_items(conn, validate_items(frame).valid)
    with store.read() as conn:

        def holders(*tags: str) -> set[str]:
            query = select(items.c.item_id).where(
                items.c.item_id.in_(items_with_any_tag(conn.dialect.name, tags))
            )
            return set(conn.execute(query).scalars())

        assert holders("live") == {"a", "d"}
        assert holders("rock", "jazz") == {"a", "b"}
        assert holders("o'quote") == {"d"}
        assert holders("none-such") == set()


def test_an_absent_category_loads_as_none_not_nan(store: Store) -> None:
    # Regression: NaN reached the index's payload check when the service caught up on
    # items upserted during a swap, and failed the whole catch-up batch.
    frame = pd.DataFrame(
        [{"item_id": "with", "title": "A", "category": "jazz"}, {"item_id": "without"}]
    )
    with store.transaction() as conn:
        upsert_items(conn, validate_items(frame).valid)
    with store.read() as conn:
        loaded = load_items(conn).set_index("item_id")["category"].to_dict()
        recent = load_items(conn, updated_since=0.0).set_index("item_id")["category"].to_dict()
    assert loaded == recent == {"with": "jazz", "without": None}


def _items(*ids: str) -> pd.DataFrame:
    return validate_items(pd.DataFrame({"item_id": list(ids), "title": list(ids)})).valid


def test_item_writes_take_revisions_in_commit_order(store: Store) -> None:
    # A serving process indexes the items after the revision it has: a writer that took a
    # revision and committed late must not be overtaken by a later revision, or a reader
    # that saw the later one would skip it for good.
    with store.transaction() as conn:
        upsert_items(conn, _items("a", "b"))
    with store.read() as conn:
        first = item_revision(conn)
        assert load_items(conn, after_revision=first)["item_id"].tolist() == []
    assert first >= 1
    slow_took_revision = threading.Event()
    commits: list[str] = []

    def slow_writer() -> None:
        with store.transaction() as conn:
            upsert_items(conn, _items("slow"))
            slow_took_revision.set()
            time.sleep(0.5)
        commits.append("slow")

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert slow_took_revision.wait(10)
    with store.transaction() as conn:
        retire_items(conn, ["a"])  # waits for the slow writer: revisions are serialised
    commits.append("fast")
    thread.join()
    assert commits == ["slow", "fast"]
    with store.read() as conn:
        changed = load_items(conn, after_revision=first).set_index("item_id")
        assert item_revision(conn) == first + 2
    assert changed["revision"].to_dict() == {"slow": first + 1, "a": first + 2}
    assert changed.loc["a", "retired"]
