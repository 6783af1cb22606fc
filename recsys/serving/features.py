"""What the learned ranker knows about each (user, candidate) pair, computed by one function
for both paths: a served page (the user now) and the nightly ranker training (the user as
of the start of their held-back events). The same code on both sides is what keeps the
features the ranker was trained on and the ones it is served equal.

Families (how a pick's explanation groups the contributions): one per candidate source
(its score and rank), ``item`` (popularity, recent activity, age), ``taste`` (likeness to
the user's likes, skips, categories and tags, the models' affinity scores) and ``user``
(how much history there is).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from recsys import registry
from recsys.models.activity import DAY, WINDOWS_DAYS, ItemActivity
from recsys.serving.catalogue import Catalogue
from recsys.serving.cursor import item_hash
from recsys.serving.sources import NEW_ITEMS_LIST, CandidateList, FeedRequest

# The user's likes (and skips) that taste features compare a candidate with.
TASTE_POSITIVES = 20
TASTE_NEGATIVES = 10
ITEM_FAMILY, TASTE_FAMILY, USER_FAMILY = "item", "taste", "user"
# The list name of a fold-in source's second list, near the user's latest likes.
RECENT_LIST = "recent"
NEWEST_LIST = "newest"


def feature_names() -> tuple[tuple[str, str], ...]:
    """(feature, family) of every feature the registered sources give."""
    named: list[tuple[str, str]] = []
    for source in registry.feed_sources():
        named += [(f"{source}_score", source), (f"{source}_rank", source)]
        if source in _fold_in_sources():
            named.append((f"{source}_recent_rank", source))
    for spec in registry.served():
        if spec.folds_in_user:
            named.append((f"{spec.name}_affinity", TASTE_FAMILY))
    named += [
        ("popularity_share", ITEM_FAMILY),
        *((f"events_{days}d", ITEM_FAMILY) for days in WINDOWS_DAYS),
        ("age_days", ITEM_FAMILY),
        ("history_length", USER_FAMILY),
        ("liked_items", USER_FAMILY),
        ("age_to_likes", TASTE_FAMILY),
        ("content_to_likes_max", TASTE_FAMILY),
        ("content_to_likes_mean", TASTE_FAMILY),
        ("content_to_skips_max", TASTE_FAMILY),
        ("category_affinity", TASTE_FAMILY),
        ("tag_affinity", TASTE_FAMILY),
    ]
    return tuple(named)


def _fold_in_sources() -> set[str]:
    return {s.source for s in registry.served() if s.folds_in_user and s.source}


_ITEM_ID, _SCORE = attrgetter("item_id"), attrgetter("score")


@dataclass
class Candidates:
    """The union of every list's items (first seen first), not yet served."""

    ids: list[str]
    rows: np.ndarray
    # Per list (in the order given), each hit's position in ``ids``; -1: already served.
    places: list[np.ndarray]


def union(
    request: FeedRequest, lists: list[CandidateList], served: set[bytes]
) -> Candidates | None:
    hit_ids = [list(map(_ITEM_ID, c.hits)) for c in lists]
    ids = list(dict.fromkeys(itertools.chain.from_iterable(hit_ids)))
    if served:
        ids = [i for i in ids if item_hash(i) not in served]
    if not ids:
        return None
    slot = {item_id: k for k, item_id in enumerate(ids)}
    places = [
        np.fromiter(map(slot.get, listed, itertools.repeat(-1)), np.int64, len(listed))
        for listed in hit_ids
    ]
    return Candidates(ids, request.state.catalogue.rows(ids), places)


def proposed_by(
    lists: list[CandidateList], candidates: Candidates, sources: tuple[str, ...]
) -> np.ndarray:
    """Per candidate and source, whether one of the source's lists proposed it (the page
    names these as an item's sources)."""
    present = np.zeros((len(candidates.ids), len(sources)), dtype=bool)
    for candidate_list, at in zip(lists, candidates.places, strict=True):
        present[at[at >= 0], sources.index(candidate_list.source)] = True
    return present


def candidate_features(
    request: FeedRequest,
    lists: list[CandidateList],
    candidates: Candidates,
    activity: ItemActivity,
    names: tuple[str, ...],
) -> np.ndarray:
    """One row per candidate, one column per name in ``names`` (NaN: missing, or a feature
    this ranker knows and the registry no longer gives)."""
    rows = candidates.rows
    n = len(candidates.ids)
    # One row per feature, so that each is contiguous while it is written; transposed once
    # at the end. A feature the ranker does not know is written to a scratch column.
    position = {name: j for j, name in enumerate(names)}
    table = np.full((len(names), n), np.nan)
    scratch: dict[str, np.ndarray] = {}

    def column(name: str) -> np.ndarray:
        """The named column, all missing until written."""
        j = position.get(name)
        if j is not None:
            return table[j]
        if name not in scratch:
            scratch[name] = np.full(n, np.nan)
        return scratch[name]

    for candidates_list, at in zip(lists, candidates.places, strict=True):
        if candidates_list.name == NEW_ITEMS_LIST:
            continue  # the page step's order for its new-item places, not a signal
        source = candidates_list.source
        is_recent = candidates_list.name == RECENT_LIST and source in _fold_in_sources()
        # A score is comparable within one kind of list only: the recent likes' list has
        # a rank of its own, and the newest items' list, ranked by creation time, a rank.
        rank_column = column(f"{source}_recent_rank" if is_recent else f"{source}_rank")
        score_column = (
            column(f"{source}_score")
            if candidates_list.name not in (RECENT_LIST, NEWEST_LIST)
            else None
        )
        # Scores relative to the list's best: a model refitted on more events (the served
        # version against the ranker's training fit) scores everything higher, and a raw
        # score would drift past the thresholds the trees learned.
        hits = candidates_list.hits
        if not hits:
            continue
        scores = np.fromiter(map(_SCORE, hits), dtype=np.float64, count=len(hits))
        top = float(np.abs(scores).max())
        scale = 1.0 / top if top > 1e-12 else 0.0
        found = np.flatnonzero(at >= 0)
        # The best rank and score an item has in the list (fmin/fmax pass over NaN).
        np.fmin.at(rank_column, at[found], found.astype(np.float64))
        if score_column is not None:
            np.fmax.at(score_column, at[found], scores[found] * scale)

    state, catalogue = request.state, request.state.catalogue
    safe = np.maximum(rows, 0)
    known = rows >= 0
    for name, model in state.fold_in_models().items():
        vector = request.user_vectors.get(name)
        if vector is None:
            continue
        model_rows = catalogue.model_rows[name][safe]
        usable = known & (model_rows >= 0)
        affinity = column(f"{name}_affinity")
        raw = model.item_factors[model_rows[usable]] @ vector
        # Relative to the best candidate's, for the reason the scores are.
        top = float(np.abs(raw).max()) if len(raw) else 0.0
        affinity[usable] = raw / top if top > 1e-12 else 0.0

    # A share of every positive (user, item) pair, not a count: the ranker is trained on
    # the events before its labels and serves on all of them (and on more every night),
    # so a raw count would drift past the thresholds its trees learned.
    popularity = column("popularity_share")
    total = catalogue.popularity_total
    popularity[known] = catalogue.popularity[rows[known]] / total if total > 0 else 0.0
    described = activity.describe(rows, request.moment)
    for j, days in enumerate(WINDOWS_DAYS):
        column(f"events_{days}d")[:] = described[:, j]
    age = (request.moment - birth_times(catalogue, rows, described[:, -1])) / DAY
    column("age_days")[:] = age
    # How the item's age compares with the ages of what the user liked lately: some
    # people watch what is new, others the classics (log days, against the median).
    liked = recent_liked_rows(request)
    if len(liked):
        liked_born = birth_times(catalogue, liked, activity.describe(liked, request.moment)[:, -1])
        liked_age = np.log1p(np.maximum((request.moment - liked_born) / DAY, 0.0))
        if np.isfinite(liked_age).any():
            usual = float(np.nanmedian(liked_age))
            column("age_to_likes")[:] = np.log1p(np.maximum(age, 0.0)) - usual
    column("history_length")[:] = float(len(request.history))
    column("liked_items")[:] = float(len(request.positives))
    _taste(request, rows, known, column)
    return np.ascontiguousarray(table.T)


def recent_liked_rows(request: FeedRequest) -> np.ndarray:
    """Catalogue rows of the user's latest likes that taste is judged by (known items only,
    up to ``TASTE_POSITIVES``)."""
    liked = request.positive_rows[:TASTE_POSITIVES]
    return liked[liked >= 0]


def birth_times(catalogue: Catalogue, rows: np.ndarray, first_seen: np.ndarray) -> np.ndarray:
    """When each row's item came to be: its creation time when the catalogue has one, else
    ``first_seen`` (its first positive event; NaN: neither, or an unknown row)."""
    created = np.where(rows >= 0, catalogue.created_at[np.maximum(rows, 0)], np.nan)
    return np.where(np.isfinite(created), created, first_seen)


def _taste(
    request: FeedRequest,
    rows: np.ndarray,
    known: np.ndarray,
    get: Callable[[str], np.ndarray],
) -> None:
    """Likeness to the user's recent likes (content, category, tags) and skips."""
    catalogue, history = request.state.catalogue, request.history
    liked = recent_liked_rows(request)
    vectors = catalogue.content[np.maximum(rows, 0)]
    if len(liked):
        similarity = vectors @ catalogue.content[liked].T
        get("content_to_likes_max")[known] = similarity.max(axis=1)[known]
        get("content_to_likes_mean")[known] = similarity.mean(axis=1)[known]
        liked_categories = Counter(catalogue.categories[liked].tolist())
        liked_categories.pop(None, None)
        categories = catalogue.categories[np.maximum(rows, 0)].tolist()
        share = np.array([liked_categories.get(c, 0) for c in categories], dtype=np.float64)
        get("category_affinity")[known] = (share / len(liked))[known]
        liked_tags = Counter(tag for row in liked.tolist() for tag in catalogue.tags[row])
        if liked_tags:
            # Per candidate, the mean over its tags of how many recent likes carry each:
            # every candidate's tags in one flat run, summed per candidate by bincount.
            tags = catalogue.tags
            tag_lists = [tags[r] if r >= 0 else [] for r in rows.tolist()]
            lengths = np.fromiter(map(len, tag_lists), np.int64, len(tag_lists))
            counts = np.fromiter(
                map(liked_tags.get, itertools.chain.from_iterable(tag_lists), itertools.repeat(0)),
                np.float64,
                int(lengths.sum()),
            )
            sums = np.bincount(
                np.repeat(np.arange(len(rows)), lengths), weights=counts, minlength=len(rows)
            )
            affinity = np.divide(sums, lengths, out=np.zeros(len(rows)), where=lengths > 0)
            get("tag_affinity")[known] = (affinity / len(liked))[known]
    rejected = ((history.types == "skip") | (history.types == "dislike")) & (history.rows >= 0)
    skipped = history.rows[np.flatnonzero(rejected)[:TASTE_NEGATIVES]]
    if len(skipped):
        similarity = vectors @ catalogue.content[skipped].T
        get("content_to_skips_max")[known] = similarity.max(axis=1)[known]
