"""ALS/BPR specifics: real-time fold-in, negative confidences, GPU selection."""

from __future__ import annotations

from typing import Any

import implicit.cpu.als
import numpy as np
import pytest
import scipy.sparse as sp
from model_fixtures import Blocks, cosine

from recsys.dataset import IdMap, InteractionData
from recsys.models import als as als_module
from recsys.models.als import ALSModel
from recsys.models.base import EmbeddingModel
from recsys.models.configs import ALSConfig


@pytest.fixture
def als(fitted_models: dict[str, EmbeddingModel[Any]]) -> ALSModel:
    model = fitted_models["als"]
    assert isinstance(model, ALSModel)
    return model


def implicit_reference(model: ALSModel) -> implicit.cpu.als.AlternatingLeastSquares:
    """implicit's own CPU model holding our factors, to compare fold-ins against."""
    config = model.config
    reference = implicit.cpu.als.AlternatingLeastSquares(
        factors=config.factors,
        regularization=config.regularization,
        alpha=config.alpha,
        num_threads=1,
    )
    reference.user_factors = model.user_factors.copy()
    reference.item_factors = model.item_factors.copy()
    return reference


def test_fold_in_of_own_row_reproduces_the_trained_user(als: ALSModel, blocks: Blocks) -> None:
    matrix = blocks.interactions.matrix
    scores_right = 0
    for user in range(matrix.shape[0]):
        row = matrix[user]
        vector = als.fold_in_user(row.indices, row.data)
        assert vector.dtype == np.float32 and vector.shape == (als.dim,)
        assert cosine(vector, als.user_factors[user]) > 0.9
        scores = als.item_factors @ vector
        own, other = blocks.own_block(user), blocks.other_block(user)
        scores_right += scores[own].mean() > scores[other].max()
        assert scores[blocks.held_out[user]] > scores[other].max()
    assert scores_right == matrix.shape[0]


def test_fold_in_matches_implicits_recalculate_user_with_negatives(
    als: ALSModel, blocks: Blocks
) -> None:
    reference = implicit_reference(als)
    n_items = blocks.interactions.matrix.shape[1]
    cases = [
        ([0, 3, 5], [4.0, 2.0, 1.0]),
        ([0, 9, 12, 4], [4.0, -4.0, -1.0, 0.5]),  # dislikes, skips, a weak view
        ([10, 11], [-4.0, -1.0]),  # only negatives
    ]
    for items, weights in cases:
        row = sp.csr_matrix(
            (np.array(weights, np.float32), (np.zeros(len(items), int), items)),
            shape=(1, n_items),
        )
        expected = reference.recalculate_user(0, row)
        np.testing.assert_allclose(als.fold_in_user(items, weights), expected, atol=1e-5)


def test_fold_in_scales_by_alpha_and_sums_repeats(blocks: Blocks) -> None:
    config = ALSConfig(factors=4, regularization=1.0, iterations=5, alpha=3.0, use_gpu=False)
    model = ALSModel(config).fit(blocks.interactions)
    reference = implicit_reference(model)
    n_items = blocks.interactions.matrix.shape[1]
    row = sp.csr_matrix((np.array([3.0, -1.0], np.float32), ([0, 0], [2, 9])), shape=(1, n_items))
    expected = reference.recalculate_user(0, row)
    # The same interactions, delivered as separate events.
    got = model.fold_in_user([2, 9, 2, 2], [1.0, -1.0, 1.5, 0.5])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_fold_in_edge_cases(als: ALSModel) -> None:
    np.testing.assert_array_equal(als.fold_in_user([], []), np.zeros(als.dim, np.float32))
    np.testing.assert_array_equal(
        als.fold_in_user([1, 1], [2.0, -2.0]), np.zeros(als.dim, np.float32)
    )
    with pytest.raises(ValueError, match="differ in length"):
        als.fold_in_user([1, 2], [1.0])
    with pytest.raises(IndexError):
        als.fold_in_user([999], [1.0])
    with pytest.raises(ValueError, match="finite"):
        als.fold_in_user([1], [np.nan])


def test_fold_in_needs_als(fitted_models: dict[str, EmbeddingModel[Any]]) -> None:
    bpr = fitted_models["bpr"]
    assert isinstance(bpr, ALSModel)
    with pytest.raises(ValueError, match="needs an ALS model"):
        bpr.fold_in_user([0], [1.0])


def test_fold_in_works_after_load(als: ALSModel, blocks: Blocks, tmp_path) -> None:
    loaded = ALSModel.load(als.save(tmp_path / "als"))
    row = blocks.interactions.matrix[7]
    np.testing.assert_array_equal(
        loaded.fold_in_user(row.indices, row.data), als.fold_in_user(row.indices, row.data)
    )


def test_bpr_vectors_carry_the_item_bias(fitted_models: dict[str, EmbeddingModel[Any]]) -> None:
    bpr = fitted_models["bpr"]
    assert bpr.dim == 9  # 8 factors + implicit's bias column
    np.testing.assert_array_equal(bpr.user_factors[:, -1], 1.0)


def test_negative_confidence_pushes_an_item_down(blocks: Blocks) -> None:
    config = ALSConfig(factors=8, regularization=1.0, iterations=10, use_gpu=False, num_threads=1)
    model = ALSModel(config).fit(blocks.interactions)
    user = int(blocks.space_users[0])
    row = blocks.interactions.matrix[user]
    items = np.concatenate([row.indices, [blocks.food_items[0]]])
    liked = model.fold_in_user(items, np.concatenate([row.data, [4.0]]))
    disliked = model.fold_in_user(items, np.concatenate([row.data, [-4.0]]))
    target = model.item_factors[blocks.food_items[0]]
    assert target @ liked > target @ disliked


def test_gpu_selection(monkeypatch: pytest.MonkeyPatch, blocks: Blocks) -> None:
    monkeypatch.setattr(als_module, "cuda_available", lambda: False)
    assert ALSModel(ALSConfig(use_gpu="auto"))._use_gpu() is False
    assert ALSModel(ALSConfig(use_gpu=False))._use_gpu() is False
    with pytest.raises(RuntimeError, match="no usable CUDA"):
        ALSModel(ALSConfig(use_gpu=True, factors=2, iterations=1)).fit(blocks.interactions)
    monkeypatch.setattr(als_module, "cuda_available", lambda: True)
    assert ALSModel(ALSConfig(use_gpu="auto"))._use_gpu() is True
    assert ALSModel(ALSConfig(use_gpu=False))._use_gpu() is False


def test_blas_is_limited_to_one_thread_during_fit(
    monkeypatch: pytest.MonkeyPatch, blocks: Blocks
) -> None:
    import implicit.cpu.als as cpu_als
    from threadpoolctl import threadpool_info

    seen: list[int] = []
    original = cpu_als.AlternatingLeastSquares.fit

    def spy(self, *args, **kwargs):
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cpu_als.AlternatingLeastSquares, "fit", spy)
    ALSModel(ALSConfig(factors=2, iterations=1, use_gpu=False)).fit(blocks.interactions)
    assert seen and set(seen) == {1}


def _als(**overrides: Any) -> ALSModel:
    config = ALSConfig(factors=8, regularization=1.0, iterations=10, use_gpu=False, num_threads=1)
    return ALSModel(config.model_copy(update=overrides))


def test_fit_from_continues_from_the_previous_factors(blocks: Blocks) -> None:
    converged = _als().fit(blocks.interactions)
    continued = _als(warm_start_iterations=1).fit_from(converged, blocks.interactions)
    one_fresh = _als(iterations=1).fit(blocks.interactions)
    assert continued.warm_started and not one_fresh.warm_started

    def distance(model: ALSModel) -> float:
        return float(np.abs(model.item_factors - converged.item_factors).max())

    # One more iteration from converged factors barely moves them; one from random does.
    assert distance(continued) < 0.1 * distance(one_fresh)
    scores = continued.score(np.arange(len(blocks.interactions.users)))
    for user in range(scores.shape[0]):
        assert scores[user, blocks.held_out[user]] > scores[user, blocks.other_block(user)].max()


def test_fit_from_fits_afresh_when_it_cannot_continue(blocks: Blocks) -> None:
    data = blocks.interactions
    fresh = _als().fit(data)
    other_users = InteractionData(
        matrix=data.matrix[:-1], users=IdMap(data.users.external_ids[:-1]), items=data.items
    )
    cases = {
        "other id maps": (_als(), _als().fit(other_users)),
        "warm start off": (_als(warm_start_iterations=0), fresh),
        "other factor count": (_als(), _als(factors=4).fit(data)),
    }
    for case, (model, previous) in cases.items():
        model.fit_from(previous, data)
        assert not model.warm_started, case
        np.testing.assert_array_equal(model.item_factors, fresh.item_factors, err_msg=case)
    bpr = ALSModel(ALSConfig(model="bpr", factors=8, iterations=5, use_gpu=False, num_threads=1))
    assert not bpr.fit_from(fresh, data).warm_started
