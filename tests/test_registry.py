"""Models are declared once: a model registered from outside the package is trained,
published and served as a feed source with no other change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys import registry
from recsys.registry import ModelSpec
from recsys.serving import Recommender
from tests.conftest import TrainedWorld, build_trained_world

SMALL = ModelSpec(
    name="small_svd",
    model_class="tests.small_model:SmallSVDModel",
    distance="dot",
    source="small_svd",
    # Weighed in for users with history only, like the other behavioural sources.
    default_weights=(0.6, 0.0),
)


def test_built_in_models_and_what_derives_from_them() -> None:
    assert registry.names() == ("als", "hybrid", "content", "item2item")
    # The item-to-item model keeps neighbours in its artifacts: no vectors to publish.
    assert registry.distances() == {"als": "dot", "hybrid": "dot", "content": "cosine"}
    assert registry.feed_sources() == (
        "behavioural",
        "hybrid",
        "content",
        "item2item",
        "fresh",
        "popular",
    )
    assert registry.gated().name == "als"
    assert registry.by_source("behavioural").folds_in_user
    assert [s.name for s in registry.specs() if s.embeds_items] == ["hybrid", "content"]


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ModelSpec("als", "x:Y", "dot", None))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ModelSpec("popularity", "x:Y", "dot", None))
    with pytest.raises(ValueError, match="source 'content' is taken"):
        registry.register(ModelSpec("other", "x:Y", "cosine", "content"))
    with pytest.raises(ValueError, match="source 'fresh' is taken"):
        registry.register(ModelSpec("other", "x:Y", "cosine", "fresh"))
    with pytest.raises(ValueError, match="distance"):
        ModelSpec("other", "x:Y", "euclid", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="module:Class"):
        ModelSpec("other", "SomeClass", "dot", None)
    with pytest.raises(ValueError, match="identifier"):
        ModelSpec("not a name", "x:Y", "dot", None)
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("content")
    assert registry.names() == ("als", "hybrid", "content", "item2item")


def test_a_registered_model_is_trained_published_and_served(tmp_path: Path) -> None:
    with registry.registered(SMALL):
        assert registry.feed_sources()[3:5] == ("item2item", "small_svd")
        world = build_trained_world(tmp_path / "home", scale=0.2)
        try:
            settings = world.settings
            recommender = Recommender.open(world.store, settings)
            version = recommender.model_version
            assert version is not None
            # Trained and saved with the version.
            manifest = json.loads((settings.artifacts_dir / version / "manifest.json").read_text())
            assert manifest["models"] == ["als", "hybrid", "content", "item2item", "small_svd"]
            assert (settings.artifacts_dir / version / "small_svd" / "factors.npz").is_file()
            # Published: its vectors are in the version's index, for items and users.
            state = recommender.require_state()
            assert state.index.dims["small_svd"] == 8
            item = world.items["item_id"].iloc[0]
            assert len(state.index.get_item_vectors([item], "small_svd")[item]) == 8
            # Served: it proposes candidates and its part shows in the score breakdown.
            pages = [recommender.feed(f"demo-user-{k:04d}", limit=20) for k in range(1, 11)]
            assert all(not page.degraded for page in pages)
            proposed = [i for page in pages for i in page.items if "small_svd" in i.sources]
            assert proposed
            for feed_item in proposed:
                # A blend column, or a feature family of the learned ranker.
                assert "small_svd" in feed_item.breakdown
                assert feed_item.score == pytest.approx(sum(feed_item.breakdown.values()), abs=1e-4)
            recommender.close()
        finally:
            world.store.dispose()
    assert "small_svd" not in registry.names()
    assert "small_svd" not in registry.feed_sources()


def test_a_version_trained_before_a_model_was_registered_still_serves(
    trained_world: TrainedWorld,
) -> None:
    with registry.registered(SMALL):
        recommender = Recommender.open(trained_world.store, trained_world.settings)
        try:
            assert "small_svd" not in recommender.require_state().models
            page = recommender.feed("demo-user-0003", limit=10)
            assert not page.degraded and len(page.items) == 10
            assert not any("small_svd" in item.breakdown for item in page.items)
        finally:
            recommender.close()
