"""What the service showed, recorded off the request path.

A request only appends its rows to a bounded in-memory queue (a few microseconds); a
background thread writes everything queued in one bulk insert at least every
``flush_seconds``, and ``close()`` writes the rest. When the store is down rows wait in
the queue and are retried; when the queue is full new rows are dropped and counted, so a
store outage never holds a request or grows memory without bound, and is never silent.
Impressions are keyed by (feed_id, position): a retried write cannot store one twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from recsys.serving.types import FeedItem
from recsys.store import Store
from recsys.store.impressions import insert_impressions

log = logging.getLogger("recsys.impressions")

Counter = Callable[[int], None]


def new_feed_id() -> str:
    """An answer's id: 32 hex digits, unique without coordination between workers."""
    return uuid.uuid4().hex


def impression_rows(
    feed_id: str,
    items: Sequence[FeedItem],
    *,
    user_id: str | None,
    surface: str,
    model_version: str | None,
    ranker: str,
    experiment: str | None,
    variant: str | None,
    shown_at: float,
) -> list[tuple[object, ...]]:
    """One row per item, in ``recsys.store.impressions.IMPRESSION_COLUMNS`` order."""
    return [
        (
            feed_id,
            position,
            user_id,
            item.item_id,
            surface,
            model_version,
            ranker,
            experiment,
            variant,
            shown_at,
        )
        for position, item in enumerate(items)
    ]


class ImpressionLog:
    """A bounded queue of impression rows and the thread that writes them in bulk."""

    def __init__(
        self,
        store: Store,
        *,
        capacity_rows: int = 200_000,
        flush_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.capacity_rows = capacity_rows
        self.flush_seconds = flush_seconds
        self.written = 0
        self.dropped = 0
        # Set by the service to feed its metrics; called with a row count.
        self.on_written: Counter | None = None
        self.on_dropped: Counter | None = None
        self._pending: list[tuple[object, ...]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, rows: list[tuple[object, ...]]) -> bool:
        """Queue rows for the next bulk write; False (and counted) when the queue is full."""
        with self._lock:
            if len(self._pending) + len(rows) > self.capacity_rows or self._stop.is_set():
                self.dropped += len(rows)
                dropped = True
            else:
                self._pending.extend(rows)
                dropped = False
        if dropped:
            if self.on_dropped is not None:
                self.on_dropped(len(rows))
            return False
        return True

    def flush(self) -> int:
        """Write every queued row now; returns how many were written. On a store error the
        rows go back to the head of the queue (as far as it has room) and it raises."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                with self.store.transaction() as conn:
                    insert_impressions(conn, batch)
            except BaseException:
                with self._lock:
                    room = max(self.capacity_rows - len(self._pending), 0)
                    kept, lost = batch[:room], len(batch) - min(room, len(batch))
                    self._pending = kept + self._pending
                    self.dropped += lost
                if lost and self.on_dropped is not None:
                    self.on_dropped(lost)
                raise
            self.written += len(batch)
            if self.on_written is not None:
                self.on_written(len(batch))
            return len(batch)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "writing impressions failed; %d rows wait for the next try: %s",
                    self.pending,
                    exc,
                )
            self._failing = True
        else:
            if self._failing:
                log.info("writing impressions works again")
            self._failing = False

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking rows and write what is queued, retrying for up to ``timeout``
        seconds; rows still unwritten then are counted as dropped."""
        self._stop.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.pending:
            try:
                self.flush()
            except Exception as exc:
                if time.monotonic() > deadline:
                    with self._lock:
                        lost, self._pending = len(self._pending), []
                        self.dropped += lost
                    log.error("%d impressions could not be written at shutdown: %s", lost, exc)
                    if self.on_dropped is not None:
                        self.on_dropped(lost)
                    return
                time.sleep(0.2)
