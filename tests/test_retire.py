"""Retiring an item: out of every feed and similar-items list at once, out of the next
version too, its events kept for training only if the settings say so; back when sent
again. Over HTTP, and as a flag in an items file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipelines.ingest import import_file
from pipelines.train import train
from recsys.api.app import create_app
from recsys.dataset import InteractionData
from recsys.serving import FeedFilters, Recommender, UnknownItem
from recsys.store.catalog import load_items, validate_items
from recsys.vectors import open_vector_store
from tests.conftest import TrainedWorld, build_trained_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[TrainedWorld]:
    built = build_trained_world(tmp_path / "home", scale=0.2)
    yield built
    built.store.dispose()


def shown(recommender: Recommender, users: list[str], **kwargs: object) -> set[str]:
    return {
        item.item_id
        for user in users
        for item in recommender.feed(user, limit=50, **kwargs).items  # type: ignore[arg-type]
    }


USERS = [f"demo-user-{k:04d}" for k in range(1, 25)] + ["a-cold-user"]


def test_a_retired_item_leaves_every_list_at_once_and_comes_back(world: TrainedWorld) -> None:
    recommender = Recommender.open(world.store, world.settings)
    try:
        # The items most served: the popular list, many users' pages.
        before = [i.item_id for user in USERS for i in recommender.feed(user, limit=50).items]
        retired = pd.Series(before).value_counts().index[:3].tolist()
        neighbour = recommender.similar(retired[0], kind="content", limit=5)[0].item_id
        assert retired[0] in {
            i.item_id for i in recommender.similar(neighbour, kind="blend", limit=100)
        }
        assert recommender.retire_items(retired) == 3
        assert recommender.retire_items(retired[:1]) == 0  # already out
        assert not shown(recommender, USERS) & set(retired)
        category = world.items.set_index("item_id")["category"].get(retired[0])
        if category is not None:
            filtered = shown(recommender, USERS[:5], filters=FeedFilters(categories=[category]))
            assert not filtered & set(retired)
        for kind in ("content", "behavioural", "blend"):
            similar = recommender.similar(neighbour, kind=kind, limit=100)  # type: ignore[arg-type]
            assert not {i.item_id for i in similar} & set(retired)
        with pytest.raises(UnknownItem):
            recommender.similar(retired[0])
        with pytest.raises(UnknownItem):
            recommender.retire_items(["never-heard-of"])
        # The degraded page (index down) leaves them out too.
        degraded = recommender.degraded_feed("a-cold-user", 50, set(), 0, None)
        assert degraded.items and not {i.item_id for i in degraded.items} & set(retired)
        # Sent again without the flag, an item is back.
        again = world.items.set_index("item_id").loc[[retired[0]]].reset_index()
        recommender.upsert_items(validate_items(again).valid)
        assert retired[0] in {i.item_id for i in recommender.similar(neighbour, "blend", 100)}
    finally:
        recommender.close()


@pytest.mark.parametrize("train_on_retired", [True, False])
def test_a_retired_item_stays_out_of_the_next_version(
    world: TrainedWorld, train_on_retired: bool
) -> None:
    recommender = Recommender.open(world.store, world.settings)
    item = recommender.feed("demo-user-0003", limit=1).items[0].item_id
    recommender.retire_items([item])
    recommender.close()
    settings = world.settings.model_copy(update={"train_on_retired_items": train_on_retired})
    result = train(world.store, settings, force=True)
    # As the job published it, before any service's catch-up could touch it.
    with open_vector_store(settings) as vectors:
        index = vectors.open_version(result.version)
        try:
            assert index.get_items([item]) == {}
        finally:
            index.close()
    recommender = Recommender.open(world.store, settings)
    try:
        assert recommender.model_version == result.version
        state = recommender.require_state()
        assert state.index.get_items([item]) == {}
        # Its events taught the models, or not, as the setting says.
        trained = InteractionData.load(settings.artifacts_dir / result.version / "interactions")
        column = trained.items.index_of(item)
        assert column is not None
        assert (trained.matrix[:, column].nnz > 0) is train_on_retired
        assert item not in shown(recommender, USERS)
        with pytest.raises(UnknownItem):
            recommender.similar(item)
    finally:
        recommender.close()


def test_retiring_over_http_and_by_an_items_file(world: TrainedWorld) -> None:
    recommender = Recommender.open(world.store, world.settings)
    try:
        app = create_app(world.settings, recommender, refresh_interval=60)
        with TestClient(app) as client:
            item = client.get("/v1/users/demo-user-0002/feed").json()["items"][0]["item_id"]
            response = client.delete(f"/v1/items/{item}")
            assert response.status_code == 200
            assert response.json() == {"item_id": item, "newly_retired": True}
            assert client.delete(f"/v1/items/{item}").json()["newly_retired"] is False
            assert client.delete("/v1/items/no-such-item").status_code == 404
            page = client.get("/v1/users/demo-user-0002/feed", params={"limit": 100}).json()
            assert item not in {i["item_id"] for i in page["items"]}
            assert client.get(f"/v1/items/{item}/similar").status_code == 404
            # A PUT with the flag retires; without it, brings the item back.
            other = page["items"][0]["item_id"]
            body = {"title": "kept for the record", "retired": True}
            assert client.put(f"/v1/items/{other}", json=body).status_code == 200
            assert client.get(f"/v1/items/{other}/similar").status_code == 404
            assert client.put(f"/v1/items/{other}", json={"title": "back"}).status_code == 200
            assert client.get(f"/v1/items/{other}/similar").status_code == 200
            bad = client.put(f"/v1/items/{other}", json={"title": "x", "retired": "maybe"})
            assert bad.status_code == 422
    finally:
        recommender.close()
    # An items file: a `retired` column, spelled as files spell it.
    rows = world.items.head(4)[["item_id", "title", "category"]].copy()
    rows["retired"] = ["true", "0", "yes", ""]
    path = world.settings.home / "retire.csv"
    rows.to_csv(path, index=False)
    summary = import_file(world.store, world.settings, "items", path)
    assert summary.rejected == 0 and summary.updated == 4
    with world.store.read() as conn:
        stored = load_items(conn, rows["item_id"].tolist()).set_index("item_id")["retired"]
    assert stored.to_dict() == dict(zip(rows["item_id"], [True, False, True, False], strict=True))
    bad = world.items.head(1).assign(retired="perhaps")
    checked = validate_items(bad)
    assert checked.valid.empty
    assert checked.rejects["reason"].tolist() == ["retired must be true or false"]
