"""Vector indexes for items and users, versioned per model, on Qdrant Edge or a Qdrant server."""

from recsys.vectors.base import (
    VECTOR_DISTANCES,
    VECTOR_NAMES,
    BatchQuery,
    Hit,
    ItemFilter,
    LikeExamples,
    Nearest,
    RecommendStrategy,
    VectorIndex,
    point_id,
)
from recsys.vectors.versions import (
    STAGES,
    IndexBuild,
    NoLiveVersionError,
    VectorStore,
    VersionInfo,
    open_vector_store,
    set_stage_hook,
)

__all__ = [
    "STAGES",
    "VECTOR_DISTANCES",
    "VECTOR_NAMES",
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
]
