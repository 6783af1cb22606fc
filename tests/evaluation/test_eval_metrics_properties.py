"""Property tests of the ranking metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.evaluation.metrics import (
    average_precision_at_k,
    evaluate_rankings,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)


@st.composite
def hit_matrices(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Hits plus a consistent n_relevant (at least the hits in the list)."""
    n_users = draw(st.integers(1, 8))
    length = draw(st.integers(1, 15))
    hits = draw(arrays(bool, (n_users, length)))
    extra = draw(arrays(np.int64, n_users, elements=st.integers(0, 10)))
    n_relevant = np.maximum(hits.sum(axis=1) + extra, 1)
    return hits, n_relevant


@settings(max_examples=50, deadline=None)
@given(data=hit_matrices(), k=st.integers(1, 20))
def test_metrics_are_in_unit_interval(data: tuple[np.ndarray, np.ndarray], k: int) -> None:
    hits, n_rel = data
    for values in (
        precision_at_k(hits, k),
        recall_at_k(hits, n_rel, k),
        ndcg_at_k(hits, n_rel, k),
        average_precision_at_k(hits, n_rel, k),
        average_precision_at_k(hits, n_rel, k, normalization="n_relevant"),
        reciprocal_rank_at_k(hits, k),
        hit_rate_at_k(hits, k),
    ):
        assert values.shape == (hits.shape[0],)
        assert np.all(values >= 0.0) and np.all(values <= 1.0 + 1e-12)


@settings(max_examples=50, deadline=None)
@given(data=hit_matrices(), k=st.integers(1, 20))
def test_perfect_ranking_scores_one(data: tuple[np.ndarray, np.ndarray], k: int) -> None:
    _, n_rel = data
    length = int(max(k, n_rel.max()))
    # All relevant items first: ranks 1..n_relevant are hits.
    perfect = np.arange(length)[None, :] < n_rel[:, None]
    np.testing.assert_allclose(ndcg_at_k(perfect, n_rel, k), 1.0)
    np.testing.assert_allclose(average_precision_at_k(perfect, n_rel, k), 1.0)
    np.testing.assert_allclose(recall_at_k(perfect, n_rel, k), np.minimum(k, n_rel) / n_rel)
    np.testing.assert_allclose(precision_at_k(perfect, k), np.minimum(k, n_rel) / k)
    np.testing.assert_allclose(reciprocal_rank_at_k(perfect, k), 1.0)


@settings(max_examples=50, deadline=None)
@given(data=hit_matrices())
def test_cumulative_metrics_grow_with_k(data: tuple[np.ndarray, np.ndarray]) -> None:
    hits, n_rel = data
    for k in range(1, hits.shape[1]):
        assert np.all(recall_at_k(hits, n_rel, k) <= recall_at_k(hits, n_rel, k + 1))
        assert np.all(hit_rate_at_k(hits, k) <= hit_rate_at_k(hits, k + 1))
        assert np.all(reciprocal_rank_at_k(hits, k) <= reciprocal_rank_at_k(hits, k + 1))


@settings(max_examples=50, deadline=None)
@given(data=hit_matrices(), k=st.integers(1, 20))
def test_swapping_a_hit_forward_never_lowers_ndcg(
    data: tuple[np.ndarray, np.ndarray], k: int
) -> None:
    hits, n_rel = data
    # Move each user's last hit (within k) to the first miss before it, if any.
    better = hits.copy()
    for row in better:
        top = row[:k]
        hit_pos = np.flatnonzero(top)
        miss_pos = np.flatnonzero(~top)
        if hit_pos.size and miss_pos.size and miss_pos[0] < hit_pos[-1]:
            top[hit_pos[-1]], top[miss_pos[0]] = False, True
    assert np.all(ndcg_at_k(better, n_rel, k) >= ndcg_at_k(hits, n_rel, k) - 1e-12)
    assert np.all(
        average_precision_at_k(better, n_rel, k) >= average_precision_at_k(hits, n_rel, k) - 1e-12
    )


@settings(max_examples=20, deadline=None)
@given(
    relevant=st.dictionaries(
        st.sampled_from([f"u{i}" for i in range(6)]),
        st.sets(st.sampled_from([f"i{i}" for i in range(12)]), min_size=1, max_size=6),
        min_size=1,
    ),
    noise=st.lists(st.sampled_from([f"n{i}" for i in range(8)]), max_size=8, unique=True),
)
def test_evaluate_rankings_perfect_lists(relevant: dict[str, set[str]], noise: list[str]) -> None:
    """Lists that start with every relevant item score 1 on ndcg, map, mrr, hit rate."""
    rows = [(u, i) for u, items in relevant.items() for i in sorted(items)]
    test = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID]).assign(**{WEIGHT: 1.0})
    recs = {u: sorted(items) + noise for u, items in relevant.items()}
    m = evaluate_rankings(recs, test, [1, 3, 10])["metrics"]
    for k in (1, 3, 10):
        assert m[f"ndcg@{k}"] == 1.0 or abs(m[f"ndcg@{k}"] - 1.0) < 1e-12
        assert abs(m[f"map@{k}"] - 1.0) < 1e-12
        assert m[f"mrr@{k}"] == 1.0 and m[f"hit_rate@{k}"] == 1.0
    # Reversed lists (noise first) can only do worse.
    worse = {u: noise + sorted(items) for u, items in relevant.items()}
    w = evaluate_rankings(worse, test, [1, 3, 10])["metrics"]
    assert all(w[f"ndcg@{k}"] <= m[f"ndcg@{k}"] + 1e-12 for k in (1, 3, 10))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 8))
def test_diversity_matches_brute_force(seed: int, k: int) -> None:
    """The closed forms for list diversity agree with an explicit loop over item pairs
    (some items lack a vector or a category and are skipped)."""
    rng = np.random.default_rng(seed)
    items = [f"i{i}" for i in range(12)]
    with_vector = [i for i in items if rng.random() < 0.8]
    vectors = {i: rng.normal(size=3) for i in with_vector}
    categories = {i: f"c{rng.integers(0, 3)}" for i in items if rng.random() < 0.8}
    recs = {f"u{u}": list(rng.permutation(items)[: rng.integers(1, 10)]) for u in range(6)}
    test = pd.DataFrame({USER_ID: list(recs), ITEM_ID: "i0", WEIGHT: 1.0})
    m = evaluate_rankings(recs, test, [k], item_vectors=vectors, item_categories=categories)[
        "metrics"
    ]

    distances, shares, differs = [], [], []
    for lst in recs.values():
        top = lst[:k]
        vec = [vectors[i] / np.linalg.norm(vectors[i]) for i in top if i in vectors]
        pairs = [(a, b) for n, a in enumerate(vec) for b in vec[n + 1 :]]
        if pairs:
            distances.append(np.mean([1 - a @ b for a, b in pairs]))
        cats = [categories[i] for i in top if i in categories]
        if cats:
            shares.append(len(set(cats)) / len(cats))
        cat_pairs = [(a, b) for n, a in enumerate(cats) for b in cats[n + 1 :]]
        if cat_pairs:
            differs.append(np.mean([a != b for a, b in cat_pairs]))

    def same(ours: float, expected: list[float]) -> bool:
        return np.isnan(ours) if not expected else abs(ours - np.mean(expected)) < 1e-9

    assert same(m[f"ild_content@{k}"], distances)
    assert same(m[f"category_share@{k}"], shares)
    assert same(m[f"category_ild@{k}"], differs)
