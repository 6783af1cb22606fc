"""Argument validation and payload normalisation shared by the vector index backends."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from recsys import registry
from recsys.registry import Distance

RecommendStrategy = Literal["average_vector", "best_score", "sum_scores"]
RECOMMEND_STRATEGIES: Final[tuple[str, ...]] = ("average_vector", "best_score", "sum_scores")

FloatArray = npt.NDArray[np.float32]


def vector_distance(name: str) -> Distance:
    """The distance of the named vector ``name``, as registered by its model.

    Read from ``recsys.registry`` at each call, so a model registered at run time is known
    from then on. Raises ValueError for a name no registered model publishes.
    """
    return _distance(registry.distances(), name)


def _distance(distances: Mapping[str, Distance], name: str) -> Distance:
    distance = distances.get(name)
    if distance is None:
        raise ValueError(f"unknown vector name {name!r}; expected one of {tuple(distances)}")
    return distance


def validate_dims(dims: Mapping[str, int]) -> dict[str, int]:
    """Check a ``{vector name: dimension}`` schema and return it as a plain dict."""
    if not dims:
        raise ValueError("at least one named vector is required")
    distances = registry.distances()
    checked: dict[str, int] = {}
    for name, dim in dims.items():
        _distance(distances, name)
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dimension of {name!r} must be a positive integer, got {dim!r}")
        checked[name] = int(dim)
    return checked


def check_vector_name(dims: Mapping[str, int], vector_name: str) -> int:
    """Return the dimension of ``vector_name``, or raise ValueError if it is not configured."""
    vector_distance(vector_name)
    if vector_name not in dims:
        raise ValueError(
            f"vector {vector_name!r} is not configured in this index (has {sorted(dims)})"
        )
    return dims[vector_name]


def check_ids(ids: Sequence[str], what: str = "ids", *, unique: bool = True) -> list[str]:
    if isinstance(ids, str | bytes):
        raise ValueError(f"{what} must be a sequence of strings, not a single string")
    checked = list(ids)
    if not checked:
        raise ValueError(f"{what} is empty")
    for external_id in checked:
        if not isinstance(external_id, str) or not external_id:
            raise ValueError(f"{what} must be non-empty strings, got {external_id!r}")
    if unique and len(set(checked)) != len(checked):
        raise ValueError(f"{what} contains duplicates")
    return checked


def check_query_vector(
    dims: Mapping[str, int], vector_name: str, vector: npt.ArrayLike
) -> FloatArray:
    dim = check_vector_name(dims, vector_name)
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != dim:
        raise ValueError(
            f"query vector for {vector_name!r} must have shape ({dim},), got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"query vector for {vector_name!r} contains NaN or infinity")
    return array


def check_vectors(
    dims: Mapping[str, int], vectors: Mapping[str, npt.ArrayLike], n: int
) -> dict[str, FloatArray]:
    """Validate ``{name: (n, dim) array}`` against the schema and return float32 arrays."""
    if not vectors:
        raise ValueError("at least one named vector is required")
    checked: dict[str, FloatArray] = {}
    for name, matrix in vectors.items():
        dim = check_vector_name(dims, name)
        array = np.asarray(matrix, dtype=np.float32)
        if array.ndim != 2 or array.shape != (n, dim):
            raise ValueError(f"vectors[{name!r}] must have shape ({n}, {dim}), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"vectors[{name!r}] contains NaN or infinity")
        checked[name] = array
    return checked


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return int(limit)


def check_search(
    dims: Mapping[str, int], vector_name: str, query_vector: npt.ArrayLike, limit: int
) -> tuple[FloatArray, int]:
    """The arguments of ``VectorIndex.search``: the query as float32 and the limit."""
    vector = check_query_vector(dims, vector_name, query_vector)
    return vector, check_limit(limit)


def check_recommend(
    dims: Mapping[str, int],
    vector_name: str,
    positive_ids: Sequence[str],
    negative_ids: Sequence[str],
    limit: int,
    strategy: str,
) -> tuple[RecommendStrategy, int, list[str], list[str]]:
    """The arguments of ``VectorIndex.recommend``: strategy, limit and the example ids
    (see ``check_examples``)."""
    check_vector_name(dims, vector_name)
    checked_strategy = check_strategy(strategy)
    checked_limit = check_limit(limit)
    positives, negatives = check_examples(positive_ids, negative_ids, checked_strategy)
    return checked_strategy, checked_limit, positives, negatives


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def check_strategy(strategy: str) -> RecommendStrategy:
    if strategy == "average_vector":
        return "average_vector"
    if strategy == "best_score":
        return "best_score"
    if strategy == "sum_scores":
        return "sum_scores"
    raise ValueError(f"unknown recommend strategy {strategy!r}; expected {RECOMMEND_STRATEGIES}")


def check_examples(
    positive_ids: Sequence[str], negative_ids: Sequence[str], strategy: RecommendStrategy
) -> tuple[list[str], list[str]]:
    for what, ids in (("positive_ids", positive_ids), ("negative_ids", negative_ids)):
        if isinstance(ids, str | bytes):
            raise ValueError(f"{what} must be a sequence of strings, not a single string")
        for external_id in ids:
            if not isinstance(external_id, str) or not external_id:
                raise ValueError(f"{what} must be non-empty strings, got {external_id!r}")
    positives = list(dict.fromkeys(positive_ids))
    seen = set(positives)
    negatives = [i for i in dict.fromkeys(negative_ids) if i not in seen]
    if strategy == "average_vector" and not positives:
        raise ValueError("the average_vector strategy needs at least one positive example")
    if not positives and not negatives:
        raise ValueError("recommend needs at least one positive or negative example")
    return positives, negatives


def item_payloads(
    ids: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Normalise item payloads: ``item_id`` set from ``ids``, typed known fields."""
    if payloads is None:
        return [{"item_id": external_id, "tags": []} for external_id in ids]
    if isinstance(payloads, Mapping) or len(payloads) != len(ids):
        raise ValueError("payloads must be a sequence with one mapping per id")
    result: list[dict[str, Any]] = []
    for external_id, raw in zip(ids, payloads, strict=True):
        if not isinstance(raw, Mapping):
            raise ValueError(f"payload of {external_id!r} must be a mapping, got {type(raw)}")
        payload: dict[str, Any] = {
            k: _jsonable(v)
            for k, v in raw.items()
            if k not in ("item_id", "category", "tags", "created_at", "popularity")
        }
        if "item_id" in raw and raw["item_id"] != external_id:
            raise ValueError(f"payload item_id {raw['item_id']!r} differs from id {external_id!r}")
        payload["item_id"] = external_id
        category = raw.get("category")
        if category is not None:
            if not isinstance(category, str):
                raise ValueError(f"category of {external_id!r} must be a string")
            payload["category"] = category
        tags = raw.get("tags")
        if tags is None:
            tags = []
        if isinstance(tags, str | bytes) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"tags of {external_id!r} must be a list of strings")
        payload["tags"] = list(tags)
        for key in ("created_at", "popularity"):
            value = raw.get(key)
            if value is not None:
                payload[key] = as_timestamp(value) if key == "created_at" else finite(value, key)
        result.append(payload)
    return result


def user_payloads(ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"user_id": external_id} for external_id in ids]


def batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def as_timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one or unix seconds")
        return value.timestamp()
    return finite(value, "created_at")


def finite(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{key} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key} must be finite, got {value!r}")
    return number


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
