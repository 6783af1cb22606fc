"""Recommendation lists and held-out relevance, aligned into hit matrices for the metrics.

Conventions:

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
* Users without any recommendation score 0 (``missing_recommendations="zero"``) or are
  left out (``"skip"``, which is what Microsoft Recommenders does for precision, recall
  and MAP: it averages over users present in both the test set and the predictions; its
  ``ndcg_at_k`` instead averages over every test user, like ``"zero"``. Both agree
  whenever every test user has a list.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, USER_ID

__all__ = ["RANK", "SCORE", "Recommendations", "rankings_frame"]

RANK = "rank"
SCORE = "score"

Recommendations: TypeAlias = pd.DataFrame | Mapping[str, Sequence[str]] | np.ndarray


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
