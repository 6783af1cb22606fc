"""Embedded backend: Qdrant Edge shards in this process, one directory per model version.

Layout under ``vectors_dir``::

    CURRENT                 the live version's name (replaced atomically)
    .store.lock             serialises begin / activate / cleanup between processes
    <version>/              a complete version
        items/  users/      one Edge shard each
        schema.json         vector dimensions
        VERSION.json        completion marker, written last
        .lock               held shared by readers, exclusively by the builder and cleanup
    <version>.partial/      a build in progress, or the leftover of one that crashed
    .<name>.deleting/       a directory being removed (renamed first, then deleted)
    .replicas/<version>.<pid>.<n>/
                            a serving process's private copy of a version (with
                            ``replicas=True``), locked by that process while it is open

A build happens entirely inside ``<version>.partial``; only when its data are flushed and the
marker is written does it get its final name, and only a complete version can become live.
A crash at any point therefore leaves ``CURRENT`` naming the previous complete version.

An Edge shard opens in one process at a time. Several serving processes on one machine
therefore each open a replica: a copy of the published version made when they load it and
removed when they move on (or by the next process to look, if theirs died). Item upserts
then change the replica only; the published version stays as training wrote it, and the
store holds the items every process indexes (see ``recsys.serving.live``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.vectors.base import ITEMS, USERS, VectorIndex
from recsys.vectors.checks import validate_dims
from recsys.vectors.edge_files import (
    LOCK_FILE,
    MARKER_FILE,
    PARTIAL_SUFFIX,
    POINTER_FILE,
    STORE_LOCK_FILE,
    TRASH_SUFFIX,
    copy_sparse,
    fsync_dir,
    lock,
    read_json,
    try_lock,
    write_json,
)
from recsys.vectors.edge_index import OPEN_VERSIONS, EdgeIndex
from recsys.vectors.edge_query import edge_filter
from recsys.vectors.versions import IndexBuild, VectorStore, VersionInfo, check_version, stage

# The index and its filters are importable from here, the backend's module, as well.
__all__ = ["EdgeIndex", "EdgeStore", "edge_filter"]

REPLICAS_DIR = ".replicas"
# Tells apart the replicas one process makes of the same version.
_REPLICA_NUMBERS = itertools.count(1)


@dataclass(slots=True)
class _BuildState:
    partial: Path
    final: Path
    lock_fd: int

    def release(self) -> None:
        fd, self.lock_fd = self.lock_fd, -1
        if fd >= 0:
            os.close(fd)


class EdgeStore(VectorStore):
    """Versions as shard directories under ``root`` with an atomically replaced pointer."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        keep: int = 3,
        indexing_threshold_kb: int | None = None,
        hnsw_ef: int | None = None,
        replicas: bool = False,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.indexing_threshold_kb = indexing_threshold_kb
        self.hnsw_ef = hnsw_ef
        # Open every version as a private copy (several serving processes, one machine).
        self.replicas = replicas

    # -- building -------------------------------------------------------------------------

    def begin(self, version: str, dims: Mapping[str, int]) -> IndexBuild:
        check_version(version)
        dims = validate_dims(dims)
        final = self.root / version
        partial = self.root / f"{version}{PARTIAL_SUFFIX}"
        with self._store_lock():
            self._remove_leftovers()
            if final.exists():
                raise ValueError(f"version {version!r} already exists")
            if partial.exists():
                raise ValueError(f"version {version!r} is being built")
            partial.mkdir()
            # Anyone else would need the store lock to touch it, so this never waits.
            lock_fd = lock(partial / LOCK_FILE, exclusive=True)
        try:
            index = EdgeIndex.create(
                partial,
                dims,
                indexing_threshold_kb=self.indexing_threshold_kb,
                hnsw_ef=self.hnsw_ef,
            )
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            os.close(lock_fd)
            raise
        stage("begin")
        return IndexBuild(self, version, index, _BuildState(partial, final, lock_fd))

    def _commit(self, build: IndexBuild) -> VersionInfo:
        state: _BuildState = build.state
        index = build.index
        if not isinstance(index, EdgeIndex):
            raise TypeError(f"not a build of this store: {build!r}")
        stage("optimize")
        index.optimize()
        index.flush()
        items, users = index.count(ITEMS), index.count(USERS)
        dims = dict(index.dims)
        index.close()
        stage("mark-complete")
        completed_at = time.time()
        write_json(
            state.partial / MARKER_FILE,
            {
                "version": build.version,
                "completed_at": completed_at,
                "dims": dims,
                "items": items,
                "users": users,
            },
        )
        stage("rename")
        os.rename(state.partial, state.final)
        fsync_dir(self.root)
        state.release()
        stage("committed")
        return VersionInfo(build.version, completed_at, dims, items, users, live=False)

    def _abort(self, build: IndexBuild) -> None:
        state: _BuildState = build.state
        try:
            build.index.close()
        finally:
            # After the rename the version is complete and stays; before it, it goes.
            shutil.rmtree(state.partial, ignore_errors=True)
            state.release()

    # -- the live pointer -----------------------------------------------------------------

    def activate(self, version: str) -> None:
        check_version(version)
        with self._store_lock():
            if self._marker(version) is None:
                raise ValueError(f"version {version!r} is not a complete version")
            pointer = self.root / POINTER_FILE
            tmp = self.root / f"{POINTER_FILE}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(version + "\n")
                f.flush()
                os.fsync(f.fileno())
            stage("switch")
            os.replace(tmp, pointer)
            fsync_dir(self.root)
        stage("switched")

    def live_version(self) -> str | None:
        try:
            version = (self.root / POINTER_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return version or None

    def open_version(self, version: str) -> VectorIndex:
        check_version(version)
        path = self.root / version
        if self._marker(version) is None:
            raise ValueError(f"version {version!r} is not a complete version")
        return OPEN_VERSIONS.acquire(path, lambda: self._open_shards(version, path))

    def _open_shards(self, version: str, path: Path) -> EdgeIndex:
        # Held shared while open: cleanup leaves a version alone while anyone reads it.
        lock_fd = lock(path / LOCK_FILE, exclusive=False)
        try:
            if self._marker(version) is None:  # removed while we waited for the lock
                raise FileNotFoundError(f"version {version!r} was removed")
            if not self.replicas:
                return EdgeIndex.open(
                    path, hnsw_ef=self.hnsw_ef, on_close=lambda: os.close(lock_fd)
                )
            replica, replica_fd = self._replicate(version, path)
        except BaseException:
            os.close(lock_fd)
            raise

        def remove_replica() -> None:
            try:
                shutil.rmtree(replica, ignore_errors=True)
            finally:
                os.close(replica_fd)
                os.close(lock_fd)

        try:
            return EdgeIndex.open(replica, hnsw_ef=self.hnsw_ef, on_close=remove_replica)
        except BaseException:
            remove_replica()
            raise

    def _replicate(self, version: str, path: Path) -> tuple[Path, int]:
        """Copy ``version`` into a replica of this process's own; return it and the fd of
        its lock, which this process holds until it removes the replica."""
        replicas = self.root / REPLICAS_DIR
        with self._store_lock():
            # Made and locked under the store lock: whoever removes dead replicas holds it
            # too, so never sees this one unlocked.
            replicas.mkdir(exist_ok=True)
            self._remove_dead_replicas()
            replica = replicas / f"{version}.{os.getpid()}.{next(_REPLICA_NUMBERS)}"
            replica.mkdir()
            replica_fd = lock(replica / LOCK_FILE, exclusive=True)
        try:
            shutil.copytree(
                path,
                replica,
                ignore=shutil.ignore_patterns(LOCK_FILE),
                copy_function=copy_sparse,
                dirs_exist_ok=True,
            )
        except BaseException:
            shutil.rmtree(replica, ignore_errors=True)
            os.close(replica_fd)
            raise
        return replica, replica_fd

    def _remove_dead_replicas(self) -> list[str]:
        """Remove the replicas no process holds (their process died). Under the store lock."""
        removed: list[str] = []
        replicas = self.root / REPLICAS_DIR
        if not replicas.is_dir():
            return removed
        for path in replicas.iterdir():
            fd = try_lock(path / LOCK_FILE) if path.is_dir() else None
            if fd is None:
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(fd)
            removed.append(f"{REPLICAS_DIR}/{path.name}")
        return removed

    # -- listing and cleanup --------------------------------------------------------------

    def list_versions(self) -> list[VersionInfo]:
        live = self.live_version()
        infos: list[VersionInfo] = []
        for path in self.root.iterdir():
            if not path.is_dir() or path.name.startswith(".") or path.suffix == PARTIAL_SUFFIX:
                continue
            marker = self._marker(path.name)
            if marker is None:
                continue
            infos.append(
                VersionInfo(
                    version=path.name,
                    completed_at=float(marker["completed_at"]),
                    dims={str(k): int(v) for k, v in marker["dims"].items()},
                    items=int(marker["items"]),
                    users=int(marker["users"]),
                    live=path.name == live,
                )
            )
        infos.sort(key=lambda v: (v.completed_at, v.version))
        return infos

    def cleanup(self, keep: int | None = None) -> list[str]:
        keep = self._keep_count(keep)
        with self._store_lock():
            removed = self._remove_leftovers()
            versions = self.list_versions()
            keep_names = {v.version for v in versions[-keep:]} | {
                v.version for v in versions if v.live
            }
            for info in versions:
                if info.version not in keep_names and self._remove_dir(self.root / info.version):
                    removed.append(info.version)
        return removed

    def close(self) -> None:
        """Nothing is held between calls."""

    def _remove_leftovers(self) -> list[str]:
        """Remove interrupted builds, half-deleted versions, dead processes' replicas and
        pointer temp files.

        Must be called under the store lock. A build still running holds its directory's
        lock and is left alone.
        """
        removed = self._remove_dead_replicas()
        for path in self.root.iterdir():
            name = path.name
            if path.is_dir() and (name.endswith(PARTIAL_SUFFIX) or name.endswith(TRASH_SUFFIX)):
                if self._remove_dir(path):
                    removed.append(name)
            elif name.startswith(f"{POINTER_FILE}.") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                removed.append(name)
        return removed

    def _remove_dir(self, path: Path) -> bool:
        """Delete a directory unless someone holds its lock; return whether it was deleted."""
        try:
            lock_fd = try_lock(path / LOCK_FILE)
        except FileNotFoundError:
            return False
        if lock_fd is None:
            return False
        try:
            if path.name.endswith(TRASH_SUFFIX):
                shutil.rmtree(path)
            else:
                # Take the name away first so no reader can find a half-deleted version.
                trash = path.with_name(f".{path.name}{TRASH_SUFFIX}")
                os.rename(path, trash)
                shutil.rmtree(trash)
        finally:
            os.close(lock_fd)
        return True

    def _marker(self, version: str) -> dict[str, Any] | None:
        try:
            marker = read_json(self.root / version / MARKER_FILE)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        return marker if isinstance(marker, dict) else None

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        fd = lock(self.root / STORE_LOCK_FILE, exclusive=True)
        try:
            yield
        finally:
            os.close(fd)
