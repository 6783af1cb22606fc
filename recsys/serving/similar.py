"""Items similar to an item, by one source's vectors or by a blend of two."""

from __future__ import annotations

import numpy as np

from recsys import registry
from recsys.serving.catalogue import unit
from recsys.serving.ranking import normalise
from recsys.serving.state import ServingState
from recsys.serving.types import FeedItem, SimilarKind, UnknownItem
from recsys.vectors.base import Hit, ItemFilter

# Which sources' vectors each kind compares; a blend sums their normalised scores.
SIMILAR_SOURCES: dict[str, tuple[str, ...]] = {
    "content": ("content",),
    "behavioural": ("behavioural",),
    "blend": ("content", "behavioural"),
    "item2item": ("item2item",),
}


def check_similar_request(kind: str, limit: int) -> None:
    if kind not in SIMILAR_SOURCES:
        raise ValueError("kind must be content, behavioural, blend or item2item")
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")


def similar_items(
    state: ServingState, item_id: str, kind: SimilarKind = "content", limit: int = 20
) -> list[FeedItem]:
    check_similar_request(kind, limit)
    catalogue = state.catalogue
    row = catalogue.index.get(item_id)
    if row is None or catalogue.retired[row]:
        raise UnknownItem(item_id)
    title = catalogue.titles[row] or item_id
    exclude = ItemFilter(exclude_ids=[item_id])
    parts: dict[str, dict[str, float]] = {}
    for source in SIMILAR_SOURCES[kind]:
        spec = registry.by_source(source)
        if not spec.publishes_vectors:
            hits = neighbours(state, spec.name, item_id, limit * 2)
        else:
            vector = state.index.get_item_vectors([item_id], spec.vector).get(item_id)
            if vector is None:
                continue
            if spec.distance == "dot":
                # Neighbours by angle: a long vector (a popular item) is not more similar.
                vector = unit(np.asarray(vector, dtype=np.float32))
            hits = state.index.search(spec.vector, vector, limit * 2, exclude)
        scores = np.array([h.score for h in hits])
        values = normalise(scores) if kind == "blend" else scores
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


def neighbours(state: ServingState, model_name: str, item_id: str, limit: int) -> list[Hit]:
    """An item-to-item model's neighbours of ``item_id`` that are in circulation."""
    model = state.models.get(model_name)
    column = model.items.index_of(item_id) if model is not None else None
    if model is None or column is None:
        return []
    found, weights = model.similar_items(column, limit)
    catalogue = state.catalogue
    hits = []
    for other, weight in zip(model.items.to_external(found), weights, strict=True):
        row = catalogue.index.get(other)
        if row is not None and not catalogue.retired[row]:
            hits.append(Hit(item_id=str(other), score=float(weight), payload={}))
    return hits
