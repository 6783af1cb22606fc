"""Typed, JSON round-trippable configurations for the embedding models.

This module imports nothing but pydantic (and the standard library), so the global settings
can expose these configs without pulling in implicit, LightFM or scikit-learn.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _ModelConfig(BaseModel):
    # A typo in a knob should fail loudly, not silently train with the default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ALSConfig(_ModelConfig):
    """Matrix factorisation with implicit: ALS by default, BPR on request."""

    model: Literal["als", "bpr"] = "als"
    # factors, regularization and alpha were chosen together on a validation split carved
    # from the training part of MovieLens (ml-latest-small: each user's newest 20 % of their
    # training events, NDCG@10), never on a test split. What matters most is the ratio
    # regularization / alpha: implicit's regularization is not scaled by the data size, and
    # around 6 (50 / 8) beat the old 0.05 / 1 by about 20 % (0.137 against 0.115 on the
    # temporal validation split, 0.214 against 0.177 on the stratified one). 32 to 128
    # factors scored within noise of each other there; 64 keeps the vectors small.
    factors: int = Field(default=64, gt=0)
    regularization: float = Field(default=50.0, ge=0.0)
    # Confidence scaling: the interaction matrix is multiplied by alpha before fitting (ALS only;
    # BPR treats every positive entry as a binary signal).
    alpha: float = Field(default=8.0, gt=0.0)
    # 30 iterations scored the same as 15 on the validation split.
    iterations: int = Field(default=15, gt=0)
    # The nightly job fits ALS once for its quality gate (on all but each user's newest
    # events) and then continues that fit on all events for this many iterations, instead
    # of fitting again from random factors. Three continued iterations scored the same as 15
    # fresh ones (NDCG@10 on each user's newest 10 %, three seeds: 0.0901 vs 0.0904 on
    # ml-latest-small, 0.136 vs 0.134 on the demo world). 0 always fits from scratch. ALS on
    # the CPU only: BPR and GPU fits start from scratch.
    warm_start_iterations: int = Field(default=3, ge=0)
    # BPR's SGD step; ignored by ALS.
    learning_rate: float = Field(default=0.01, gt=0.0)
    # "auto" uses the CUDA build of implicit when it is importable and sees a device.
    use_gpu: Literal["auto"] | bool = "auto"
    # Threads for implicit's native loops; 0 means one per core.
    num_threads: int = Field(default=0, ge=0)
    random_state: int | None = 42

    @model_validator(mode="before")
    @classmethod
    def _bpr_regularization(cls, data: Any) -> Any:
        # BPR's regularization is an SGD penalty on another scale: ALS's 50 would drive its
        # factors to NaN. Without an explicit value BPR keeps its own default, 0.05.
        if isinstance(data, dict) and data.get("model") == "bpr" and "regularization" not in data:
            return {**data, "regularization": BPR_REGULARIZATION}
        return data


BPR_REGULARIZATION = 0.05


class HybridConfig(_ModelConfig):
    """LightFM with the WARP loss over item features built from the catalogue."""

    no_components: int = Field(default=64, gt=0)
    # WARP was still improving at 10 epochs: 30 raised NDCG@10 on the temporal validation
    # split (carved from MovieLens training data) from 0.087 to 0.102; 50 gained a little more
    # (0.108) for two thirds more training time.
    epochs: int = Field(default=30, gt=0)
    # The nightly fit continues from the learned ranker's first-stage fit (the same users,
    # on the events before its labels) for this many epochs instead of ``epochs`` from
    # scratch; features new since then start fresh. On a validation split carved from the
    # ml-latest-small temporal train part (two seeds), fresh fits scored NDCG@10 0.1014 and
    # 0.0986; continued for 15 epochs 0.1006 and 0.1002, for 10 0.0956 and 0.0953. 0 always
    # fits from scratch.
    warm_start_epochs: int = Field(default=15, ge=0)
    learning_rate: float = Field(default=0.05, gt=0.0)
    item_alpha: float = Field(default=1e-6, ge=0.0)
    user_alpha: float = Field(default=1e-6, ge=0.0)
    # Negatives WARP samples per positive before giving up on finding a violating one.
    max_sampled: int = Field(default=10, gt=0)
    # Title/text vocabulary: at most this many tokens, each seen in at least min_token_count items.
    # The frequent words are what place a brand-new item: with none, cold-item ranking on a
    # validation split halved (NDCG@10 among the cold items 0.13 -> 0.06), while the long tail
    # of rare words cost warm ranking (temporal validation NDCG@10 0.111 without words, 0.101
    # with the 500 most frequent, 0.087 with 5000 at 10 epochs). 500 keeps the cold-item
    # benefit (AUC 0.80) at a small cost to warm users, whom ALS serves anyway.
    max_text_tokens: int = Field(default=500, ge=0)
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


class ItemToItemConfig(_ModelConfig):
    """EASE: a closed-form item-to-item model over users' positive interactions."""

    # L2 penalty on the item-item weights; 100 scored best on a validation split of
    # ml-latest-small's training part (the prototype), and EASE is flat around it.
    regularization: float = Field(default=100.0, gt=0.0)
    # The items x items Gram matrix and its inverse are dense: at 20k items that is about
    # 1.6 GB each in float32. Past this many, only the most-interacted items are modelled.
    max_items: int = Field(default=20_000, ge=1)
    # Neighbours kept per item (the largest weights); the rest are dropped after the fit.
    neighbours: int = Field(default=100, ge=1)
