"""Candidate sources: each proposes scored items for a request. The vector sources' queries
go to the index as one batch (one round trip, one translation of the seen-items filter);
the catalogue sources rank in memory.

A source is a name (the blend column its candidates feed) and ``lists(request)``: the
candidate lists it wants, each either a vector-index query or hits it computed itself.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from recsys import registry
from recsys.config import FeedConfig, Settings
from recsys.registry import ModelSpec
from recsys.serving.catalogue import Catalogue
from recsys.serving.history import History, consumed
from recsys.serving.state import ServingState
from recsys.serving.types import FeedFilters
from recsys.store import Store
from recsys.vectors.base import BatchQuery, Hit, ItemFilter, LikeExamples, Nearest

POSITIVE_EXAMPLES = 10
NEGATIVE_EXAMPLES = 5
# A fold-in source also asks for items close to the user's few latest likes: what someone
# liked last predicts what they want next better than their whole history does (see
# FeedConfig.recent_weight).
RECENT_POSITIVES = 5
# "Fresh" means created in the week before the version's newest event.
FRESH_DAYS = 7
# The fresh source's list for the page's places for new items (FeedConfig.new_item_slots):
# items nobody had liked when the version was trained, in the order a model that embeds
# items from their fields likes them for the user. The page step reads its order; the
# rankers see its items as candidates but take no score or rank from it.
NEW_ITEMS_LIST = "new items"
# Candidates per place asked of that list (beyond those already served), and the
# shortlist by content that the new-item model reorders (see FreshSource.new_items).
NEW_ITEM_CANDIDATES = 10
NEW_ITEM_SHORTLIST = 600


@dataclass
class FeedRequest:
    """What every source and the ranker read about one page being built."""

    state: ServingState
    settings: Settings
    config: FeedConfig
    user_id: str
    history: History
    # Candidates per list: enough to cover the served items and a page.
    n: int
    item_filter: ItemFilter
    filters: FeedFilters | None
    excluded: set[str]
    # Items the user's history nets positive / negative, most recent first.
    positives: list[str]
    negatives: list[str]
    positive_rows: np.ndarray
    # The moment the ranker's features describe: the version's newest event when serving
    # (its item activity is counted up to then), the start of the user's held-back events
    # when the nightly job trains the ranker.
    moment: float = 0.0
    # A replay of the user as of a past moment (None: now).
    as_of: float | None = None
    # Ask every source, also those the hand blend gives no weight (the learned ranker
    # weighs them itself).
    every_source: bool = False
    # The user's folded-in vector per model, as the model sources computed it.
    user_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    # Items already served on earlier pages of this feed (known by hash only).
    served_count: int = 0

    @property
    def warmth(self) -> float:
        """0 for a user without history, 1 from ``warm_after_events`` events on."""
        return min(1.0, len(self.history) / max(self.config.warm_after_events, 1))


def feed_request(
    store: Store,
    settings: Settings,
    state: ServingState,
    user_id: str,
    history: History,
    limit: int,
    served: set[bytes],
    filters: FeedFilters | None,
    *,
    until: float | None = None,
    every_source: bool = False,
    config: FeedConfig | None = None,
    hidden: frozenset[str] = frozenset(),
) -> FeedRequest:
    """What the sources and the ranker read about one page: the user's likes, what to
    exclude, how many candidates to ask for. ``until`` describes the user as of a past
    moment (``history`` must have been read up to it too, and without the ``hidden``
    items): the ranker's training."""
    config = config or settings.feed
    catalogue = state.catalogue
    exclude = list(
        dict.fromkeys(
            [
                *consumed(
                    store,
                    user_id,
                    history,
                    config.history_events,
                    config.seen_view_seconds,
                    until=until,
                    hidden=hidden,
                ),
                *((filters.exclude_ids or []) if filters else []),
            ]
        )
    )
    positives, negatives = history.liked_and_disliked()
    # Likes of items the catalogue does not hold cannot steer anything: a user with only
    # those is cold.
    positives = [item for item in positives if item in catalogue.index]
    return FeedRequest(
        state=state,
        settings=settings,
        config=config,
        user_id=user_id,
        history=history,
        # Served items are known only by hash: fetch enough extra candidates to cover
        # them, and never fewer than a page, or a filtered page of 100 comes back short.
        n=max(config.candidates_per_source, limit) + len(served),
        item_filter=ItemFilter(
            categories=(filters.categories or None) if filters else None,
            tags=(filters.tags or None) if filters else None,
            exclude_ids=exclude or None,
        ),
        filters=filters,
        excluded=set(exclude),
        positives=positives,
        negatives=negatives,
        positive_rows=catalogue.rows(positives),
        moment=state.trained_at if until is None else until,
        as_of=until,
        every_source=every_source,
        served_count=len(served),
    )


@dataclass
class CandidateList:
    """One list of candidates for the blend column ``source``, counted at ``share``."""

    name: str
    source: str
    share: float = 1.0
    query: BatchQuery | None = None
    hits: list[Hit] = field(default_factory=list)


class CandidateSource(ABC):
    name: str

    @abstractmethod
    def lists(self, request: FeedRequest) -> list[CandidateList]:
        """The lists this source proposes for ``request`` (none when it has nothing)."""


class ModelSource(CandidateSource):
    """A registered model's vectors: nearest to the user's folded-in vector, or like the
    user's recent positives and unlike their negatives."""

    def __init__(self, spec: ModelSpec) -> None:
        assert spec.source is not None
        self.spec = spec
        self.name = spec.source

    def lists(self, request: FeedRequest) -> list[CandidateList]:
        spec, n, item_filter = self.spec, request.n, request.item_filter
        if spec.name not in request.state.models:
            # A version trained before this model was registered has no vectors for it.
            return []
        if not spec.folds_in_user:
            if not len(request.positive_rows):
                return []
            query = LikeExamples(
                spec.vector,
                request.positives[:POSITIVE_EXAMPLES],
                request.negatives[:NEGATIVE_EXAMPLES],
                n,
                item_filter,
            )
            return [CandidateList(spec.name, self.name, query=query)]
        lists = []
        vector = self.user_vector(request)
        if vector is not None:
            request.user_vectors[spec.name] = vector
            lists.append(
                CandidateList(
                    self.name, self.name, query=Nearest(spec.vector, vector, n, item_filter)
                )
            )
        if request.positives and request.config.recent_weight > 0:
            recent = LikeExamples(
                spec.vector, request.positives[:RECENT_POSITIVES], (), n, item_filter
            )
            lists.append(
                CandidateList("recent", self.name, request.config.recent_weight, query=recent)
            )
        return lists

    def user_vector(self, request: FeedRequest) -> np.ndarray | None:
        """The user's vector folded in from their latest events, else the stored one."""
        state, history = request.state, request.history
        model = state.models.get(self.spec.name)
        known = history.rows >= 0
        if model is not None and known.any():
            columns = state.catalogue.model_rows[self.spec.name][history.rows[known]]
            usable = columns >= 0
            if usable.any():
                weights = history.weights[known][usable]
                if np.any(weights > 0):
                    vector: np.ndarray = model.fold_in_user(columns[usable], weights)
                    return vector
        return state.index.get_user_vector(request.user_id, self.spec.vector)


class NeighbourSource(CandidateSource):
    """An item-to-item model: the user's live positive history (net signal weight per
    item) times its neighbour matrix, filtered in memory like the catalogue sources."""

    def __init__(self, spec: ModelSpec) -> None:
        assert spec.source is not None
        self.spec = spec
        self.name = spec.source

    def lists(self, request: FeedRequest) -> list[CandidateList]:
        model = request.state.models.get(self.spec.name)
        if model is None or not len(request.history):
            return []
        if not request.every_source and not self.weighed(request):
            return []
        # Catalogue rows to model columns and back through one map per state: no item id
        # is looked up per request (a few thousand scored items cost 2 ms that way).
        column_of_row, row_of_column = request.state.neighbour_map(self.spec.name)
        history = request.history
        in_map = (history.rows >= 0) & (history.rows < len(column_of_row))
        columns = np.where(in_map, column_of_row[np.where(in_map, history.rows, 0)], -1)
        known = columns >= 0
        if not known.any():
            return []
        # Net weight per item: a like then a dislike of one item is no like.
        codes, unique = np.unique(columns[known], return_inverse=True)
        net = np.bincount(unique, weights=history.weights[known], minlength=len(codes))
        items, scores = model.score_history(codes, net)
        if not len(items):
            return []
        hits = self.top(request, row_of_column[items], scores)
        return [CandidateList(self.spec.name, self.name, hits=hits)]

    def weighed(self, request: FeedRequest) -> bool:
        """Whether the blend gives this source any weight (else asking it is wasted)."""
        return any(blend_weights(request.config, self.name))

    @staticmethod
    def top(request: FeedRequest, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        """The best ``request.n`` admissible catalogue ``rows`` by ``scores`` (-1: skip)."""
        catalogue = request.state.catalogue
        keep = rows >= 0
        keep[keep] = catalogue.admissible(rows[keep], request.excluded, request.filters)
        order = np.flatnonzero(keep)[np.argsort(-scores[keep], kind="stable")][: request.n]
        return [Hit(catalogue.ids[rows[i]], float(scores[i]), {}) for i in order]


class FreshSource(CandidateSource):
    """New items: near the user's content profile, or simply the newest for a cold user."""

    name = registry.FRESH_SOURCE

    def lists(self, request: FeedRequest) -> list[CandidateList]:
        # An item dated in the future is not new before its date; a replay's "now" is the
        # moment it replays.
        now = time.time() if request.as_of is None else request.as_of
        if not len(request.positive_rows):
            catalogue = request.state.catalogue

            def newest() -> np.ndarray:
                created = catalogue.created_at
                return np.where(created <= now, created, -np.inf)  # NaN compares False

            hits = catalogue.top(
                "newest",
                newest,
                request.n,
                request.excluded,
                request.filters,
                depends_on=catalogue.released(now),
            )
            return [CandidateList("newest", self.name, hits=hits)]
        lists = []
        vector = self.content_vector(request)
        if vector is not None:
            fresh_filter = dataclasses.replace(
                request.item_filter,
                created_after=request.moment - FRESH_DAYS * 86_400,
                created_until=now,
            )
            query = Nearest(registry.CONTENT_MODEL, vector, request.n, fresh_filter)
            lists.append(CandidateList(self.name, self.name, query=query))
        new_items = self.new_items(request, vector)
        if new_items is not None:
            lists.append(new_items)
        return lists

    def new_items(self, request: FeedRequest, profile: np.ndarray | None) -> CandidateList | None:
        """The page's new-item candidates: items no one had liked at training time (the
        index filters on the trained popularity). The ``NEW_ITEM_SHORTLIST`` of them most
        like the user's content profile, ordered by nearness to the user's stored vector of
        ``new_item_model`` (content's order alone where that model has no vector for the
        user, or the version no such model); one query, answered in the index. ``profile``
        is the user's content profile (``content_vector``), None without one.

        Neither alone: on the cold-item protocol's validation split of ml-latest-small
        (items with no event, among them the test part's held-out items, which can never be
        relevant there), the hybrid's user vector alone put the same two items without
        genres first for most users (precision@1 0.002), content alone reached 0.018, a
        shortlist of 150, 300, 600 or 1000 reordered 0.049, 0.070, 0.080 and 0.082.
        """
        config = request.config
        if config.new_item_slots <= 0 or not request.positives or profile is None:
            return None
        n = min(request.n, NEW_ITEM_CANDIDATES * config.new_item_slots + request.served_count)
        new_filter = dataclasses.replace(request.item_filter, max_popularity=0.0)
        like_content = Nearest(registry.CONTENT_MODEL, profile, NEW_ITEM_SHORTLIST, new_filter)
        query = Nearest(registry.CONTENT_MODEL, profile, n, new_filter)
        model = config.new_item_model
        if model in request.state.models and registry.get(model).publishes_vectors:
            vector_name = registry.get(model).vector
            vector = request.state.index.get_user_vector(request.user_id, vector_name)
            if vector is not None:
                query = Nearest(vector_name, vector, n, within=like_content)
        return CandidateList(NEW_ITEMS_LIST, self.name, share=0.0, query=query)

    @staticmethod
    def content_vector(request: FeedRequest) -> np.ndarray | None:
        rows, weights = request.history.rows, request.history.weights
        keep = rows >= 0
        if not keep.any():
            return None
        negative_weight = request.settings.content.negative_weight
        w = np.where(weights[keep] > 0, weights[keep], weights[keep] * negative_weight)
        vector = w @ request.state.catalogue.content[rows[keep]]
        norm = float(np.linalg.norm(vector))
        return (vector / norm).astype(np.float32) if norm > 1e-9 else None


class PopularSource(CandidateSource):
    """The popularity model's scores plus what is trending now."""

    name = registry.POPULAR_SOURCE

    def lists(self, request: FeedRequest) -> list[CandidateList]:
        hits = popular_hits(request.state.catalogue, request.n, request.excluded, request.filters)
        return [CandidateList(self.name, self.name, hits=hits)]


def popular_hits(
    catalogue: Catalogue, n: int, exclude: set[str], filters: FeedFilters | None
) -> list[Hit]:
    """The ``n`` most popular items now (training-time popularity plus twice the trend)."""

    def score() -> np.ndarray:
        return catalogue.popularity + 2.0 * catalogue.trending

    return catalogue.top("popular", score, n, exclude, filters)


def blend_weights(config: FeedConfig, source: str) -> tuple[float, float]:
    """A source's (warm, cold) blend weights: the feed config's, else its model's default."""
    spec = next((s for s in registry.served() if s.source == source), None)
    warm, cold = spec.default_weights if spec is not None else (0.0, 0.0)
    return config.warm_weights.get(source, warm), config.cold_weights.get(source, cold)


def default_sources() -> list[CandidateSource]:
    """One source per served model (registry order), then fresh and popular."""
    return [
        *(
            ModelSource(spec) if spec.publishes_vectors else NeighbourSource(spec)
            for spec in registry.served()
        ),
        FreshSource(),
        PopularSource(),
    ]


def gather(sources: list[CandidateSource], request: FeedRequest) -> list[CandidateList]:
    """Every source's lists with their hits, the index's queries answered in one batch."""
    lists = [candidates for source in sources for candidates in source.lists(request)]
    asked = [candidates for candidates in lists if candidates.query is not None]
    if asked:
        answers = request.state.index.query_batch([c.query for c in asked])  # type: ignore[misc]
        for candidates, hits in zip(asked, answers, strict=True):
            candidates.hits = hits
    return lists
