"""Metrics of the item cold-start protocol: per-user AUC and accuracy@k over cold items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.evaluation.accuracy import _accuracy
from recsys.evaluation.beyond_accuracy import _nanmean
from recsys.evaluation.rankings import SCORE, _relevant_pairs

__all__ = ["cold_start_auc", "evaluate_cold_start"]


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
