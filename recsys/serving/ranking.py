"""The ranking step: from candidate lists to one score per item, with its parts per source.

``Ranker`` is the interface; ``BlendRanker`` is the adaptive blend: each list's scores
min-max normalised, weighted per source by how much history the user has, and boosted for
items too new for behaviour to vouch for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys import registry
from recsys.serving.features import Candidates, proposed_by, union
from recsys.serving.sources import NEW_ITEMS_LIST, CandidateList, FeedRequest, blend_weights


@dataclass
class Ranked:
    """Candidates with scores: ``parts[i, j]`` is what source ``sources[j]`` adds to item
    ``ids[i]``'s score, counted where ``present[i, j]``."""

    ids: list[str]
    rows: np.ndarray  # catalogue row per item, -1 if unknown
    scores: np.ndarray
    parts: np.ndarray
    present: np.ndarray
    sources: tuple[str, ...]
    # The score's parts by family for the given positions, when they are not ``parts``
    # (the learned ranker computes them for the page's picks only).
    explain: Callable[[list[int]], list[dict[str, float]]] | None = None
    # Positions of the fresh source's new-item candidates, in the order it proposed them
    # (the page step's order for its new-item places).
    new_items: np.ndarray | None = None

    def breakdowns(self, positions: list[int]) -> list[dict[str, float]]:
        """What each source (or feature family) adds to the score of each position."""
        if self.explain is not None:
            return self.explain(positions)
        return [
            {self.sources[j]: float(self.parts[p, j]) for j in np.flatnonzero(self.present[p])}
            for p in positions
        ]


class Ranker(ABC):
    name: str

    @abstractmethod
    def rank(
        self, request: FeedRequest, lists: list[CandidateList], served: set[bytes]
    ) -> Ranked | None:
        """Score every candidate not yet ``served`` (hashes); None when there is none."""


def normalise(scores: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] within one source's candidate list (a single candidate gets 1)."""
    if len(scores) == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-12:
        return np.ones_like(scores)
    return (scores - low) / (high - low)


class BlendRanker(Ranker):
    name = "blend"

    def rank(
        self, request: FeedRequest, lists: list[CandidateList], served: set[bytes]
    ) -> Ranked | None:
        config = request.config
        candidates = union(request, lists, served)
        if candidates is None:
            return None
        ids = candidates.ids
        sources = registry.feed_sources()
        column_of = {s: j for j, s in enumerate(sources)}
        # Each list's share x normalised score, summed per item and source column: a
        # source's second list (the recent likes) counts towards its column at its share.
        contributions = np.zeros((len(ids), len(sources)))
        for candidate_list, at in zip(lists, candidates.places, strict=True):
            hits = candidate_list.hits
            if not hits:
                continue
            # Normalised over the whole list, served items included: a later page keeps
            # the scale the list had on the first.
            normalised = normalise(np.fromiter((h.score for h in hits), np.float64, len(hits)))
            fresh = at >= 0
            np.add.at(
                contributions[:, column_of[candidate_list.source]],
                at[fresh],
                candidate_list.share * normalised[fresh],
            )
        present = proposed_by(lists, candidates, sources)

        catalogue = request.state.catalogue
        rows = candidates.rows
        popularity = np.where(rows >= 0, catalogue.popularity[np.maximum(rows, 0)], 0.0)
        coldness = np.clip(1.0 - popularity / max(config.cold_item_interactions, 1), 0.0, 1.0)
        # Cold items lean on the sources that can judge them without interactions.
        factor = np.ones_like(contributions)
        factor[:, [column_of[s] for s in cold_item_sources()]] = (
            1.0 + config.cold_item_boost * coldness
        )[:, None]
        weighted = contributions * source_weights(request, sources) * factor
        return Ranked(
            ids=ids,
            rows=rows,
            scores=weighted.sum(axis=1),
            parts=weighted,
            present=present,
            sources=sources,
            new_items=new_item_positions(lists, candidates),
        )


def new_item_positions(lists: list[CandidateList], candidates: Candidates) -> np.ndarray | None:
    """Where the new-item list's candidates stand among the ranked ``candidates``, in the
    list's order; those not there (served already) left out. None without such a list
    (the page's new-item places are off)."""
    for candidate_list, at in zip(lists, candidates.places, strict=True):
        if candidate_list.name == NEW_ITEMS_LIST:
            return at[at >= 0]
    return None


def source_weights(request: FeedRequest, sources: tuple[str, ...]) -> np.ndarray:
    """Blend weights interpolated between cold and warm by the user's history length. A
    source the config does not name takes its model's declared default."""
    warmth = request.warmth
    weights = []
    for source in sources:
        warm, cold = blend_weights(request.config, source)
        weights.append(warmth * warm + (1 - warmth) * cold)
    return np.array(weights)


def cold_item_sources() -> list[str]:
    """The sources that judge an item by its content, not by who interacted with it."""
    return [
        *(spec.source for spec in registry.served() if spec.embeds_items and spec.source),
        registry.FRESH_SOURCE,
    ]
