"""The same seeded queries against every backend, checked against brute force and each other."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from vectors_testdata import (
    CATEGORIES,
    DIMS,
    T0,
    TAGS,
    Items,
    Users,
    brute_recommend,
    brute_search,
    stored,
)

from recsys.vectors import Hit, ItemFilter, LikeExamples, Nearest, VectorIndex, point_id
from recsys.vectors.base import POINT_NAMESPACE

LIMIT = 20

FILTERS: dict[str, ItemFilter | None] = {
    "none": None,
    "category": ItemFilter(categories=[CATEGORIES[1]]),
    "categories": ItemFilter(categories=CATEGORIES[2:5]),
    "tags": ItemFilter(tags=[TAGS[0], TAGS[7]]),
    "exclude": ItemFilter(exclude_ids=[f"item-{i:05d}" for i in range(0, 2000, 7)]),
    "created_after": ItemFilter(created_after=T0 + 86_400 * 300),
    "created_until": ItemFilter(created_until=T0 + 86_400 * 200),
    "created_between": ItemFilter(created_after=T0 + 86_400 * 100, created_until=T0 + 86_400 * 250),
    "combined": ItemFilter(
        categories=CATEGORIES[:4],
        tags=TAGS[:6],
        exclude_ids=[f"item-{i:05d}" for i in range(0, 2000, 10)],
        created_after=T0 + 86_400 * 100,
    ),
    "selective": ItemFilter(categories=[CATEGORIES[3]], tags=[TAGS[11]], created_after=T0 + 3e7),
    "unpopular": ItemFilter(max_popularity=2.0),
    "unpopular_in_categories": ItemFilter(categories=CATEGORIES[:3], max_popularity=5.0),
}


def assert_same(hits: list[Hit], expected: list[tuple[str, float]]) -> None:
    assert [h.item_id for h in hits] == [item_id for item_id, _ in expected]
    np.testing.assert_allclose(
        [h.score for h in hits], [score for _, score in expected], rtol=1e-4, atol=1e-4
    )


def assert_same_payload(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal payloads; floats may differ in the last bit after a trip through the engine."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert actual[key] == pytest.approx(value, rel=1e-15), key
        else:
            assert actual[key] == value, key


def satisfies(payload: dict[str, Any], filters: ItemFilter | None) -> bool:
    if filters is None:
        return True
    return (
        (filters.categories is None or payload["category"] in filters.categories)
        and (filters.tags is None or bool(set(payload["tags"]) & set(filters.tags)))
        and (filters.exclude_ids is None or payload["item_id"] not in filters.exclude_ids)
        and (filters.created_after is None or payload["created_at"] > filters.created_after)
        and (filters.created_until is None or payload["created_at"] <= filters.created_until)
        and (filters.max_popularity is None or payload["popularity"] <= filters.max_popularity)
    )


@pytest.mark.parametrize("vector_name", list(DIMS))
@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_search_matches_brute_force(
    index: VectorIndex, items: Items, users: Users, vector_name: str, filter_name: str
) -> None:
    filters = FILTERS[filter_name]
    query = users.vectors[vector_name][len(filter_name)]
    hits = index.search(vector_name, query, LIMIT, filters, exact=True)
    assert_same(hits, brute_search(items, vector_name, query, LIMIT, filters))
    assert all(satisfies(h.payload, filters) for h in hits)


@pytest.mark.parametrize("filter_name", ["none", "unpopular", "combined"])
def test_a_shortlist_by_one_vector_is_reordered_by_another(
    index: VectorIndex, items: Items, users: Users, filter_name: str
) -> None:
    """``within``: the content vector's 60 nearest (under the filter) ranked by the ALS
    vector, as the feed's new-item places ask; the same as doing both steps by hand."""
    filters = FILTERS[filter_name]
    user = len(filter_name)
    shortlist_query = users.vectors["content"][user]
    shortlist = Nearest("content", shortlist_query, 60, filters)
    hits = index.search("als", users.vectors["als"][user], LIMIT, within=shortlist, exact=True)
    kept = [item_id for item_id, _ in brute_search(items, "content", shortlist_query, 60, filters)]
    scores = stored(items, "als")[[items.index_of[i] for i in kept]] @ users.vectors["als"][user]
    expected = sorted(zip(kept, scores.tolist(), strict=True), key=lambda pair: -pair[1])
    assert_same(hits, expected[:LIMIT])
    # The same through a batch, beside a plain query.
    plain = Nearest("als", users.vectors["als"][user], LIMIT, filters)
    both = index.query_batch(
        [Nearest("als", users.vectors["als"][user], LIMIT, within=shortlist), plain]
    )
    assert [h.item_id for h in both[0]] == [h.item_id for h in hits]
    assert [h.item_id for h in both[1]] == [
        item_id
        for item_id, _ in brute_search(items, "als", users.vectors["als"][user], LIMIT, filters)
    ]


def test_a_shortlist_has_no_shortlist_of_its_own(index: VectorIndex, users: Users) -> None:
    inner = Nearest("content", users.vectors["content"][0], 10)
    outer = Nearest("content", users.vectors["content"][1], 20, within=inner)
    with pytest.raises(ValueError, match="shortlist of its own"):
        index.search("als", users.vectors["als"][0], 5, within=outer)
    with pytest.raises(ValueError, match=r"must have shape \(24,\)"):
        index.search("als", users.vectors["als"][0], 5, within=Nearest("content", [1.0, 2.0], 10))


def test_default_search_is_exact_on_a_small_index(
    index: VectorIndex, items: Items, users: Users
) -> None:
    query = users.vectors["als"][7]
    filters = FILTERS["combined"]
    assert index.search("als", query, LIMIT, filters) == index.search(
        "als", query, LIMIT, filters, exact=True
    )


def test_hits_carry_external_ids_and_payload(index: VectorIndex, items: Items) -> None:
    hits = index.search("content", items.vectors["content"][42], 5, exact=True)
    assert hits[0].item_id == "item-00042"
    assert_same_payload(hits[0].payload, {"item_id": "item-00042", **items.payloads[42]})
    assert all(h.item_id in items.index_of for h in hits)  # external ids, never point ids


def test_limit_larger_than_matches(index: VectorIndex, items: Items) -> None:
    filters = ItemFilter(categories=[CATEGORIES[0]], tags=[TAGS[3]], created_after=T0 + 3.1e7)
    expected = brute_search(items, "als", items.vectors["als"][0], 500, filters)
    assert 0 < len(expected) < 500
    hits = index.search("als", items.vectors["als"][0], 500, filters, exact=True)
    assert_same(hits, expected)


RECOMMEND_CASES = {
    "one-positive": (["item-00010"], []),
    "positives": (["item-00010", "item-00500", "item-01999"], []),
    "with-negatives": (["item-00010", "item-00500"], ["item-00777", "item-01234"]),
    "missing-ignored": (["item-00010", "no-such-item"], ["also-missing"]),
}


STRATEGIES = ["average_vector", "best_score", "sum_scores"]


def check_recommend(
    index: VectorIndex,
    items: Items,
    vector_name: str,
    case: str,
    strategy: str,
    filters: ItemFilter | None,
) -> None:
    positive, negative = RECOMMEND_CASES[case]
    hits = index.recommend(
        vector_name, positive, negative, LIMIT, filters, strategy=strategy, exact=True
    )
    expected = brute_recommend(
        items, vector_name, positive, negative, LIMIT, filters, strategy=strategy
    )
    assert_same(hits, expected)
    assert not {h.item_id for h in hits} & {*positive, *negative}
    assert all(satisfies(h.payload, filters) for h in hits)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", list(RECOMMEND_CASES))
def test_recommend_with_filter_matches_brute_force(
    index: VectorIndex, items: Items, strategy: str, case: str
) -> None:
    check_recommend(index, items, "als", case, strategy, FILTERS["combined"])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("vector_name", ["hybrid", "content"])
def test_recommend_matches_brute_force(
    index: VectorIndex, items: Items, strategy: str, vector_name: str
) -> None:
    check_recommend(index, items, vector_name, "with-negatives", strategy, None)


def test_recommend_negatives_only_with_best_score(index: VectorIndex, items: Items) -> None:
    hits = index.recommend("als", [], ["item-00003"], 10, strategy="best_score", exact=True)
    assert_same(hits, brute_recommend(items, "als", [], ["item-00003"], 10, strategy="best_score"))


def test_recommend_with_only_unknown_examples_is_empty(index: VectorIndex) -> None:
    assert index.recommend("als", ["missing-1"], ["missing-2"], 10) == []
    assert index.recommend("als", [], ["missing-2"], 10, strategy="best_score") == []


def test_query_batch_answers_each_query_as_alone(index: VectorIndex, items: Items) -> None:
    # The feed's shape: one exclusion filter shared by every query, examples that are
    # excluded already and examples that are not, one filter of its own, an unanswerable one.
    shared = FILTERS["exclude"]
    assert shared is not None and shared.exclude_ids is not None
    excluded_example, fresh_example = shared.exclude_ids[3], "item-00011"
    queries = [
        Nearest("als", items.vectors["als"][5], LIMIT, shared),
        LikeExamples("als", [excluded_example, fresh_example], [], 50, shared),
        LikeExamples("content", ["item-00010", "item-00500"], ["item-00777"], LIMIT, shared),
        LikeExamples("hybrid", ["missing-1"], [], LIMIT, shared),
        Nearest("content", items.vectors["content"][9], 30, FILTERS["combined"]),
        Nearest("hybrid", items.vectors["hybrid"][1], LIMIT, None),
        # Another filter over the same excluded ids (the feed's fresh-items query).
        Nearest(
            "content",
            items.vectors["content"][2],
            LIMIT,
            ItemFilter(exclude_ids=shared.exclude_ids, created_after=T0 + 86_400 * 200),
        ),
    ]
    results = index.query_batch(queries)
    assert len(results) == len(queries)
    assert results[3] == []  # no usable example
    for query, hits in zip(queries[:3] + queries[4:], results[:3] + results[4:], strict=True):
        if isinstance(query, Nearest):
            expected = brute_search(
                items, query.vector_name, query.vector, query.limit, query.filters
            )
        else:
            expected = brute_recommend(
                items,
                query.vector_name,
                list(query.positive_ids),
                list(query.negative_ids),
                query.limit,
                query.filters,
            )
        assert_same(hits, expected)
        assert all(h.payload == {"item_id": h.item_id} for h in hits)
    assert not {h.item_id for h in results[1]} & {excluded_example, fresh_example}
    assert not set(shared.exclude_ids) & {h.item_id for r in results[:4] for h in r}
    assert index.query_batch([]) == []


def test_query_batch_rejects_bad_queries(index: VectorIndex, items: Items) -> None:
    with pytest.raises(ValueError):
        index.query_batch([Nearest("nope", items.vectors["als"][0])])
    with pytest.raises(ValueError):
        index.query_batch([Nearest("als", items.vectors["als"][0], 0)])
    with pytest.raises(ValueError):
        index.query_batch([Nearest("als", [1.0, 2.0])])
    with pytest.raises(ValueError):
        index.query_batch([LikeExamples("als", [], ["item-00001"])])


def test_get_item_vectors(index: VectorIndex, items: Items) -> None:
    wanted = ["item-00005", "missing", "item-00001", "item-00005"]
    for name in DIMS:
        found = index.get_item_vectors(wanted, name)
        assert list(found) == ["item-00005", "item-00001"]
        for item_id, vector in found.items():
            original = items.vectors[name][items.index_of[item_id]]
            if name == "content":  # cosine spaces store unit vectors
                original = original / np.linalg.norm(original)
            assert vector.dtype == np.float32
            np.testing.assert_allclose(vector, original, rtol=1e-5, atol=1e-6)


def test_get_user_vector(index: VectorIndex, users: Users) -> None:
    vector = index.get_user_vector("user-0003", "als")
    assert vector is not None
    np.testing.assert_allclose(vector, users.vectors["als"][3], rtol=1e-6)
    assert index.get_user_vector("nobody", "als") is None


def test_get_items(index: VectorIndex, items: Items) -> None:
    found = index.get_items(["item-01000", "missing", "item-00002"])
    assert list(found) == ["item-01000", "item-00002"]
    assert_same_payload(found["item-00002"], {"item_id": "item-00002", **items.payloads[2]})


def test_count(index: VectorIndex, items: Items, users: Users) -> None:
    assert index.count() == len(items.ids)
    assert index.count("users") == len(users.ids)
    assert dict(index.dims) == DIMS


@pytest.mark.parametrize("external_id", ["item-1", "item-2", "", "ünïcode/é", "x" * 300])
def test_point_ids_are_uuid5(external_id: str) -> None:
    assert point_id(external_id) == str(uuid.uuid5(POINT_NAMESPACE, external_id))
    assert uuid.UUID(point_id(external_id)).version == 5


def test_point_ids_never_change() -> None:
    # Stored point ids depend on this: changing it orphans every stored point.
    assert point_id("item-1") == "d4b2e2de-6458-58ac-9109-4e1fde464f9a"


QUERIES = [("search", "als", filter_name) for filter_name in FILTERS] + [
    ("recommend", name, case, strategy)
    for name, case in (("hybrid", "with-negatives"), ("content", "positives"))
    for strategy in STRATEGIES
]


def test_backends_are_congruent(
    edge_index: VectorIndex, client_index: VectorIndex, users: Users
) -> None:
    """Both backends return the same ids in the same order for the same seeded queries."""
    for spec in QUERIES:
        results = []
        for index in (edge_index, client_index):
            if spec[0] == "search":
                _, name, filter_name = spec
                hits = index.search(
                    name, users.vectors[name][11], LIMIT, FILTERS[filter_name], exact=True
                )
            else:
                _, name, case, strategy = spec
                positive, negative = RECOMMEND_CASES[case]
                hits = index.recommend(
                    name, positive, negative, LIMIT, FILTERS["tags"], strategy=strategy, exact=True
                )
            results.append(hits)
        edge_hits, client_hits = results
        assert [h.item_id for h in edge_hits] == [h.item_id for h in client_hits], spec
        np.testing.assert_allclose(
            [h.score for h in edge_hits], [h.score for h in client_hits], rtol=1e-4, atol=1e-5
        )
        for edge_hit, client_hit in zip(edge_hits, client_hits, strict=True):
            assert_same_payload(edge_hit.payload, client_hit.payload)
