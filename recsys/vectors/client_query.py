"""Queries in qdrant-client's terms: filters and recommend inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from qdrant_client import models

from recsys.vectors.base import ItemFilter, RecommendStrategy, point_id

_STRATEGIES: Final = {
    "average_vector": models.RecommendStrategy.AVERAGE_VECTOR,
    "best_score": models.RecommendStrategy.BEST_SCORE,
    "sum_scores": models.RecommendStrategy.SUM_SCORES,
}


def client_filter(filters: ItemFilter | None) -> models.Filter | None:
    """Translate an ItemFilter into a native Qdrant filter."""
    if filters is None or filters.is_empty:
        return None
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    if filters.categories is not None:
        must.append(
            models.FieldCondition(
                key="category", match=models.MatchAny(any=list(filters.categories))
            )
        )
    if filters.tags is not None:
        must.append(
            models.FieldCondition(key="tags", match=models.MatchAny(any=list(filters.tags)))
        )
    if filters.created_after is not None or filters.created_until is not None:
        created = models.Range(gt=filters.created_after, lte=filters.created_until)
        must.append(models.FieldCondition(key="created_at", range=created))
    if filters.max_popularity is not None:
        popular = models.Range(lte=filters.max_popularity)
        must.append(models.FieldCondition(key="popularity", range=popular))
    if filters.exclude_ids:
        must_not.append(models.HasIdCondition(has_id=[point_id(i) for i in filters.exclude_ids]))
    return models.Filter(must=must or None, must_not=must_not or None)


def recommend_query(
    positives: Sequence[str], negatives: Sequence[str], strategy: RecommendStrategy
) -> models.RecommendQuery:
    """A recommend query from example item ids, which Qdrant looks up itself."""
    recommend = models.RecommendInput(
        positive=[point_id(i) for i in positives] or None,
        negative=[point_id(i) for i in negatives] or None,
        strategy=_STRATEGIES[strategy],
    )
    return models.RecommendQuery(recommend=recommend)
