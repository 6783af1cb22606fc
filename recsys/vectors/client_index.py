"""A model version's items and users as two collections on a Qdrant server, via qdrant-client."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from recsys.vectors.base import (
    INDEXED_ITEM_FIELDS,
    ITEMS,
    USERS,
    FloatArray,
    Hit,
    ItemFilter,
    Nearest,
    RecommendStrategy,
    VectorIndex,
    point_id,
)
from recsys.vectors.checks import (
    batches,
    check_batch_size,
    check_ids,
    validate_dims,
    vector_distance,
)
from recsys.vectors.client_query import client_filter, recommend_query
from recsys.vectors.versions import stage

_DISTANCES: Final = {"dot": models.Distance.DOT, "cosine": models.Distance.COSINE}
_FIELD_SCHEMAS: Final = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "float": models.PayloadSchemaType.FLOAT,
}


def _is_local(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


class ClientIndex(VectorIndex):
    """A version's ``items`` and ``users`` collections on a Qdrant server."""

    def __init__(
        self,
        client: QdrantClient,
        items_collection: str,
        users_collection: str,
        dims: Mapping[str, int] | None = None,
        *,
        hnsw_ef: int | None = None,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.items_collection = items_collection
        self.users_collection = users_collection
        if dims is None:
            dims = collection_dims(client, items_collection)
        self._dims = validate_dims(dims)
        self._owns_client = owns_client
        self._closed = False
        # Local mode is exact brute force and warns about search parameters it ignores.
        self._local = _is_local(client)
        self._params = models.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef and not self._local else None
        self._exact = None if self._local else models.SearchParams(exact=True)

    @classmethod
    def create(
        cls,
        client: QdrantClient,
        items_collection: str,
        users_collection: str,
        dims: Mapping[str, int],
        *,
        metadata: Mapping[str, Any] | None = None,
        hnsw_ef: int | None = None,
        shards: int = 1,
        replicas: int = 1,
    ) -> ClientIndex:
        """Create both collections (which must not exist) with their payload indexes, split
        into ``shards`` shards of ``replicas`` copies each on a cluster."""
        dims = validate_dims(dims)
        vectors = {
            name: models.VectorParams(size=dim, distance=_DISTANCES[vector_distance(name)])
            for name, dim in dims.items()
        }
        client.create_collection(
            items_collection,
            vectors_config=vectors,
            metadata=dict(metadata or {}),
            shard_number=shards,
            replication_factor=replicas,
        )
        # User vectors are only ever fetched by id, never searched: m=0 builds no HNSW graph.
        client.create_collection(
            users_collection,
            vectors_config=vectors,
            hnsw_config=models.HnswConfigDiff(m=0),
            metadata=dict(metadata or {}),
            shard_number=shards,
            replication_factor=replicas,
        )
        with warnings.catch_warnings():
            # Local mode has no payload indexes and says so; the server builds them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field_name, kind in INDEXED_ITEM_FIELDS.items():
                client.create_payload_index(
                    items_collection, field_name, field_schema=_FIELD_SCHEMAS[kind], wait=True
                )
        return cls(client, items_collection, users_collection, dims, hnsw_ef=hnsw_ef)

    @property
    def dims(self) -> Mapping[str, int]:
        return self._dims

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self.client.close()

    def _collection(self, collection: str) -> str:
        if self._closed:
            raise RuntimeError(f"the index on {self.items_collection!r} is closed")
        return self.items_collection if collection == ITEMS else self.users_collection

    # -- writes ---------------------------------------------------------------------------

    def _delete(self, collection: str, ids: list[str]) -> int:
        selector = models.PointIdsList(points=[point_id(i) for i in ids])
        self.client.delete(self._collection(collection), points_selector=selector, wait=True)
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
        name = self._collection(collection)
        for start, stop in batches(len(ids), batch_size):
            batch = models.Batch(
                ids=[point_id(i) for i in ids[start:stop]],
                vectors={n: a[start:stop].tolist() for n, a in arrays.items()},
                payloads=payloads[start:stop],
            )
            self.client.upsert(name, points=batch, wait=True)
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
        prefetch = None
        if within is not None:
            prefetch = models.Prefetch(
                query=np.asarray(within.vector, np.float32).tolist(),
                using=within.vector_name,
                filter=client_filter(within.filters),
                limit=within.limit,
                params=self._search_params(exact),
            )
        return self._query(vector.tolist(), vector_name, limit, filters, exact, prefetch)

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
        def query(pos: list[str], neg: list[str]) -> list[Hit]:
            return self._query(
                recommend_query(pos, neg, strategy), vector_name, limit, filters, exact
            )

        try:
            return query(positives, negatives)
        except (UnexpectedResponse, ValueError):
            # Qdrant rejects examples it cannot find (a 4xx from a server, a ValueError in
            # local mode); retry with those that exist. A timeout or a server that is down
            # is not that, and is not retried.
            found = self.get_item_vectors([*positives, *negatives], vector_name)
            if len(found) == len(positives) + len(negatives):
                raise
        pos = [i for i in positives if i in found]
        neg = [i for i in negatives if i in found]
        if not pos and (strategy == "average_vector" or not neg):
            return []
        return query(pos, neg)

    def _search_params(self, exact: bool) -> models.SearchParams | None:
        """An exhaustive search when asked for, else the configured HNSW search (neither
        in local mode, which always searches exhaustively)."""
        return self._exact if exact else self._params

    def _query(
        self,
        query: Any,
        vector_name: str,
        limit: int,
        filters: ItemFilter | None,
        exact: bool,
        prefetch: models.Prefetch | None = None,
    ) -> list[Hit]:
        response = self.client.query_points(
            self._collection(ITEMS),
            query=query,
            prefetch=prefetch,
            using=vector_name,
            limit=limit,
            query_filter=client_filter(filters),
            search_params=self._search_params(exact),
            with_payload=True,
        )
        return [
            Hit(item_id=point.payload["item_id"], score=point.score, payload=point.payload)
            for point in response.points
            if point.payload is not None
        ]

    def _vectors(self, collection: str, ids: list[str], vector_name: str) -> dict[str, FloatArray]:
        by_point = {point_id(i): i for i in ids}
        records = self.client.retrieve(
            self._collection(collection),
            ids=list(by_point),
            with_payload=False,
            with_vectors=[vector_name],
        )
        found: dict[str, FloatArray] = {}
        for record in records:
            vectors = record.vector
            if isinstance(vectors, dict) and vectors.get(vector_name) is not None:
                found[by_point[str(record.id)]] = np.asarray(vectors[vector_name], dtype=np.float32)
        return {i: found[i] for i in ids if i in found}

    def get_items(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        checked = check_ids(ids, unique=False)
        by_point = {point_id(i): i for i in checked}
        records = self.client.retrieve(
            self._collection(ITEMS), ids=list(by_point), with_payload=True, with_vectors=False
        )
        found = {by_point[str(r.id)]: dict(r.payload or {}) for r in records}
        return {i: found[i] for i in checked if i in found}

    def count(self, collection: Literal["items", "users"] = "items") -> int:
        if collection not in (ITEMS, USERS):
            raise ValueError(f"collection must be 'items' or 'users', got {collection!r}")
        return self.client.count(self._collection(collection), exact=True).count


def collection_dims(client: QdrantClient, collection: str) -> dict[str, int]:
    vectors = client.get_collection(collection).config.params.vectors
    if not isinstance(vectors, dict):
        raise ValueError(f"collection {collection!r} has no named vectors")
    return {name: params.size for name, params in vectors.items()}
