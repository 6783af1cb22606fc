"""Popularity: users with a positive interaction, per item. The baseline every other model
must beat (the quality gate, the evaluation report) and the feed's "popular" source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.dataset import InteractionData

# The array a version stores, aligned with its item id map.
POPULARITY_FILE = "popularity.npy"


def positive_users(data: InteractionData) -> np.ndarray:
    """Users with a positive interaction, per item (a column of the interaction matrix)."""
    positive = data.matrix.copy()
    positive.data = (positive.data > 0).astype(np.float32)
    return np.asarray(positive.sum(axis=0)).ravel()


def top_unseen(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """Per user (row of ``seen``), the ``k`` best-scored items not seen, best first (ties
    by item index); -1 pads a user who has seen nearly everything.

    One global ranking walked per user: a users x items score matrix (and its argsort) was
    the nightly job's memory peak, several GB at 100k items.
    """
    order = np.argsort(-scores, kind="stable")
    most_seen = int(np.diff(seen.indptr).max()) if seen.shape[0] else 0
    head = order[: k + most_seen]  # holds k unseen items for every user
    unseen = seen[:, head].toarray() == 0
    rank = np.cumsum(unseen, axis=1)
    users, positions = np.nonzero(unseen & (rank <= k))
    out = np.full((seen.shape[0], k), -1, dtype=np.int64)
    out[users, rank[users, positions] - 1] = head[positions]
    return out


class PopularityModel:
    """The same list for everyone, minus what each user has seen."""

    name = "popularity"

    def __init__(self, scores: np.ndarray | None = None) -> None:
        self.scores = scores

    def fit(self, data: InteractionData) -> PopularityModel:
        self.scores = positive_users(data)
        return self

    def recommend(
        self, user_indices: np.ndarray, k: int, filter_seen: sp.spmatrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per user as ``EmbeddingModel.recommend`` gives them: item indices
        (-1 padded) and scores, best first, without the entries of ``filter_seen`` (one row
        per requested user)."""
        if self.scores is None:
            raise RuntimeError("the popularity model is not fitted")
        n_users = len(np.atleast_1d(user_indices))
        seen = (
            sp.csr_matrix((n_users, len(self.scores)))
            if filter_seen is None
            else sp.csr_matrix(filter_seen)
        )
        if seen.shape != (n_users, len(self.scores)):
            raise ValueError(
                f"filter_seen must have one row per requested user and one column per item: "
                f"expected {(n_users, len(self.scores))}, got {seen.shape}"
            )
        items = top_unseen(self.scores, seen, k)
        scores = np.where(items >= 0, self.scores[np.maximum(items, 0)], -np.inf)
        return items, scores.astype(np.float32)

    def save(self, directory: Path) -> Path:
        if self.scores is None:
            raise RuntimeError("the popularity model is not fitted")
        path = directory / POPULARITY_FILE
        np.save(path, self.scores)
        return path

    @classmethod
    def load(cls, directory: Path) -> PopularityModel | None:
        """The saved model, or None for a version saved without one."""
        path = directory / POPULARITY_FILE
        return cls(np.load(path, allow_pickle=False)) if path.exists() else None
