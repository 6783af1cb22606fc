"""Session fixtures for the model tests (the data and helpers live in model_fixtures)."""

from __future__ import annotations

from typing import Any

import pytest
from model_fixtures import MODEL_FACTORIES, Blocks, make_blocks

from recsys.models.base import EmbeddingModel


@pytest.fixture(scope="session")
def blocks() -> Blocks:
    return make_blocks()


class FittedModels(dict[str, EmbeddingModel[Any]]):
    """Each model fitted on the block data the first time a test asks for it (tests must
    not mutate them), so a run selecting some models never fits the others."""

    def __init__(self, blocks: Blocks) -> None:
        super().__init__()
        self._blocks = blocks

    def __missing__(self, name: str) -> EmbeddingModel[Any]:
        model = MODEL_FACTORIES[name]().fit(self._blocks.interactions, self._blocks.items_df)
        self[name] = model
        return model


@pytest.fixture(scope="session")
def fitted_models(blocks: Blocks) -> dict[str, EmbeddingModel[Any]]:
    return FittedModels(blocks)
