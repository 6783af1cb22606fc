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
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal

import numpy.typing as npt

from recsys.vectors.checks import (
    RECOMMEND_STRATEGIES,
    FloatArray,
    RecommendStrategy,
    as_timestamp,
    check_ids,
    check_recommend,
    check_search,
    check_vector_name,
    check_vectors,
    finite,
    item_payloads,
    user_payloads,
    validate_dims,
    vector_distance,
)

# The types and the schema checks are defined with the other checks, which need them, and
# belong to this interface all the same.
__all__ = [
    "DEFAULT_BATCH_SIZE",
    "INDEXED_ITEM_FIELDS",
    "ITEMS",
    "POINT_NAMESPACE",
    "RECOMMEND_STRATEGIES",
    "USERS",
    "BatchQuery",
    "FloatArray",
    "Hit",
    "ItemFilter",
    "LikeExamples",
    "Nearest",
    "RecommendStrategy",
    "VectorIndex",
    "check_vector_name",
    "point_id",
    "validate_dims",
    "vector_distance",
]

ITEMS: Final = "items"
USERS: Final = "users"

# Payload fields with a payload index on the items collection.
INDEXED_ITEM_FIELDS: Final[Mapping[str, Literal["keyword", "float"]]] = {
    "category": "keyword",
    "tags": "keyword",
    "created_at": "float",
    # The feed's places for new items ask for items nobody liked yet (max_popularity=0).
    "popularity": "float",
}

# Never change this: every stored point id is derived from it.
POINT_NAMESPACE: Final = uuid.UUID("526c7a8c-a651-5cf5-ba7c-2af6801a1e93")

DEFAULT_BATCH_SIZE: Final = 1024

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
    items created strictly after the given unix time, ``created_until`` those created at or
    before it (items without a creation time match neither); ``max_popularity`` keeps items
    whose ``popularity`` payload (positive users when the version was trained; 0 for an
    item written since) is at most the given number.
    """

    categories: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    exclude_ids: Sequence[str] | None = None
    created_after: float | None = None
    created_until: float | None = None
    max_popularity: float | None = None

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
        for name in ("created_after", "created_until"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, as_timestamp(getattr(self, name)))
        if self.max_popularity is not None:
            object.__setattr__(
                self, "max_popularity", finite(self.max_popularity, "max_popularity")
            )

    @property
    def is_empty(self) -> bool:
        return (
            self.categories is None
            and self.tags is None
            and not self.exclude_ids
            and self.created_after is None
            and self.created_until is None
            and self.max_popularity is None
        )


@dataclass(frozen=True, slots=True)
class Nearest:
    """For ``VectorIndex.query_batch``: the items nearest to ``vector`` (among those of
    ``within``, when given: see ``VectorIndex.search``)."""

    vector_name: str
    vector: npt.ArrayLike
    limit: int = 20
    filters: ItemFilter | None = None
    within: Nearest | None = None


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


def check_shortlist(dims: Mapping[str, int], within: Nearest | None) -> Nearest | None:
    """A search's shortlist query, checked: its vector float32, its limit positive."""
    if within is None:
        return None
    if within.within is not None:
        raise ValueError("a shortlist cannot have a shortlist of its own")
    vector, limit = check_search(dims, within.vector_name, within.vector, within.limit)
    return Nearest(within.vector_name, vector, limit, within.filters)


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

    def delete_items(self, ids: Sequence[str]) -> int:
        """Remove items (absent ones are ignored); return how many ids were asked."""
        checked = list(dict.fromkeys(check_ids(ids, unique=False)))
        return self._delete(ITEMS, checked)

    def delete_users(self, ids: Sequence[str]) -> int:
        """Remove users (absent ones are ignored); return how many ids were asked."""
        checked = list(dict.fromkeys(check_ids(ids, unique=False)))
        return self._delete(USERS, checked)

    @abstractmethod
    def _delete(self, collection: str, ids: list[str]) -> int:
        """Remove validated points from ``collection`` (items or users)."""

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
        within: Nearest | None = None,
    ) -> list[Hit]:
        """Items nearest to ``query_vector`` in the ``vector_name`` space, best first.

        With ``within``, only the items that query finds (its own vector, filter and limit)
        are ranked: a shortlist by one model reordered by another, answered in the engine
        (Qdrant's prefetch). The shortlist has no shortlist of its own.
        """
        vector, limit = check_search(self.dims, vector_name, query_vector, limit)
        return self._search(
            vector_name, vector, limit, filters, exact, check_shortlist(self.dims, within)
        )

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
        within: Nearest | None = None,
    ) -> list[Hit]:
        """``search`` with validated arguments: ``vector`` fits ``vector_name``, and
        ``within`` (if any) is checked, its vector float32."""

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
                hits = self.search(
                    query.vector_name,
                    query.vector,
                    query.limit,
                    query.filters,
                    within=query.within,
                )
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
