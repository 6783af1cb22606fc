"""Server backend: a Qdrant server through qdrant-client (or its local mode, for tests).

Each version is a collection pair ``items_<version>`` / ``users_<version>``; the live version is
named by the aliases ``items`` and ``users``, switched together in one
``update_collection_aliases`` call. A version is complete once ``recsys_state`` in its items
collection's metadata reads ``complete``; that is written last.

Leftover removal assumes one builder at a time per server (and prefix): an incomplete pair
that no alias names is taken for the remains of a crashed build.
"""

from __future__ import annotations

import time
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
    RecommendStrategy,
    VectorIndex,
    batches,
    check_batch_size,
    check_ids,
    point_id,
    validate_dims,
    vector_distance,
)
from recsys.vectors.versions import IndexBuild, VectorStore, VersionInfo, check_version, stage

_DISTANCES: Final = {"dot": models.Distance.DOT, "cosine": models.Distance.COSINE}
_FIELD_SCHEMAS: Final = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "float": models.PayloadSchemaType.FLOAT,
}
_STRATEGIES: Final = {
    "average_vector": models.RecommendStrategy.AVERAGE_VECTOR,
    "best_score": models.RecommendStrategy.BEST_SCORE,
    "sum_scores": models.RecommendStrategy.SUM_SCORES,
}
STATE_KEY: Final = "recsys_state"


def client_filter(filters: ItemFilter | None) -> models.Filter | None:
    """Translate an ItemFilter into a native Qdrant filter."""
    if filters is None or filters.is_empty:
        return None
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    if filters.categories is not None:
        must.append(
            models.FieldCondition(
                key="category", match=models.MatchAny(any=list(filters.categories))
            )
        )
    if filters.tags is not None:
        must.append(
            models.FieldCondition(key="tags", match=models.MatchAny(any=list(filters.tags)))
        )
    if filters.created_after is not None:
        must.append(
            models.FieldCondition(key="created_at", range=models.Range(gt=filters.created_after))
        )
    if filters.exclude_ids:
        must_not.append(models.HasIdCondition(has_id=[point_id(i) for i in filters.exclude_ids]))
    return models.Filter(must=must or None, must_not=must_not or None)


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
    ) -> list[Hit]:
        return self._query(vector.tolist(), vector_name, limit, filters, exact)

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
            recommend = models.RecommendInput(
                positive=[point_id(i) for i in pos] or None,
                negative=[point_id(i) for i in neg] or None,
                strategy=_STRATEGIES[strategy],
            )
            return self._query(
                models.RecommendQuery(recommend=recommend), vector_name, limit, filters, exact
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

    def _query(
        self,
        query: Any,
        vector_name: str,
        limit: int,
        filters: ItemFilter | None,
        exact: bool,
    ) -> list[Hit]:
        response = self.client.query_points(
            self._collection(ITEMS),
            query=query,
            using=vector_name,
            limit=limit,
            query_filter=client_filter(filters),
            search_params=self._exact if exact else self._params,
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


# -- versions ---------------------------------------------------------------------------------


class ClientStore(VectorStore):
    """Versions as collection pairs on one Qdrant server, made live by an alias switch.

    ``prefix`` namespaces every collection and alias, so several deployments can share a server.
    """

    def __init__(
        self,
        client: QdrantClient,
        *,
        keep: int = 3,
        prefix: str = "",
        hnsw_ef: int | None = None,
        owns_client: bool = False,
        shards: int = 1,
        replicas: int = 1,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if shards < 1 or replicas < 1:
            raise ValueError(f"shards and replicas must be at least 1, got {shards}, {replicas}")
        self.client = client
        self.keep = keep
        self.prefix = prefix
        self.hnsw_ef = hnsw_ef
        self.shards = shards
        self.replicas = replicas
        self._owns_client = owns_client

    # Names.

    @property
    def items_alias(self) -> str:
        return f"{self.prefix}{ITEMS}"

    @property
    def users_alias(self) -> str:
        return f"{self.prefix}{USERS}"

    def items_collection(self, version: str) -> str:
        return f"{self.items_alias}_{version}"

    def users_collection(self, version: str) -> str:
        return f"{self.users_alias}_{version}"

    # -- building -------------------------------------------------------------------------

    def begin(self, version: str, dims: Mapping[str, int]) -> IndexBuild:
        check_version(version)
        dims = validate_dims(dims)
        self._remove_leftovers()
        items, users = self.items_collection(version), self.users_collection(version)
        existing = self._collections()
        if items in existing or users in existing:
            raise ValueError(f"version {version!r} already exists")
        metadata = {"recsys_version": version, STATE_KEY: "building", "recsys_dims": dims}
        try:
            index = ClientIndex.create(
                self.client,
                items,
                users,
                dims,
                metadata=metadata,
                hnsw_ef=self.hnsw_ef,
                shards=self.shards,
                replicas=self.replicas,
            )
        except BaseException:
            self._drop(version)
            raise
        stage("begin")
        return IndexBuild(self, version, index)

    def _commit(self, build: IndexBuild) -> VersionInfo:
        index = build.index
        if not isinstance(index, ClientIndex):
            raise TypeError(f"not a build of this store: {build!r}")
        # The server builds its indexes in the background; a version serves while it does.
        stage("optimize")
        items, users = index.count(ITEMS), index.count(USERS)
        dims = dict(index.dims)
        stage("mark-complete")
        completed_at = time.time()
        marker = {
            STATE_KEY: "complete",
            "recsys_completed_at": completed_at,
            "recsys_items": items,
            "recsys_users": users,
        }
        self.client.update_collection(index.users_collection, metadata=marker)
        self.client.update_collection(index.items_collection, metadata=marker)
        index.close()
        stage("committed")
        return VersionInfo(build.version, completed_at, dims, items, users, live=False)

    def _abort(self, build: IndexBuild) -> None:
        build.index.close()
        self._drop(build.version)

    # -- the live pointer -----------------------------------------------------------------

    def activate(self, version: str) -> None:
        check_version(version)
        if self._complete(version) is None:
            raise ValueError(f"version {version!r} is not a complete version")
        current = self._aliases()
        operations: list[models.AliasOperations] = []
        for alias, collection in (
            (self.items_alias, self.items_collection(version)),
            (self.users_alias, self.users_collection(version)),
        ):
            if alias in current:
                operations.append(
                    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
                )
            operations.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
                )
            )
        stage("switch")
        self.client.update_collection_aliases(change_aliases_operations=operations)
        stage("switched")

    def live_version(self) -> str | None:
        collection = self._aliases().get(self.items_alias)
        prefix = f"{self.items_alias}_"
        if collection is None or not collection.startswith(prefix):
            return None
        return collection[len(prefix) :]

    def open_version(self, version: str) -> VectorIndex:
        check_version(version)
        marker = self._complete(version)
        if marker is None:
            raise ValueError(f"version {version!r} is not a complete version")
        # Bound to the version's own collections, not the aliases: a switch never changes
        # what an open index serves.
        return ClientIndex(
            self.client,
            self.items_collection(version),
            self.users_collection(version),
            marker.get("recsys_dims"),
            hnsw_ef=self.hnsw_ef,
        )

    # -- listing and cleanup --------------------------------------------------------------

    def list_versions(self) -> list[VersionInfo]:
        live = self.live_version()
        infos: list[VersionInfo] = []
        existing = self._collections()
        for version in self._versions():
            marker = self._complete(version, existing)
            if marker is None:
                continue
            infos.append(
                VersionInfo(
                    version=version,
                    completed_at=float(marker["recsys_completed_at"]),
                    dims={str(k): int(v) for k, v in (marker.get("recsys_dims") or {}).items()},
                    items=int(marker.get("recsys_items", 0)),
                    users=int(marker.get("recsys_users", 0)),
                    live=version == live,
                )
            )
        infos.sort(key=lambda v: (v.completed_at, v.version))
        return infos

    def cleanup(self, keep: int | None = None) -> list[str]:
        keep = self._keep_count(keep)
        removed = self._remove_leftovers()
        versions = self.list_versions()
        keep_names = {v.version for v in versions[-keep:]} | {v.version for v in versions if v.live}
        for info in versions:
            if info.version not in keep_names:
                self._drop(info.version)
                removed.append(info.version)
        return removed

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- helpers --------------------------------------------------------------------------

    def _collections(self) -> set[str]:
        return {c.name for c in self.client.get_collections().collections}

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def _versions(self) -> set[str]:
        """Every version with at least one collection, complete or not."""
        found: set[str] = set()
        for name in self._collections():
            for alias in (self.items_alias, self.users_alias):
                if name.startswith(f"{alias}_"):
                    found.add(name[len(alias) + 1 :])
        return found

    def _metadata(self, collection: str) -> dict[str, Any]:
        return dict(self.client.get_collection(collection).config.metadata or {})

    def _complete(self, version: str, existing: set[str] | None = None) -> dict[str, Any] | None:
        """The items metadata of a complete version, else None."""
        existing = self._collections() if existing is None else existing
        items, users = self.items_collection(version), self.users_collection(version)
        if items not in existing or users not in existing:
            return None
        metadata = self._metadata(items)
        if metadata.get(STATE_KEY) != "complete":
            return None
        if self._metadata(users).get(STATE_KEY) != "complete":
            return None
        return metadata

    def _remove_leftovers(self) -> list[str]:
        """Drop the collections of builds that never completed.

        Only collections this store created (their metadata names the version) are touched,
        and never one an alias points at.
        """
        aliased = set(self._aliases().values())
        existing = self._collections()
        removed: list[str] = []
        for version in sorted(self._versions()):
            names = [self.items_collection(version), self.users_collection(version)]
            if any(n in aliased for n in names) or self._complete(version, existing) is not None:
                continue
            ours = [
                n
                for n in names
                if n in existing and self._metadata(n).get("recsys_version") == version
            ]
            if not ours:
                continue
            for name in ours:
                self.client.delete_collection(name)
            removed.append(version)
        return removed

    def _drop(self, version: str) -> None:
        existing = self._collections()
        for name in (self.items_collection(version), self.users_collection(version)):
            if name in existing:
                self.client.delete_collection(name)
