"""The vector index interface shared by the recommender and the training pipeline.

One model version owns two collections:

* ``items``: one named vector per registered model (``recsys.registry``) plus the payload
  ``item_id`` (external id), ``category`` (keyword), ``tags`` (keyword list),
  ``created_at`` (unix seconds) and ``popularity``;
* ``users``: the same named vectors plus the payload ``user_id``.

Point ids are UUID5 digests of the external ids, so a new item can be written without any
id map. Every result carries external ids; point ids never leave this package.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from recsys import registry
from recsys.registry import Distance

ITEMS: Final = "items"
USERS: Final = "users"

# Payload fields with a payload index on the items collection.
INDEXED_ITEM_FIELDS: Final[Mapping[str, Literal["keyword", "float"]]] = {
    "category": "keyword",
    "tags": "keyword",
    "created_at": "float",
}

# Never change this: every stored point id is derived from it.
POINT_NAMESPACE: Final = uuid.UUID("526c7a8c-a651-5cf5-ba7c-2af6801a1e93")

RecommendStrategy = Literal["average_vector", "best_score", "sum_scores"]
RECOMMEND_STRATEGIES: Final[tuple[str, ...]] = ("average_vector", "best_score", "sum_scores")

DEFAULT_BATCH_SIZE: Final = 1024

FloatArray = npt.NDArray[np.float32]


_NAMESPACE_BYTES: Final = POINT_NAMESPACE.bytes


@functools.lru_cache(maxsize=1 << 18)
def point_id(external_id: str) -> str:
    """The point id of an external item or user id: ``str(uuid.uuid5(POINT_NAMESPACE, id))``.

    Spelled out because ``uuid.UUID`` construction is three times slower than the hash, and
    cached because the same ids come back in every request (seen-item exclusions).
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + external_id.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the external item id, its score and its payload."""

    item_id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Constraints on candidate items, translated into a native Qdrant filter.

    ``None`` means "no constraint". ``categories`` and ``tags`` match when the item has any of
    the listed values; ``exclude_ids`` removes items by external id; ``created_after`` keeps
    items created strictly after the given unix time.
    """

    categories: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    exclude_ids: Sequence[str] | None = None
    created_after: float | None = None

    def __post_init__(self) -> None:
        for name in ("categories", "tags", "exclude_ids"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
                raise ValueError(f"ItemFilter.{name} must be a list of strings, got {value!r}")
            values = tuple(value)
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"ItemFilter.{name} must contain only strings")
            if name != "exclude_ids" and not values:
                raise ValueError(
                    f"ItemFilter.{name} is empty, which would match nothing; pass None for no "
                    "constraint"
                )
            object.__setattr__(self, name, values)
        if self.created_after is not None:
            object.__setattr__(self, "created_after", _as_timestamp(self.created_after))

    @property
    def is_empty(self) -> bool:
        return (
            self.categories is None
            and self.tags is None
            and not self.exclude_ids
            and self.created_after is None
        )


@dataclass(frozen=True, slots=True)
class Nearest:
    """For ``VectorIndex.query_batch``: the items nearest to ``vector``."""

    vector_name: str
    vector: npt.ArrayLike
    limit: int = 20
    filters: ItemFilter | None = None


@dataclass(frozen=True, slots=True)
class LikeExamples:
    """For ``VectorIndex.query_batch``: a recommend query (average-vector strategy) with
    example items, as ``VectorIndex.recommend``."""

    vector_name: str
    positive_ids: Sequence[str]
    negative_ids: Sequence[str] = ()
    limit: int = 20
    filters: ItemFilter | None = None


BatchQuery = Nearest | LikeExamples


class VectorIndex(ABC):
    """Items and users of one model version, searchable by named vector.

    Implementations: ``EdgeIndex`` (embedded Qdrant Edge) and ``ClientIndex`` (Qdrant server,
    or qdrant-client's local mode).
    """

    @property
    @abstractmethod
    def dims(self) -> Mapping[str, int]:
        """Dimension of each configured named vector."""

    # -- writes ---------------------------------------------------------------------------

    def upsert_items(
        self,
        ids: Sequence[str],
        vectors: Mapping[str, npt.ArrayLike],
        payloads: Sequence[Mapping[str, Any]] | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> int:
        """Insert or replace items; return how many were written.

        ``vectors`` maps a vector name to an ``(len(ids), dim)`` array. A point is replaced
        whole, so vectors not given here are dropped from existing points.
        """
        checked = check_ids(ids)
        arrays = check_vectors(self.dims, vectors, len(checked))
        return self._upsert(ITEMS, checked, arrays, item_payloads(checked, payloads), batch_size)

    def upsert_users(
        self,
        ids: Sequence[str],
        vectors: Mapping[str, npt.ArrayLike],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> int:
        """Insert or replace users; return how many were written."""
        checked = check_ids(ids)
        arrays = check_vectors(self.dims, vectors, len(checked))
        return self._upsert(USERS, checked, arrays, user_payloads(checked), batch_size)

    @abstractmethod
    def _upsert(
        self,
        collection: str,
        ids: list[str],
        arrays: dict[str, FloatArray],
        payloads: list[dict[str, Any]],
        batch_size: int,
    ) -> int:
        """Write validated points to ``collection`` (items or users) in batches."""

    # -- reads ----------------------------------------------------------------------------

    def search(
        self,
        vector_name: str,
        query_vector: npt.ArrayLike,
        limit: int = 20,
        filters: ItemFilter | None = None,
        *,
        exact: bool = False,
    ) -> list[Hit]:
        """Items nearest to ``query_vector`` in the ``vector_name`` space, best first."""
        vector, limit = check_search(self.dims, vector_name, query_vector, limit)
        return self._search(vector_name, vector, limit, filters, exact)

    def recommend(
        self,
        vector_name: str,
        positive_ids: Sequence[str],
        negative_ids: Sequence[str] = (),
        limit: int = 20,
        filters: ItemFilter | None = None,
        *,
        strategy: RecommendStrategy = "average_vector",
        exact: bool = False,
    ) -> list[Hit]:
        """Items like the positive example items and unlike the negative ones.

        Example ids missing from the index are ignored; the examples themselves are never
        returned. With no usable example the result is empty.
        """
        strategy, limit, positives, negatives = check_recommend(
            self.dims, vector_name, positive_ids, negative_ids, limit, strategy
        )
        return self._recommend(vector_name, positives, negatives, limit, filters, strategy, exact)

    @abstractmethod
    def _search(
        self,
        vector_name: str,
        vector: FloatArray,
        limit: int,
        filters: ItemFilter | None,
        exact: bool,
    ) -> list[Hit]:
        """``search`` with validated arguments: ``vector`` fits ``vector_name``."""

    @abstractmethod
    def _recommend(
        self,
        vector_name: str,
        positives: list[str],
        negatives: list[str],
        limit: int,
        filters: ItemFilter | None,
        strategy: RecommendStrategy,
        exact: bool,
    ) -> list[Hit]:
        """``recommend`` with validated arguments: distinct example ids, none both positive
        and negative, and at least one example the strategy can use."""

    def query_batch(self, queries: Sequence[BatchQuery]) -> list[list[Hit]]:
        """Run several queries at once; one result list per query, in order.

        The results equal those of ``search`` and ``recommend`` one by one; a backend may
        answer them in one round trip. Hits carry no payload beyond ``item_id``.
        """
        results: list[list[Hit]] = []
        for query in queries:
            if isinstance(query, Nearest):
                hits = self.search(query.vector_name, query.vector, query.limit, query.filters)
            else:
                hits = self.recommend(
                    query.vector_name,
                    query.positive_ids,
                    query.negative_ids,
                    query.limit,
                    query.filters,
                )
            results.append([Hit(h.item_id, h.score, {"item_id": h.item_id}) for h in hits])
        return results

    def get_item_vectors(self, ids: Sequence[str], vector_name: str) -> dict[str, FloatArray]:
        """The stored ``vector_name`` vector of each found item, in the order asked."""
        check_vector_name(self.dims, vector_name)
        return self._vectors(ITEMS, check_ids(ids, unique=False), vector_name)

    def get_user_vector(self, user_id: str, vector_name: str) -> FloatArray | None:
        """The stored ``vector_name`` vector of a user, or None if unknown."""
        check_vector_name(self.dims, vector_name)
        return self._vectors(USERS, check_ids([user_id], "user_id"), vector_name).get(user_id)

    @abstractmethod
    def _vectors(self, collection: str, ids: list[str], vector_name: str) -> dict[str, FloatArray]:
        """The stored ``vector_name`` vector of each found point of ``collection`` (items or
        users) by external id, in the order of the validated ``ids``."""

    @abstractmethod
    def get_items(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payload of each found item, in the order asked."""

    @abstractmethod
    def count(self, collection: Literal["items", "users"] = "items") -> int:
        """Number of points in ``items`` or ``users``."""

    @abstractmethod
    def close(self) -> None:
        """Release the index. Safe to call twice."""

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- validation shared by the backends ------------------------------------------------------


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
                payload[key] = _as_timestamp(value) if key == "created_at" else _finite(value, key)
        result.append(payload)
    return result


def user_payloads(ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"user_id": external_id} for external_id in ids]


def batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _as_timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one or unix seconds")
        return value.timestamp()
    return _finite(value, "created_at")


def _finite(value: Any, key: str) -> float:
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
