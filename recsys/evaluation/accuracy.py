"""Accuracy metrics of ranked lists: precision, recall, NDCG, MAP, MRR and hit rate @k.

All relevance is binary. Each function takes a hit matrix: ``hits`` is a (n_users,
n_ranks) boolean matrix, hits[u, r] is True when the item at rank r + 1 of user u's list
is relevant, and ``n_relevant`` holds each user's number of relevant items (> 0). Each
returns one value per user.

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
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "ACCURACY_METRICS",
    "MapNormalization",
    "average_precision_at_k",
    "hit_rate_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank_at_k",
]

ACCURACY_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")

MapNormalization = Literal["min_k_n_relevant", "n_relevant"]


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
