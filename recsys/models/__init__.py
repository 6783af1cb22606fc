"""Embedding models behind one interface: behavioural (ALS/BPR), hybrid (LightFM), content.

Only the configs are imported eagerly, so ``recsys.models.configs`` stays importable with
nothing but pydantic; everything else (numpy, implicit, LightFM, scikit-learn) is imported
when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from recsys.models.configs import ALSConfig, ContentConfig, HybridConfig

if TYPE_CHECKING:
    from recsys.models.als import ALSModel
    from recsys.models.base import (
        EmbeddingModel,
        ModelNotFittedError,
        available_models,
        load_model,
        model_class,
        register_model,
    )
    from recsys.models.content import ContentModel, MissingDependencyError
    from recsys.models.hybrid import HybridModel

_LAZY = {
    "EmbeddingModel": "recsys.models.base",
    "ModelNotFittedError": "recsys.models.base",
    "available_models": "recsys.models.base",
    "load_model": "recsys.models.base",
    "model_class": "recsys.models.base",
    "register_model": "recsys.models.base",
    "ALSModel": "recsys.models.als",
    "HybridModel": "recsys.models.hybrid",
    "ContentModel": "recsys.models.content",
    "MissingDependencyError": "recsys.models.content",
}

__all__ = [
    "ALSConfig",
    "ALSModel",
    "ContentConfig",
    "ContentModel",
    "EmbeddingModel",
    "HybridConfig",
    "HybridModel",
    "MissingDependencyError",
    "ModelNotFittedError",
    "available_models",
    "load_model",
    "model_class",
    "register_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
