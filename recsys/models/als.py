"""Behavioural embeddings from implicit: ALS (default) or BPR.

Both read the users x items confidence matrix as is. For ALS, positive confidence ``c`` means
"liked, with confidence alpha * c"; a negative ``c`` means "not liked, with confidence
alpha * |c|" (implicit's convention for dislikes and skips). BPR only sees which entries are
positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.dataset import InteractionData
from recsys.models.base import EmbeddingModel
from recsys.models.configs import ALSConfig


def cuda_available() -> bool:
    """Whether the installed implicit was built with CUDA and sees a device."""
    import implicit.gpu

    return bool(implicit.gpu.HAS_CUDA)


def _to_numpy(factors: Any) -> np.ndarray:
    # GPU models hold implicit.gpu.Matrix objects; to_numpy() copies them to the host.
    if hasattr(factors, "to_numpy"):
        factors = factors.to_numpy()
    return np.ascontiguousarray(factors, dtype=np.float32)


class ALSModel(EmbeddingModel[ALSConfig]):
    """Matrix factorisation; the published vectors are implicit's factors.

    For BPR, implicit already stores the item bias as the last item dimension and a constant
    1 as the last user dimension, so the dot product is the full score there too.
    """

    kind = "als"
    config_class = ALSConfig

    def __init__(self, config: ALSConfig | None = None, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self._gram: np.ndarray | None = None
        self._start_from: tuple[np.ndarray, np.ndarray] | None = None
        # Whether the last fit continued from another model's factors (see ``fit_from``).
        self.warm_started = False

    def fit_from(
        self,
        previous: ALSModel,
        interactions: InteractionData,
        items_df: pd.DataFrame | None = None,
    ) -> ALSModel:
        """Fit, continuing from ``previous``'s factors for ``warm_start_iterations``.

        ``previous`` must be an ALS model over the same id maps and factor count (the
        nightly job's gate model, fitted on an older slice of the same matrix). Otherwise,
        for BPR, on the GPU or with ``warm_start_iterations=0``, this is a plain ``fit``.
        """
        config = self.config
        user_factors, item_factors = previous.user_factors, previous.item_factors
        if (
            user_factors is not None
            and item_factors is not None
            and config.model == "als"
            and config.warm_start_iterations > 0
            and not self._use_gpu()
            and previous.config.model == "als"
            and previous.dim == config.factors
            and previous.users == interactions.users
            and previous.items == interactions.items
        ):
            self._start_from = (user_factors, item_factors)
        try:
            return self.fit(interactions, items_df)
        finally:
            self._start_from = None

    def _use_gpu(self) -> bool:
        wanted = self.config.use_gpu
        if wanted == "auto":
            return cuda_available()
        if wanted and not cuda_available():
            raise RuntimeError(
                "use_gpu=True but implicit has no usable CUDA build here; "
                'set use_gpu to "auto" or False'
            )
        return bool(wanted)

    def _fit(
        self, interactions: InteractionData, items_df: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray]:
        import implicit.als
        import implicit.bpr

        config = self.config
        use_gpu = self._use_gpu()
        matrix = interactions.matrix
        self._gram = None
        start_from, self.warm_started = self._start_from, self._start_from is not None
        # implicit's native loops run their own threads; a threaded BLAS underneath them
        # oversubscribes the cores and can make fitting an order of magnitude slower.
        with threadpool_limits(1, "blas"):
            estimator: Any
            if config.model == "als":
                estimator = implicit.als.AlternatingLeastSquares(
                    factors=config.factors,
                    regularization=config.regularization,
                    alpha=config.alpha,
                    dtype=np.float32,
                    iterations=(config.warm_start_iterations if start_from else config.iterations),
                    use_gpu=use_gpu,
                    num_threads=config.num_threads,
                    random_state=config.random_state,
                )
                if start_from:
                    # implicit keeps factors that are already set and iterates from them.
                    estimator.user_factors = start_from[0].copy()
                    estimator.item_factors = start_from[1].copy()
                train = matrix
            else:
                estimator = implicit.bpr.BayesianPersonalizedRanking(
                    factors=config.factors,
                    learning_rate=config.learning_rate,
                    regularization=config.regularization,
                    dtype=np.float32,
                    iterations=config.iterations,
                    use_gpu=use_gpu,
                    num_threads=config.num_threads,
                    random_state=config.random_state,
                )
                # BPR treats every stored entry as a positive: dislikes must not be among them.
                train = sp.csr_matrix(matrix > 0, dtype=np.float32)
                if train.nnz == 0:
                    raise ValueError("BPR needs at least one positive interaction")
            estimator.fit(train, show_progress=False)
            if use_gpu:
                # to_cpu() builds a CPU model, which checks the BLAS threads: keep it inside.
                estimator = estimator.to_cpu()
        return _to_numpy(estimator.user_factors), _to_numpy(estimator.item_factors)

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        self._gram = None

    def _item_gram(self) -> np.ndarray:
        _, item_factors = self._factors()
        if self._gram is None or self._gram.shape[0] != item_factors.shape[1]:
            y = item_factors.astype(np.float64)
            self._gram = y.T @ y
        return self._gram

    def fold_in_user(self, item_indices: Any, weights: Any) -> np.ndarray:
        """A user's vector from their interactions, holding the item factors fixed.

        This is one exact ALS half-step for one user (what implicit's ``recalculate_user``
        computes), so a user can be refreshed in real time without refitting. ``weights``
        are raw confidences, as in the interaction matrix: they are scaled by alpha here,
        repeated items are summed, and negative weights count as confident "not liked".
        """
        if self.config.model != "als":
            raise ValueError("fold_in_user needs an ALS model; BPR has no closed-form fold-in")
        _, item_factors = self._factors()
        items = np.atleast_1d(np.asarray(item_indices)).ravel()
        values = np.atleast_1d(np.asarray(weights, dtype=np.float64)).ravel()
        if items.shape != values.shape:
            raise ValueError(
                f"item_indices and weights differ in length: {items.size} vs {values.size}"
            )
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"item_indices must be integers, got {items.dtype}")
        n_items, factors = item_factors.shape
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise IndexError(f"item index out of range for {n_items} items")
        if not np.isfinite(values).all():
            raise ValueError("weights must be finite")
        unique, inverse = np.unique(items.astype(np.int64), return_inverse=True)
        confidence = self.config.alpha * np.bincount(inverse, weights=values, minlength=unique.size)
        keep = confidence != 0
        unique, confidence = unique[keep], confidence[keep]
        if unique.size == 0:
            return np.zeros(factors, dtype=np.float32)
        # Minimise sum_i c_i (p_i - x.y_i)^2 + reg |x|^2 over all items, where unobserved
        # items have c = 1, p = 0. Normal equations:
        #   (Y'Y + reg I + sum_observed (|c_i| - 1) y_i y_i') x = sum_{c_i > 0} c_i y_i
        y = item_factors[unique].astype(np.float64)
        a = self._item_gram() + self.config.regularization * np.eye(factors)
        a += (y.T * (np.abs(confidence) - 1.0)) @ y
        b = y.T @ np.where(confidence > 0, confidence, 0.0)
        return np.linalg.solve(a, b).astype(np.float32)
