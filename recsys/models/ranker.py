"""The learned ranker's model: a LightGBM LambdaMART booster with the names and families of
its features, saved as LightGBM's own text format plus a JSON sidecar (no pickle).

Training is ``recsys.rank_training``; serving is ``recsys.serving.learned``, which computes
the features this model names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "model.txt"
SIDECAR_FILE = "ranker.json"
FORMAT_VERSION = 1
BASELINE = "baseline"


class RankerModel:
    def __init__(
        self,
        booster: Any,
        features: tuple[str, ...],
        families: tuple[str, ...],
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if len(features) != len(families):
            raise ValueError("one family per feature")
        if booster.num_feature() != len(features):
            raise ValueError(
                f"the model has {booster.num_feature()} features, the sidecar names {len(features)}"
            )
        self.booster = booster
        self.features = tuple(features)
        self.families = tuple(families)
        self.metrics = dict(metrics or {})
        self.family_names = tuple(dict.fromkeys(families))
        index = {family: j for j, family in enumerate(self.family_names)}
        # Per-feature contributions summed into families by one matrix product; LightGBM's
        # last column (the expected score, the same for every row) is the "baseline".
        self.family_names = (*self.family_names, BASELINE)
        self._to_families = np.zeros((len(features) + 1, len(self.family_names)))
        for i, family in enumerate(families):
            self._to_families[i, index[family]] = 1.0
        self._to_families[len(features), -1] = 1.0

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        sidecar = {
            "format_version": FORMAT_VERSION,
            "features": list(self.features),
            "families": list(self.families),
            "metrics": self.metrics,
        }
        (directory / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2))

    @classmethod
    def load(cls, directory: Path) -> RankerModel | None:
        """The model saved in ``directory``; None when there is none."""
        if not (directory / SIDECAR_FILE).is_file():
            return None
        import lightgbm

        sidecar = json.loads((directory / SIDECAR_FILE).read_text())
        if int(sidecar.get("format_version", 0)) != FORMAT_VERSION:
            raise ValueError(f"unsupported ranker format {sidecar.get('format_version')!r}")
        booster = lightgbm.Booster(model_file=str(directory / MODEL_FILE))
        return cls(
            booster,
            tuple(sidecar["features"]),
            tuple(sidecar["families"]),
            sidecar.get("metrics", {}),
        )

    def score(self, matrix: np.ndarray) -> np.ndarray:
        # One thread: a page's few hundred rows cost less than waking a pool, and a
        # serving process runs many requests at once.
        scores: np.ndarray = np.asarray(self.booster.predict(matrix, num_threads=1))
        return scores

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per row, each family's contribution (TreeSHAP values summed per family)."""
        values = np.asarray(self.booster.predict(matrix, pred_contrib=True, num_threads=1))
        grouped: np.ndarray = values @ self._to_families
        return grouped
