"""The learned ranker: the version's LambdaMART model (``recsys.models.ranker``) over
``features.candidate_features``, trained nightly (``recsys.rank_training``).

It scores the union of every source's candidates; the page step that follows is the
blend's (fatigue, MMR, caps). A pick's breakdown is the model's per-feature contributions
(path attributions, computed for the page's items only), summed per family: each source, ``item``,
``taste`` and ``user``.
"""

from __future__ import annotations

import numpy as np

from recsys import registry
from recsys.models.activity import ItemActivity
from recsys.serving.features import candidate_features, proposed_by, union
from recsys.serving.ranking import Ranked, Ranker, new_item_positions
from recsys.serving.sources import CandidateList, FeedRequest


class LearnedRanker(Ranker):
    """Ranks with the serving state's ranker model (``state.ranker``)."""

    name = "learned"

    def rank(
        self, request: FeedRequest, lists: list[CandidateList], served: set[bytes]
    ) -> Ranked | None:
        candidates = union(request, lists, served)
        if candidates is None:
            return None
        model = request.state.ranker
        if model is None:
            raise ValueError("this version has no learned ranker")
        activity: ItemActivity = request.state.activity
        matrix = candidate_features(request, lists, candidates, activity, model.features)
        leaves = model.leaves(matrix)
        raw = model.score_leaves(leaves)
        # Min-max to [0, 1] within the page, the scale the page step's fatigue penalty and
        # MMR work on (as the blend's scores do).
        low, high = float(raw.min()), float(raw.max())
        scale = 1.0 / (high - low) if high - low > 1e-12 else 0.0
        scores = (raw - low) * scale if scale else np.ones_like(raw)
        sources = registry.feed_sources()
        present = proposed_by(lists, candidates, sources)

        def explain(positions: list[int]) -> list[dict[str, float]]:
            if not positions:
                return []
            parts = model.contributions_of(leaves[positions]) * scale
            # The parts add up to the page's score: the min-max shift joins the baseline.
            parts[:, -1] = parts[:, -1] - low * scale if scale else 1.0
            families = model.family_names
            return [dict(zip(families, map(float, row), strict=True)) for row in parts]

        return Ranked(
            ids=candidates.ids,
            rows=candidates.rows,
            scores=scores,
            parts=np.zeros((len(candidates.ids), 0)),
            present=present,
            sources=sources,
            explain=explain,
            new_items=new_item_positions(lists, candidates),
        )
