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
from collections.abc import Mapping
from typing import Any, Final

from qdrant_client import QdrantClient, models

from recsys.vectors.base import ITEMS, USERS, VectorIndex
from recsys.vectors.checks import validate_dims
from recsys.vectors.client_index import ClientIndex, collection_dims
from recsys.vectors.client_query import client_filter
from recsys.vectors.versions import IndexBuild, VectorStore, VersionInfo, check_version, stage

# The index and its helpers are importable from here, the backend's module, as well.
__all__ = ["STATE_KEY", "ClientIndex", "ClientStore", "client_filter", "collection_dims"]

STATE_KEY: Final = "recsys_state"


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
