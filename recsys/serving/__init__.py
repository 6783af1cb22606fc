"""Serving: the live model version, candidate sources, ranking, pages and item upserts.

``Recommender`` is the public face; the modules behind it each own one concern (see
ARCHITECTURE.md).
"""

from recsys.serving.catalogue import Catalogue
from recsys.serving.cursor import MAX_CURSOR_ITEMS, decode_cursor, encode_cursor
from recsys.serving.recommender import Recommender
from recsys.serving.types import (
    FeedFilters,
    FeedItem,
    FeedPage,
    InvalidCursor,
    NoModel,
    SimilarKind,
    UnknownItem,
)

__all__ = [
    "MAX_CURSOR_ITEMS",
    "Catalogue",
    "FeedFilters",
    "FeedItem",
    "FeedPage",
    "InvalidCursor",
    "NoModel",
    "Recommender",
    "SimilarKind",
    "UnknownItem",
    "decode_cursor",
    "encode_cursor",
]
