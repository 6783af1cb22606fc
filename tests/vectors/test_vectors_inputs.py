"""Bad inputs fail early with a clear ValueError, before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors_testdata import CATEGORIES, T0, TAGS, Items, brute_search

from recsys.vectors import ItemFilter, VectorIndex
from recsys.vectors.edge import EdgeIndex

ALS = 32  # the contract index's als dimension


def vec(n: int, dim: int = ALS) -> np.ndarray:
    return np.ones((n, dim), dtype=np.float32)


SEARCH_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "short vector": ({"query_vector": np.ones(ALS - 1)}, "shape"),
    "long vector": ({"query_vector": np.ones(ALS + 1)}, "shape"),
    "matrix": ({"query_vector": np.ones((2, ALS))}, "shape"),
    "nan": ({"query_vector": np.full(ALS, np.nan)}, "NaN"),
    "unknown name": ({"vector_name": "bogus"}, "unknown vector name"),
    "zero limit": ({"limit": 0}, "limit"),
    "float limit": ({"limit": 2.5}, "limit"),
    "bool limit": ({"limit": True}, "limit"),
}


@pytest.mark.parametrize("case", list(SEARCH_CASES))
def test_bad_search(index: VectorIndex, case: str) -> None:
    kwargs: dict[str, Any] = {"vector_name": "als", "query_vector": np.ones(ALS), "limit": 5}
    override, message = SEARCH_CASES[case]
    kwargs.update(override)
    with pytest.raises(ValueError, match=message):
        index.search(**kwargs)


RECOMMEND_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "no examples": ({"positive_ids": [], "negative_ids": []}, "at least one"),
    "average needs a positive": ({"positive_ids": [], "negative_ids": ["item-00001"]}, "positive"),
    "unknown strategy": ({"strategy": "median"}, "strategy"),
    "string ids": ({"positive_ids": "item-00001"}, "single string"),
    "non-string id": ({"positive_ids": [1]}, "non-empty strings"),
    "unknown name": ({"vector_name": "bogus"}, "unknown vector name"),
    "zero limit": ({"limit": 0}, "limit"),
}


@pytest.mark.parametrize("case", list(RECOMMEND_CASES))
def test_bad_recommend(index: VectorIndex, case: str) -> None:
    kwargs: dict[str, Any] = {"vector_name": "als", "positive_ids": ["item-00001"], "limit": 5}
    override, message = RECOMMEND_CASES[case]
    kwargs.update(override)
    with pytest.raises(ValueError, match=message):
        index.recommend(**kwargs)


UPSERT_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "empty ids": ({"ids": [], "vectors": {"als": vec(0)}}, "empty"),
    "single string id": ({"ids": "ab"}, "single string"),
    "non-string id": ({"ids": [1, 2]}, "non-empty strings"),
    "empty id": ({"ids": ["", "b"]}, "non-empty strings"),
    "duplicate ids": ({"ids": ["a", "a"]}, "duplicates"),
    "row count": ({"vectors": {"als": vec(3)}}, "shape"),
    "wrong dimension": ({"vectors": {"als": vec(2, ALS - 1)}}, "shape"),
    "flat vectors": ({"vectors": {"als": np.ones(ALS)}}, "shape"),
    "unknown name": ({"vectors": {"bogus": vec(2)}}, "unknown vector name"),
    "no vectors": ({"vectors": {}}, "at least one"),
    "nan": ({"vectors": {"als": np.full((2, ALS), np.nan)}}, "NaN"),
    "payload count": ({"payloads": [{}]}, "one mapping per id"),
    "payload type": ({"payloads": [{}, "x"]}, "mapping"),
    "tags as a string": ({"payloads": [{"tags": "sci-fi"}, {}]}, "tags"),
    "category type": ({"payloads": [{"category": 3}, {}]}, "category"),
    "created_at text": ({"payloads": [{"created_at": "today"}, {}]}, "created_at"),
    "created_at nan": ({"payloads": [{"created_at": float("nan")}, {}]}, "created_at"),
    "naive datetime": ({"payloads": [{"created_at": datetime(2024, 1, 1)}, {}]}, "naive"),
    "popularity type": ({"payloads": [{"popularity": "high"}, {}]}, "popularity"),
    "item_id mismatch": ({"payloads": [{"item_id": "zzz"}, {}]}, "differs"),
    "batch size": ({"batch_size": 0}, "batch_size"),
}


@pytest.mark.parametrize("case", list(UPSERT_CASES))
def test_bad_upsert_items(index: VectorIndex, case: str) -> None:
    kwargs: dict[str, Any] = {"ids": ["new-a", "new-b"], "vectors": {"als": vec(2)}}
    override, message = UPSERT_CASES[case]
    kwargs.update(override)
    before = index.count()
    with pytest.raises(ValueError, match=message):
        index.upsert_items(**kwargs)
    assert index.count() == before
    assert index.get_items(["new-a", "new-b", "a"]) == {}


def test_bad_upsert_users(index: VectorIndex) -> None:
    with pytest.raises(ValueError, match="empty"):
        index.upsert_users([], {"als": vec(0)})
    with pytest.raises(ValueError, match="shape"):
        index.upsert_users(["u"], {"als": vec(1, 3)})
    with pytest.raises(ValueError, match="unknown vector name"):
        index.upsert_users(["u"], {"ALS": vec(1)})


def test_bad_reads(index: VectorIndex) -> None:
    with pytest.raises(ValueError, match="empty"):
        index.get_items([])
    with pytest.raises(ValueError, match="empty"):
        index.get_item_vectors([], "als")
    with pytest.raises(ValueError, match="unknown vector name"):
        index.get_item_vectors(["item-00001"], "bogus")
    with pytest.raises(ValueError, match="non-empty strings"):
        index.get_user_vector("", "als")
    with pytest.raises(ValueError, match="collection"):
        index.count("things")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": []}, "empty"),
        ({"tags": []}, "empty"),
        ({"categories": "cat-1"}, "list of strings"),
        ({"tags": [1]}, "only strings"),
        ({"exclude_ids": "item-1"}, "list of strings"),
        ({"created_after": "yesterday"}, "number"),
        ({"created_after": float("inf")}, "finite"),
        ({"created_after": datetime(2024, 1, 1)}, "naive"),
        ({"max_popularity": "few"}, "max_popularity must be a number"),
        ({"max_popularity": float("nan")}, "finite"),
    ],
)
def test_bad_filters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ItemFilter(**kwargs)


def test_filter_normalises() -> None:
    f = ItemFilter(categories=["a"], exclude_ids=[], created_after=datetime(2024, 1, 1, tzinfo=UTC))
    assert f.categories == ("a",) and f.exclude_ids == ()
    assert f.created_after == datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    assert ItemFilter().is_empty and ItemFilter(exclude_ids=[]).is_empty


@pytest.fixture
def als_only(backend: str, tmp_path: Path) -> Iterator[VectorIndex]:
    """An index with only the ``als`` vector configured."""
    if backend == "edge":
        index: VectorIndex = EdgeIndex.create(tmp_path / "als-only", {"als": 4})
    else:
        from qdrant_client import QdrantClient

        from recsys.vectors.client import ClientIndex

        index = ClientIndex.create(QdrantClient(":memory:"), "items_x", "users_x", {"als": 4})
    yield index
    index.close()


def test_unconfigured_vector_and_closed_index(als_only: VectorIndex) -> None:
    als_only.upsert_items(["a"], {"als": np.ones((1, 4))})
    with pytest.raises(ValueError, match="not configured"):
        als_only.search("content", np.ones(4))
    with pytest.raises(ValueError, match="not configured"):
        als_only.upsert_items(["b"], {"content": np.ones((1, 4))})
    assert [h.item_id for h in als_only.search("als", np.ones(4))] == ["a"]
    als_only.close()
    als_only.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        als_only.search("als", np.ones(4))


filters_strategy = st.builds(
    ItemFilter,
    categories=st.none() | st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3),
    tags=st.none() | st.lists(st.sampled_from(TAGS), min_size=1, max_size=4),
    exclude_ids=st.none()
    | st.lists(st.integers(0, 1999).map(lambda i: f"item-{i:05d}"), max_size=50),
    created_after=st.none() | st.floats(T0 - 10, T0 + 86_400 * 366),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(filters=filters_strategy, user=st.integers(0, 99), limit=st.integers(1, 40))
def test_any_filter_matches_brute_force_on_edge(
    edge_index: VectorIndex, items: Items, filters: ItemFilter, user: int, limit: int
) -> None:
    query = np.random.default_rng(user).standard_normal(ALS).astype(np.float32)
    hits = edge_index.search("als", query, limit, filters, exact=True)
    expected = brute_search(items, "als", query, limit, filters)
    assert [h.item_id for h in hits] == [i for i, _ in expected]
