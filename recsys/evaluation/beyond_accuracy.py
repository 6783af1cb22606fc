"""Beyond-accuracy metrics of top-k lists: coverage, novelty, popularity bias, diversity.

They are computed over every recommendation list given, not only over evaluated users.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, USER_ID
from recsys.evaluation.rankings import _pairs, _Prepared

# Chunk of users processed at once by the pairwise diversity metrics (bounds memory).
_CHUNK = 2048


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
