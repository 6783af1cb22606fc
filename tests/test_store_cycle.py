"""The whole cycle on both stores: import, train, publish, serve, retrain, roll back.

Every SQL path the feed and training take (the user's history, the all-time seen query,
trending, the degraded page with its category and tag filters, the model-runs registry)
runs here on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from pipelines.train import train
from recsys import release
from recsys.config import Settings
from recsys.events import validate_events
from recsys.serving import FeedFilters, Recommender
from recsys.store.runs import list_runs
from recsys.vectors import open_vector_store
from tests.conftest import TrainedWorld, build_trained_world, postgres_schema

TYPES = Settings(_env_file=None).event_types  # type: ignore[call-arg]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainedWorld]:
    home = tmp_path_factory.mktemp(f"cycle-{request.param}") / "home"
    if request.param == "sqlite":
        built = build_trained_world(home, scale=0.2)
        yield built
        built.store.dispose()
        return
    for url in postgres_schema():
        built = build_trained_world(home, scale=0.2, database_url=url)
        assert built.store.dialect == "postgresql"
        yield built
        built.store.dispose()


@pytest.fixture(scope="module")
def recommender(world: TrainedWorld) -> Iterator[Recommender]:
    opened = Recommender.open(world.store, world.settings)
    yield opened
    opened.close()


def send(recommender: Recommender, user: str, items: list[str], kind: str, start: float) -> None:
    frame = pd.DataFrame(
        {
            "user_id": user,
            "item_id": items,
            "type": kind,
            "timestamp": start + np.arange(len(items)),
        }
    )
    checked = validate_events(frame, event_types=TYPES)
    assert checked.rejects.empty
    recommender.ingest_events(checked.valid)


def test_the_feed_filters_what_was_consumed_recently_and_long_ago(
    recommender: Recommender,
) -> None:
    user = "demo-user-0001"
    first = [i.item_id for i in recommender.feed(user, limit=10).items]
    send(recommender, user, first[:3], "like", 1.8e9)
    send(recommender, user, first[3:6], "skip", 1.8e9 + 10)
    page = recommender.feed(user, limit=50)
    assert not page.degraded and len(page.items) == 50
    assert not set(first[:6]) & {i.item_id for i in page.items}
    # A window of 5 events: the store's all-time query must still exclude all six.
    config = recommender.config
    recommender.config = config.model_copy(update={"history_events": 5})
    try:
        history = recommender.history(recommender.require_state(), user)
        assert len(history) == 5
        consumed = set(recommender.consumed(user, history))
        assert set(first[:6]) <= consumed
        later = recommender.feed(user, limit=50)
    finally:
        recommender.config = config
    assert not set(first[:6]) & {i.item_id for i in later.items}


def test_the_degraded_page_filters_by_category_and_tag(
    recommender: Recommender, world: TrainedWorld
) -> None:
    items = world.items
    category = items["category"].value_counts().index[0]
    tag = items.explode("tags")["tags"].value_counts().index[0]
    in_category = set(items.loc[items["category"] == category, "item_id"])
    tagged = set(items.loc[items["tags"].map(lambda tags: tag in tags), "item_id"])
    for filters, allowed in (
        (FeedFilters(categories=[category]), in_category),
        (FeedFilters(tags=[tag]), tagged),
        (FeedFilters(categories=[category], tags=[tag]), in_category & tagged),
    ):
        page = recommender.degraded_feed("demo-user-0002", 5, set(), 0, filters)
        assert page.degraded and page.items
        assert {i.item_id for i in page.items} <= allowed
        # Most active first, as the store counted them.
        assert [i.score for i in page.items] == sorted((i.score for i in page.items), reverse=True)


def test_trending_is_read_from_the_store(recommender: Recommender) -> None:
    catalogue = recommender.require_state().catalogue
    assert catalogue.trending.max() > 0
    assert np.count_nonzero(catalogue.trending) > 10


def test_retrain_publish_serve_and_roll_back(recommender: Recommender, world: TrainedWorld) -> None:
    settings = world.settings
    first = recommender.model_version
    assert first is not None
    second = train(world.store, settings, force=True)
    assert second.published
    assert recommender.refresh() is True and recommender.model_version == second.version
    assert len(recommender.feed("demo-user-0003", limit=10).items) == 10
    with world.store.read() as conn:
        runs = {run.version: run for run in list_runs(conn)}
    assert runs[first].status == runs[second.version].status == "published"
    assert runs[second.version].metrics["gate"]["als"]["ndcg@10"] > 0
    # Back to the first version through the one owner of versions, as the API and CLI do.
    with open_vector_store(settings) as vectors:
        previous = release.activate(world.store, vectors, settings.artifacts_dir, first)
        assert previous == second.version
        with pytest.raises(release.UnknownVersion):
            release.activate(world.store, vectors, settings.artifacts_dir, "no-such-version")
    assert recommender.refresh() is True and recommender.model_version == first
    assert len(recommender.feed("demo-user-0003", limit=10).items) == 10


def test_both_stores_are_really_in_use(world: TrainedWorld) -> None:
    expected = "postgresql" if "postgresql" in world.settings.sqlalchemy_url else "sqlite"
    assert world.store.dialect == expected


def test_retiring_and_forgetting_on_either_store(
    recommender: Recommender, world: TrainedWorld
) -> None:
    popular = [
        i.item_id for i in recommender.degraded_feed("demo-user-0009", 5, set(), 0, None).items
    ]
    assert recommender.retire_items(popular[:2]) == 2
    # An item only events know gets a retired catalogue row of its own.
    send(recommender, "demo-user-0009", ["only-in-events"], "like", 1.8e9 + 500)
    assert recommender.retire_items(["only-in-events"]) == 1
    after = [
        i.item_id for i in recommender.degraded_feed("demo-user-0009", 5, set(), 0, None).items
    ]
    assert not set(after) & {*popular[:2], "only-in-events"}
    assert not {i.item_id for i in recommender.feed("demo-user-0009", limit=50).items} & set(
        popular[:2]
    )
    user = "demo-user-0011"
    forgotten = recommender.forget_user(user)
    assert forgotten.events > 0 and forgotten.profile
    assert forgotten.vector_versions
    assert recommender.forget_user(user).events == 0
    history = recommender.history(recommender.require_state(), user)
    assert len(history) == 0
