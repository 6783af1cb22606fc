"""The recommender: the public face of serving. One request builds one page:

1. read the user's recent events from the store (so a like is felt on the next page);
2. gather candidates from every source (each registered model's vectors, fresh items,
   popularity), with consumed items, request filters and the page history pushed down
   into one batch of vector-index queries;
3. rank them: the version's learned ranker (``learned.LearnedRanker``) when it has one,
   else the adaptive blend (``ranking.BlendRanker``);
4. demote items close to recent skips, pick the page with MMR and a per-category cap, and
   explain each pick (``page``).

Everything version-specific lives in one ``ServingState`` that ``refresh()`` swaps
atomically when a new version is published (``live.LiveVersion``).
"""

from __future__ import annotations

import logging
import time

import pandas as pd
from threadpoolctl import threadpool_limits

from recsys.config import FeedConfig, Settings
from recsys.forget import Forgotten, forget_user
from recsys.serving.cursor import decode_cursor, next_cursor, request_key
from recsys.serving.degraded import degraded_feed
from recsys.serving.experiments import Experiment, Variant, experiment_from_row
from recsys.serving.history import History, consumed, user_history
from recsys.serving.impressions import ImpressionLog, impression_rows, new_feed_id
from recsys.serving.items import index_items
from recsys.serving.learned import LearnedRanker
from recsys.serving.live import LiveVersion
from recsys.serving.page import build_page
from recsys.serving.ranking import BlendRanker, Ranker
from recsys.serving.similar import check_similar_request, similar_items
from recsys.serving.sources import (
    CandidateSource,
    FeedRequest,
    default_sources,
    feed_request,
    gather,
)
from recsys.serving.state import ServingState
from recsys.serving.types import (
    FeedFilters,
    FeedItem,
    FeedPage,
    NoModel,
    SimilarKind,
    SimilarPage,
    UnknownItem,
)
from recsys.store import Store
from recsys.store.catalog import known_items, load_items, retire_items, upsert_items
from recsys.store.events import InsertResult, insert_events
from recsys.store.experiments import get_experiment, running_experiment_name
from recsys.vectors import VectorStore, open_vector_store

log = logging.getLogger("recsys.feed")


class Recommender:
    """Feeds, similar items, and the write paths that must be felt at once."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        vectors: VectorStore,
        *,
        sources: list[CandidateSource] | None = None,
        ranker: Ranker | None = None,
        impressions: ImpressionLog | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.config: FeedConfig = settings.feed
        self.vectors = vectors
        self.live = LiveVersion(store, settings, vectors)
        self.sources = sources
        # None: the version's learned ranker where it has one, else the blend.
        self.ranker = ranker
        self._learned, self._blend = LearnedRanker(), BlendRanker()
        # Where served answers are recorded (None: nothing is, and answers carry no feed_id).
        self.impressions = impressions
        # The running experiment, followed from the store by ``sync_experiment``.
        self.experiment: Experiment | None = None
        if self.config.blas_threads:
            # Process-wide by nature (BLAS pools are global); training sets its own.
            threadpool_limits(self.config.blas_threads, user_api="blas")

    @classmethod
    def open(
        cls, store: Store, settings: Settings, *, record_impressions: bool | None = None
    ) -> Recommender:
        """A recommender on the configured store and vectors. ``record_impressions``
        (default: ``settings.impressions.enabled``) is for what serves users; offline
        replays and operators' look-ups pass False."""
        config = settings.impressions
        record = config.enabled if record_impressions is None else record_impressions
        impressions = (
            ImpressionLog(
                store, capacity_rows=config.queue_rows, flush_seconds=config.flush_seconds
            )
            if record
            else None
        )
        recommender = cls(store, settings, open_vector_store(settings), impressions=impressions)
        recommender.refresh()
        try:
            recommender.sync_experiment()
        except Exception as exc:  # the store is down: the refresh loop tries again
            log.warning("could not read the running experiment: %s", exc)
        return recommender

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def model_version(self) -> str | None:
        state = self.live.current
        return state.version if state else None

    @property
    def state(self) -> ServingState | None:
        """The state serving now (None before any version is live)."""
        return self.live.current

    def refresh(self) -> bool:
        """Load the live version if it changed. Cheap when nothing changed; thread-safe."""
        return self.live.refresh()

    def sync_items(self) -> int:
        """Index the items other processes (or this one) wrote since the serving version
        last looked; returns how many. One indexed range read when there are none."""
        synced = self.live.sync_items()
        for state in list(self.live.pinned.values()):
            synced += self.live.sync_items(state)
        return synced

    def sync_experiment(self) -> bool:
        """Follow the running experiment, which any process may start or stop: one
        indexed read of its name when nothing changed. True when it changed."""
        with self.store.read() as conn:
            name = running_experiment_name(conn)
            if name == (self.experiment.name if self.experiment else None):
                return False
            row = get_experiment(conn, name) if name is not None else None
        experiment = experiment_from_row(row) if row is not None else None
        self.live.pin(experiment.pinned_versions() if experiment else set())
        self.experiment = experiment
        log.info("experiment %s", f"{experiment.name} running" if experiment else "none running")
        return True

    def ready(self) -> dict[str, bool]:
        status = {"store": False, "index": False, "model": self.live.current is not None}
        try:
            with self.store.read() as conn:
                conn.exec_driver_sql("select 1")
            status["store"] = True
        except Exception:
            status["store"] = False
        state = self.live.current
        if state is not None:
            try:
                state.index.count()
                status["index"] = True
            except Exception:
                status["index"] = False
        return status

    def close(self) -> None:
        if self.impressions is not None:
            self.impressions.close()
        self.live.close()

    def require_state(self, version: str | None = None) -> ServingState:
        """The live state, or ``version``'s when an experiment pins it and it is loaded."""
        if version is not None and (pinned := self.live.pinned.get(version)) is not None:
            return pinned
        state = self.live.current
        if state is None:
            self.refresh()
            state = self.live.current
        if state is None:
            raise NoModel("no model has been published yet: run `recsys train`")
        return state

    # --- reads -----------------------------------------------------------------------------

    def history(self, state: ServingState, user_id: str, until: float | None = None) -> History:
        """The user's recent events (before ``until``), weighed, newest first."""
        return user_history(
            self.store,
            self.settings,
            state.catalogue,
            state.reference_dwell,
            user_id,
            self.config.history_events,
            until=until,
        )

    def consumed(self, user_id: str, history: History) -> list[str]:
        """Items that never come back to this user."""
        config = self.config
        return consumed(
            self.store, user_id, history, config.history_events, config.seen_view_seconds
        )

    def feed(
        self,
        user_id: str,
        limit: int = 20,
        cursor: str | None = None,
        filters: FeedFilters | None = None,
        as_of: float | None = None,
    ) -> FeedPage:
        """A page of the user's feed. ``as_of`` replays the user as of a past moment: their
        events before it, item activity counted up to it (offline evaluation asks each user
        as of the start of their held-out events, as a live service would be asked then)."""
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        key = request_key(user_id, filters)
        served, page = decode_cursor(cursor, key) if cursor else (set(), 0)
        variant, config = self.variant_for(user_id, as_of)
        try:
            state = self.require_state(variant.model_version if variant is not None else None)
        except NoModel:
            degraded = self.degraded_feed(user_id, limit, served, page, filters)
            return self._shown(degraded, "degraded", variant, as_of)
        history = self.history(state, user_id, until=as_of)
        try:
            ranker = self.ranker_for(state, history, config)
            request = self.request(
                state, user_id, history, limit, served, filters, as_of, config=config
            )
            items = self.rank(request, served, limit, ranker)
        except Exception as exc:
            if _is_store_error(exc):
                raise
            log.warning("vector index unavailable (%s); serving popularity", exc)
            self.live.index_error = f"{type(exc).__name__}: {exc}"
            degraded = self.degraded_feed(user_id, limit, served, page, filters, history)
            return self._shown(degraded, "degraded", variant, as_of)
        result = FeedPage(
            user_id=user_id,
            items=items,
            model_version=state.version,
            next_cursor=next_cursor(served, (i.item_id for i in items), page, key),
            degraded=False,
        )
        return self._shown(result, _ranker_name(ranker, variant), variant, as_of)

    def variant_for(
        self, user_id: str, as_of: float | None = None
    ) -> tuple[Variant | None, FeedConfig]:
        """The running experiment's variant for the user (None outside one) and the feed
        settings it serves with. A replay of the past (offline evaluation) is in none."""
        experiment = self.experiment if as_of is None else None
        variant = experiment.assign(user_id) if experiment is not None else None
        config = variant.feed_config(self.config) if variant is not None else self.config
        return variant, config

    def _shown(
        self, page: FeedPage, ranker: str, variant: Variant | None, as_of: float | None
    ) -> FeedPage:
        """The page as answered: its variant, and (when impressions are recorded and it is
        not a replay) a feed_id under which its items are queued as impressions."""
        experiment = self.experiment
        page.variant = variant.name if variant is not None else None
        if self.impressions is None or as_of is not None:
            return page
        page.feed_id = new_feed_id()
        self.impressions.record(
            impression_rows(
                page.feed_id,
                page.items,
                user_id=page.user_id,
                surface="feed",
                model_version=page.model_version,
                ranker=ranker,
                experiment=experiment.name if variant is not None and experiment else None,
                variant=page.variant,
                shown_at=time.time(),
            )
        )
        return page

    def rank(
        self,
        request: FeedRequest,
        served: set[bytes],
        limit: int,
        ranker: Ranker | None = None,
    ) -> list[FeedItem]:
        """One page for a request: candidates, ranking, the page."""
        lists = gather(self.sources or default_sources(), request)
        ranker = ranker or self.ranker_for(request.state, request.history, request.config)
        ranked = ranker.rank(request, lists, served)
        return build_page(request, ranked, limit) if ranked is not None else []

    def request(
        self,
        state: ServingState,
        user_id: str,
        history: History,
        limit: int,
        served: set[bytes],
        filters: FeedFilters | None,
        as_of: float | None = None,
        *,
        config: FeedConfig | None = None,
    ) -> FeedRequest:
        """What the sources and the ranker read about one page."""
        config = config or self.config
        return feed_request(
            self.store,
            self.settings,
            state,
            user_id,
            history,
            limit,
            served,
            filters,
            until=as_of,
            every_source=isinstance(self.ranker_for(state, history, config), LearnedRanker),
            config=config,
        )

    def ranker_for(
        self,
        state: ServingState,
        history: History | None = None,
        config: FeedConfig | None = None,
    ) -> Ranker:
        """The ranker given to this recommender, else the version's learned ranker when it
        has one, the settings allow it and the user has ``ranker_min_likes`` likes (it
        learned from users with a history; the blend's cold weights serve new users),
        else the hand blend."""
        config = config or self.config
        if self.ranker is not None:
            return self.ranker
        if state.ranker is None or config.ranker != "auto":
            return self._blend
        if history is not None:
            likes = len(history.liked_and_disliked()[0])
            if likes < config.ranker_min_likes:
                return self._blend
        return self._learned

    def degraded_feed(
        self,
        user_id: str,
        limit: int,
        served: set[bytes],
        page: int,
        filters: FeedFilters | None,
        history: History | None = None,
    ) -> FeedPage:
        """Popularity straight from the store, for when the vector index cannot answer."""
        return degraded_feed(
            self.store,
            self.config,
            user_id,
            limit,
            served,
            page,
            filters,
            model_version=self.model_version,
            history=history,
        )

    def similar(
        self, item_id: str, kind: SimilarKind = "content", limit: int = 20
    ) -> list[FeedItem]:
        check_similar_request(kind, limit)
        return similar_items(self.require_state(), item_id, kind, limit)

    def similar_page(
        self,
        item_id: str,
        kind: SimilarKind = "content",
        limit: int = 20,
        user_id: str | None = None,
    ) -> SimilarPage:
        """Similar items as answered to a client: with a feed_id, its items recorded as
        impressions (of ``user_id`` when the client says who is looking)."""
        if user_id is not None and (not isinstance(user_id, str) or not user_id):
            raise ValueError("user_id must be a non-empty string")
        check_similar_request(kind, limit)
        state = self.require_state()
        items = similar_items(state, item_id, kind, limit)
        page = SimilarPage(item_id=item_id, items=items, model_version=state.version)
        if self.impressions is not None:
            page.feed_id = new_feed_id()
            self.impressions.record(
                impression_rows(
                    page.feed_id,
                    items,
                    user_id=user_id,
                    surface="similar",
                    model_version=state.version,
                    ranker=kind,
                    experiment=None,
                    variant=None,
                    shown_at=time.time(),
                )
            )
        return page

    # --- writes ---------------------------------------------------------------------------

    def ingest_events(self, valid: pd.DataFrame) -> InsertResult:
        """Store validated events durably; the next feed request reads them."""
        with self.store.transaction() as conn:
            return insert_events(conn, valid)

    def forget_user(self, user_id: str) -> Forgotten:
        """Erase the user's events, profile and vectors; their next page is a cold one."""
        return forget_user(self.store, self.vectors, user_id)

    def upsert_items(self, valid: pd.DataFrame) -> tuple[int, int]:
        """Store items, embed them with the saved encoders and index them at once."""
        with self.store.transaction() as conn:
            counts = upsert_items(conn, valid)
        if not valid.empty:
            self._index_into_live(valid)
        return counts

    def retire_items(self, item_ids: list[str]) -> int:
        """Take items out of circulation at once: out of every feed and similar-items list,
        and out of the next version. Returns how many were in circulation; raises
        UnknownItem for an id neither the catalogue nor any event knows."""
        with self.store.transaction() as conn:
            unknown = set(item_ids) - known_items(conn, item_ids)
            if unknown:
                raise UnknownItem(sorted(unknown)[0])
            retired = retire_items(conn, item_ids)
            changed = load_items(conn, item_ids)
        self._index_into_live(changed)
        return retired

    def _index_into_live(self, items: pd.DataFrame) -> None:
        indexed: ServingState | None = None
        # A swap may land while this indexes (and the new state's catch-up may have read
        # the store before this commit became visible): index into each state that was live.
        while (state := self.live.current) is not None and state is not indexed:
            with state.lock:
                index_items(state, items)
            indexed = state


def _ranker_name(ranker: Ranker, variant: Variant | None) -> str:
    """How a page was ordered, as its impressions record it."""
    if variant is not None and variant.ranker == "popularity":
        return "popularity"
    if isinstance(ranker, LearnedRanker):
        return "learned"
    return "blend" if isinstance(ranker, BlendRanker) else type(ranker).__name__.lower()[:16]


def _is_store_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    from recsys.store.engine import StoreUnavailable

    return isinstance(exc, (SQLAlchemyError, StoreUnavailable))
