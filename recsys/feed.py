"""The recommender: candidates from Qdrant, a blend that adapts to history, filters,
diversity and an explanation for every pick.

One request builds one page:

1. read the user's recent events from the store (so a like is felt on the next page);
2. fold the user in: a fresh ALS vector from those events, plus their recent positive and
   negative items as examples for content and hybrid recommend queries;
3. gather candidates per source (behavioural, with items like the latest few likes folded
   into it, hybrid, content, fresh, popular), with
   consumed items, page history and request filters pushed down into Qdrant;
4. normalise each source's scores to [0, 1] and blend them with weights that depend on
   how much history the user has and how many interactions each item has;
5. demote items close to recent skips (fatigue), then pick the page with MMR over content
   vectors and a per-category cap;
6. explain each pick by its strongest source.

Everything version-specific (models, index, catalogue snapshot) lives in one immutable
``ServingState`` that ``refresh()`` swaps atomically when a new version is published.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from recsys.columns import DWELL, ITEM_ID, TIMESTAMP, TYPE
from recsys.config import FeedConfig, Settings
from recsys.models.als import ALSModel
from recsys.models.content import ContentModel
from recsys.models.hybrid import HybridModel
from recsys.signals import event_weights
from recsys.store import Store
from recsys.store.catalog import items_with_any_tag, load_items, upsert_items
from recsys.store.events import (
    HISTORY_COLUMNS,
    InsertResult,
    consumed_items,
    insert_events,
    user_event_columns,
)
from recsys.store.schema import events as events_table
from recsys.vectors.base import BatchQuery, Hit, ItemFilter, LikeExamples, Nearest, VectorIndex
from recsys.vectors.versions import VectorStore, open_vector_store

log = logging.getLogger("recsys.feed")

SOURCES = ("behavioural", "hybrid", "content", "fresh", "popular")
# Qdrant vector name behind each vector source.
VECTOR_OF = {"behavioural": "als", "hybrid": "hybrid", "content": "content"}
MAX_CURSOR_ITEMS = 1_000
MAX_CURSOR_BYTES = 5 + 8 * MAX_CURSOR_ITEMS
# The page number takes 4 bytes, and the next cursor holds page + 1.
MAX_CURSOR_PAGE = 2**32 - 1
CURSOR_VERSION = 1
POSITIVE_EXAMPLES = 10
NEGATIVE_EXAMPLES = 5
# The behavioural source also asks for items whose ALS vectors are close to the user's few
# latest likes: what someone liked last predicts what they want next better than their whole
# history does (see FeedConfig.recent_weight).
RECENT_POSITIVES = 5
# The candidate lists asked of the vector index, in the order the blend takes them.
QUERY_SOURCES = ("behavioural", "recent", "content", "hybrid", "fresh")
SimilarKind = Literal["content", "behavioural", "blend"]


class InvalidCursor(ValueError):
    """A cursor that this service did not issue, or that was damaged."""


class UnknownItem(KeyError):
    """An item id that is not in the catalogue."""


class NoModel(RuntimeError):
    """No model version has been published yet."""


@dataclass
class FeedItem:
    item_id: str
    score: float
    sources: list[str]
    reason: str
    breakdown: dict[str, float] = field(default_factory=dict)


@dataclass
class FeedPage:
    user_id: str
    items: list[FeedItem]
    model_version: str | None
    next_cursor: str | None
    degraded: bool = False


@dataclass
class FeedFilters:
    categories: list[str] | None = None
    tags: list[str] | None = None
    exclude_ids: list[str] | None = None

    def __post_init__(self) -> None:
        # Checked here, before any query: a bad filter is the caller's error, not an index
        # outage to answer with a degraded page.
        for name in ("categories", "tags", "exclude_ids"):
            values = getattr(self, name)
            if values is None:
                continue
            if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"{name} must be a list of non-empty strings")


# --- cursors -----------------------------------------------------------------------------


def _item_hash(item_id: str) -> bytes:
    return hashlib.blake2b(item_id.encode(), digest_size=8).digest()


def encode_cursor(served: Sequence[bytes], page: int) -> str:
    """An opaque, compact token holding 8-byte hashes of the items already served."""
    payload = (
        bytes([CURSOR_VERSION]) + page.to_bytes(4, "big") + b"".join(served[-MAX_CURSOR_ITEMS:])
    )
    return base64.urlsafe_b64encode(zlib.compress(payload)).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[set[bytes], int]:
    try:
        inflater = zlib.decompressobj()
        # Bounded: a crafted cursor must not inflate into megabytes.
        raw = inflater.decompress(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), MAX_CURSOR_BYTES
        )
    except (ValueError, zlib.error) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc
    if inflater.unconsumed_tail:
        raise InvalidCursor("cursor is too long")
    if len(raw) < 5 or raw[0] != CURSOR_VERSION or (len(raw) - 5) % 8:
        raise InvalidCursor("cursor is not one this service issued")
    page = int.from_bytes(raw[1:5], "big")
    if page >= MAX_CURSOR_PAGE:
        raise InvalidCursor("cursor is not one this service issued")
    body = raw[5:]
    return {body[i : i + 8] for i in range(0, len(body), 8)}, page


# --- serving state ------------------------------------------------------------------------


@dataclass
class Catalogue:
    """An in-memory snapshot of the catalogue for the parts that need every item at once:
    popularity and freshness fallbacks, titles for reasons, content vectors for MMR."""

    ids: list[str]
    index: dict[str, int]
    titles: list[str]
    categories: np.ndarray  # object array, None allowed
    tags: list[list[str]]
    created_at: np.ndarray
    durations: np.ndarray
    popularity: np.ndarray  # positive users per item at training time
    trending: np.ndarray  # time-decayed recent positive events
    content: np.ndarray  # unit content vectors (rows align with ids)
    als_known: np.ndarray  # ALS model column per item, -1 when unknown

    # Rows ranked by a fixed score: (catalogue size when ranked, ranked rows, scores).
    rankings: dict[str, tuple[int, np.ndarray, np.ndarray]] = field(default_factory=dict)
    # The arrays above as views of these buffers, which have room to grow: the next
    # catalogue appends into them instead of copying 100k rows (see _extend_catalogue).
    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        return np.fromiter(map(self.index.get, item_ids, itertools.repeat(-1)), dtype=np.int64)

    def ranking(self, name: str, score: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a finite ``score``, best first (ties by row), and every row's score;
        ranked once per catalogue size, since new items are the only change between two
        trainings."""
        cached = self.rankings.get(name)
        if cached is None or cached[0] != len(self.ids):
            values = score()
            order = np.argsort(-values, kind="stable")
            cached = (len(self.ids), order[np.isfinite(values[order])], values)
            self.rankings[name] = cached
        return cached[1], cached[2]


@dataclass(frozen=True, slots=True)
class History:
    """A user's recent events, newest first, as arrays: a page reads them a dozen ways, and
    numpy masks cost microseconds where DataFrame indexing costs a millisecond."""

    item_ids: np.ndarray  # object
    types: np.ndarray  # object
    timestamps: np.ndarray
    dwell: np.ndarray
    weights: np.ndarray  # signed signal weight per event (0 where not computed)
    rows: np.ndarray  # catalogue row per event, -1 if unknown

    @classmethod
    def of(
        cls,
        events: Mapping[str, np.ndarray],
        weights: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> History:
        n = len(events[ITEM_ID])
        return cls(
            item_ids=np.asarray(events[ITEM_ID], dtype=object),
            types=np.asarray(events[TYPE], dtype=object),
            timestamps=np.asarray(events[TIMESTAMP], dtype=np.float64),
            dwell=np.asarray(events[DWELL], dtype=np.float64),
            weights=np.zeros(n) if weights is None else weights,
            rows=np.full(n, -1, dtype=np.int64) if rows is None else rows,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def items_where(self, mask: np.ndarray) -> list[str]:
        """Distinct item ids of the masked events, newest first."""
        return list(dict.fromkeys(self.item_ids[mask].tolist()))

    def liked_and_disliked(self) -> tuple[list[str], list[str]]:
        """Items whose events add up to a positive weight, and to a negative one, each most
        recently touched first: a like followed by a dislike of the same item is not a like."""
        if not len(self):
            return [], []
        codes, items = pd.factorize(self.item_ids)  # first seen = newest
        net = np.bincount(codes, weights=self.weights, minlength=len(items))
        return items[net > 0].tolist(), items[net < 0].tolist()


@dataclass
class ServingState:
    version: str
    trained_at: float
    index: VectorIndex
    als: ALSModel
    hybrid: HybridModel
    content_model: ContentModel
    catalogue: Catalogue
    reference_dwell: float
    # The newest item update the training run read: later upserts are not in its index.
    catalogue_through: float = math.inf
    lock: threading.Lock = field(default_factory=threading.Lock)
    # When another version replaced this one (None while it serves).
    retired_at: float | None = None


def _normalise(scores: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] within one source's candidate list (a single candidate gets 1)."""
    if len(scores) == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-12:
        return np.ones_like(scores)
    return (scores - low) / (high - low)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Recommender:
    """Feeds, similar items, and the write paths that must be felt at once."""

    def __init__(self, store: Store, settings: Settings, vectors: VectorStore) -> None:
        self.store = store
        self.settings = settings
        self.config: FeedConfig = settings.feed
        self.vectors = vectors
        self._state: ServingState | None = None
        self._retired: list[ServingState] = []
        self._swap_lock = threading.Lock()
        if self.config.blas_threads:
            # Process-wide by nature (BLAS pools are global); training sets its own.
            threadpool_limits(self.config.blas_threads, user_api="blas")
        self._index_error: str | None = None

    @classmethod
    def open(cls, store: Store, settings: Settings) -> Recommender:
        recommender = cls(store, settings, open_vector_store(settings))
        recommender.refresh()
        return recommender

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def model_version(self) -> str | None:
        state = self._state
        return state.version if state else None

    def refresh(self) -> bool:
        """Load the live version if it changed. Cheap when nothing changed; thread-safe."""
        try:
            live = self.vectors.live_version()
        except Exception as exc:  # the index itself is unreachable
            self._index_error = f"{type(exc).__name__}: {exc}"
            return False
        if live is None or (self._state is not None and self._state.version == live):
            return False
        with self._swap_lock:
            if self._state is not None and self._state.version == live:
                return False
            # Items upserted from here on may land in the current state only: they are
            # indexed into the new one after the swap (see _catch_up_items).
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
                    state = self._load_state(live)
                    # Items upserted while the version trained are missing from it too.
                    missed_since = min(loading_since, state.catalogue_through)
            except Exception as exc:
                self._index_error = f"{type(exc).__name__}: {exc}"
                log.exception("could not load model version %s; keeping the current one", live)
                return False
            previous, self._state = self._state, state
            state.retired_at = None
            self._index_error = None
            self._catch_up_items(state, missed_since)
            # Requests in flight may still hold the previous state; close it one swap later.
            for old in self._retired:
                if old is not reclaimed:
                    old.index.close()
            if previous is not None:
                previous.retired_at = time.time()
            self._retired = [previous] if previous else []
            log.info("serving model version %s", live)
            return True

    def _catch_up_items(self, state: ServingState, since: float) -> None:
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
                    self._index_items(state, changed)
        except Exception:
            log.exception(
                "could not index the items upserted during the swap to %s; they are stored "
                "and go live with the next version or a re-upsert",
                state.version,
            )

    def _load_state(self, version: str) -> ServingState:
        directory = self.settings.artifacts_dir / version
        manifest = json.loads((directory / "manifest.json").read_text())
        als = ALSModel.load(directory / "als")
        hybrid = HybridModel.load(directory / "hybrid")
        content_model = ContentModel.load(directory / "content")
        index = self.vectors.open_version(version)
        with self.store.read() as conn:
            items = load_items(conn)
        popularity_file = directory / "popularity.npy"
        popularity = (
            np.load(popularity_file, allow_pickle=False) if popularity_file.exists() else None
        )
        catalogue = self._build_catalogue(items, als, content_model, popularity)
        return ServingState(
            version=version,
            trained_at=float(manifest.get("trained_at", time.time())),
            index=index,
            als=als,
            hybrid=hybrid,
            content_model=content_model,
            catalogue=catalogue,
            reference_dwell=float(manifest.get("data_stats", {}).get("reference_dwell", 60.0)),
            catalogue_through=float(manifest.get("catalogue_through", math.inf)),
        )

    def _build_catalogue(
        self,
        items: pd.DataFrame,
        als: ALSModel,
        content_model: ContentModel,
        popularity_by_model_row: np.ndarray | None,
    ) -> Catalogue:
        assert content_model.items is not None and content_model.item_factors is not None
        assert als.items is not None
        # Items seen only in events still belong in the snapshot.
        known = pd.Index(items[ITEM_ID])
        extra = [i for i in content_model.items.external_ids if i not in known]
        if extra:
            items = pd.concat(
                [
                    items,
                    pd.DataFrame(
                        {ITEM_ID: extra, "title": "", "text": "", "tags": [[]] * len(extra)}
                    ),
                ],
                ignore_index=True,
            )
        ids = items[ITEM_ID].astype(str).tolist()
        content_rows = content_model.items.to_internal(ids, strict=False)
        content = np.zeros((len(ids), content_model.item_factors.shape[1]), dtype=np.float32)
        have = content_rows >= 0
        content[have] = content_model.item_factors[content_rows[have]]
        missing = ~have
        if missing.any():
            content[missing] = content_model.encode(items[missing])
        popularity = np.zeros(len(ids))
        if popularity_by_model_row is not None:
            popularity[have] = popularity_by_model_row[content_rows[have]]
        catalogue = Catalogue(
            ids=ids,
            index={item_id: row for row, item_id in enumerate(ids)},
            titles=items["title"].fillna("").astype(str).tolist(),
            # These may be read-only views of the frame (pandas' copy-on-write): an item
            # upsert writes into buffers of its own, never into them (_extend_catalogue).
            categories=items["category"].to_numpy(dtype=object)
            if "category" in items
            else np.full(len(ids), None),
            tags=[list(t) if isinstance(t, list) else [] for t in items["tags"]],
            created_at=pd.to_numeric(items.get("created_at"), errors="coerce").to_numpy(np.float64)
            if "created_at" in items
            else np.full(len(ids), np.nan),
            durations=pd.to_numeric(items.get("duration_seconds"), errors="coerce").to_numpy(
                np.float64
            )
            if "duration_seconds" in items
            else np.full(len(ids), np.nan),
            popularity=popularity,
            trending=np.zeros(len(ids)),
            content=_unit(content).astype(np.float32),
            als_known=als.items.to_internal(ids, strict=False),
        )
        catalogue.trending = self._trending(catalogue)
        return catalogue

    def _trending(
        self, catalogue: Catalogue, days: float = 14.0, half_life_days: float = 3.0
    ) -> np.ndarray:
        """Time-decayed count of recent positive events per item, from the store."""
        from sqlalchemy import func, select

        with self.store.read() as conn:
            newest = conn.execute(select(func.max(events_table.c.timestamp))).scalar()
            if newest is None:
                return np.zeros(len(catalogue.ids))
            rows = conn.execute(
                select(events_table.c.item_id, events_table.c.timestamp)
                .where(events_table.c.timestamp >= newest - days * 86_400)
                .where(events_table.c.type.in_(["like", "play", "rating", "view"]))
                .limit(2_000_000)
            ).all()
        trending = np.zeros(len(catalogue.ids))
        if rows:
            frame = pd.DataFrame(rows, columns=[ITEM_ID, TIMESTAMP])
            weight = np.power(
                0.5, (newest - frame[TIMESTAMP].to_numpy(float)) / (half_life_days * 86_400)
            )
            sums = pd.Series(weight).groupby(frame[ITEM_ID].to_numpy()).sum()
            row = catalogue.rows(sums.index)
            keep = row >= 0
            trending[row[keep]] = sums.to_numpy()[keep]
        return trending

    def ready(self) -> dict[str, bool]:
        status = {"store": False, "index": False, "model": self._state is not None}
        try:
            with self.store.read() as conn:
                conn.exec_driver_sql("select 1")
            status["store"] = True
        except Exception:
            status["store"] = False
        state = self._state
        if state is not None:
            try:
                state.index.count()
                status["index"] = True
            except Exception:
                status["index"] = False
        return status

    def close(self) -> None:
        with self._swap_lock:
            for state in [*self._retired, self._state]:
                if state is not None:
                    state.index.close()
            self._retired, self._state = [], None
            self.vectors.close()

    def _require_state(self) -> ServingState:
        state = self._state
        if state is None:
            self.refresh()
            state = self._state
        if state is None:
            raise NoModel("no model has been published yet: run `recsys train`")
        return state

    # --- the user's history ----------------------------------------------------------------

    def _history(self, state: ServingState, user_id: str) -> History:
        """Recent events with their signal weights and catalogue rows, newest first."""
        events = read_user_events(self.store, user_id, self.config.history_events)
        if not len(events[ITEM_ID]):
            return History.of(events)
        catalogue = state.catalogue
        rows = catalogue.rows(events[ITEM_ID])
        durations = np.where(rows >= 0, catalogue.durations[np.maximum(rows, 0)], np.nan)
        weights = event_weights(
            events,
            self.settings.signals,
            item_durations=durations,
            reference_dwell=state.reference_dwell,
            custom_weights=self.settings.custom_event_types,
        )
        return History.of(events, weights, rows)

    def _consumed(self, user_id: str, history: History) -> list[str]:
        """Items that never come back: everything touched except bounced views.

        The recent history answers when it holds the user's whole log; a longer log is
        asked of the store, so an item consumed long ago stays filtered too.
        """
        if len(history) >= self.config.history_events:
            with self.store.read() as conn:
                return consumed_items(conn, user_id, min_view_seconds=self.config.seen_view_seconds)
        if not len(history):
            return []
        bounced = (history.types == "view") & (history.dwell < self.config.seen_view_seconds)
        return history.items_where(~bounced)

    # --- feed -----------------------------------------------------------------------------

    def feed(
        self,
        user_id: str,
        limit: int = 20,
        cursor: str | None = None,
        filters: FeedFilters | None = None,
    ) -> FeedPage:
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        served, page = decode_cursor(cursor) if cursor else (set(), 0)
        try:
            state = self._require_state()
        except NoModel:
            return self._degraded_feed(user_id, limit, served, page, filters)
        history = self._history(state, user_id)
        try:
            items = self._rank(state, user_id, history, limit, served, filters)
        except Exception as exc:
            if _is_store_error(exc):
                raise
            log.warning("vector index unavailable (%s); serving popularity", exc)
            self._index_error = f"{type(exc).__name__}: {exc}"
            return self._degraded_feed(user_id, limit, served, page, filters, history)
        return FeedPage(
            user_id=user_id,
            items=items,
            model_version=state.version,
            next_cursor=self._next_cursor(served, items, page),
            degraded=False,
        )

    def _next_cursor(self, served: set[bytes], items: list[FeedItem], page: int) -> str | None:
        """None when the feed has no more to give: this page was empty, or the session has
        served as many items as a cursor remembers (past that, pages would repeat)."""
        if not items or len(served) + len(items) >= MAX_CURSOR_ITEMS:
            return None
        return encode_cursor([*served, *(_item_hash(i.item_id) for i in items)], page + 1)

    def _rank(
        self,
        state: ServingState,
        user_id: str,
        history: History,
        limit: int,
        served: set[bytes],
        filters: FeedFilters | None,
    ) -> list[FeedItem]:
        config = self.config
        catalogue = state.catalogue
        consumed = self._consumed(user_id, history)
        exclude = list(
            dict.fromkeys([*consumed, *((filters.exclude_ids or []) if filters else [])])
        )
        # Served items are known only by hash: fetch enough extra candidates to cover them,
        # and never fewer than a page, or a category-filtered page of 100 comes back short.
        n = max(config.candidates_per_source, limit) + len(served)
        item_filter = ItemFilter(
            categories=(filters.categories or None) if filters else None,
            tags=(filters.tags or None) if filters else None,
            exclude_ids=exclude or None,
        )
        excluded = set(exclude)
        positives, negatives = history.liked_and_disliked()
        # Likes of items the catalogue does not hold cannot steer anything: a user with only
        # those is cold.
        positives = [item for item in positives if item in catalogue.index]
        positive_rows = catalogue.rows(positives)
        warmth = min(1.0, len(history) / max(config.warm_after_events, 1))

        # Every Qdrant candidate query goes in one batch: one round trip, one translation
        # of the (often few-hundred-id) exclusion filter.
        queries: dict[str, BatchQuery] = {}
        als_vector = self._als_vector(state, user_id, history)
        if als_vector is not None:
            queries["behavioural"] = Nearest("als", als_vector, n, item_filter)
        if positives and config.recent_weight > 0:
            # Scored into the behavioural part of the blend (see below).
            queries["recent"] = LikeExamples(
                "als", positives[:RECENT_POSITIVES], (), n, item_filter
            )
        newest: list[Hit] | None = None
        if len(positive_rows):
            for vector_name in ("content", "hybrid"):
                queries[vector_name] = LikeExamples(
                    vector_name,
                    positives[:POSITIVE_EXAMPLES],
                    negatives[:NEGATIVE_EXAMPLES],
                    n,
                    item_filter,
                )
            content_vector = self._content_vector(state, history)
            if content_vector is not None:
                fresh_filter = ItemFilter(
                    categories=item_filter.categories,
                    tags=item_filter.tags,
                    exclude_ids=item_filter.exclude_ids,
                    created_after=state.trained_at - 7 * 86_400,
                )
                queries["fresh"] = Nearest("content", content_vector, n, fresh_filter)
        else:
            newest = self._newest(catalogue, n, excluded, filters)
        answers = (
            dict(zip(queries, state.index.query_batch(list(queries.values())), strict=True))
            if queries
            else {}
        )
        candidates = {name: answers[name] for name in QUERY_SOURCES if name in answers}
        if newest is not None:
            candidates["fresh"] = newest
        candidates["popular"] = self._popular(catalogue, n, excluded, filters)

        # Blend: per-source min-max, then weights interpolated between cold and warm. The
        # recent-likes list counts towards the behavioural source, at recent_weight times the
        # behavioural weight, so cold users (behavioural weight 0) do not get it either.
        weights = {
            s: warmth * config.warm_weights.get(s, 0.0)
            + (1 - warmth) * config.cold_weights.get(s, 0.0)
            for s in SOURCES
        }
        share = {s: 1.0 for s in SOURCES}
        share["recent"] = config.recent_weight
        column_of = {s: j for j, s in enumerate(SOURCES)}
        column_of["recent"] = column_of["behavioural"]
        # Every hit of every list as (item, source column, share x normalised score), then
        # summed per item and source in one scatter-add.
        hit_ids: list[str] = []
        hit_columns: list[int] = []
        hit_values: list[np.ndarray] = []
        for name, hits in candidates.items():
            if not hits:
                continue
            normalised = _normalise(np.fromiter((h.score for h in hits), np.float64, len(hits)))
            names = [h.item_id for h in hits]
            if served:
                fresh = np.fromiter((_item_hash(i) not in served for i in names), bool, len(names))
                names = [i for i, keep in zip(names, fresh, strict=True) if keep]
                normalised = normalised[fresh]
            hit_ids.extend(names)
            hit_columns.extend([column_of[name]] * len(names))
            hit_values.append(share[name] * normalised)
        if not hit_ids:
            return []
        slot = {item_id: position for position, item_id in enumerate(dict.fromkeys(hit_ids))}
        ids = list(slot)
        positions = np.fromiter((slot[i] for i in hit_ids), np.int64, len(hit_ids))
        columns = np.asarray(hit_columns, dtype=np.int64)
        contributions = np.zeros((len(ids), len(SOURCES)))
        np.add.at(contributions, (positions, columns), np.concatenate(hit_values))
        present = np.zeros_like(contributions, dtype=bool)
        present[positions, columns] = True

        rows = catalogue.rows(ids)
        popularity = np.where(rows >= 0, catalogue.popularity[np.maximum(rows, 0)], 0.0)
        coldness = np.clip(1.0 - popularity / max(config.cold_item_interactions, 1), 0.0, 1.0)
        # Cold items lean on the sources that can judge them without interactions.
        factor = np.ones_like(contributions)
        boosted = [column_of[s] for s in ("content", "hybrid", "fresh")]
        factor[:, boosted] = (1.0 + config.cold_item_boost * coldness)[:, None]
        weighted = contributions * np.array([weights[s] for s in SOURCES]) * factor
        scores = weighted.sum(axis=1)

        vectors = np.where(
            (rows >= 0)[:, None], catalogue.content[np.maximum(rows, 0)], 0.0
        ).astype(np.float32)
        penalty = self._fatigue(state, history, vectors)
        if penalty is not None:
            scores = scores - penalty

        categories = np.where(rows >= 0, catalogue.categories[np.maximum(rows, 0)], None)
        liked_categories = set(catalogue.categories[positive_rows].tolist())
        chosen = self._diversify(
            scores, vectors, categories, limit, one_category=len(liked_categories) == 1
        )
        positive_rows = positive_rows[:50]
        page = []
        for position in chosen:
            breakdown = {
                SOURCES[j]: float(weighted[position, j]) for j in np.flatnonzero(present[position])
            }
            sources = sorted(breakdown, key=lambda s: -breakdown[s])
            if penalty is not None and penalty[position] > 1e-6:
                breakdown["fatigue"] = -float(penalty[position])
            page.append(
                FeedItem(
                    item_id=ids[position],
                    score=round(float(scores[position]), 6),
                    sources=sources,
                    reason=self._reason(
                        catalogue, sources, rows[position], vectors[position], positive_rows
                    ),
                    breakdown={k: round(v, 6) for k, v in breakdown.items()},
                )
            )
        return page

    def _als_vector(self, state: ServingState, user_id: str, history: History) -> np.ndarray | None:
        """The user's behavioural vector, folded in from their latest events."""
        known = history.rows >= 0
        if known.any():
            columns = state.catalogue.als_known[history.rows[known]]
            usable = columns >= 0
            if usable.any():
                weights = history.weights[known][usable]
                if np.any(weights > 0):
                    return state.als.fold_in_user(columns[usable], weights)
        return state.index.get_user_vector(user_id, "als")

    def _content_vector(self, state: ServingState, history: History) -> np.ndarray | None:
        rows = history.rows
        weights = history.weights
        keep = rows >= 0
        if not keep.any():
            return None
        negative_weight = self.settings.content.negative_weight
        w = np.where(weights[keep] > 0, weights[keep], weights[keep] * negative_weight)
        vector = w @ state.catalogue.content[rows[keep]]
        norm = float(np.linalg.norm(vector))
        return (vector / norm).astype(np.float32) if norm > 1e-9 else None

    def _fallback_mask(
        self, catalogue: Catalogue, exclude: set[str], filters: FeedFilters | None
    ) -> np.ndarray:
        mask = np.ones(len(catalogue.ids), dtype=bool)
        if exclude:
            rows = catalogue.rows(exclude)
            mask[rows[rows >= 0]] = False
        if filters and filters.categories:
            mask &= np.isin(catalogue.categories, filters.categories)
        if filters and filters.tags:
            wanted = set(filters.tags)
            mask &= np.fromiter(
                (bool(wanted & set(t)) for t in catalogue.tags),
                dtype=bool,
                count=len(catalogue.tags),
            )
        return mask

    def _popular(
        self, catalogue: Catalogue, n: int, exclude: set[str], filters: FeedFilters | None
    ) -> list[Hit]:
        def score() -> np.ndarray:
            return catalogue.popularity + 2.0 * catalogue.trending

        return self._ranked_hits(catalogue, "popular", score, n, exclude, filters)

    def _newest(
        self, catalogue: Catalogue, n: int, exclude: set[str], filters: FeedFilters | None
    ) -> list[Hit]:
        def score() -> np.ndarray:
            return np.nan_to_num(catalogue.created_at, nan=-np.inf)

        return self._ranked_hits(catalogue, "newest", score, n, exclude, filters)

    def _ranked_hits(
        self,
        catalogue: Catalogue,
        name: str,
        score: Callable[[], np.ndarray],
        n: int,
        exclude: set[str],
        filters: FeedFilters | None,
    ) -> list[Hit]:
        if filters and (filters.categories or filters.tags):
            mask = self._fallback_mask(catalogue, exclude, filters)
            return self._top_hits(catalogue, score(), n, mask)
        # Without payload filters the top n is a walk down a ranking made once, skipping
        # the excluded rows: a few hundred steps instead of masks over the whole catalogue.
        excluded = set(catalogue.rows(exclude).tolist()) if exclude else set()
        order, values = catalogue.ranking(name, score)
        picked: list[int] = []
        for row in order[: n + len(excluded)].tolist():
            if row not in excluded:
                picked.append(row)
                if len(picked) == n:
                    break
        return [Hit(item_id=catalogue.ids[r], score=float(values[r]), payload={}) for r in picked]

    @staticmethod
    def _top_hits(catalogue: Catalogue, score: np.ndarray, n: int, mask: np.ndarray) -> list[Hit]:
        masked = np.where(mask, score, -np.inf)
        n = min(n, int(mask.sum()))
        if n <= 0:
            return []
        top = np.argpartition(-masked, n - 1)[:n]
        top = top[np.argsort(-masked[top], kind="stable")]
        top = top[np.isfinite(masked[top])]
        return [Hit(item_id=catalogue.ids[r], score=float(masked[r]), payload={}) for r in top]

    def _fatigue(
        self, state: ServingState, history: History, vectors: np.ndarray
    ) -> np.ndarray | None:
        """Penalty for candidates close to recent skips and dislikes, fading with age."""
        if not len(history) or self.config.fatigue_penalty <= 0:
            return None
        rejected = ((history.types == "skip") | (history.types == "dislike")) & (history.rows >= 0)
        skips = np.flatnonzero(rejected)[:20]
        if not skips.size:
            return None
        now = float(history.timestamps.max())
        age_hours = (now - history.timestamps[skips]) / 3600.0
        decay = np.power(0.5, age_hours / self.config.fatigue_half_life_hours)
        skipped = state.catalogue.content[history.rows[skips]]
        similarity = np.clip(vectors @ skipped.T, 0.0, 1.0) * decay[None, :]
        return self.config.fatigue_penalty * similarity.max(axis=1)

    def _diversify(
        self,
        scores: np.ndarray,
        vectors: np.ndarray,
        categories: Sequence[Any],
        limit: int,
        *,
        one_category: bool,
    ) -> list[int]:
        """MMR over content vectors, with a per-category cap unless the user likes one only."""
        lam = self.config.mmr_lambda
        cap = limit if one_category else max(2, math.ceil(limit * self.config.max_category_share))
        # The whole candidate set (a few hundred items) is the pool, so the category cap can
        # reach past a run of same-category items at the top.
        order = np.argsort(-scores, kind="stable")
        relevance = _normalise(scores[order])
        pool_vectors = vectors[order]
        chosen: list[int] = []
        max_sim = np.zeros(len(order))
        available = np.ones(len(order), dtype=bool)
        per_category: dict[Any, int] = {}
        while len(chosen) < limit and available.any():
            mmr = np.where(available, lam * relevance - (1 - lam) * max_sim, -np.inf)
            best = int(np.argmax(mmr))
            available[best] = False
            category = categories[order[best]]
            if category is not None and per_category.get(category, 0) >= cap:
                continue
            per_category[category] = per_category.get(category, 0) + 1
            chosen.append(int(order[best]))
            max_sim = np.maximum(max_sim, pool_vectors @ pool_vectors[best])
        if len(chosen) < limit:
            # The cap left the page short: fill with the best remaining regardless of category.
            rest = [int(i) for i in order if int(i) not in set(chosen)]
            chosen.extend(rest[: limit - len(chosen)])
        return chosen

    def _reason(
        self,
        catalogue: Catalogue,
        sources: list[str],
        row: int,
        vector: np.ndarray,
        positive_rows: np.ndarray,
    ) -> str:
        top = sources[0] if sources else "popular"
        if top in ("behavioural", "hybrid", "content") and len(positive_rows):
            anchor = int(positive_rows[int(np.argmax(catalogue.content[positive_rows] @ vector))])
            title = catalogue.titles[anchor] or catalogue.ids[anchor]
            return f"because you liked {title}"
        if top == "fresh" and row >= 0:
            tags = catalogue.tags[row]
            label = tags[0] if tags else (catalogue.categories[row] or "your feed")
            return f"new in {label}"
        category = catalogue.categories[row] if row >= 0 else None
        return f"popular in {category}" if category else "popular right now"

    def _degraded_feed(
        self,
        user_id: str,
        limit: int,
        served: set[bytes],
        page: int,
        filters: FeedFilters | None,
        history: History | None = None,
    ) -> FeedPage:
        """Popularity straight from the store, for when the vector index cannot answer."""
        from sqlalchemy import func, select

        if history is None:
            history = History.of(read_user_events(self.store, user_id, self.config.history_events))
        consumed = set(self._consumed(user_id, history))
        excluded = consumed | set((filters.exclude_ids or []) if filters else [])
        with self.store.read() as conn:
            query = (
                select(events_table.c.item_id, func.count().label("n"))
                .where(events_table.c.type.in_(["like", "play", "rating", "view"]))
                .group_by(events_table.c.item_id)
                .order_by(func.count().desc())
                .limit(limit + len(excluded) + len(served) + 50)
            )
            if filters and filters.categories:
                from recsys.store.schema import items as items_table

                query = query.join(
                    items_table, items_table.c.item_id == events_table.c.item_id
                ).where(items_table.c.category.in_(filters.categories))
            if filters and filters.tags:
                query = query.where(
                    events_table.c.item_id.in_(items_with_any_tag(conn.dialect.name, filters.tags))
                )
            rows = conn.execute(query).all()
        items = [
            FeedItem(item_id=i, score=float(n), sources=["popular"], reason="popular right now")
            for i, n in rows
            if i not in excluded and _item_hash(i) not in served
        ][:limit]
        return FeedPage(
            user_id=user_id,
            items=items,
            model_version=self.model_version,
            next_cursor=self._next_cursor(served, items, page),
            degraded=True,
        )

    # --- similar items ----------------------------------------------------------------------

    def similar(
        self, item_id: str, kind: SimilarKind = "content", limit: int = 20
    ) -> list[FeedItem]:
        if kind not in ("content", "behavioural", "blend"):
            raise ValueError("kind must be content, behavioural or blend")
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        state = self._require_state()
        catalogue = state.catalogue
        row = catalogue.index.get(item_id)
        if row is None:
            raise UnknownItem(item_id)
        title = catalogue.titles[row] or item_id
        exclude = ItemFilter(exclude_ids=[item_id])
        names = {
            "content": ["content"],
            "behavioural": ["behavioural"],
            "blend": ["content", "behavioural"],
        }[kind]
        parts: dict[str, dict[str, float]] = {}
        for source in names:
            vector = state.index.get_item_vectors([item_id], VECTOR_OF[source]).get(item_id)
            if vector is None:
                continue
            if source == "behavioural":
                vector = _unit(np.asarray(vector, dtype=np.float32))
            hits = state.index.search(VECTOR_OF[source], vector, limit * 2, exclude)
            values = (
                _normalise(np.array([h.score for h in hits]))
                if kind == "blend"
                else [h.score for h in hits]
            )
            for hit, value in zip(hits, values, strict=True):
                parts.setdefault(hit.item_id, {})[source] = float(value)
        ranked = sorted(parts.items(), key=lambda kv: -sum(kv[1].values()))[:limit]
        return [
            FeedItem(
                item_id=other,
                score=round(sum(breakdown.values()), 6),
                sources=sorted(breakdown, key=lambda s: -breakdown[s]),
                reason=f"similar to {title}",
                breakdown=breakdown,
            )
            for other, breakdown in ranked
        ]

    # --- writes ---------------------------------------------------------------------------

    def ingest_events(self, valid: pd.DataFrame) -> InsertResult:
        """Store validated events durably; the next feed request reads them."""
        with self.store.transaction() as conn:
            return insert_events(conn, valid)

    def upsert_items(self, valid: pd.DataFrame) -> tuple[int, int]:
        """Store items, embed them with the saved encoders and index them at once."""
        with self.store.transaction() as conn:
            counts = upsert_items(conn, valid)
        if valid.empty:
            return counts
        indexed: ServingState | None = None
        # A swap may land while this indexes (and the new state's catch-up may have read
        # the store before this commit became visible): index into each state that was live.
        while (state := self._state) is not None and state is not indexed:
            with state.lock:
                self._index_items(state, valid.reset_index(drop=True))
            indexed = state
        return counts

    def _index_items(self, state: ServingState, items: pd.DataFrame) -> None:
        catalogue = state.catalogue
        content = _unit(state.content_model.encode(items)).astype(np.float32)
        hybrid = state.hybrid.embed_items(items)
        ids = items[ITEM_ID].astype(str).tolist()
        als_columns = (
            state.als.items.to_internal(ids, strict=False) if state.als.items is not None else None
        )
        payloads = [
            {
                "item_id": item_id,
                "category": row.get("category"),
                "tags": list(row.get("tags") or []),
                "created_at": row.get("created_at")
                if row.get("created_at") == row.get("created_at")
                else None,
                "popularity": float(catalogue.popularity[catalogue.index[item_id]])
                if item_id in catalogue.index
                else 0.0,
            }
            for item_id, row in zip(ids, items.to_dict("records"), strict=True)
        ]
        # A point is replaced whole: items the ALS model knows keep their behavioural vector,
        # the others (new since training) have none yet. One upsert for each kind.
        known_als = (
            als_columns >= 0
            if als_columns is not None and state.als.item_factors is not None
            else np.zeros(len(ids), dtype=bool)
        )
        for part in (np.flatnonzero(known_als), np.flatnonzero(~known_als)):
            if not len(part):
                continue
            vectors: dict[str, np.ndarray] = {"content": content[part], "hybrid": hybrid[part]}
            if known_als[part[0]]:
                assert als_columns is not None and state.als.item_factors is not None
                vectors["als"] = state.als.item_factors[als_columns[part]]
            state.index.upsert_items([ids[i] for i in part], vectors, [payloads[i] for i in part])
        self._extend_catalogue(catalogue, items, content, state)

    @staticmethod
    def _extend_catalogue(
        catalogue: Catalogue, items: pd.DataFrame, content: np.ndarray, state: ServingState
    ) -> None:
        """Publish a new catalogue holding ``items`` (new ones appended, known ones updated).

        Copy on write: requests read the catalogue without a lock, so one must never see its
        lists and arrays mid-change (of different lengths). Rows only ever append, so a row
        number taken from an older catalogue stays valid in every later one. The lists and
        the id index are copied (a few ms at 100k items); the arrays grow inside buffers
        with spare rows that older catalogues' views do not reach, so an upsert does not
        copy every content vector (at 384 dimensions that was 47 ms and 300 MiB each). A
        known item's row is updated in place, which older catalogues see too: it is the
        same item, newer.
        """
        records = items.to_dict("records")
        new_ids = [str(r[ITEM_ID]) for r in records if str(r[ITEM_ID]) not in catalogue.index]
        new_ids = list(dict.fromkeys(new_ids))
        n_old, n_new = len(catalogue.ids), len(new_ids)
        ids = [*catalogue.ids, *new_ids]
        index = dict(catalogue.index)
        index.update({item_id: n_old + k for k, item_id in enumerate(new_ids)})
        titles, tags = [*catalogue.titles, *[""] * n_new], [*catalogue.tags, *[[]] * n_new]

        buffers = dict(catalogue.buffers)

        def grown(name: str, array: np.ndarray, fill: Any) -> np.ndarray:
            buffer = buffers.get(name)
            if buffer is None or array.base is not buffer or len(buffer) < n_old + n_new:
                # An eighth more room: the next thousands of new items append in place.
                capacity = n_old + n_new + max(1024, (n_old + n_new) // 8)
                buffer = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
                buffer[:n_old] = array
                buffers[name] = buffer
            buffer[n_old : n_old + n_new] = fill
            return buffer[: n_old + n_new]

        categories = grown("categories", catalogue.categories, None)
        created_at = grown("created_at", catalogue.created_at, np.nan)
        durations = grown("durations", catalogue.durations, np.nan)
        vectors = grown("content", catalogue.content, 0.0)
        als_known = grown("als_known", catalogue.als_known, -1)
        if state.als.items is not None and n_new:
            als_known[n_old:] = state.als.items.to_internal(new_ids, strict=False)
        for position, record in enumerate(records):
            row = index[str(record[ITEM_ID])]
            created = record.get("created_at")
            duration = record.get("duration_seconds")
            titles[row] = str(record.get("title") or "")
            tags[row] = list(record.get("tags") or [])
            categories[row] = record.get("category")
            created_at[row] = float(created) if created is not None else np.nan
            durations[row] = float(duration) if duration is not None else np.nan
            vectors[row] = content[position]
        state.catalogue = Catalogue(
            ids=ids,
            index=index,
            titles=titles,
            categories=categories,
            tags=tags,
            created_at=created_at,
            durations=durations,
            popularity=grown("popularity", catalogue.popularity, 0.0),
            trending=grown("trending", catalogue.trending, 0.0),
            content=vectors,
            als_known=als_known,
            buffers=buffers,
        )


def read_user_events(store: Store, user_id: str, limit: int) -> dict[str, np.ndarray]:
    with store.read() as conn:
        return user_event_columns(conn, user_id, limit=limit, columns=HISTORY_COLUMNS)


def _is_store_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    from recsys.store.engine import StoreUnavailable

    return isinstance(exc, (SQLAlchemyError, StoreUnavailable))


__all__ = [
    "FeedFilters",
    "FeedItem",
    "FeedPage",
    "InvalidCursor",
    "NoModel",
    "Recommender",
    "UnknownItem",
    "decode_cursor",
    "encode_cursor",
]
