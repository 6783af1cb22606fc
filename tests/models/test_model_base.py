"""The shared machinery: input validation, recommend(), persistence and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from model_fixtures import Blocks
from pydantic import BaseModel

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.dataset import IdMap, InteractionData
from recsys.models import ALSModel, ContentModel, HybridModel, load_model
from recsys.models import base as base_module
from recsys.models.base import (
    STATE_FILE,
    EmbeddingModel,
    ModelNotFittedError,
    align_items,
    register_model,
    top_k,
    validate_interactions,
)
from recsys.models.configs import ALSConfig


class FixedConfig(BaseModel):
    dim: int = 3


class FixedModel(EmbeddingModel[FixedConfig]):
    """Factors given up front: lets the tests check the base class on known vectors."""

    kind = "fixed-test"
    config_class = FixedConfig

    def __init__(self, config: FixedConfig | None = None, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.given: tuple[np.ndarray, np.ndarray] | None = None

    def _fit(self, interactions: InteractionData, items_df: pd.DataFrame | None):
        assert self.given is not None
        return self.given


def fixed_model(user_factors: np.ndarray, item_factors: np.ndarray) -> FixedModel:
    model = FixedModel()
    model._set_factors(
        user_factors,
        item_factors,
        IdMap([f"u{i}" for i in range(len(user_factors))]),
        IdMap([f"i{i}" for i in range(len(item_factors))]),
    )
    return model


# ---------------------------------------------------------------------- recommend


def brute_force(scores: np.ndarray, k: int, seen: np.ndarray | None):
    items, values = [], []
    for row in range(scores.shape[0]):
        candidates = [
            (-float(scores[row, i]), i)
            for i in range(scores.shape[1])
            if seen is None or not seen[row, i]
        ]
        candidates.sort()
        top = candidates[:k]
        items.append([i for _, i in top])
        values.append([-s for s, _ in top])
    return items, values


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_users=st.integers(1, 6),
    n_items=st.integers(1, 12),
    dim=st.integers(1, 4),
    k=st.integers(1, 15),
)
def test_recommend_matches_brute_force(data, n_users, n_items, dim, k) -> None:
    # Small integer factors give exact float32 scores, with plenty of ties.
    factors = st.integers(-3, 3)
    users = data.draw(arrays(np.int64, (n_users, dim), elements=factors)).astype(np.float32)
    items = data.draw(arrays(np.int64, (n_items, dim), elements=factors)).astype(np.float32)
    seen = data.draw(arrays(np.bool_, (n_users, n_items)))
    model = fixed_model(users, items)
    requested = np.arange(n_users)[::-1]
    got_items, got_scores = model.recommend(requested, k, filter_seen=sp.csr_matrix(seen))
    width = min(k, n_items)
    assert got_items.shape == got_scores.shape == (n_users, width)
    assert got_items.dtype == np.int64 and got_scores.dtype == np.float32
    want_items, want_scores = brute_force(users[requested] @ items.T, k, seen)
    for row in range(n_users):
        n_valid = len(want_items[row])
        assert got_items[row, :n_valid].tolist() == want_items[row]
        assert got_scores[row, :n_valid].tolist() == want_scores[row]
        assert (got_items[row, n_valid:] == -1).all()
        assert np.isneginf(got_scores[row, n_valid:]).all()


def test_recommend_filters_negative_entries_too_and_pads() -> None:
    model = fixed_model(np.ones((1, 1), np.float32), np.arange(4, dtype=np.float32)[:, None])
    seen = sp.csr_matrix(np.array([[0.0, -4.0, 0.0, 2.0]], dtype=np.float32))
    items, scores = model.recommend([0], k=3, filter_seen=seen)
    assert items.tolist() == [[2, 0, -1]]
    assert scores[0, :2].tolist() == [2.0, 0.0] and np.isneginf(scores[0, 2])


@pytest.mark.parametrize("threads", [1, 3])
def test_recommend_in_batches_matches_one_shot(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    rng = np.random.default_rng(3)
    model = fixed_model(
        rng.integers(-5, 5, (23, 4)).astype(np.float32),
        rng.integers(-5, 5, (17, 4)).astype(np.float32),
    )
    seen = sp.random(23, 17, density=0.2, format="csr", random_state=1)
    users = np.arange(23)
    expected = model.recommend(users, 7, filter_seen=seen)
    monkeypatch.setattr(base_module, "RECOMMEND_BATCH_USERS", 4)
    monkeypatch.setattr(base_module, "RECOMMEND_THREADS", threads)  # blocks ranked in parallel
    actual = model.recommend(users, 7, filter_seen=seen)
    np.testing.assert_array_equal(actual[0], expected[0])
    np.testing.assert_array_equal(actual[1], expected[1])


def test_recommend_rejects_bad_arguments() -> None:
    model = fixed_model(np.ones((3, 2), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="one row per requested user"):
        model.recommend([0, 1], 2, filter_seen=sp.csr_matrix((3, 4)))
    with pytest.raises(ValueError, match="one row per requested user"):
        model.recommend([0], 2, filter_seen=sp.csr_matrix((1, 5)))
    with pytest.raises(ValueError, match="k must be"):
        model.recommend([0], 0)
    with pytest.raises(IndexError):
        model.recommend([3], 2)
    with pytest.raises(IndexError):
        model.score([-1])
    with pytest.raises(ValueError, match="integers"):
        model.score([0.5])
    assert model.recommend([], 2)[0].shape == (0, 2)


def test_unfitted_model_says_so(tmp_path: Path) -> None:
    for model in (ALSModel(), HybridModel(), ContentModel(), FixedModel()):
        assert not model.is_fitted
        with pytest.raises(ModelNotFittedError):
            model.score([0])
        with pytest.raises(ModelNotFittedError):
            model.save(tmp_path / model.kind)


def test_top_k_orders_ties_by_item_index() -> None:
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 1.0]], dtype=np.float32)
    items, values = top_k(scores, 5)
    assert items.tolist() == [[1, 2, 0, 4, -1]]
    assert values[0, :4].tolist() == [3.0, 3.0, 1.0, 1.0]


# ---------------------------------------------------------------------- input validation


def interactions_from(rows: list[tuple[str, str, float]], items: list[str] | None = None):
    frame = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, WEIGHT])
    return InteractionData.from_weights(frame, items=IdMap(items) if items else None)


@pytest.mark.parametrize("model_class", [ALSModel, HybridModel, ContentModel])
def test_empty_interaction_matrix_is_a_clear_error(model_class: type, blocks: Blocks) -> None:
    empty = InteractionData(
        matrix=sp.csr_matrix((0, 0), dtype=np.float32), users=IdMap([]), items=IdMap([])
    )
    with pytest.raises(ValueError, match="empty interaction matrix"):
        model_class().fit(empty, blocks.items_df)
    # Users and items, but every confidence cancelled out.
    cancelled = interactions_from([("a", "space-0", 2.0), ("a", "space-0", -2.0)])
    with pytest.raises(ValueError, match="empty interaction matrix"):
        model_class().fit(cancelled, blocks.items_df)


def test_validate_interactions_catches_shape_and_values() -> None:
    good = interactions_from([("a", "x", 1.0), ("b", "y", -1.0)])
    wrong_shape = InteractionData(good.matrix, good.users, IdMap(["x", "y", "z"]))
    with pytest.raises(ValueError, match="does not match the id maps"):
        validate_interactions(wrong_shape)
    nan = InteractionData(good.matrix.copy(), good.users, good.items)
    nan.matrix.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validate_interactions(nan)
    with pytest.raises(TypeError):
        validate_interactions(good.matrix)  # type: ignore[arg-type]


def test_validate_interactions_leaves_the_callers_matrix_alone() -> None:
    matrix = sp.csr_matrix(
        (np.array([1.0, 0.0, 2.0], np.float32), np.array([0, 1, 0]), np.array([0, 2, 3])),
        shape=(2, 2),
    )
    data = InteractionData(matrix, IdMap(["a", "b"]), IdMap(["x", "y"]))
    clean = validate_interactions(data)
    assert clean.nnz == 2 and matrix.nnz == 3


@pytest.mark.parametrize("model_class", [ALSModel, HybridModel, ContentModel])
def test_mismatched_item_frame_is_a_clear_error(model_class: type, blocks: Blocks) -> None:
    missing = blocks.items_df[blocks.items_df[ITEM_ID] != "food-3"]
    with pytest.raises(ValueError, match=r"1 of 18 items are missing.*food-3"):
        model_class().fit(blocks.interactions, missing)
    duplicated = pd.concat([blocks.items_df, blocks.items_df.iloc[[0]]])
    with pytest.raises(ValueError, match="duplicate item ids"):
        model_class().fit(blocks.interactions, duplicated)
    with pytest.raises(ValueError, match="no 'item_id' column"):
        model_class().fit(blocks.interactions, blocks.items_df.drop(columns=[ITEM_ID]))


@pytest.mark.parametrize("model_class", [HybridModel, ContentModel])
def test_feature_models_need_the_catalogue(model_class: type, blocks: Blocks) -> None:
    with pytest.raises(ValueError, match="needs the item catalogue"):
        model_class().fit(blocks.interactions)


def test_align_items_reorders_and_ignores_extra_rows(blocks: Blocks) -> None:
    shuffled = blocks.items_df.sample(frac=1.0, random_state=0)
    extra = pd.DataFrame([{ITEM_ID: "not-in-map", "title": "x"}])
    aligned = align_items(pd.concat([extra, shuffled]), blocks.interactions.items)
    assert aligned[ITEM_ID].tolist() == blocks.interactions.items.to_json()


def test_wrong_config_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="ALSConfig"):
        ALSModel(FixedConfig())  # type: ignore[arg-type]


# ---------------------------------------------------------------------- persistence


def test_registry_dispatches_on_the_saved_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_module, "_REGISTRY", dict(base_module._REGISTRY))
    register_model(FixedModel)
    model = fixed_model(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32))
    model.name = "published-as"
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, FixedModel) and loaded.name == "published-as"
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    with pytest.raises(ValueError, match="holds a 'fixed-test' model"):
        ALSModel.load(tmp_path / "m")


def test_load_rejects_unknown_kind_and_version(tmp_path: Path) -> None:
    model = ALSModel(ALSConfig(factors=2, iterations=1, use_gpu=False))
    model.fit(interactions_from([("a", "x", 1.0), ("b", "y", 2.0)]))
    directory = model.save(tmp_path / "m")
    state = json.loads((directory / STATE_FILE).read_text())
    (directory / STATE_FILE).write_text(json.dumps({**state, "kind": "nope"}))
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        load_model(directory)
    (directory / STATE_FILE).write_text(json.dumps({**state, "format_version": 99}))
    with pytest.raises(ValueError, match="unsupported model format version 99"):
        load_model(directory)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nowhere")


class ObjectArrayModel(FixedModel):
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"bad": np.array([{"a": 1}], dtype=object)}


def test_save_refuses_object_arrays(tmp_path: Path) -> None:
    model = ObjectArrayModel()
    model._set_factors(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), *_maps(2))
    with pytest.raises(TypeError, match="dtype object"):
        model.save(tmp_path / "m")


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_module, "_REGISTRY", dict(base_module._REGISTRY))
    register_model(FixedModel)
    model = fixed_model(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32))
    directory = model.save(tmp_path / "m")
    # A tampered file whose arrays would need pickle is refused, not executed.
    np.savez(
        directory / "factors.npz",
        user_factors=np.eye(2, dtype=np.float32),
        item_factors=np.array([[1, 0], [0, 1]], dtype=object),
    )
    with pytest.raises(ValueError, match="allow_pickle"):
        load_model(directory)


def _maps(n: int) -> tuple[IdMap, IdMap]:
    return IdMap([f"u{i}" for i in range(n)]), IdMap([f"i{i}" for i in range(n)])
