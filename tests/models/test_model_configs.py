"""The model configs: JSON round trips, validation, and a dependency-free import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import BaseModel, ValidationError

from recsys.models.configs import ALSConfig, ContentConfig, HybridConfig


@pytest.mark.parametrize(
    "config",
    [
        ALSConfig(),
        ALSConfig(model="bpr", use_gpu=False, random_state=None, factors=3),
        ALSConfig(use_gpu=True),
        HybridConfig(),
        HybridConfig(no_components=5, min_tag_count=1, use_sample_weight=False),
        ContentConfig(),
        ContentConfig(encoder="minilm", negative_weight=0.0),
    ],
)
def test_json_round_trip(config: BaseModel) -> None:
    text = config.model_dump_json()
    assert type(config).model_validate_json(text) == config
    assert type(config).model_validate(json.loads(text)) == config


def test_defaults() -> None:
    als = ALSConfig()
    assert (als.model, als.factors, als.regularization, als.alpha, als.iterations) == (
        "als",
        64,
        50.0,
        8.0,
        15,
    )
    assert als.use_gpu == "auto" and als.random_state == 42
    # BPR keeps its own regularization scale unless one is given.
    assert ALSConfig(model="bpr").regularization == 0.05
    assert ALSConfig(model="bpr", regularization=0.5).regularization == 0.5
    hybrid = HybridConfig()
    assert (hybrid.no_components, hybrid.epochs, hybrid.learning_rate) == (64, 30, 0.05)
    assert hybrid.max_text_tokens == 500
    assert hybrid.item_alpha == hybrid.user_alpha == 1e-6 and hybrid.num_threads == 2
    content = ContentConfig()
    assert (content.encoder, content.dim) == ("tfidf", 64)


@pytest.mark.parametrize(
    ("config_class", "values"),
    [
        (ALSConfig, {"factors": 0}),
        (ALSConfig, {"model": "svd"}),
        (ALSConfig, {"use_gpu": "sometimes"}),
        (ALSConfig, {"alpha": 0}),
        (ALSConfig, {"factor": 10}),  # typo of "factors"
        (HybridConfig, {"epochs": 0}),
        (HybridConfig, {"item_alpha": -1}),
        (ContentConfig, {"encoder": "bert"}),
        (ContentConfig, {"dim": -1}),
    ],
)
def test_invalid_values_are_rejected(config_class: type[BaseModel], values: dict) -> None:
    with pytest.raises(ValidationError):
        config_class.model_validate(values)


def test_configs_import_without_the_numeric_stack() -> None:
    code = (
        "import sys; import recsys.models.configs; "
        "heavy = {'numpy', 'pandas', 'scipy', 'sklearn', 'implicit', 'lightfm'}; "
        "heavy &= set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
