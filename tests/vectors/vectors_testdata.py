"""Seeded items and users for the vector tests, with brute-force reference answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.vectors import VectorStore
from recsys.vectors.base import ItemFilter, vector_distance
from recsys.vectors.edge import EdgeStore

DIMS = {"als": 32, "hybrid": 16, "content": 24}
CATEGORIES = [f"cat-{i}" for i in range(8)]
TAGS = [f"tag-{i}" for i in range(12)]
T0 = 1_700_000_000.0


def new_store(backend: str, root: Path, keep: int = 3) -> VectorStore:
    """A fresh, empty store: Edge under ``root`` or qdrant-client's in-memory local mode."""
    if backend == "edge":
        return EdgeStore(root, keep=keep)
    from qdrant_client import QdrantClient

    from recsys.vectors.client import ClientStore

    return ClientStore(QdrantClient(":memory:"), keep=keep, owns_client=True)


@dataclass
class Items:
    ids: list[str]
    vectors: dict[str, np.ndarray]
    payloads: list[dict[str, Any]]

    @property
    def index_of(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.ids)}


@dataclass
class Users:
    ids: list[str]
    vectors: dict[str, np.ndarray]


def make_items(
    n: int, seed: int, dims: dict[str, int] | None = None, prefix: str = "item"
) -> Items:
    rng = np.random.default_rng(seed)
    dims = DIMS if dims is None else dims
    vectors = {name: rng.standard_normal((n, dim)).astype(np.float32) for name, dim in dims.items()}
    payloads = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        payloads.append(
            {
                "category": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                "tags": sorted({TAGS[int(t)] for t in rng.integers(len(TAGS), size=k)}),
                "created_at": T0 + float(rng.uniform(0, 86_400 * 365)),
                "popularity": float(rng.exponential(10.0)),
                "title": f"{prefix} number {i}",
            }
        )
    return Items([f"{prefix}-{i:05d}" for i in range(n)], vectors, payloads)


def make_users(n: int, seed: int, dims: dict[str, int] | None = None) -> Users:
    rng = np.random.default_rng(seed + 1)
    dims = DIMS if dims is None else dims
    vectors = {name: rng.standard_normal((n, dim)).astype(np.float32) for name, dim in dims.items()}
    return Users([f"user-{i:04d}" for i in range(n)], vectors)


def stored(items: Items, name: str) -> np.ndarray:
    """Vectors as the engine stores them: cosine spaces keep unit vectors."""
    matrix = items.vectors[name].astype(np.float64)
    if vector_distance(name) == "cosine":
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def allowed(items: Items, filters: ItemFilter | None, exclude: Sequence[str] = ()) -> np.ndarray:
    mask = np.ones(len(items.ids), dtype=bool)
    excluded = set(exclude) | set((filters.exclude_ids or ()) if filters else ())
    for i, (item_id, payload) in enumerate(zip(items.ids, items.payloads, strict=True)):
        mask[i] = item_id not in excluded and (filters is None or _matches(payload, filters))
    return mask


def _matches(payload: dict[str, Any], filters: ItemFilter) -> bool:
    return (
        (filters.categories is None or payload["category"] in filters.categories)
        and (filters.tags is None or bool(set(payload["tags"]) & set(filters.tags)))
        and (filters.created_after is None or payload["created_at"] > filters.created_after)
        and (filters.created_until is None or payload["created_at"] <= filters.created_until)
        and (filters.max_popularity is None or payload["popularity"] <= filters.max_popularity)
    )


def top(items: Items, scores: np.ndarray, mask: np.ndarray, limit: int) -> list[tuple[str, float]]:
    scores = np.where(mask, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(items.ids[i], float(scores[i])) for i in order if np.isfinite(scores[i])]


def brute_search(
    items: Items, name: str, query: np.ndarray, limit: int, filters: ItemFilter | None = None
) -> list[tuple[str, float]]:
    q = query.astype(np.float64)
    if vector_distance(name) == "cosine":
        q = q / np.linalg.norm(q)
    return top(items, stored(items, name) @ q, allowed(items, filters), limit)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, 0.0)  # the unused branch of a np.where below
    return 0.5 * (x / (1.0 + np.abs(x)) + 1.0)


def brute_recommend(
    items: Items,
    name: str,
    positive: Sequence[str],
    negative: Sequence[str],
    limit: int,
    filters: ItemFilter | None = None,
    strategy: str = "average_vector",
) -> list[tuple[str, float]]:
    at = items.index_of
    pos = [at[i] for i in positive if i in at]
    neg = [at[i] for i in negative if i in at]
    matrix = stored(items, name)
    mask = allowed(items, filters, [*positive, *negative])
    if strategy == "average_vector":
        target = matrix[pos].mean(axis=0)
        if neg:
            target = target + target - matrix[neg].mean(axis=0)
        if vector_distance(name) == "cosine":
            target = target / np.linalg.norm(target)
        return top(items, matrix @ target, mask, limit)
    pos_scores = matrix @ matrix[pos].T if pos else np.full((len(items.ids), 0), 0.0)
    neg_scores = matrix @ matrix[neg].T if neg else np.full((len(items.ids), 0), 0.0)
    if strategy == "sum_scores":
        return top(items, pos_scores.sum(axis=1) - neg_scores.sum(axis=1), mask, limit)
    best_pos = pos_scores.max(axis=1) if pos else np.full(len(items.ids), -np.inf)
    best_neg = neg_scores.max(axis=1) if neg else np.full(len(items.ids), -np.inf)
    scores = np.where(best_pos > best_neg, _sigmoid(best_pos), -_sigmoid(best_neg))
    return top(items, scores, mask, limit)
