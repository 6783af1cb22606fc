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


def _as_index(
    values: Iterable[str] | pd.Series | pd.Index | pd.api.extensions.ExtensionArray | np.ndarray,
) -> pd.Index:
    """An object-dtype Index without a Python-level loop over (Arrow-backed) strings.

    The dtype is explicit because pandas 3 would infer its Arrow ``str`` dtype, whose hash
    lookups are slower: measured at 50k ids, ``get_indexer`` of 200 ids 35 vs 13 us and
    ``isin`` of 50k ids 402 vs 5 ms.
    """
    if isinstance(values, pd.Index) and values.dtype == object:
        return values
    if isinstance(values, pd.Index | pd.Series | pd.api.extensions.ExtensionArray):
        return pd.Index(values.to_numpy(dtype=object), dtype=object)
    if isinstance(values, np.ndarray):
        return pd.Index(values.astype(object, copy=False), dtype=object)
    return pd.Index(np.asarray(list(values), dtype=object), dtype=object)


class IdMap:
    """A bijection between external string ids and dense indices ``0..n-1``."""

    def __init__(self, external_ids: Iterable[str]) -> None:
        index = _as_index(external_ids)
        if not index.is_unique:
            raise ValueError("IdMap ids must be unique")
        self._ids = index.to_numpy(dtype=object)
        self._index = index

    @classmethod
    def from_values(cls, values: Iterable[str]) -> IdMap:
        """Build from values that may repeat; order of first appearance is kept."""
        return cls(_as_index(values).unique())

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    @property
    def external_ids(self) -> np.ndarray:
        return self._ids

    def to_internal(self, external_ids: Iterable[str], *, strict: bool = True) -> np.ndarray:
        """Indices for ids; unknown ids raise, or map to -1 when ``strict`` is False."""
        wanted = _as_index(external_ids)
        positions = self._index.get_indexer(wanted)
        if strict and (positions < 0).any():
            missing = wanted[positions < 0][:5].tolist()
            raise KeyError(f"unknown ids: {missing}")
        return positions.astype(np.int64)

    def index_of(self, external_id: str) -> int | None:
        position = self._index.get_indexer([external_id])[0]
        return None if position < 0 else int(position)

    def to_external(self, internal_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        return self._ids[np.asarray(internal_ids, dtype=np.int64)]

    def add(self, external_ids: Iterable[str]) -> IdMap:
        """A new map extended with ids not yet present (existing indices are kept)."""
        candidates = _as_index(external_ids).unique()
        new = candidates[~candidates.isin(self._index)]
        if len(new) == 0:
            return self
        return IdMap(np.concatenate([self._ids, new.to_numpy(dtype=object)]))

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
        # Uncompressed: zlib took about a second per 3M pairs of the nightly job for a file
        # only ~30 % smaller (measured at 2.8M pairs: 2.6 s vs 0.04 s, 16.5 vs 22.6 MB).
        sp.save_npz(directory / "interactions.npz", self.matrix, compressed=False)
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
