"""A model version's items and users as two Qdrant Edge shards in one directory."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import qdrant_edge as qe

from recsys.vectors.base import (
    INDEXED_ITEM_FIELDS,
    ITEMS,
    USERS,
    BatchQuery,
    Hit,
    ItemFilter,
    Nearest,
    VectorIndex,
    point_id,
)
from recsys.vectors.checks import (
    FloatArray,
    RecommendStrategy,
    batches,
    check_batch_size,
    check_ids,
    validate_dims,
    vector_distance,
)
from recsys.vectors.edge_files import LOCK_FILE, SCHEMA_FILE, read_json, write_json
from recsys.vectors.edge_query import (
    ItemIdCache,
    average_vector,
    batch_requests,
    check_batch,
    edge_filter,
    point_uuid,
    shortlist,
)
from recsys.vectors.versions import stage

_DISTANCES: Final = {"dot": qe.Distance.Dot, "cosine": qe.Distance.Cosine}
_FIELD_SCHEMAS: Final = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "float": qe.PayloadSchemaType.Float,
}

# m=0: build no HNSW graph (Qdrant's switch for vectors that are never searched).
_NO_GRAPH: Final = qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)


class EdgeIndex(VectorIndex):
    """A version's ``items`` and ``users`` as two Qdrant Edge shards in one directory.

    A shard directory can be open once at a time: one handle, in one process. Searches do
    not release the GIL (nor does ``optimize()``, which can take minutes on a big catalogue:
    build versions in a separate process from the one serving).
    """

    def __init__(
        self,
        root: Path,
        items: qe.EdgeShard,
        users: qe.EdgeShard,
        dims: Mapping[str, int],
        *,
        hnsw_ef: int | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self._items: qe.EdgeShard | None = items
        self._users: qe.EdgeShard | None = users
        self._dims = dict(dims)
        self._on_close = on_close
        # A handle on shards shared within the process (see OpenVersions) leaves closing
        # them to the registry.
        self._owns_shards = True
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None
        self._exact = qe.SearchParams(exact=True)
        # Shared by the handles on these shards, as copies share it.
        self._item_ids = ItemIdCache()

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        dims: Mapping[str, int],
        *,
        indexing_threshold_kb: int | None = None,
        hnsw_ef: int | None = None,
    ) -> EdgeIndex:
        """Create empty shards in ``root`` (which must be absent or empty)."""
        dims = validate_dims(dims)
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        if any(p.name not in (LOCK_FILE,) for p in path.iterdir()):
            raise ValueError(f"{path} is not empty")
        optimizers = (
            qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
            if indexing_threshold_kb is not None
            else None
        )

        def vectors(hnsw: qe.HnswIndexConfig | None = None) -> dict[str, qe.EdgeVectorParams]:
            return {
                name: qe.EdgeVectorParams(
                    size=dim, distance=_DISTANCES[vector_distance(name)], hnsw_config=hnsw
                )
                for name, dim in dims.items()
            }

        write_json(path / SCHEMA_FILE, {"dims": dims})
        items = qe.EdgeShard.create(
            str(path / ITEMS), qe.EdgeConfig(vectors=vectors(), optimizers=optimizers)
        )
        try:
            for field_name, kind in INDEXED_ITEM_FIELDS.items():
                items.update(
                    qe.UpdateOperation.create_field_index(field_name, _FIELD_SCHEMAS[kind])
                )
            # User vectors are only ever fetched by id, never searched: no HNSW graph.
            users = qe.EdgeShard.create(
                str(path / USERS),
                qe.EdgeConfig(vectors=vectors(_NO_GRAPH), optimizers=optimizers),
            )
        except BaseException:
            items.close()
            raise
        return cls(path, items, users, dims, hnsw_ef=hnsw_ef)

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        hnsw_ef: int | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> EdgeIndex:
        path = Path(root)
        dims = validate_dims(read_json(path / SCHEMA_FILE)["dims"])
        items = _load_shard(path / ITEMS)
        try:
            users = _load_shard(path / USERS)
        except BaseException:
            items.close()
            raise
        return cls(path, items, users, dims, hnsw_ef=hnsw_ef, on_close=on_close)

    @property
    def items_shard(self) -> qe.EdgeShard:
        """The underlying items shard, for diagnostics and benchmarks."""
        return self._shard(ITEMS)

    def optimize(self) -> None:
        """Build the HNSW and payload indexes; blocks until done."""
        self._shard(ITEMS).optimize()
        self._shard(USERS).optimize()

    def flush(self) -> None:
        self._shard(ITEMS).flush()
        self._shard(USERS).flush()

    def close(self) -> None:
        shards = [s for s in (self._items, self._users) if s is not None and self._owns_shards]
        self._items = self._users = None
        try:
            for shard in shards:
                shard.close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    @property
    def closed(self) -> bool:
        return self._items is None

    def _shared_handle(self, on_close: Callable[[], None]) -> EdgeIndex:
        """Another handle on these open shards; closing it only calls ``on_close``."""
        handle = copy.copy(self)
        handle._owns_shards = False
        handle._on_close = on_close
        return handle

    def _shard(self, collection: str) -> qe.EdgeShard:
        shard = self._items if collection == ITEMS else self._users
        if shard is None:
            raise RuntimeError(f"the index at {self.root} is closed")
        return shard

    # -- writes ---------------------------------------------------------------------------

    @property
    def dims(self) -> Mapping[str, int]:
        return self._dims

    def _delete(self, collection: str, ids: list[str]) -> int:
        self._shard(collection).update(qe.UpdateOperation.delete_points([point_id(i) for i in ids]))
        return len(ids)

    def _upsert(
        self,
        collection: str,
        ids: list[str],
        arrays: dict[str, FloatArray],
        payloads: list[dict[str, Any]],
        batch_size: int,
    ) -> int:
        check_batch_size(batch_size)
        shard = self._shard(collection)
        for start, stop in batches(len(ids), batch_size):
            rows = {name: array[start:stop].tolist() for name, array in arrays.items()}
            points = [
                qe.Point(
                    point_id(ids[i]),
                    {name: rows[name][i - start] for name in rows},
                    payloads[i],
                )
                for i in range(start, stop)
            ]
            shard.update(qe.UpdateOperation.upsert_points(points))
            stage("upsert")
        return len(ids)

    # -- reads ----------------------------------------------------------------------------

    def _search(
        self,
        vector_name: str,
        vector: FloatArray,
        limit: int,
        filters: ItemFilter | None,
        exact: bool,
        within: Nearest | None = None,
    ) -> list[Hit]:
        query = qe.Query.Nearest(vector.tolist(), using=vector_name)
        prefetch = shortlist(within, self._search_params(exact)) if within is not None else None
        return self._query(query, limit, edge_filter(filters), exact, prefetch)

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
        found = self.get_item_vectors([*positives, *negatives], vector_name)
        pos = [found[i] for i in positives if i in found]
        neg = [found[i] for i in negatives if i in found]
        if not pos and (strategy == "average_vector" or not neg):
            return []
        query_filter = edge_filter(filters, [point_uuid(i) for i in (*positives, *negatives)])
        if strategy == "average_vector":
            query = qe.Query.Nearest(average_vector(pos, neg), using=vector_name)
        else:
            examples = qe.RecommendQuery([v.tolist() for v in pos], [v.tolist() for v in neg])
            if strategy == "best_score":
                query = qe.Query.RecommendBestScore(examples, using=vector_name)
            else:
                query = qe.Query.RecommendSumScores(examples, using=vector_name)
        return self._query(query, limit, query_filter, exact)

    def _query(
        self,
        query: qe.Query,
        limit: int,
        query_filter: qe.Filter | None,
        exact: bool,
        prefetch: qe.Prefetch | None = None,
    ) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=query,
            prefetches=[prefetch] if prefetch is not None else None,
            filter=query_filter,
            with_payload=True,
            params=self._search_params(exact),
        )
        return [
            Hit(item_id=point.payload["item_id"], score=point.score, payload=point.payload)
            for point in self._shard(ITEMS).query(request)
            if point.payload is not None
        ]

    def _search_params(self, exact: bool) -> qe.SearchParams | None:
        """An exhaustive search when asked for, else the configured HNSW search."""
        return self._exact if exact else self._params

    def query_batch(self, queries: Sequence[BatchQuery]) -> list[list[Hit]]:
        # One retrieve for every example vector and one query_batch for every query: the
        # per-call overhead (and building a filter of a few hundred excluded ids) is paid
        # once, not once per query.
        examples, checked = check_batch(self._dims, queries)
        found = self._vectors_by_name(ITEMS, examples)
        requests, answered = batch_requests(queries, checked, found, self._params)
        if not requests:
            return [[] for _ in answered]
        shard = self._shard(ITEMS)
        batches = shard.query_batch(qe.QueryBatchRequest(requests))
        return self._item_ids.hits(shard, batches, answered)

    def _vectors_by_name(
        self, collection: str, wanted: Mapping[str, Collection[str]]
    ) -> dict[str, dict[str, FloatArray]]:
        """Stored vectors, by vector name then external id, in one retrieve."""
        ids = sorted(set().union(*wanted.values())) if wanted else []
        found: dict[str, dict[str, FloatArray]] = {name: {} for name in wanted}
        if not ids:
            return found
        by_point = {point_id(i): i for i in ids}
        records = self._shard(collection).retrieve(
            list(by_point), with_payload=False, with_vector=list(wanted)
        )
        for record in records:
            vectors = record.vector
            if not isinstance(vectors, dict):
                continue
            external = by_point[str(record.id)]
            for name, of_name in found.items():
                if name in vectors and external in wanted[name]:
                    of_name[external] = np.asarray(vectors[name], dtype=np.float32)
        return found

    def _vectors(self, collection: str, ids: list[str], vector_name: str) -> dict[str, FloatArray]:
        found = self._vectors_by_name(collection, {vector_name: set(ids)})[vector_name]
        return {i: found[i] for i in ids if i in found}

    def get_items(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        checked = check_ids(ids, unique=False)
        by_point = {point_id(i): i for i in checked}
        records = self._shard(ITEMS).retrieve(list(by_point), with_payload=True, with_vector=False)
        found = {by_point[str(r.id)]: dict(r.payload or {}) for r in records}
        return {i: found[i] for i in checked if i in found}

    def count(self, collection: Literal["items", "users"] = "items") -> int:
        if collection not in (ITEMS, USERS):
            raise ValueError(f"collection must be 'items' or 'users', got {collection!r}")
        return self._shard(collection).count(qe.CountRequest(exact=True))


class OpenVersions:
    """The versions this process has open for reading.

    An Edge shard opens once per process, yet two readers may want the same version at
    once: a service rolling back to the version its in-flight requests still hold, or two
    recommenders over one home. Every reader gets its own handle on one shared pair of
    shards, which the last handle to close closes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[EdgeIndex, int]] = {}

    def acquire(self, path: Path, opener: Callable[[], EdgeIndex]) -> EdgeIndex:
        key = path.resolve()
        with self._lock:
            shared, readers = self._open.get(key) or (opener(), 0)
            self._open[key] = (shared, readers + 1)
        return shared._shared_handle(lambda: self._release(key))

    def _release(self, key: Path) -> None:
        with self._lock:
            shared, readers = self._open[key]
            if readers > 1:
                self._open[key] = (shared, readers - 1)
                return
            del self._open[key]
            shared.close()


OPEN_VERSIONS: Final = OpenVersions()


def _load_shard(path: Path) -> qe.EdgeShard:
    try:
        return qe.EdgeShard.load(str(path))
    except Exception as e:
        if "WouldBlock" in str(e):
            raise RuntimeError(
                f"{path} is already open; a Qdrant Edge shard can be open once at a time, "
                "in one process"
            ) from e
        raise
