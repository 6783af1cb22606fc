"""Deleting items and users: gone from every read, on both backends, in a build and after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vectors_testdata import DIMS, new_store

from recsys.vectors import ItemFilter


def vectors(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=(n, dim)).astype(np.float32) for name, dim in DIMS.items()}


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_deleted_points_are_gone_from_every_read(backend: str, tmp_path: Path) -> None:
    items = [f"item-{i}" for i in range(40)]
    users = [f"user-{i}" for i in range(10)]
    store = new_store(backend, tmp_path)
    with store.begin("v1", DIMS) as build:
        build.upsert_items(items, vectors(40, 1))
        build.upsert_users(users, vectors(10, 2))
        # In a build too (a trainer leaving a user out after the fit).
        assert build.delete_users(["user-9"]) == 1
    store.activate("v1")
    index = store.open_live()
    try:
        gone = ["item-3", "item-7", "item-7", "never-there"]
        assert index.delete_items(gone) == 3
        assert index.delete_users(["user-0", "no-such-user"]) == 2
        assert index.count("items") == 38 and index.count("users") == 8
        assert index.get_items(["item-3", "item-7", "item-4"]).keys() == {"item-4"}
        assert index.get_item_vectors(["item-3"], "content") == {}
        assert index.get_user_vector("user-0", "als") is None
        assert index.get_user_vector("user-9", "als") is None
        assert index.get_user_vector("user-1", "als") is not None
        probe = vectors(1, 3)["content"][0]
        found = {h.item_id for h in index.search("content", probe, 40, exact=True)}
        assert len(found) == 38 and not found & {"item-3", "item-7"}
        liked = index.recommend("content", ["item-1", "item-3"], limit=40, exact=True)
        assert not {h.item_id for h in liked} & {"item-3", "item-7"}
        with pytest.raises(ValueError, match="single string"):
            index.delete_items("item-1")
        with pytest.raises(ValueError, match="empty"):
            index.delete_users([])
        assert index.search("content", probe, 5, ItemFilter(exclude_ids=["item-1"]))
    finally:
        index.close()
        store.close()
