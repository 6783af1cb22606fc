"""A model that is not built in, for the registry's end-to-end test: item and user vectors
from a truncated SVD of the interaction matrix (dense, so for small worlds only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from recsys.dataset import InteractionData
from recsys.models.base import EmbeddingModel


class SmallSVDConfig(BaseModel):
    components: int = 8


class SmallSVDModel(EmbeddingModel[SmallSVDConfig]):
    kind = "small_svd"
    config_class = SmallSVDConfig

    def _fit(
        self, interactions: InteractionData, items_df: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray]:
        dense = interactions.matrix.toarray().astype(np.float64)
        users, strengths, items = np.linalg.svd(dense, full_matrices=False)
        k = min(self.config.components, len(strengths))
        root = np.sqrt(strengths[:k])
        return (users[:, :k] * root).astype(np.float32), (items[:k].T * root).astype(np.float32)
