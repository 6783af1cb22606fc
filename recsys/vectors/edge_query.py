"""Queries in Qdrant Edge's terms: filters, recommend targets, batches and their point ids."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import numpy as np
import qdrant_edge as qe

from recsys.vectors.base import (
    BatchQuery,
    Hit,
    ItemFilter,
    LikeExamples,
    Nearest,
    check_shortlist,
    point_id,
)
from recsys.vectors.checks import FloatArray, check_recommend, check_search

# A query of a batch once checked: its limit, and its float32 vector (a nearest query) or its
# positive and negative example ids (a recommend query).
CheckedQuery = tuple[int, FloatArray | tuple[list[str], list[str]]]

# Learning a point's item id reads that one field: converting whole payloads to Python
# costs more than the lookup.
_ITEM_ID_ONLY: Final = qe.PayloadSelector.Include(["item_id"])


def edge_filter(
    filters: ItemFilter | None,
    exclude_point_ids: Sequence[uuid.UUID] = (),
    *,
    excluded: dict[tuple[str, ...], Any] | None = None,
) -> qe.Filter | None:
    """Translate an ItemFilter into a native Edge filter.

    ``excluded`` caches the exclusion condition by the excluded ids, for several queries
    that share them (building one over a few hundred ids costs a third of a millisecond).
    """
    must: list[Any] = []
    must_not: list[Any] = []
    if filters is not None:
        if filters.categories is not None:
            must.append(qe.FieldCondition("category", match=qe.MatchAny(list(filters.categories))))
        if filters.tags is not None:
            must.append(qe.FieldCondition("tags", match=qe.MatchAny(list(filters.tags))))
        if filters.created_after is not None or filters.created_until is not None:
            created = qe.RangeFloat(gt=filters.created_after, lte=filters.created_until)
            must.append(qe.FieldCondition("created_at", range=created))
        if filters.max_popularity is not None:
            popular = qe.RangeFloat(lte=filters.max_popularity)
            must.append(qe.FieldCondition("popularity", range=popular))
        if filters.exclude_ids and excluded is not None:
            key = tuple(filters.exclude_ids)
            if key not in excluded:
                excluded[key] = qe.HasIdCondition(set(map(point_uuid, key)))
            must_not.append(excluded[key])
        elif filters.exclude_ids:
            exclude_point_ids = [*exclude_point_ids, *map(point_uuid, filters.exclude_ids)]
    if exclude_point_ids:
        # A second condition beside a cached exclusion, rather than a copy of it: a point
        # matching any must_not condition is out either way.
        must_not.append(qe.HasIdCondition(set(exclude_point_ids)))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def average_vector(positives: Sequence[FloatArray], negatives: Sequence[FloatArray]) -> list[float]:
    """Qdrant's average_vector target: avg(positive) + avg(positive) - avg(negative)."""
    mean: FloatArray = np.stack(positives).mean(axis=0, dtype=np.float32)
    target = mean + mean - np.stack(negatives).mean(axis=0, dtype=np.float32) if negatives else mean
    return [float(x) for x in target]


def check_batch(
    dims: Mapping[str, int], queries: Sequence[BatchQuery]
) -> tuple[dict[str, set[str]], list[CheckedQuery]]:
    """Check every query as ``search`` or ``recommend`` checks it, before any runs.

    Returns the example ids of the recommend queries by vector name, to read their vectors in
    one retrieve, and every query checked.
    """
    examples: dict[str, set[str]] = {}
    checked: list[CheckedQuery] = []
    for query in queries:
        if isinstance(query, LikeExamples):
            _, limit, positives, negatives = check_recommend(
                dims,
                query.vector_name,
                query.positive_ids,
                query.negative_ids,
                query.limit,
                "average_vector",
            )
            examples.setdefault(query.vector_name, set()).update(positives, negatives)
            checked.append((limit, (positives, negatives)))
        else:
            vector, limit = check_search(dims, query.vector_name, query.vector, query.limit)
            check_shortlist(dims, query.within)
            checked.append((limit, vector))
    return examples, checked


def shortlist(
    within: Nearest,
    params: qe.SearchParams | None,
    excluded: dict[tuple[str, ...], Any] | None = None,
) -> qe.Prefetch:
    """A checked shortlist query (see ``VectorIndex.search``) as the engine's prefetch."""
    return qe.Prefetch(
        limit=within.limit,
        query=qe.Query.Nearest(
            np.asarray(within.vector, np.float32).tolist(), using=within.vector_name
        ),
        filter=edge_filter(within.filters, excluded=excluded),
        params=params,
    )


def batch_requests(
    queries: Sequence[BatchQuery],
    checked: Sequence[CheckedQuery],
    found: Mapping[str, Mapping[str, FloatArray]],
    params: qe.SearchParams | None,
) -> tuple[list[qe.QueryRequest], list[bool]]:
    """The native requests of checked queries, given the example vectors ``found`` by vector
    name, and whether each query has one: one with no positive example found has none."""
    filters: dict[int, tuple[qe.Filter | None, frozenset[str]]] = {}
    exclusions: dict[tuple[str, ...], Any] = {}
    requests: list[qe.QueryRequest] = []
    answered: list[bool] = []
    for query, (limit, arguments) in zip(queries, checked, strict=True):
        key = id(query.filters)
        if key not in filters:
            excluded = frozenset((query.filters.exclude_ids or ()) if query.filters else ())
            filters[key] = (edge_filter(query.filters, excluded=exclusions), excluded)
        query_filter, excluded = filters[key]
        prefetches = None
        if isinstance(arguments, np.ndarray):
            native = qe.Query.Nearest(arguments.tolist(), using=query.vector_name)
            if isinstance(query, Nearest) and query.within is not None:
                prefetches = [shortlist(query.within, params, exclusions)]
        else:
            positives, negatives = arguments
            vectors = found.get(query.vector_name, {})
            pos = [vectors[i] for i in positives if i in vectors]
            neg = [vectors[i] for i in negatives if i in vectors]
            if not pos:
                answered.append(False)
                continue
            native = qe.Query.Nearest(average_vector(pos, neg), using=query.vector_name)
            # The examples never come back (usually they are excluded already).
            extra = [point_uuid(i) for i in (*positives, *negatives) if i not in excluded]
            if extra:
                query_filter = edge_filter(query.filters, extra, excluded=exclusions)
        requests.append(
            qe.QueryRequest(
                limit=limit,
                query=native,
                prefetches=prefetches,
                filter=query_filter,
                # No payload: reading it costs the engine about 7 us a hit, twice the
                # search itself at the feed's depth. Point ids map back to item ids.
                with_payload=False,
                params=params,
            )
        )
        answered.append(True)
    return requests, answered


class ItemIdCache:
    """The item id of every point a batch query has returned, read from its payload once.

    A point id is a hash of the item id, so an entry never goes stale; the map grows to at
    most the items the index has returned.
    """

    def __init__(self) -> None:
        self._item_of_point: dict[int, str] = {}

    def hits(
        self,
        shard: qe.EdgeShard,
        batches: Sequence[Sequence[qe.ScoredPoint]],
        answered: Sequence[bool],
    ) -> list[list[Hit]]:
        """One hit list per query: the next of ``batches`` where it was ``answered``, else
        none. Hits carry no payload beyond ``item_id``."""
        # Reading ``.id`` builds a uuid.UUID, whose hash and equality are Python code: read
        # it once per hit and key the map by its integer.
        point_ids = [[_point_key(p.id) for p in points] for points in batches]
        item_of = self._item_of_point
        unseen = {i for ids in point_ids for i in ids}.difference(item_of)
        if unseen:
            self._learn(shard, unseen)
        answers = iter(zip(batches, point_ids, strict=True))
        results: list[list[Hit]] = []
        for asked in answered:
            if not asked:
                results.append([])
                continue
            points, ids = next(answers)
            hits = []
            for point, key in zip(points, ids, strict=True):
                item_id = item_of.get(key)
                # None only when the item was deleted between the query and the lookup.
                if item_id is not None:
                    hits.append(
                        Hit(item_id=item_id, score=point.score, payload={"item_id": item_id})
                    )
            results.append(hits)
        return results

    def _learn(self, shard: qe.EdgeShard, point_ids: Collection[int]) -> None:
        """Remember the item id of each point, from its payload, in one retrieve."""
        records = shard.retrieve(
            [str(uuid.UUID(int=i)) for i in point_ids],
            with_payload=_ITEM_ID_ONLY,
            with_vector=False,
        )
        for record in records:
            if record.payload is not None:
                self._item_of_point[_point_key(record.id)] = record.payload["item_id"]


@functools.lru_cache(maxsize=1 << 18)
def point_uuid(external_id: str) -> uuid.UUID:
    """``point_id`` as a ``uuid.UUID``: the engine takes a filter over a few hundred of these
    in half the time it takes to parse as many strings (0.12 against 0.22 ms for 200)."""
    return uuid.UUID(point_id(external_id))


def _point_key(point: int | uuid.UUID | str) -> int:
    """A point id as an int: the engine hands UUIDs back as ``uuid.UUID``."""
    if isinstance(point, uuid.UUID):
        return point.int
    return point if isinstance(point, int) else uuid.UUID(point).int
