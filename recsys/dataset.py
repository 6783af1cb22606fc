"""The interaction matrix and the one id map between external ids and matrix rows.

External ids are strings everywhere outside this module and the model code; row indices
never reach the store, the API or the vector payloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import ITEM_ID, USER_ID, WEIGHT

IDMAP_FORMAT_VERSION = 1


class IdMap:
    """A bijection between external string ids and dense indices ``0..n-1``."""

    def __init__(self, external_ids: Iterable[str]) -> None:
        ids = np.asarray(list(external_ids), dtype=object)
        index = pd.Index(ids)
        if not index.is_unique:
            raise ValueError("IdMap ids must be unique")
        self._ids = ids
        self._index = index

    @classmethod
    def from_values(cls, values: Iterable[str]) -> IdMap:
        """Build from values that may repeat; order of first appearance is kept."""
        return cls(pd.unique(pd.Series(list(values), dtype=object)))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    @property
    def external_ids(self) -> np.ndarray:
        return self._ids

    def to_internal(self, external_ids: Iterable[str], *, strict: bool = True) -> np.ndarray:
        """Indices for ids; unknown ids raise, or map to -1 when ``strict`` is False."""
        positions = self._index.get_indexer(pd.Index(list(external_ids), dtype=object))
        if strict and (positions < 0).any():
            missing = [e for e, p in zip(external_ids, positions, strict=False) if p < 0][:5]
            raise KeyError(f"unknown ids: {missing}")
        return positions.astype(np.int64)

    def index_of(self, external_id: str) -> int | None:
        position = self._index.get_indexer([external_id])[0]
        return None if position < 0 else int(position)

    def to_external(self, internal_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        return self._ids[np.asarray(internal_ids, dtype=np.int64)]

    def add(self, external_ids: Iterable[str]) -> IdMap:
        """A new map extended with ids not yet present (existing indices are kept)."""
        new = [e for e in pd.unique(pd.Series(list(external_ids), dtype=object)) if e not in self]
        return IdMap(np.concatenate([self._ids, np.asarray(new, dtype=object)]))

    def to_json(self) -> list[str]:
        return [str(e) for e in self._ids]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and list(self._ids) == list(other._ids)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class InteractionData:
    """A users x items confidence matrix with its two id maps."""

    matrix: sp.csr_matrix
    users: IdMap
    items: IdMap

    @classmethod
    def from_weights(
        cls,
        weights: pd.DataFrame,
        *,
        items: IdMap | None = None,
        users: IdMap | None = None,
    ) -> InteractionData:
        """Build from a frame of ``user_id, item_id, weight``; duplicate pairs are summed.

        ``items``/``users`` fix the id maps (catalogue items without interactions get
        empty columns); ids in ``weights`` not in them are appended.
        """
        user_map = (users or IdMap([])).add(weights[USER_ID])
        item_map = (items or IdMap([])).add(weights[ITEM_ID])
        rows = user_map.to_internal(weights[USER_ID])
        cols = item_map.to_internal(weights[ITEM_ID])
        matrix = sp.coo_matrix(
            (weights[WEIGHT].to_numpy(np.float32), (rows, cols)),
            shape=(len(user_map), len(item_map)),
        ).tocsr()
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        return cls(matrix=matrix, users=user_map, items=item_map)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        sp.save_npz(directory / "interactions.npz", self.matrix)
        payload = {
            "format_version": IDMAP_FORMAT_VERSION,
            "users": self.users.to_json(),
            "items": self.items.to_json(),
        }
        (directory / "idmap.json").write_text(json.dumps(payload))

    @classmethod
    def load(cls, directory: Path) -> InteractionData:
        payload = json.loads((directory / "idmap.json").read_text())
        if payload.get("format_version") != IDMAP_FORMAT_VERSION:
            raise ValueError(f"unsupported id map format {payload.get('format_version')}")
        matrix = sp.load_npz(directory / "interactions.npz").tocsr()
        return cls(matrix=matrix, users=IdMap(payload["users"]), items=IdMap(payload["items"]))
