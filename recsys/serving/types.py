"""What a feed request takes and gives: filters, items, pages, and the errors callers see."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SimilarKind = Literal["content", "behavioural", "blend", "item2item"]


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
    # The answer's id, under which its items are recorded as impressions (None: they are not).
    feed_id: str | None = None
    # The experiment variant that served it (None outside experiments).
    variant: str | None = None


@dataclass
class SimilarPage:
    item_id: str
    items: list[FeedItem]
    model_version: str | None
    feed_id: str | None = None


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
