"""The lifecycle of model versions in a serving process: load the live version, swap to a
new one atomically (hot swap), take a retired one back (rollback), and index the items that
arrived while a version was not the one serving."""

from __future__ import annotations

import logging
import threading
import time

from recsys.config import Settings
from recsys.serving.items import index_items
from recsys.serving.state import ServingState, load_state
from recsys.store import Store
from recsys.store.catalog import load_items
from recsys.vectors.versions import VectorStore

log = logging.getLogger("recsys.serving")


class LiveVersion:
    """The state serving now in this process, and the one retired just before it."""

    def __init__(self, store: Store, settings: Settings, vectors: VectorStore) -> None:
        self.store = store
        self.settings = settings
        self.vectors = vectors
        self.current: ServingState | None = None
        self.index_error: str | None = None
        self._retired: list[ServingState] = []
        self._swap_lock = threading.Lock()

    def load(self, version: str) -> ServingState:
        return load_state(self.store, self.settings, self.vectors, version)

    def refresh(self) -> bool:
        """Load the live version if it changed. Cheap when nothing changed; thread-safe."""
        try:
            live = self.vectors.live_version()
        except Exception as exc:  # the index itself is unreachable
            self.index_error = f"{type(exc).__name__}: {exc}"
            return False
        if live is None or (self.current is not None and self.current.version == live):
            return False
        with self._swap_lock:
            if self.current is not None and self.current.version == live:
                return False
            # Items upserted from here on may land in the current state only: they are
            # indexed into the new one after the swap (see catch_up).
            loading_since = time.time()
            # Going back to the version served just before (a rollback): its state is still
            # open, kept for requests in flight, and an embedded shard opens once per process,
            # so take that state back instead of opening the version a second time.
            reclaimed = next((old for old in self._retired if old.version == live), None)
            try:
                if reclaimed is not None:
                    state = reclaimed
                    missed_since = reclaimed.retired_at or loading_since
                else:
                    state = self.load(live)
                    # Items upserted while the version trained are missing from it too.
                    missed_since = min(loading_since, state.catalogue_through)
            except Exception as exc:
                self.index_error = f"{type(exc).__name__}: {exc}"
                log.exception("could not load model version %s; keeping the current one", live)
                return False
            previous, self.current = self.current, state
            state.retired_at = None
            self.index_error = None
            self.catch_up(state, missed_since)
            # Requests in flight may still hold the previous state; close it one swap later.
            for old in self._retired:
                if old is not reclaimed:
                    old.index.close()
            if previous is not None:
                previous.retired_at = time.time()
            self._retired = [previous] if previous else []
            log.info("serving model version %s", live)
            return True

    def catch_up(self, state: ServingState, since: float) -> None:
        """Index into ``state``, which has just gone live, the items upserted since
        ``since``: while it was retired, or while it loaded. Those went to the previous
        state only.

        Runs after the swap: an upsert commits before it picks the state to index into, so
        one that picked the previous state committed before this read and is found here.
        """
        try:
            with self.store.read() as conn:
                # A second of overlap: an upsert racing the swap is indexed twice, never missed.
                changed = load_items(conn, updated_since=since - 1.0)
            if not changed.empty:
                with state.lock:
                    index_items(state, changed)
        except Exception:
            log.exception(
                "could not index the items upserted during the swap to %s; they are stored "
                "and go live with the next version or a re-upsert",
                state.version,
            )

    def close(self) -> None:
        with self._swap_lock:
            for state in [*self._retired, self.current]:
                if state is not None:
                    state.index.close()
            self._retired, self.current = [], None
            self.vectors.close()
