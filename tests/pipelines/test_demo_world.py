from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.demo_world import (
    EVENT_TYPES,
    TOPICS,
    DemoWorld,
    generate_world,
    item_id,
    user_id,
)
from recsys.columns import EVENT_COLUMNS, ITEM_COLUMNS


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return generate_world(seed=42, scale=1.0)


@pytest.fixture(scope="module")
def events(world: DemoWorld) -> pd.DataFrame:
    return world.events()


@pytest.fixture(scope="module")
def joined(world: DemoWorld, events: pd.DataFrame) -> pd.DataFrame:
    items = world.items[["item_id", "category", "created_at", "duration_seconds"]]
    users = world.users[["user_id", "top_topic", "topics"]]
    return events.merge(items, on="item_id", how="left").merge(users, on="user_id", how="left")


def test_sizes_follow_scale(world: DemoWorld, events: pd.DataFrame) -> None:
    assert (world.n_users, world.n_items, world.n_events) == (1_000, 2_000, 100_000)
    assert len(events) == 100_000
    small = generate_world(seed=42, scale=0.1)
    assert small.n_users == 100
    assert 500 <= small.n_items <= 800  # 2,000 * sqrt(0.1) = 632
    assert sum(len(chunk) for chunk in small.iter_events()) == 10_000
    assert small.users["n_events"].sum() == 10_000


def test_overrides_and_ids_beyond_padding() -> None:
    world = generate_world(seed=1, n_users=10_050, n_items=150, n_events=40_000)
    ids = world.users["user_id"]
    assert ids.is_unique
    assert ids.iloc[0] == "demo-user-0001"
    assert ids.iloc[-1] == "demo-user-10050"
    assert world.items["item_id"].is_unique
    assert world.n_events == 40_000
    chunks = list(world.iter_events(chunk_rows=15_000))
    assert [len(c) for c in chunks] == [15_000, 15_000, 10_000]
    assert set(pd.concat(chunks)["user_id"]) <= set(ids)


def test_frames_are_canonical(world: DemoWorld, events: pd.DataFrame) -> None:
    assert tuple(world.items.columns) == ITEM_COLUMNS
    assert tuple(events.columns) == EVENT_COLUMNS
    assert world.items["item_id"].is_unique
    assert world.items["item_id"].iloc[0] == item_id(1) == "demo-item-00001"
    assert world.users["user_id"].iloc[0] == user_id(1) == "demo-user-0001"
    assert events["event_id"].isna().all()
    assert set(events["type"]) == set(EVENT_TYPES)
    assert set(events["item_id"]) <= set(world.items["item_id"])
    assert set(events["user_id"]) == set(world.users["user_id"])
    assert events["value"].isna().all()
    assert world.items["category"].isin([t.name for t in TOPICS]).all()
    assert world.items["tags"].map(lambda tags: 2 <= len(tags) <= 5).all()
    assert world.items["title"].str.len().gt(10).all()
    assert (world.items["duration_seconds"] > 0).all()
    # The ingester derives event ids from (user, item, type, timestamp): they must not repeat.
    assert not events.duplicated(["user_id", "item_id", "type", "timestamp"]).any()


def test_demo_user_exists_in_every_world() -> None:
    for seed, scale in ((0, 0.01), (7, 0.1), (42, 1.0)):
        world = generate_world(seed=seed, scale=scale)
        assert world.users["user_id"].iloc[0] == "demo-user-0001"
        assert world.users["n_events"].iloc[0] >= 3


def test_same_seed_gives_identical_frames(world: DemoWorld, events: pd.DataFrame) -> None:
    again = generate_world(seed=42, scale=1.0)
    pd.testing.assert_frame_equal(again.items, world.items, check_exact=True)
    pd.testing.assert_frame_equal(again.users, world.users, check_exact=True)
    pd.testing.assert_frame_equal(again.events(), events, check_exact=True)
    numeric = ["timestamp", "dwell_seconds"]
    assert again.events()[numeric].to_numpy().tobytes() == events[numeric].to_numpy().tobytes()


def test_different_seed_differs(world: DemoWorld, events: pd.DataFrame) -> None:
    other = generate_world(seed=43, scale=1.0)
    assert not other.items["title"].equals(world.items["title"])
    assert not other.users["top_topic"].equals(world.users["top_topic"])
    other_events = other.events()
    assert len(other_events) == len(events)
    assert not other_events["item_id"].equals(events["item_id"])


def test_chunks_concatenate_to_one_frame(world: DemoWorld, events: pd.DataFrame) -> None:
    chunks = list(world.iter_events(chunk_rows=7_777))
    assert all(len(c) == 7_777 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 7_777
    pd.testing.assert_frame_equal(pd.concat(chunks), events, check_exact=True)
    with pytest.raises(ValueError):
        next(world.iter_events(chunk_rows=0))


def test_views_have_dwell_within_item_length(joined: pd.DataFrame) -> None:
    views = joined[joined["type"] == "view"]
    assert len(views) > 0.4 * len(joined)
    assert views["dwell_seconds"].notna().all()
    assert (views["dwell_seconds"] >= 0).all()
    assert (views["dwell_seconds"] <= views["duration_seconds"]).all()
    assert joined.loc[joined["type"] != "view", "dwell_seconds"].isna().all()


def test_dwell_follows_affinity(joined: pd.DataFrame) -> None:
    views = joined[joined["type"] == "view"]
    watched = views["dwell_seconds"] / views["duration_seconds"]
    own = views["category"] == views["top_topic"]
    assert watched[own].median() > 0.75
    assert watched[~own].median() < watched[own].median() - 0.2


def test_likes_concentrate_on_a_users_topics(joined: pd.DataFrame) -> None:
    exposures = joined["type"].isin(["view", "skip"])
    likes = joined["type"] == "like"
    top = joined["category"] == joined["top_topic"]
    like_rate_top = likes[top].sum() / exposures[top].sum()
    like_rate_else = likes[~top].sum() / exposures[~top].sum()
    assert like_rate_top > 2 * like_rate_else

    in_tastes = pd.Series(
        [c in t for c, t in zip(joined["category"], joined["topics"], strict=True)],
        index=joined.index,
    )
    off_topic = ~in_tastes
    like_rate_off = likes[off_topic].sum() / exposures[off_topic].sum()
    assert like_rate_top > 20 * like_rate_off
    assert in_tastes[likes].mean() > 0.95
    dislikes = joined["type"] == "dislike"
    assert dislikes[off_topic].mean() > 5 * dislikes[~off_topic].mean()


def test_timestamps_and_new_items(world: DemoWorld, joined: pd.DataFrame) -> None:
    assert (joined["timestamp"] >= world.start).all()
    assert (joined["timestamp"] >= joined["created_at"]).all()
    assert joined["timestamp"].max() <= world.end + 2 * 3_600
    assert joined.groupby("user_id", sort=False)["timestamp"].is_monotonic_increasing.all()

    q95 = joined["timestamp"].quantile(0.95)
    items = world.items
    fresh = items.loc[items["created_at"] > q95, "item_id"]
    assert 0.02 * len(items) <= len(fresh) <= 0.08 * len(items)
    counts = joined["item_id"].value_counts().reindex(items["item_id"], fill_value=0)
    assert counts[fresh].mean() < 0.2 * counts.mean()
    assert (counts == 0).any()
    assert (items["created_at"] >= world.start).all()


def test_activity_is_skewed(world: DemoWorld) -> None:
    per_user = world.users["n_events"]
    assert per_user.max() > 10 * per_user.median()
    assert per_user.min() >= 1


def test_events_pass_ingest_validation(world: DemoWorld) -> None:
    from recsys.config import BUILTIN_EVENT_TYPES
    from recsys.events import validate_events

    chunk = next(world.iter_events(chunk_rows=20_000))
    checked = validate_events(chunk, event_types=BUILTIN_EVENT_TYPES)
    assert checked.rejects.empty
    assert len(checked.valid) == len(chunk)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_world(seed=-1)
    with pytest.raises(ValueError):
        generate_world(scale=0)
    with pytest.raises(ValueError):
        generate_world(scale=float("nan"))


def test_latent_tastes_are_sparse(world: DemoWorld) -> None:
    sizes = world.users["topics"].map(len)
    assert set(sizes) == {1, 2, 3}
    assert (world.users["top_topic"] == world.users["topics"].map(lambda t: t[0])).all()
    assert np.isclose(world.items["category"].value_counts(normalize=True).max(), 0.1, atol=0.06)
