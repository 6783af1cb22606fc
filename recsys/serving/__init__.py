"""Serving: the live model version, candidate sources, ranking, pages and item upserts.

``Recommender`` is the public face; the modules behind it each own one concern (see
ARCHITECTURE.md).
"""

from recsys.serving.catalogue import Catalogue
from recsys.serving.cursor import MAX_CURSOR_ITEMS, decode_cursor, encode_cursor
from recsys.serving.experiments import Experiment, InvalidExperiment, Variant, parse_experiment
from recsys.serving.impressions import ImpressionLog
from recsys.serving.recommender import Recommender
from recsys.serving.types import (
    FeedFilters,
    FeedItem,
    FeedPage,
    InvalidCursor,
    NoModel,
    SimilarKind,
    SimilarPage,
    UnknownItem,
)

__all__ = [
    "MAX_CURSOR_ITEMS",
    "Catalogue",
    "Experiment",
    "FeedFilters",
    "FeedItem",
    "FeedPage",
    "ImpressionLog",
    "InvalidCursor",
    "InvalidExperiment",
    "NoModel",
    "Recommender",
    "SimilarKind",
    "SimilarPage",
    "UnknownItem",
    "Variant",
    "decode_cursor",
    "encode_cursor",
    "parse_experiment",
]
