"""Offline ranking evaluation: every metric of a run, with its slices, in one result.

Vectorised with NumPy; the result of :func:`evaluate_rankings` is JSON-ready.

The metrics themselves live by kind, each module documenting its definitions:
:mod:`recsys.evaluation.accuracy` (precision, recall, NDCG, MAP, MRR, hit rate),
:mod:`recsys.evaluation.beyond_accuracy` (coverage, novelty, popularity bias, diversity)
and :mod:`recsys.evaluation.cold_start` (the item cold-start protocol). How
recommendation lists and test rows become hits (who is evaluated, seen-item removal,
users without recommendations) is in :mod:`recsys.evaluation.rankings`. All of them are
importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.evaluation.accuracy import (
    ACCURACY_METRICS,
    MapNormalization,
    _accuracy,
    average_precision_at_k,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)
from recsys.evaluation.beyond_accuracy import _beyond_accuracy
from recsys.evaluation.cold_start import cold_start_auc, evaluate_cold_start
from recsys.evaluation.rankings import (
    RANK,
    SCORE,
    Recommendations,
    _prepare,
    _Prepared,
    rankings_frame,
)

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

DEFAULT_K_VALUES = (5, 10, 20)
DEFAULT_USER_SEGMENTS = (5, 50)


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
    full lists. Slices need ``train``. Each metric is defined in the docstring of
    :mod:`recsys.evaluation.accuracy` or :mod:`recsys.evaluation.beyond_accuracy`.
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
