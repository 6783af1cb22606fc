"""Typed, JSON round-trippable configurations for the embedding models.

This module imports nothing but pydantic (and the standard library), so the global settings
can expose these configs without pulling in implicit, LightFM or scikit-learn.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _ModelConfig(BaseModel):
    # A typo in a knob should fail loudly, not silently train with the default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ALSConfig(_ModelConfig):
    """Matrix factorisation with implicit: ALS by default, BPR on request."""

    model: Literal["als", "bpr"] = "als"
    factors: int = Field(default=64, gt=0)
    regularization: float = Field(default=0.05, ge=0.0)
    # Confidence scaling: the interaction matrix is multiplied by alpha before fitting (ALS only;
    # BPR treats every positive entry as a binary signal).
    alpha: float = Field(default=1.0, gt=0.0)
    iterations: int = Field(default=15, gt=0)
    # BPR's SGD step; ignored by ALS.
    learning_rate: float = Field(default=0.01, gt=0.0)
    # "auto" uses the CUDA build of implicit when it is importable and sees a device.
    use_gpu: Literal["auto"] | bool = "auto"
    # Threads for implicit's native loops; 0 means one per core.
    num_threads: int = Field(default=0, ge=0)
    random_state: int | None = 42


class HybridConfig(_ModelConfig):
    """LightFM with the WARP loss over item features built from the catalogue."""

    no_components: int = Field(default=64, gt=0)
    epochs: int = Field(default=10, gt=0)
    learning_rate: float = Field(default=0.05, gt=0.0)
    item_alpha: float = Field(default=1e-6, ge=0.0)
    user_alpha: float = Field(default=1e-6, ge=0.0)
    # Negatives WARP samples per positive before giving up on finding a violating one.
    max_sampled: int = Field(default=10, gt=0)
    # Title/text vocabulary: at most this many tokens, each seen in at least min_token_count items.
    max_text_tokens: int = Field(default=5000, ge=0)
    min_token_count: int = Field(default=2, gt=0)
    # A tag on fewer items than this is noise rather than a shared feature.
    min_tag_count: int = Field(default=2, gt=0)
    # Use the (mean-normalised) confidence of each positive interaction as its WARP weight.
    use_sample_weight: bool = True
    num_threads: int = Field(default=2, gt=0)
    random_state: int | None = 42


class ContentConfig(_ModelConfig):
    """Item vectors from title, text and tags; user vectors from the items they touched."""

    encoder: Literal["tfidf", "minilm"] = "tfidf"
    # Output dimension of the TF-IDF + SVD encoder (MiniLM is always 384).
    dim: int = Field(default=64, gt=0)
    max_features: int = Field(default=20_000, gt=0)
    min_df: int = Field(default=1, gt=0)
    # Weight of a negative interaction relative to a positive one of the same magnitude when
    # building a user's content vector (a dislike pushes away, but less than a like pulls).
    negative_weight: float = Field(default=0.5, ge=0.0)
    random_state: int | None = 42
