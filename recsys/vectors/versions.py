"""Versioned vector stores: build a model version off to the side, then switch to it atomically.

``VectorStore`` is implemented by ``EdgeStore`` (one shard directory per version plus a
``CURRENT`` pointer file) and ``ClientStore`` (one collection pair per version plus the
``items``/``users`` aliases). A typical nightly run::

    store = open_vector_store(settings)
    with store.begin("2024-06-01", {"als": 64, "hybrid": 64, "content": 384}) as build:
        build.upsert_items(item_ids, item_vectors, item_payloads)
        build.upsert_users(user_ids, user_vectors)
    # leaving the block without an error completes the version; an error discards it
    store.activate("2024-06-01")
    store.cleanup()

A serving process opens ``store.open_live()`` and polls ``store.live_version()`` (a cheap
pointer read) to hot-swap when it changes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal

from recsys.vectors.base import (
    FloatArray,
    Hit,
    ItemFilter,
    Nearest,
    RecommendStrategy,
    VectorIndex,
)

_VERSION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RESERVED_SUFFIXES: Final = (".partial", ".tmp", ".lock", ".deleting")

# Named points of a build and a switch, in order. Tests use them to crash a builder on purpose.
STAGES: Final[tuple[str, ...]] = (
    "begin",  # the new version's storage exists and is empty
    "upsert",  # after every batch written to the new version
    "optimize",  # all data written; indexes are about to be built
    "mark-complete",  # data durable; the completion marker is about to be written
    "rename",  # Edge only: marker written, the directory is about to get its final name
    "committed",  # the version is complete but not live
    "switch",  # the live pointer is about to change
    "switched",  # the live pointer has changed
)

_stage_hook: Callable[[str], None] | None = None


def set_stage_hook(hook: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Install a callable run at every named stage (see ``STAGES``); return the previous one."""
    global _stage_hook
    previous, _stage_hook = _stage_hook, hook
    return previous


def stage(name: str) -> None:
    hook = _stage_hook
    if hook is not None:
        hook(name)


def check_version(version: str) -> str:
    """Version names double as directory and collection names, so they are kept plain."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ValueError(
            f"version must be 1-64 characters of letters, digits, '_', '-' or '.', starting "
            f"with a letter or digit; got {version!r}"
        )
    if version.endswith(_RESERVED_SUFFIXES) or version.upper() == "CURRENT":
        raise ValueError(f"version name {version!r} is reserved")
    return version


class NoLiveVersionError(LookupError):
    """No version has been activated yet."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A complete version."""

    version: str
    completed_at: float
    dims: dict[str, int] = field(default_factory=dict)
    items: int = 0
    users: int = 0
    live: bool = False


class VectorStore(ABC):
    """The versions of the vector index and which one is live."""

    keep: int

    @abstractmethod
    def begin(self, version: str, dims: Mapping[str, int]) -> IndexBuild:
        """Start building ``version`` off to the side; leftovers of crashed builds are removed.

        Raises ValueError if ``version`` already exists or is being built.
        """

    @abstractmethod
    def activate(self, version: str) -> None:
        """Make a complete version live, atomically. Raises ValueError if it is not complete."""

    @abstractmethod
    def live_version(self) -> str | None:
        """The live version, read from the pointer each call: cheap enough to poll."""

    @abstractmethod
    def open_version(self, version: str) -> VectorIndex:
        """Open a complete version for reading (the live one or any other)."""

    @abstractmethod
    def list_versions(self) -> list[VersionInfo]:
        """Complete versions, oldest first."""

    @abstractmethod
    def cleanup(self, keep: int | None = None) -> list[str]:
        """Remove leftovers of interrupted builds and all but the newest ``keep`` complete
        versions (the live version is always kept). Return what was removed."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's own resources (indexes it handed out stay open)."""

    @abstractmethod
    def _commit(self, build: IndexBuild) -> VersionInfo:
        """Make a finished build durable and mark it complete."""

    @abstractmethod
    def _abort(self, build: IndexBuild) -> None:
        """Discard a build."""

    def _keep_count(self, keep: int | None) -> int:
        """``cleanup``'s ``keep``: the store's own by default, and at least 1."""
        keep = self.keep if keep is None else keep
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        return keep

    def open_live(self) -> VectorIndex:
        """Open the live version for serving. Raises NoLiveVersionError if there is none."""
        for _ in range(3):
            version = self.live_version()
            if version is None:
                raise NoLiveVersionError("no vector index version is live yet")
            try:
                return self.open_version(version)
            except (ValueError, FileNotFoundError):
                # The pointer moved and the old version was removed between the two reads.
                if self.live_version() == version:
                    raise
        raise RuntimeError("the live version kept changing while it was being opened")

    def rollback(self, version: str | None = None) -> str:
        """Make an older complete version live again; by default the newest one older than
        the live version. Return the version now live."""
        versions = self.list_versions()
        if version is None:
            live = next((i for i, v in enumerate(versions) if v.live), None)
            if live is None or live == 0:
                raise ValueError("there is no complete version older than the live one")
            version = versions[live - 1].version
        self.activate(version)
        return version

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class IndexBuild(VectorIndex):
    """A writable index for a version under construction.

    ``commit()`` makes the version complete (it can then be activated); ``abort()`` discards
    it. Used as a context manager it commits on success and aborts on an exception.
    """

    def __init__(
        self, store: VectorStore, version: str, index: VectorIndex, state: Any = None
    ) -> None:
        self.store = store
        self.version = version
        self.index = index
        # Backend-specific bookkeeping (locks, paths) owned by the store.
        self.state = state
        self._status: Literal["open", "committed", "aborted"] = "open"

    @property
    def status(self) -> Literal["open", "committed", "aborted"]:
        return self._status

    def commit(self) -> VersionInfo:
        self._check_open()
        try:
            info = self.store._commit(self)
        except BaseException:
            self.abort()
            raise
        self._status = "committed"
        return info

    def abort(self) -> None:
        if self._status != "open":
            return
        self._status = "aborted"
        self.store._abort(self)

    def _check_open(self) -> None:
        if self._status != "open":
            raise RuntimeError(f"the build of version {self.version!r} is {self._status}")

    # VectorIndex, by delegation.

    @property
    def dims(self) -> Mapping[str, int]:
        return self.index.dims

    def _delete(self, collection: str, ids: list[str]) -> int:
        self._check_open()
        return self.index._delete(collection, ids)

    def _upsert(
        self,
        collection: str,
        ids: list[str],
        arrays: dict[str, FloatArray],
        payloads: list[dict[str, Any]],
        batch_size: int,
    ) -> int:
        self._check_open()
        return self.index._upsert(collection, ids, arrays, payloads, batch_size)

    def _search(
        self,
        vector_name: str,
        vector: FloatArray,
        limit: int,
        filters: ItemFilter | None,
        exact: bool,
        within: Nearest | None = None,
    ) -> list[Hit]:
        self._check_open()
        return self.index._search(vector_name, vector, limit, filters, exact, within)

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
        self._check_open()
        return self.index._recommend(
            vector_name, positives, negatives, limit, filters, strategy, exact
        )

    def _vectors(self, collection: str, ids: list[str], vector_name: str) -> dict[str, FloatArray]:
        self._check_open()
        return self.index._vectors(collection, ids, vector_name)

    def get_items(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self._check_open()
        return self.index.get_items(ids)

    def count(self, collection: Literal["items", "users"] = "items") -> int:
        self._check_open()
        return self.index.count(collection)

    def close(self) -> None:
        """Closing a build without committing it discards it."""
        self.abort()

    def __enter__(self) -> IndexBuild:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status != "open":
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()
