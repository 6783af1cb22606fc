"""Session fixtures for the model tests (the data and helpers live in model_fixtures)."""

from __future__ import annotations

from typing import Any

import pytest
from model_fixtures import MODEL_FACTORIES, Blocks, make_blocks

from recsys.models.base import EmbeddingModel


@pytest.fixture(scope="session")
def blocks() -> Blocks:
    return make_blocks()


@pytest.fixture(scope="session")
def fitted_models(blocks: Blocks) -> dict[str, EmbeddingModel[Any]]:
    """Each model fitted once on the block data (tests must not mutate them)."""
    return {
        name: factory().fit(blocks.interactions, blocks.items_df)
        for name, factory in MODEL_FACTORIES.items()
    }
