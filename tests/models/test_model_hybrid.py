"""Hybrid (LightFM) specifics: publishable vectors, features, cold and new items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from model_fixtures import Blocks, cosine, new_item_frame

from recsys.columns import ITEM_ID
from recsys.dataset import IdMap, InteractionData
from recsys.models.base import EmbeddingModel
from recsys.models.configs import HybridConfig
from recsys.models.hybrid import HybridModel, ItemFeatures


@pytest.fixture
def hybrid(fitted_models: dict[str, EmbeddingModel[Any]]) -> HybridModel:
    model = fitted_models["hybrid"]
    assert isinstance(model, HybridModel)
    return model


def embedding_part(vectors: np.ndarray) -> np.ndarray:
    return vectors[..., :-2]


def test_dot_product_reproduces_lightfm_predict(hybrid: HybridModel, blocks: Blocks) -> None:
    assert hybrid.dim == hybrid.config.no_components + 2
    n_users, n_items = blocks.interactions.matrix.shape
    users = np.repeat(np.arange(n_users), n_items)
    items = np.tile(np.arange(n_items), n_users)
    features = hybrid.item_feature_matrix(blocks.items_df)
    predicted = hybrid.estimator.predict(users, items, item_features=features, num_threads=1)
    dots = np.einsum("ij,ij->i", hybrid.user_factors[users], hybrid.item_factors[items])
    # Users with interactions only: the others were zeroed on purpose (see below).
    trained = np.diff(blocks.interactions.matrix.indptr)[users] > 0
    np.testing.assert_allclose(dots[trained], predicted[trained], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(hybrid.user_factors[:, -1], 1.0)
    np.testing.assert_array_equal(hybrid.item_factors[:, -2], 1.0)


def test_cold_catalogue_item_lands_near_items_sharing_its_tags(
    hybrid: HybridModel, blocks: Blocks
) -> None:
    vectors = embedding_part(hybrid.item_factors)
    for cold, own, other in (
        (blocks.cold_space, blocks.space_items, blocks.food_items),
        (blocks.cold_food, blocks.food_items, blocks.space_items),
    ):
        assert np.abs(vectors[cold]).sum() > 0
        nearest_own = min(cosine(vectors[cold], vectors[i]) for i in own)
        nearest_other = max(cosine(vectors[cold], vectors[i]) for i in other)
        assert nearest_own > 0.5 > nearest_other
    # ... and the users of its block rank it above every item of the other block.
    scores = hybrid.score(blocks.space_users)
    assert (scores[:, blocks.cold_space] > scores[:, blocks.food_items].max(axis=1)).all()


def test_cold_items_have_no_identity_feature(hybrid: HybridModel, blocks: Blocks) -> None:
    assert hybrid.features is not None
    identities = set(hybrid.features.identity)
    assert "space-new" not in identities and "food-new" not in identities
    assert {f"space-{i}" for i in range(8)} <= identities


def test_embed_items_reproduces_trained_items(hybrid: HybridModel, blocks: Blocks) -> None:
    np.testing.assert_allclose(
        hybrid.embed_items(blocks.items_df), hybrid.item_factors, rtol=1e-6, atol=1e-7
    )


def test_new_item_is_embedded_from_features_and_survives_save_load(
    hybrid: HybridModel, blocks: Blocks, tmp_path: Path
) -> None:
    arrivals = new_item_frame()
    before = hybrid.embed_items(arrivals)
    assert before.shape == (2, hybrid.dim) and before.dtype == np.float32
    vectors = embedding_part(hybrid.item_factors)
    space = embedding_part(before[0])
    assert min(cosine(space, vectors[i]) for i in blocks.space_items) > 0.5
    assert max(cosine(space, vectors[i]) for i in blocks.food_items) < 0.0
    # Nothing about the second item is known: no embedding, no bias, just the constant.
    np.testing.assert_array_equal(before[1], [0.0] * hybrid.config.no_components + [1.0, 0.0])

    loaded = HybridModel.load(hybrid.save(tmp_path / "hybrid"))
    assert loaded.estimator is None
    np.testing.assert_array_equal(loaded.embed_items(arrivals), before)


def test_new_item_without_item_id_column_still_embeds(hybrid: HybridModel) -> None:
    arrivals = new_item_frame()
    np.testing.assert_array_equal(
        hybrid.embed_items(arrivals.drop(columns=[ITEM_ID])), hybrid.embed_items(arrivals)
    )


def test_users_without_positives_get_a_neutral_vector(blocks: Blocks) -> None:
    frame = blocks.items_df
    matrix = blocks.interactions.matrix.tolil()
    matrix[0, :] = 0
    matrix[0, blocks.food_items[0]] = -4.0  # this user only ever disliked something
    data = InteractionData(
        matrix=matrix.tocsr(), users=blocks.interactions.users, items=blocks.interactions.items
    )
    model = HybridModel(HybridConfig(no_components=4, epochs=2, num_threads=1)).fit(data, frame)
    np.testing.assert_array_equal(model.user_factors[0], [0, 0, 0, 0, 0, 1])


def test_only_negative_interactions_is_an_error(blocks: Blocks) -> None:
    negative = InteractionData(
        matrix=-abs(blocks.interactions.matrix),
        users=blocks.interactions.users,
        items=blocks.interactions.items,
    )
    with pytest.raises(ValueError, match="positive interaction"):
        HybridModel().fit(negative, blocks.items_df)


def test_item_features_vocabulary_and_normalisation() -> None:
    frame = pd.DataFrame(
        {
            ITEM_ID: ["a", "b", "c", "d"],
            "title": ["Rocket launch", "Rocket science", "Pasta night", None],
            "text": ["the rocket flies", float("nan"), "pasta pasta", "rocket"],
            "tags": [
                ["Space", "space ", "launch"],
                np.array(["space"], dtype=object),
                None,
                "space",
            ],
            "category": ["Science", None, "food", float("nan")],
        }
    )
    config = HybridConfig(min_tag_count=2, min_token_count=2, max_text_tokens=100)
    features = ItemFeatures.build(frame, identity=["a", "c"], config=config)
    assert features.tags == ["space"]  # "launch" is on one item only
    assert features.categories == ["food", "science"]
    # "the" is a stop word; "pasta" is in one item only (however often it repeats there).
    assert features.tokens == ["rocket"]
    matrix = features.transform(frame)
    assert matrix.shape == (4, features.n_features)
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    names = features.feature_names
    row_a = dict(zip([names[i] for i in matrix[0].indices], matrix[0].data, strict=True))
    # identity, tag and category weigh 1, a word 0.5; the row sums to 1.
    assert row_a == pytest.approx(
        {
            "id:a": 1 / 3.5,
            "tag:space": 1 / 3.5,
            "category:science": 1 / 3.5,
            "token:rocket": 0.5 / 3.5,
        }
    )
    assert ItemFeatures.from_json(features.to_json()).feature_names == names


def test_item_features_without_text_or_tags() -> None:
    frame = pd.DataFrame({ITEM_ID: ["a", "b"]})
    features = ItemFeatures.build(frame, identity=["a"], config=HybridConfig())
    assert features.n_features == 1
    matrix = features.transform(frame)
    assert matrix[0].toarray().tolist() == [[1.0]] and matrix[1].nnz == 0


def test_fit_on_catalogue_without_text_columns() -> None:
    items = IdMap(["x", "y", "z"])
    frame = pd.DataFrame({ITEM_ID: ["z", "y", "x"]})
    data = InteractionData.from_weights(
        pd.DataFrame({"user_id": ["u", "v"], "item_id": ["x", "y"], "weight": [1.0, 2.0]}),
        items=items,
    )
    model = HybridModel(HybridConfig(no_components=3, epochs=1, num_threads=1)).fit(data, frame)
    assert model.item_factors.shape == (3, 5)
    # "z" has neither interactions nor features: it scores by nothing.
    np.testing.assert_array_equal(model.item_factors[2], [0, 0, 0, 1, 0])


def _hybrid(**overrides: Any) -> HybridModel:
    config = HybridConfig(no_components=8, epochs=30, num_threads=1, random_state=3)
    return HybridModel(config.model_copy(update=overrides))


def test_fit_from_continues_from_the_previous_state_and_starts_new_features_fresh(
    blocks: Blocks,
) -> None:
    data = blocks.interactions
    # The earlier fit saw no interaction with one space item: it had no identity feature.
    newcomer = int(blocks.space_items[0])
    earlier = data.matrix.tolil()
    earlier[:, newcomer] = 0
    before = InteractionData(matrix=earlier.tocsr(), users=data.users, items=data.items)
    previous = _hybrid().fit(before, blocks.items_df)
    newcomer_id = f"id:{data.items.external_ids[newcomer]}"
    assert newcomer_id not in previous.features.feature_names  # type: ignore[union-attr]

    continued = _hybrid(warm_start_epochs=1).fit_from(previous, data, blocks.items_df)
    one_fresh = _hybrid(epochs=1).fit(data, blocks.items_df)
    assert continued.warm_started and not one_fresh.warm_started
    names = continued.features.feature_names  # type: ignore[union-attr]
    assert newcomer_id in names
    old_names = previous.features.feature_names  # type: ignore[union-attr]
    shared = [n for n in names if n in old_names]
    assert len(shared) == len(old_names)
    new_rows = [names.index(n) for n in shared]
    old_rows = [old_names.index(n) for n in shared]

    def distance(model: HybridModel) -> float:
        moved = (
            model.estimator.item_embeddings[new_rows] - previous.estimator.item_embeddings[old_rows]
        )
        return float(np.abs(moved).mean())

    # One more epoch from a fitted state moves the shared features a little; one epoch from
    # random starts lands far from it.
    assert distance(continued) < 0.5 * distance(one_fresh)
    # And the continued model still ranks each user's own block first.
    scores = continued.score(np.arange(len(data.users)))
    for user in range(scores.shape[0]):
        assert (
            scores[user, blocks.own_block(user)].mean()
            > scores[user, blocks.other_block(user)].mean()
        )


def test_hybrid_fit_from_fits_afresh_when_it_cannot_continue(
    blocks: Blocks, tmp_path: Path
) -> None:
    data = blocks.interactions
    fresh = _hybrid().fit(data, blocks.items_df)
    loaded = HybridModel.load(fresh.save(tmp_path / "saved"))
    other_users = InteractionData(
        matrix=data.matrix[:-1], users=IdMap(data.users.external_ids[:-1]), items=data.items
    )
    cases = {
        "other users": (_hybrid(), _hybrid().fit(other_users, blocks.items_df)),
        "warm start off": (_hybrid(warm_start_epochs=0), fresh),
        "other component count": (_hybrid(), _hybrid(no_components=4).fit(data, blocks.items_df)),
        "loaded, not fitted here": (_hybrid(), loaded),
    }
    for case, (model, previous) in cases.items():
        model.fit_from(previous, data, blocks.items_df)
        assert not model.warm_started, case
        np.testing.assert_array_equal(model.item_factors, fresh.item_factors, err_msg=case)
