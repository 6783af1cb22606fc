"""Offline ranking metrics, vectorised with NumPy.

Conventions (all relevance is binary):

* A user is *evaluated* when the test part holds at least one relevant item for them.
  By default a test row is relevant when its ``weight`` is > 0 (negative weights are
  dislikes or skips); ``relevance_threshold=None`` (or a test frame without the
  relevance column) makes every test row relevant, as in the Microsoft Recommenders
  protocols. A (user, item) pair that occurs several times
  counts once, and is relevant when any of its rows is.
* Recommendation lists are de-duplicated (first occurrence wins) and, with a ``train``
  frame and ``remove_seen=True`` (the default), stripped of the user's train items
  before being cut at k. Relevant test pairs that are also train pairs are then dropped
  too, since they could never be recommended.
* ``precision@k`` = hits in the top k / k (also when the list is shorter than k).
* ``recall@k`` = hits in the top k / number of relevant items.
* ``ndcg@k``: DCG = sum over hits of 1 / log2(rank + 1) (rank from 1); the ideal DCG
  places min(k, n_relevant) hits at ranks 1..min(k, n_relevant).
* ``map@k``: AP@k = sum over hit ranks r <= k of precision@r, divided by
  min(k, n_relevant). This is ``map_at_k`` of Microsoft Recommenders (and of Spark's
  ``RankingMetrics.meanAveragePrecisionAt``). Their separate ``map`` function (and
  trec_eval's ``map_cut_k``) divides by n_relevant instead: pass
  ``map_normalization="n_relevant"`` to get that.
* ``mrr@k``: 1 / rank of the first hit within the top k, 0 without a hit.
* ``hit_rate@k``: 1 when the top k holds at least one relevant item.
* Users without any recommendation score 0 (``missing_recommendations="zero"``) or are
  left out (``"skip"``, which is what Microsoft Recommenders does for precision, recall
  and MAP: it averages over users present in both the test set and the predictions; its
  ``ndcg_at_k`` instead averages over every test user, like ``"zero"``. Both agree
  whenever every test user has a list.)
* ``coverage@k``: share of the catalogue found in at least one top-k list.
* ``novelty@k``: mean self-information -log2(p_i) of the recommended items, where p_i is
  the share of train users who interacted with item i, whatever the weight (an item
  absent from train counts as if one user had); averaged within each list, then over
  lists.
* ``arp@k`` (average recommendation popularity): mean number of train users of the
  recommended items, per list then over lists. ``train_arp`` is the same average over
  the items of each user's train history, and ``popularity_lift@k`` = arp@k /
  train_arp - 1 (> 0: recommendations are more popular than what users consumed).
* ``ild_content@k``: mean pairwise cosine distance (1 - cosine similarity) between the
  content vectors of the items in a list (items without a vector are skipped; lists with
  fewer than two such items are left out).
* ``category_share@k``: number of distinct categories / number of items with a category;
  ``category_ild@k``: share of item pairs whose categories differ.

Beyond-accuracy metrics (coverage onwards) are computed over every recommendation list
given, not only over evaluated users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, USER_ID, WEIGHT

__all__ = [
    "ACCURACY_METRICS",
    "RANK",
    "SCORE",
    "average_precision_at_k",
    "cold_start_auc",
    "evaluate_cold_start",
    "evaluate_rankings",
    "hit_rate_at_k",
    "ndcg_at_k",
    "per_user_metrics",
    "precision_at_k",
    "rankings_frame",
    "recall_at_k",
    "reciprocal_rank_at_k",
]

RANK = "rank"
SCORE = "score"

ACCURACY_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")
DEFAULT_K_VALUES = (5, 10, 20)
DEFAULT_USER_SEGMENTS = (5, 50)

Recommendations: TypeAlias = pd.DataFrame | Mapping[str, Sequence[str]] | np.ndarray
MapNormalization = Literal["min_k_n_relevant", "n_relevant"]

# Chunk of users processed at once by the pairwise diversity metrics (bounds memory).
_CHUNK = 2048


# ---------------------------------------------------------------------------
# Per-user metrics from a hit matrix
#
# ``hits`` is a (n_users, n_ranks) boolean matrix: hits[u, r] is True when the item at
# rank r + 1 of user u's list is relevant. ``n_relevant`` holds each user's number of
# relevant items (> 0). Each function returns one value per user.
# ---------------------------------------------------------------------------


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError("k must be >= 1")
    return np.asarray(hits, dtype=bool)[:, :k]


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Hits among the first k / k."""
    return _top(hits, k).sum(axis=1) / k


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Hits among the first k / number of relevant items."""
    return _top(hits, k).sum(axis=1) / np.asarray(n_relevant, dtype=np.float64)


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """1.0 when any of the first k is relevant."""
    return np.asarray(_top(hits, k).any(axis=1), dtype=np.float64)


def reciprocal_rank_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """1 / rank of the first relevant item within the first k (0 when none)."""
    top = _top(hits, k)
    first = top.argmax(axis=1)
    return np.asarray(np.where(top.any(axis=1), 1.0 / (first + 1), 0.0), dtype=np.float64)


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Binary NDCG with the log2(rank + 1) discount; ideal DCG over min(k, n_relevant)."""
    top = _top(hits, k)
    discounts = _discounts(k)
    dcg = top.astype(np.float64) @ discounts[: top.shape[1]]
    ideal_cum = np.concatenate(([0.0], np.cumsum(discounts)))
    n_ideal = np.minimum(np.asarray(n_relevant, dtype=np.int64), k)
    return dcg / ideal_cum[n_ideal]


def average_precision_at_k(
    hits: np.ndarray,
    n_relevant: np.ndarray,
    k: int,
    normalization: MapNormalization = "min_k_n_relevant",
) -> np.ndarray:
    """AP@k: sum of precision@r over hit ranks r <= k, divided by min(k, n_relevant)
    (``normalization="n_relevant"``: divided by n_relevant)."""
    top = _top(hits, k).astype(np.float64)
    ranks = np.arange(1, top.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.cumsum(top, axis=1) / ranks * top
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    if normalization == "min_k_n_relevant":
        denominator = np.minimum(n_rel, k)
    elif normalization == "n_relevant":
        denominator = n_rel
    else:
        raise ValueError(f"unknown MAP normalization {normalization!r}")
    return precision_at_hits.sum(axis=1) / denominator


def _accuracy(
    hits: np.ndarray, n_relevant: np.ndarray, k: int, map_normalization: MapNormalization
) -> dict[str, np.ndarray]:
    return {
        "precision": precision_at_k(hits, k),
        "recall": recall_at_k(hits, n_relevant, k),
        "ndcg": ndcg_at_k(hits, n_relevant, k),
        "map": average_precision_at_k(hits, n_relevant, k, map_normalization),
        "mrr": reciprocal_rank_at_k(hits, k),
        "hit_rate": hit_rate_at_k(hits, k),
    }


# ---------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------


def rankings_frame(
    recommendations: Recommendations, users: Sequence[str] | None = None
) -> pd.DataFrame:
    """Recommendations as a long frame ``user_id, item_id, rank`` (rank from 1).

    Accepted inputs:

    * a frame with ``user_id``, ``item_id`` and either ``rank`` (ascending), ``score``
      (descending) or neither (row order within each user is the ranking);
    * a mapping ``user_id -> ordered item ids``;
    * a 2-D array of item ids, one row per user, with ``users`` naming the rows (shorter
      lists may be padded with ``None``/NaN).

    Ids become strings; missing item ids are dropped and repeated items in a list keep
    their first position only.
    """
    if isinstance(recommendations, pd.DataFrame):
        missing = [c for c in (USER_ID, ITEM_ID) if c not in recommendations.columns]
        if missing:
            raise ValueError(f"recommendations frame is missing columns: {missing}")
        df = recommendations
        user_codes = pd.factorize(df[USER_ID])[0]
        if RANK in df.columns:
            key = df[RANK].to_numpy(dtype=np.float64)
        elif SCORE in df.columns:
            key = -df[SCORE].to_numpy(dtype=np.float64)
        else:
            key = np.zeros(len(df))
        order = np.lexsort((np.arange(len(df)), key, user_codes))
        user_values = df[USER_ID].to_numpy(dtype=object)[order]
        item_values = df[ITEM_ID].to_numpy(dtype=object)[order]
    elif isinstance(recommendations, Mapping):
        lists = [list(v) for v in recommendations.values()]
        keys = np.empty(len(lists), dtype=object)
        keys[:] = list(recommendations.keys())
        user_values = np.repeat(keys, [len(v) for v in lists])
        item_values = np.asarray([i for v in lists for i in v], dtype=object)
    else:
        matrix = np.asarray(recommendations, dtype=object)
        if matrix.ndim != 2:
            raise ValueError("a recommendation matrix must be 2-D (users x ranks)")
        if users is None or len(users) != matrix.shape[0]:
            raise ValueError("a recommendation matrix needs `users`, one id per row")
        user_values = np.repeat(np.asarray(list(users), dtype=object), matrix.shape[1])
        item_values = matrix.ravel()
    frame = pd.DataFrame({USER_ID: user_values, ITEM_ID: item_values})
    frame = frame.loc[frame[ITEM_ID].notna()]
    frame = frame.astype({USER_ID: str, ITEM_ID: str})
    frame = frame.drop_duplicates([USER_ID, ITEM_ID], keep="first").reset_index(drop=True)
    frame[RANK] = frame.groupby(USER_ID, sort=False).cumcount() + 1
    return frame


def _pairs(df: pd.DataFrame) -> pd.DataFrame:
    return df[[USER_ID, ITEM_ID]].astype(str).drop_duplicates()


def _pair_mask(pairs: pd.DataFrame, others: pd.DataFrame) -> np.ndarray:
    """For each row of ``pairs``, whether its (user, item) occurs in ``others``."""
    if len(others) == 0 or len(pairs) == 0:
        return np.zeros(len(pairs), dtype=bool)
    left = pd.MultiIndex.from_arrays([pairs[USER_ID], pairs[ITEM_ID]])
    right = pd.MultiIndex.from_arrays([others[USER_ID], others[ITEM_ID]])
    return np.asarray(left.isin(right))


def _relevant_pairs(
    test: pd.DataFrame, relevance_column: str, relevance_threshold: float | None
) -> pd.DataFrame:
    missing = [c for c in (USER_ID, ITEM_ID) if c not in test.columns]
    if missing:
        raise ValueError(f"test frame is missing columns: {missing}")
    if relevance_threshold is not None and relevance_column in test.columns:
        test = test.loc[test[relevance_column].to_numpy(dtype=np.float64) > relevance_threshold]
    return _pairs(test)


def _as_float_matrix(
    values: pd.DataFrame | Mapping[str, Any], items: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``values`` aligned to ``items``: (matrix, has_row mask)."""
    if isinstance(values, pd.DataFrame):
        ids = values.index.astype(str)
        matrix = values.to_numpy(dtype=np.float64)
    else:
        ids = pd.Index([str(k) for k in values])
        matrix = np.asarray([np.asarray(v, dtype=np.float64) for v in values.values()])
    if matrix.ndim != 2:
        raise ValueError("item vectors must form a 2-D matrix")
    positions = ids.get_indexer(items)
    out = np.zeros((len(items), matrix.shape[1]), dtype=np.float64)
    found = positions >= 0
    out[found] = matrix[positions[found]]
    return out, found


@dataclass
class _Prepared:
    k_values: list[int]
    items: pd.Index  # item code -> item id
    rec_users: pd.Index  # row of rec_codes -> user id
    rec_codes: np.ndarray  # (n_rec_users, max_k) item codes, -1 = empty slot
    eval_users: np.ndarray  # evaluated user ids
    eval_codes: np.ndarray  # (n_eval, max_k) item codes of evaluated users
    hits: np.ndarray  # (n_eval, max_k)
    n_relevant: np.ndarray  # (n_eval,)
    relevant: pd.DataFrame  # relevant (user, item) pairs of evaluated users
    n_without_recommendations: int


def _prepare(
    recommendations: Recommendations,
    test: pd.DataFrame,
    k_values: Iterable[int],
    *,
    train: pd.DataFrame | None,
    users: Sequence[str] | None,
    remove_seen: bool,
    relevance_column: str,
    relevance_threshold: float | None,
    missing_recommendations: Literal["zero", "skip"],
    extra_items: Iterable[str] = (),
) -> _Prepared:
    ks = sorted({int(k) for k in k_values})
    if not ks or ks[0] < 1:
        raise ValueError("k_values must be positive integers")
    if missing_recommendations not in ("zero", "skip"):
        raise ValueError("missing_recommendations must be 'zero' or 'skip'")
    max_k = ks[-1]

    recs = rankings_frame(recommendations, users)
    relevant = _relevant_pairs(test, relevance_column, relevance_threshold)
    train_pairs = _pairs(train) if train is not None else None
    if remove_seen and train_pairs is not None:
        recs = recs.loc[~_pair_mask(recs, train_pairs)]
        recs = recs.assign(**{RANK: recs.groupby(USER_ID, sort=False).cumcount() + 1})
        relevant = relevant.loc[~_pair_mask(relevant, train_pairs)]
    recs = recs.loc[recs[RANK] <= max_k]

    item_parts = [recs[ITEM_ID], relevant[ITEM_ID], pd.Series(list(extra_items), dtype=str)]
    if train_pairs is not None:
        item_parts.append(train_pairs[ITEM_ID])
    items = pd.Index(pd.unique(pd.concat(item_parts, ignore_index=True).astype(str)))

    rec_users = pd.Index(pd.unique(recs[USER_ID]))
    rec_codes = np.full((len(rec_users), max_k), -1, dtype=np.int64)
    rec_codes[rec_users.get_indexer(recs[USER_ID]), recs[RANK].to_numpy(dtype=np.int64) - 1] = (
        items.get_indexer(recs[ITEM_ID])
    )

    eval_users = pd.unique(relevant[USER_ID])
    rec_row = rec_users.get_indexer(eval_users)
    n_without = int((rec_row < 0).sum())
    if missing_recommendations == "skip":
        eval_users = eval_users[rec_row >= 0]
        rec_row = rec_row[rec_row >= 0]
    eval_index = pd.Index(eval_users)
    relevant = relevant.loc[relevant[USER_ID].isin(eval_index)]
    eval_codes = np.full((len(eval_index), max_k), -1, dtype=np.int64)
    has_list = rec_row >= 0
    eval_codes[has_list] = rec_codes[rec_row[has_list]]

    n_items = len(items)
    rel_keys = eval_index.get_indexer(relevant[USER_ID]).astype(np.int64) * n_items
    rel_keys += items.get_indexer(relevant[ITEM_ID])
    rec_keys = np.arange(len(eval_index), dtype=np.int64)[:, None] * n_items + eval_codes
    hits = np.isin(rec_keys, rel_keys) & (eval_codes >= 0)
    n_relevant = np.bincount(
        eval_index.get_indexer(relevant[USER_ID]), minlength=len(eval_index)
    ).astype(np.int64)
    return _Prepared(
        k_values=ks,
        items=items,
        rec_users=rec_users,
        rec_codes=rec_codes,
        eval_users=np.asarray(eval_users, dtype=object),
        eval_codes=eval_codes,
        hits=hits,
        n_relevant=n_relevant,
        relevant=relevant,
        n_without_recommendations=n_without,
    )


# ---------------------------------------------------------------------------
# Beyond-accuracy metrics
# ---------------------------------------------------------------------------


def _mean_over_lists(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _pairwise_mean_distance(codes: np.ndarray, unit: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Per list: mean of 1 - cosine over pairs of items that have a vector.

    With unit vectors v_1..v_n, the sum of v_i . v_j over pairs i < j is
    (|sum v_i|^2 - n) / 2, so no k x k similarity matrix is needed."""
    out = np.full(codes.shape[0], np.nan)
    for start in range(0, codes.shape[0], _CHUNK):
        block = codes[start : start + _CHUNK]
        valid = (block >= 0) & has[np.maximum(block, 0)]
        total = (unit[np.maximum(block, 0)] * valid[..., None]).sum(axis=1)
        n = valid.sum(axis=1).astype(np.float64)
        n_pairs = n * (n - 1) / 2.0
        similarity = (np.einsum("ud,ud->u", total, total) - n) / 2.0
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + _CHUNK] = np.where(
                n_pairs > 0, np.clip(1.0 - similarity / np.maximum(n_pairs, 1.0), 0.0, 2.0), np.nan
            )
    return out


def _category_diversity(codes: np.ndarray, categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per list: (distinct categories / categorised items, share of pairs that differ)."""
    n_lists = codes.shape[0]
    cat = np.where(codes >= 0, categories[np.maximum(codes, 0)], -1)
    valid = cat >= 0
    n_valid = valid.sum(axis=1).astype(np.float64)
    n_categories = int(categories.max()) + 1 if categories.size else 0
    rows = np.broadcast_to(np.arange(n_lists)[:, None], cat.shape)[valid]
    keys, counts = np.unique(
        rows.astype(np.int64) * max(n_categories, 1) + cat[valid], return_counts=True
    )
    key_rows = keys // max(n_categories, 1)
    n_distinct = np.bincount(key_rows, minlength=n_lists).astype(np.float64)
    same_pairs = np.bincount(key_rows, weights=counts * (counts - 1) / 2.0, minlength=n_lists)
    n_pairs = n_valid * (n_valid - 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_valid > 0, n_distinct / np.maximum(n_valid, 1.0), np.nan)
        pairwise = np.where(n_pairs > 0, 1.0 - same_pairs / np.maximum(n_pairs, 1.0), np.nan)
    return share, pairwise


def _beyond_accuracy(
    prep: _Prepared,
    test: pd.DataFrame,
    train: pd.DataFrame | None,
    catalog: Iterable[str] | None,
    item_vectors: pd.DataFrame | Mapping[str, Any] | None,
    item_categories: pd.Series | Mapping[str, Any] | None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    items = prep.items
    if catalog is not None:
        catalog_index = pd.Index(pd.unique(pd.Series(list(catalog), dtype=object).astype(str)))
    else:
        catalog_index = pd.Index(pd.unique(test[ITEM_ID].astype(str)))
        if train is not None:
            catalog_index = catalog_index.union(pd.Index(train[ITEM_ID].astype(str).unique()))
    in_catalog = np.zeros(len(items), dtype=bool)
    positions = catalog_index.get_indexer(items)
    in_catalog[positions >= 0] = True

    popularity = None
    n_train_users = 0
    if train is not None and len(train):
        train_pairs = _pairs(train)
        n_train_users = int(train_pairs[USER_ID].nunique())
        popularity = np.bincount(
            items.get_indexer(train_pairs[ITEM_ID]), minlength=len(items)
        ).astype(np.float64)
        per_user = train_pairs.assign(_pop=popularity[items.get_indexer(train_pairs[ITEM_ID])])
        out["train_arp"] = float(per_user.groupby(USER_ID)["_pop"].mean().mean())

    unit = has_vector = None
    if item_vectors is not None:
        matrix, has_vector = _as_float_matrix(item_vectors, items)
        norms = np.linalg.norm(matrix, axis=1)
        has_vector &= norms > 0
        unit = matrix / np.where(norms > 0, norms, 1.0)[:, None]
    category_codes = None
    if item_categories is not None:
        series = (
            item_categories
            if isinstance(item_categories, pd.Series)
            else pd.Series(dict(item_categories))
        )
        series = series.dropna()
        series.index = series.index.astype(str)
        series = series[~series.index.duplicated()]
        category_codes = np.full(len(items), -1, dtype=np.int64)
        aligned = series.reindex(items)
        codes, _ = pd.factorize(aligned)
        category_codes[:] = codes

    for k in prep.k_values:
        codes = prep.rec_codes[:, :k]
        valid = codes >= 0
        recommended = np.unique(codes[valid])
        n_catalog = len(catalog_index)
        covered = int(in_catalog[recommended].sum()) if recommended.size else 0
        out[f"coverage@{k}"] = covered / n_catalog if n_catalog else float("nan")
        if popularity is not None:
            pop = popularity[np.maximum(codes, 0)]
            self_info = -np.log2(np.maximum(pop, 1.0) / n_train_users)
            out[f"novelty@{k}"] = _nanmean(_mean_over_lists(self_info, valid))
            arp = _nanmean(_mean_over_lists(pop, valid))
            out[f"arp@{k}"] = arp
            train_arp = out["train_arp"]
            out[f"popularity_lift@{k}"] = arp / train_arp - 1.0 if train_arp else float("nan")
        if unit is not None and has_vector is not None:
            out[f"ild_content@{k}"] = _nanmean(_pairwise_mean_distance(codes, unit, has_vector))
        if category_codes is not None:
            share, pairwise = _category_diversity(codes, category_codes)
            out[f"category_share@{k}"] = _nanmean(share)
            out[f"category_ild@{k}"] = _nanmean(pairwise)
    return out


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def _per_user_frame(prep: _Prepared, map_normalization: MapNormalization) -> pd.DataFrame:
    columns: dict[str, np.ndarray] = {"n_relevant": prep.n_relevant}
    for k in prep.k_values:
        for name, values in _accuracy(prep.hits, prep.n_relevant, k, map_normalization).items():
            columns[f"{name}@{k}"] = values
    return pd.DataFrame(columns, index=pd.Index(prep.eval_users, name=USER_ID))


def per_user_metrics(
    recommendations: Recommendations,
    test: pd.DataFrame,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    *,
    train: pd.DataFrame | None = None,
    users: Sequence[str] | None = None,
    remove_seen: bool = True,
    relevance_column: str = WEIGHT,
    relevance_threshold: float | None = 0.0,
    missing_recommendations: Literal["zero", "skip"] = "zero",
    map_normalization: MapNormalization = "min_k_n_relevant",
) -> pd.DataFrame:
    """Accuracy metrics of every evaluated user: one row per user, one column per
    ``metric@k`` plus ``n_relevant`` (for significance tests and custom slices)."""
    prep = _prepare(
        recommendations,
        test,
        k_values,
        train=train,
        users=users,
        remove_seen=remove_seen,
        relevance_column=relevance_column,
        relevance_threshold=relevance_threshold,
        missing_recommendations=missing_recommendations,
    )
    return _per_user_frame(prep, map_normalization)


def _means(frame: pd.DataFrame) -> dict[str, float]:
    return {
        col: (float(frame[col].mean()) if len(frame) else float("nan"))
        for col in frame.columns
        if col != "n_relevant"
    }


def evaluate_rankings(
    recommendations: Recommendations,
    test: pd.DataFrame,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    *,
    train: pd.DataFrame | None = None,
    users: Sequence[str] | None = None,
    remove_seen: bool = True,
    relevance_column: str = WEIGHT,
    relevance_threshold: float | None = 0.0,
    missing_recommendations: Literal["zero", "skip"] = "zero",
    map_normalization: MapNormalization = "min_k_n_relevant",
    catalog: Iterable[str] | None = None,
    item_vectors: pd.DataFrame | Mapping[str, Any] | None = None,
    item_categories: pd.Series | Mapping[str, Any] | None = None,
    user_segments: tuple[int, int] = DEFAULT_USER_SEGMENTS,
    cold_items: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Evaluate top-k recommendation lists against held-out interactions.

    ``recommendations`` is anything :func:`rankings_frame` accepts (a frame
    ``user_id, item_id[, rank | score]``, a mapping of lists, or a users x ranks array
    of item ids with ``users``); lists may be longer than the largest k. ``train`` turns
    on seen-item removal, the popularity metrics and the slices. ``catalog`` (item ids)
    is the denominator of coverage; it defaults to every item in train or test.
    ``item_vectors`` (frame indexed by item id, or mapping id -> vector) and
    ``item_categories`` (series or mapping id -> category) enable the diversity metrics.

    The result (JSON-ready; every value a plain int, float, str or list)::

        {
          "k_values": [5, 10],
          "n_users": 943,                 # evaluated users
          "n_users_without_recommendations": 0,
          "metrics": {"precision@5": ..., "ndcg@10": ..., "coverage@10": ..., ...},
          "slices": {
            "users_cold":   {"n_users": ..., "metrics": {...accuracy@k...}},
            "users_medium": {...}, "users_heavy": {...},
            "items_cold":   {...},
          },
          "settings": {...the conventions used...},
        }

    User slices group evaluated users by their number of train interactions (rows):
    cold < ``user_segments[0]`` <= medium < ``user_segments[1]`` <= heavy. The
    ``items_cold`` slice keeps only relevant items that are cold (``cold_items``, or by
    default items absent from train) and evaluates the users who have one, with their
    full lists. Slices need ``train``. See the module docstring for each metric.
    """
    cold_list = [str(i) for i in cold_items] if cold_items is not None else None
    prep = _prepare(
        recommendations,
        test,
        k_values,
        train=train,
        users=users,
        remove_seen=remove_seen,
        relevance_column=relevance_column,
        relevance_threshold=relevance_threshold,
        missing_recommendations=missing_recommendations,
        extra_items=cold_list or (),
    )
    per_user = _per_user_frame(prep, map_normalization)
    metrics = _means(per_user)
    metrics.update(_beyond_accuracy(prep, test, train, catalog, item_vectors, item_categories))

    slices: dict[str, dict[str, Any]] = {}
    if train is not None:
        low, high = user_segments
        if not 0 < low < high:
            raise ValueError("user_segments must be two increasing positive counts")
        train_counts = train[USER_ID].astype(str).value_counts()
        counts = train_counts.reindex(per_user.index).fillna(0).to_numpy()
        for name, mask in (
            ("users_cold", counts < low),
            ("users_medium", (counts >= low) & (counts < high)),
            ("users_heavy", counts >= high),
        ):
            subset = per_user.loc[mask]
            slices[name] = {"n_users": len(subset), "metrics": _means(subset)}

        if cold_list is not None:
            cold_index = pd.Index(cold_list)
        else:
            cold_index = pd.Index(prep.items).difference(
                pd.Index(train[ITEM_ID].astype(str).unique())
            )
        is_cold = np.zeros(len(prep.items), dtype=bool)
        is_cold[prep.items.get_indexer(cold_index[cold_index.isin(prep.items)])] = True
        cold_relevant = prep.relevant.loc[is_cold[prep.items.get_indexer(prep.relevant[ITEM_ID])]]
        cold_users = pd.Index(pd.unique(cold_relevant[USER_ID]))
        rows = pd.Index(prep.eval_users).get_indexer(cold_users)
        codes = prep.eval_codes[rows]
        cold_hits = prep.hits[rows] & is_cold[np.maximum(codes, 0)] & (codes >= 0)
        n_cold = np.bincount(
            cold_users.get_indexer(cold_relevant[USER_ID]), minlength=len(cold_users)
        )
        cold_metrics: dict[str, float] = {}
        for k in prep.k_values:
            for name, values in _accuracy(cold_hits, n_cold, k, map_normalization).items():
                cold_metrics[f"{name}@{k}"] = float(values.mean()) if len(values) else float("nan")
        slices["items_cold"] = {"n_users": len(cold_users), "metrics": cold_metrics}

    return {
        "k_values": prep.k_values,
        "n_users": len(per_user),
        "n_users_without_recommendations": prep.n_without_recommendations,
        "metrics": metrics,
        "slices": slices,
        "settings": {
            "remove_seen": bool(remove_seen and train is not None),
            "relevance": (
                "all test rows"
                if relevance_threshold is None
                else f"{relevance_column} > {relevance_threshold}"
            ),
            "missing_recommendations": missing_recommendations,
            "map_normalization": map_normalization,
            "ndcg": "binary gain, 1/log2(rank+1), ideal DCG over min(k, n_relevant)",
            "novelty": "mean self-information -log2(share of train users)",
            "user_segments": [int(bound) for bound in user_segments],
        },
    }


# ---------------------------------------------------------------------------
# Item cold start
# ---------------------------------------------------------------------------


def _score_matrix(scores: pd.DataFrame, cold: pd.Index) -> pd.DataFrame:
    """Users x cold items scores; missing scores rank last."""
    if {USER_ID, ITEM_ID, SCORE} <= set(scores.columns):
        frame = scores.astype({USER_ID: str, ITEM_ID: str})
        frame = frame.loc[frame[ITEM_ID].isin(cold)]
        wide = frame.pivot_table(index=USER_ID, columns=ITEM_ID, values=SCORE, aggfunc="max")
    else:
        wide = scores.copy()
        wide.index = wide.index.astype(str)
        wide.columns = wide.columns.astype(str)
    return wide.reindex(columns=cold).astype(np.float64).fillna(-np.inf)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Row-wise ranks from 1, ties sharing their average rank."""
    n = values.shape[1]
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    positions = np.broadcast_to(np.arange(n), values.shape)
    starts_group = np.ones(values.shape, dtype=bool)
    starts_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends_group = np.ones(values.shape, dtype=bool)
    ends_group[:, :-1] = starts_group[:, 1:]
    first = np.maximum.accumulate(np.where(starts_group, positions, 0), axis=1)
    from_end = np.where(ends_group[:, ::-1], positions, 0)
    last = n - 1 - np.maximum.accumulate(from_end, axis=1)[:, ::-1]
    ranks = np.empty(values.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def cold_start_auc(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per-user ROC AUC over candidate items: the probability that a positive item
    outscores a negative one (ties count one half). ``scores`` and ``positives`` are
    (n_users, n_items); users without a positive or a negative get NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    n_pos = positives.sum(axis=1)
    n_neg = positives.shape[1] - n_pos
    ranks = _average_ranks(scores)
    rank_sum = np.where(positives, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def evaluate_cold_start(
    scores: pd.DataFrame,
    test: pd.DataFrame,
    cold_items: Iterable[str],
    k_values: Iterable[int] = (10,),
    *,
    relevance_column: str = WEIGHT,
    relevance_threshold: float | None = 0.0,
) -> dict[str, Any]:
    """Metrics for the item cold-start protocol (see ``splits.cold_item_split``).

    ``scores`` holds each user's score for every cold item, either wide (index user
    ids, columns item ids) or long (``user_id, item_id, score``); a missing score ranks
    last. For each user with at least one relevant held-out cold item: positives are
    those items, negatives every other cold item. ``auc`` is the mean per-user AUC, as
    in the LightFM paper (Kula, 2015); ``recall@k`` (and the other accuracy metrics)
    rank the cold items alone by score and cut at k.
    """
    cold = pd.Index(pd.unique(pd.Series(list(cold_items), dtype=object).astype(str)))
    wide = _score_matrix(scores, cold)
    relevant = _relevant_pairs(test, relevance_column, relevance_threshold)
    relevant = relevant.loc[relevant[ITEM_ID].isin(cold) & relevant[USER_ID].isin(wide.index)]
    users = pd.Index(pd.unique(relevant[USER_ID]))
    matrix = wide.loc[users].to_numpy()
    positives = np.zeros(matrix.shape, dtype=bool)
    positives[users.get_indexer(relevant[USER_ID]), cold.get_indexer(relevant[ITEM_ID])] = True

    per_user_auc = cold_start_auc(matrix, positives)
    ks = sorted({int(k) for k in k_values})
    max_k = min(ks[-1], len(cold))
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :max_k]
    hits = np.take_along_axis(positives, order, axis=1)
    n_relevant = positives.sum(axis=1)
    metrics: dict[str, float] = {"auc": _nanmean(per_user_auc)}
    for k in ks:
        for name, values in _accuracy(hits, n_relevant, k, "min_k_n_relevant").items():
            metrics[f"{name}@{k}"] = float(values.mean()) if len(values) else float("nan")
    return {
        "k_values": ks,
        "n_users": len(users),
        "n_cold_items": len(cold),
        "metrics": metrics,
    }
