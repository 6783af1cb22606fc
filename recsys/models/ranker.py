"""The learned ranker's model: a LightGBM LambdaMART booster with the names and families of
its features, saved as LightGBM's own text format plus a JSON sidecar (no pickle).

Training is ``recsys.rank_training``; serving is ``recsys.serving.learned``, which computes
the features this model names.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
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
        # Per-feature contributions summed into families by one matrix product; the last
        # column (the trees' root values, the same for every row) is the "baseline".
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

    def leaves(self, matrix: np.ndarray) -> np.ndarray:
        """Per row, the leaf it reaches in every tree, as rows of the leaf tables: the one
        LightGBM call of a page, which both its scores and its explanations read."""
        # One thread: a page's few hundred rows cost less than waking a pool, and a
        # serving process runs many requests at once.
        reached = np.asarray(self.booster.predict(matrix, pred_leaf=True, num_threads=1))
        leaves: np.ndarray = reached.astype(np.intp).reshape(len(matrix), -1)
        return leaves + self._leaf_tables.offsets

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """The raw score of each row (LightGBM's own prediction)."""
        return self.score_leaves(self.leaves(matrix))

    def score_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """The raw scores of rows whose ``leaves`` are known: the sum of their leaves'
        values, a gather where a second prediction would walk every tree again."""
        scores: np.ndarray = self._leaf_tables.values[leaves].sum(axis=1)
        return scores

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per row, each family's contribution to the raw score, plus the baseline; the row
        sums to the score (see ``contributions_of``)."""
        return self.contributions_of(self.leaves(matrix))

    def contributions_of(self, leaves: np.ndarray) -> np.ndarray:
        """``contributions`` of rows whose ``leaves`` are known.

        Path attributions (Saabas): along the path a row takes through a tree, each split
        credits its feature with the change in the node's value, so a leaf's credits are
        fixed when the model loads and a row's contributions are one gather over its
        leaves. LightGBM's TreeSHAP gives the same sums spread more fairly over features
        that interact, at 5-6x the cost (19 against 3.4 ms for 20 rows of 800 trees),
        which was a sixth of a ranked page."""
        grouped: np.ndarray = self._leaf_tables.credits[leaves].sum(axis=1)
        return grouped

    @functools.cached_property
    def _leaf_tables(self) -> LeafTables:
        """Per (tree, leaf), its value and the credit of each family along the path to it
        (baseline: the tree's root value), flattened to rows ``tree * max_leaves + leaf``."""
        trees = self.booster.dump_model()["tree_info"]
        width = max((tree["num_leaves"] for tree in trees), default=1)
        credits = np.zeros((len(trees), width, len(self.features) + 1))
        values = np.zeros((len(trees), width))
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            credits[t, :, -1] = _node_value(root)
            stack = [(root, np.zeros(len(self.features)))]
            while stack:
                node, path = stack.pop()
                if "leaf_index" in node:
                    credits[t, node["leaf_index"], :-1] = path
                    values[t, node["leaf_index"]] = _node_value(node)
                    continue
                for child in (node["left_child"], node["right_child"]):
                    step = path.copy()
                    step[node["split_feature"]] += _node_value(child) - _node_value(node)
                    stack.append((child, step))
        return LeafTables(
            values=values.reshape(-1),
            credits=credits.reshape(-1, credits.shape[-1]) @ self._to_families,
            offsets=np.arange(len(trees), dtype=np.intp) * width,
        )


@dataclass(frozen=True)
class LeafTables:
    """What a model's leaves hold, one row per (tree, leaf): its value and its credits per
    family; ``offsets`` turns a tree's leaf index into that row."""

    values: np.ndarray
    credits: np.ndarray
    offsets: np.ndarray


def _node_value(node: dict[str, Any]) -> float:
    return float(node["leaf_value"] if "leaf_index" in node else node["internal_value"])
