"""Vector indexes for items and users, versioned per model, on Qdrant Edge or a Qdrant server."""

from recsys.vectors.base import (
    BatchQuery,
    Hit,
    ItemFilter,
    LikeExamples,
    Nearest,
    RecommendStrategy,
    VectorIndex,
    point_id,
    vector_distance,
)
from recsys.vectors.factory import open_vector_store
from recsys.vectors.versions import (
    STAGES,
    IndexBuild,
    NoLiveVersionError,
    VectorStore,
    VersionInfo,
    set_stage_hook,
)

__all__ = [
    "STAGES",
    "BatchQuery",
    "Hit",
    "IndexBuild",
    "ItemFilter",
    "LikeExamples",
    "Nearest",
    "NoLiveVersionError",
    "RecommendStrategy",
    "VectorIndex",
    "VectorStore",
    "VersionInfo",
    "open_vector_store",
    "point_id",
    "set_stage_hook",
    "vector_distance",
]
