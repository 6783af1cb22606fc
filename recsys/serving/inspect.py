"""Why a user gets their feed: the page, every candidate list behind it, and why each
candidate that is not on the page was left off. For operators (the web console); the
page is built by the same steps as ``Recommender.feed`` and records no impression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.serving.cursor import decode_cursor, item_hash, next_cursor, request_key
from recsys.serving.history import History
from recsys.serving.learned import LearnedRanker
from recsys.serving.page import build_page, fatigue
from recsys.serving.sources import default_sources, gather
from recsys.serving.types import FeedFilters, FeedItem

if TYPE_CHECKING:
    from recsys.serving.recommender import Recommender

# Why a candidate is not on the page.
ON_PAGE = "on the page"
FATIGUE = "fatigue"  # it would have made the page without the penalty for recent skips
DIVERSITY = "diversity"  # it ranked high enough, but MMR or the category cap passed it over
BELOW = "below the page"  # others scored higher
SERVED = "served on an earlier page"  # the cursor says so


@dataclass
class SourceList:
    """One candidate list as its source proposed it, best first."""

    name: str
    source: str
    items: list[tuple[str, float]]


@dataclass
class Candidate:
    item_id: str
    score: float  # the ranker's score, after the fatigue penalty
    rank: int  # 0-based, by that score
    verdict: str
    position: int | None = None  # on the page (0-based)
    penalty: float = 0.0


@dataclass
class FeedInspection:
    user_id: str
    model_version: str
    ranker: str  # "learned" or "blend"
    variant: str | None
    page: list[FeedItem]
    lists: list[SourceList]
    candidates: dict[str, Candidate]
    # Items the user consumed (and filter exclusions): never proposed by any source.
    excluded: list[str]
    history: History = field(repr=False)
    page_number: int = 0
    next_cursor: str | None = None


def inspect_feed(
    recommender: Recommender,
    user_id: str,
    limit: int = 20,
    filters: FeedFilters | None = None,
    cursor: str | None = None,
) -> FeedInspection:
    """A page of ``user_id``'s feed (the first, or the one ``cursor`` continues to),
    explained. Raises ``NoModel`` before the first version is published, ``InvalidCursor``
    for a cursor of another feed, ``ValueError`` for a bad limit."""
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")
    key = request_key(user_id, filters)
    served, page_number = decode_cursor(cursor, key) if cursor else (set(), 0)
    variant, config = recommender.variant_for(user_id)
    state = recommender.require_state(variant.model_version if variant is not None else None)
    history = recommender.history(state, user_id)
    ranker = recommender.ranker_for(state, history, config)
    request = recommender.request(state, user_id, history, limit, served, filters, config=config)
    lists = gather(recommender.sources or default_sources(), request)
    ranked = ranker.rank(request, lists, served)
    page = build_page(request, ranked, limit) if ranked is not None else []
    candidates: dict[str, Candidate] = {}
    for candidate_list in lists:
        for hit in candidate_list.hits:
            if served and item_hash(hit.item_id) in served:
                candidates[hit.item_id] = Candidate(hit.item_id, float("nan"), -1, SERVED)
    if ranked is not None:
        catalogue = state.catalogue
        rows = ranked.rows
        vectors = np.where(
            (rows >= 0)[:, None], catalogue.content[np.maximum(rows, 0)], 0.0
        ).astype(np.float32)
        penalty = fatigue(config, catalogue, history, vectors)
        penalty = np.zeros(len(rows)) if penalty is None else penalty
        after = ranked.scores - penalty
        rank_after = np.empty(len(after), dtype=np.int64)
        rank_after[np.argsort(-after, kind="stable")] = np.arange(len(after))
        rank_before = np.empty(len(after), dtype=np.int64)
        rank_before[np.argsort(-ranked.scores, kind="stable")] = np.arange(len(after))
        on_page = {item.item_id: position for position, item in enumerate(page)}
        for i, item_id in enumerate(ranked.ids):
            position = on_page.get(item_id)
            if position is not None:
                verdict = ON_PAGE
            elif penalty[i] > 1e-6 and rank_before[i] < limit <= rank_after[i]:
                verdict = FATIGUE
            elif rank_after[i] < limit:
                verdict = DIVERSITY
            else:
                verdict = BELOW
            candidates[item_id] = Candidate(
                item_id=item_id,
                score=float(after[i]),
                rank=int(rank_after[i]),
                verdict=verdict,
                position=position,
                penalty=float(penalty[i]),
            )
    return FeedInspection(
        user_id=user_id,
        model_version=state.version,
        ranker="learned" if isinstance(ranker, LearnedRanker) else "blend",
        variant=variant.name if variant is not None else None,
        page=page,
        lists=[
            SourceList(c.name, c.source, [(hit.item_id, float(hit.score)) for hit in c.hits])
            for c in lists
        ],
        candidates=candidates,
        excluded=sorted(request.excluded),
        history=history,
        page_number=page_number,
        next_cursor=next_cursor(served, (i.item_id for i in page), page_number, key),
    )
