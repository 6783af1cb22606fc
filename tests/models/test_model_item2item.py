"""The item-to-item model (EASE) on the block world: the same promises as the embedding
models' contract, plus the live scoring the feed uses and pickle-free artifacts."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from model_fixtures import Blocks
from pydantic import ValidationError

from recsys.models.base import ModelNotFittedError
from recsys.models.configs import ItemToItemConfig
from recsys.models.item2item import NEIGHBOURS_FILE, ItemToItemModel, spd_inverse


@pytest.fixture(scope="module")
def model(blocks: Blocks) -> ItemToItemModel:
    return ItemToItemModel(ItemToItemConfig(regularization=10.0)).fit(blocks.interactions)


def test_held_out_item_of_own_block_beats_every_item_of_the_other_block(
    model: ItemToItemModel, blocks: Blocks
) -> None:
    users = np.arange(len(blocks.interactions.users))
    items, _ = model.recommend(users, k=1, filter_seen=blocks.interactions.matrix[users])
    for user in users:
        assert items[user, 0] == blocks.held_out[user]
        assert items[user, 0] not in set(blocks.other_block(user).tolist())


def test_live_history_scores_equal_the_batch_scores(model: ItemToItemModel, blocks: Blocks) -> None:
    matrix = blocks.interactions.matrix.tocsr()
    for user in (0, 7, len(blocks.interactions.users) - 1):
        row = matrix.getrow(user)
        items, scores = model.score_history(row.indices, row.data)
        dense = np.zeros(matrix.shape[1], np.float32)
        dense[items] = scores
        batch, batch_scores = model.recommend([user], k=matrix.shape[1])
        scored = batch_scores[0] > -np.finfo(np.float32).max
        np.testing.assert_allclose(dense[batch[0][scored]], batch_scores[0][scored], rtol=1e-5)
        assert set(items) == set(batch[0][scored].tolist())
    # Only positive events count: a history of skips scores nothing.
    assert model.score_history([0, 1], [-1.0, -4.0])[0].size == 0


def test_neighbours_of_an_item_are_in_its_block(model: ItemToItemModel, blocks: Blocks) -> None:
    item = int(blocks.space_items[0])
    neighbours, weights = model.similar_items(item, k=5)
    assert len(neighbours) == 5 and set(neighbours.tolist()) <= set(blocks.space_items.tolist())
    assert list(weights) == sorted(weights, reverse=True)
    # A cold item (no interactions) has no neighbours and is nobody's neighbour.
    assert model.similar_items(blocks.cold_space, k=5)[0].size == 0
    assert model.neighbours is not None
    assert model.neighbours[:, blocks.cold_space].nnz == 0


def test_artifacts_round_trip_without_pickle(
    model: ItemToItemModel, blocks: Blocks, tmp_path: Path
) -> None:
    model.save(tmp_path / "m")
    with zipfile.ZipFile(tmp_path / "m" / NEIGHBOURS_FILE) as archive:
        assert sorted(archive.namelist()) == ["data.npy", "indices.npy", "indptr.npy", "shape.npy"]
    loaded = ItemToItemModel.load(tmp_path / "m")
    assert loaded.items == model.items and loaded.config == model.config
    assert model.neighbours is not None and loaded.neighbours is not None
    assert (loaded.neighbours != model.neighbours).nnz == 0
    row = blocks.interactions.matrix.tocsr().getrow(3)
    np.testing.assert_array_equal(
        loaded.score_history(row.indices, row.data)[1],
        model.score_history(row.indices, row.data)[1],
    )
    with pytest.raises(ModelNotFittedError):
        loaded.recommend([0], k=3)  # the fitted users' histories are not saved


def test_only_the_most_interacted_items_are_modelled_past_the_cap(blocks: Blocks) -> None:
    capped = ItemToItemModel(ItemToItemConfig(max_items=10, neighbours=3)).fit(blocks.interactions)
    assert capped.neighbours is not None
    counts = np.asarray((blocks.interactions.matrix > 0).sum(axis=0)).ravel()
    modelled = np.unique(sp.find(capped.neighbours)[0])
    assert len(modelled) <= 10 and counts[modelled].min() >= np.sort(counts)[-10]
    assert np.diff(capped.neighbours.indptr).max() <= 3


def test_bad_inputs(model: ItemToItemModel) -> None:
    with pytest.raises(ModelNotFittedError):
        ItemToItemModel().score_history([0], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        model.score_history([0, 1], [1.0])
    with pytest.raises(IndexError):
        model.score_history([10_000], [1.0])
    with pytest.raises(ValidationError):
        ItemToItemConfig(regularization=0.0)
    with pytest.raises(ValidationError):
        ItemToItemConfig(neighbours=0)
    with pytest.raises(TypeError):
        ItemToItemModel(config="lots")  # type: ignore[arg-type]


def test_weights_are_the_closed_form_of_the_paper() -> None:
    # Steck (2019): B = I - P diagMat(1 / diag(P)), P = (X'X + lambda I)^-1, diagonal zero.
    from recsys.dataset import IdMap, InteractionData

    rng = np.random.default_rng(3)
    x = (rng.random((60, 12)) < 0.3).astype(np.float32)
    data = InteractionData(
        matrix=sp.csr_matrix(x),
        users=IdMap([f"u{i}" for i in range(60)]),
        items=IdMap([f"i{j}" for j in range(12)]),
    )
    fitted = ItemToItemModel(ItemToItemConfig(regularization=5.0, neighbours=11)).fit(data)
    p = np.linalg.inv(x.T.astype(np.float64) @ x + 5.0 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    assert fitted.neighbours is not None
    # Every positive weight is kept (11 neighbours of 12 items), the others dropped.
    np.testing.assert_allclose(fitted.neighbours.toarray(), np.maximum(b, 0.0), atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 2_047, 2_049])
def test_the_cholesky_inverse_equals_numpys_in_place(n: int) -> None:
    """``spd_inverse`` (EASE's inverse) against numpy's in double precision, on sizes at
    and across the mirroring's block edge; it reuses the matrix's memory."""
    rng = np.random.default_rng(n)
    x = (rng.random((3 * n + 5, n)) < 0.02).astype(np.float32)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += 10.0
    expected = np.linalg.inv(gram.astype(np.float64))
    work = gram.copy()
    inverse = spd_inverse(work)
    assert inverse.shape == (n, n) and inverse.dtype == np.float32
    assert inverse.flags.c_contiguous and np.shares_memory(inverse, work)
    np.testing.assert_allclose(inverse, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_array_equal(inverse, inverse.T)


def test_an_inverse_of_a_matrix_that_is_not_positive_definite_is_refused() -> None:
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse(indefinite)
