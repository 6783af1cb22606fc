"""Impressions, attribution and experiments through the service, on a real trained world:
every served item is stored once, events carry their feed_id back to the variant that
served it, and an experiment's life (start, serve, report, stop) is what the API says."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from recsys.api import create_app
from recsys.serving import Recommender
from recsys.store import open_store
from recsys.store.impressions import feed_impressions
from recsys.store.schema import events as events_table
from recsys.store.schema import impressions as impressions_table
from tests.api.helpers import (
    API_KEYS,
    WRITE_KEY,
    DecodeOnce,
    TestClient,
    World,
    bearer,
    copy_world,
    path_id,
)


@pytest.fixture(scope="module")
def world(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("experiments") / "home"
    opened = copy_world(trained_template, home, api_keys=API_KEYS)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[TestClient]:
    app = create_app(world.settings, world.recommender, refresh_interval=0.1)
    with TestClient(DecodeOnce(app), headers=bearer(WRITE_KEY)) as client:
        yield client


def feed(api: TestClient, user_id: str, **params: Any) -> dict[str, Any]:
    response = api.get(f"/v1/users/{path_id(user_id)}/feed", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stored(world: World, feed_id: str) -> pd.DataFrame:
    assert world.recommender.impressions is not None
    world.recommender.impressions.flush()
    with world.store.read() as conn:
        return feed_impressions(conn, feed_id)


def start(api: TestClient, name: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.post("/v1/experiments", json={"name": name, "variants": variants})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def stop(api: TestClient, name: str) -> None:
    response = api.post(f"/v1/experiments/{name}/stop")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stopped"


# --- impressions ------------------------------------------------------------------------------


def test_every_served_item_becomes_exactly_one_impression_also_across_a_restart(
    api: TestClient, world: World
) -> None:
    served: dict[str, tuple[str | None, list[str]]] = {}
    for user in world.users[:6]:
        first = feed(api, user, limit=7)
        second = feed(api, user, limit=5, cursor=first["next_cursor"])
        for page in (first, second):
            served[page["feed_id"]] = (user, [i["item_id"] for i in page["items"]])
    item = world.items["item_id"].iloc[3]
    similar = api.get(
        f"/v1/items/{path_id(item)}/similar", params={"limit": 4, "user_id": world.users[0]}
    ).json()
    served[similar["feed_id"]] = (world.users[0], [i["item_id"] for i in similar["items"]])
    anonymous = api.get(f"/v1/items/{path_id(item)}/similar", params={"limit": 3}).json()
    served[anonymous["feed_id"]] = (None, [i["item_id"] for i in anonymous["items"]])
    assert len(served) == 14  # every answer got its own feed_id

    # "Restart": a second recommender on the same store serves, then shuts down.
    restarted = Recommender.open(world.store, world.settings)
    try:
        page = restarted.feed(world.users[7], limit=6)
        assert page.feed_id is not None and page.feed_id not in served
        served[page.feed_id] = (world.users[7], [i.item_id for i in page.items])
    finally:
        restarted.close()  # writes what it queued

    for feed_id, (user, items) in served.items():
        rows = stored(world, feed_id)
        assert rows["item_id"].tolist() == items, feed_id
        assert rows["position"].tolist() == list(range(len(items)))
        assert rows["user_id"].tolist() == [user] * len(items)
        assert set(rows["model_version"]) == {world.recommender.model_version}
    surfaces = {
        fid: set(stored(world, fid)["surface"]) for fid in (similar["feed_id"], page.feed_id)
    }
    assert surfaces == {similar["feed_id"]: {"similar"}, page.feed_id: {"feed"}}
    # Nothing else was recorded under these ids (no duplicates from retried flushes).
    with world.store.read() as conn:
        total = conn.execute(
            select(impressions_table.c.feed_id).where(impressions_table.c.feed_id.in_(served))
        ).all()
    assert len(total) == sum(len(items) for _, items in served.values())


def test_metrics_count_written_impressions(api: TestClient, world: World) -> None:
    feed(api, world.users[1], limit=3)
    assert world.recommender.impressions is not None
    world.recommender.impressions.flush()
    text = api.get("/metrics").text
    written = [
        line
        for line in text.splitlines()
        if line.startswith('recsys_impressions_total{outcome="written"}')
    ]
    assert written and float(written[0].split()[-1]) >= 3


# --- attribution ------------------------------------------------------------------------------


def test_events_keep_their_feed_id_and_bad_ones_are_refused(api: TestClient, world: World) -> None:
    page = feed(api, world.users[2], limit=3)
    item = page["items"][0]["item_id"]
    event = {"user_id": world.users[2], "item_id": item, "type": "like", "timestamp": 1.8e9}
    response = api.post("/v1/events", json={"events": [{**event, "feed_id": page["feed_id"]}]})
    assert response.status_code == 200 and response.json()["accepted"] == 1
    with world.store.read() as conn:
        kept = conn.execute(
            select(events_table.c.feed_id).where(
                events_table.c.user_id == world.users[2], events_table.c.timestamp == 1.8e9
            )
        ).scalar_one()
    assert kept == page["feed_id"]
    for bad in ("x" * 65, 12345, ""):
        response = api.post("/v1/events", json={"events": [{**event, "feed_id": bad}]})
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["field"].endswith("feed_id")


def test_a_file_import_keeps_feed_ids(world: World, tmp_path: Path) -> None:
    from pipelines.ingest import import_file

    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,type,timestamp,feed_id\n"
        f"{world.users[3]},{world.items['item_id'].iloc[0]},like,1800000100,feed-from-file\n"
        f"{world.users[3]},{world.items['item_id'].iloc[1]},like,1800000200,\n"
    )
    summary = import_file(world.store, world.settings, "events", path)
    assert summary.inserted == 2
    with world.store.read() as conn:
        rows = conn.execute(
            select(events_table.c.timestamp, events_table.c.feed_id)
            .where(events_table.c.user_id == world.users[3], events_table.c.timestamp > 1.8e9)
            .order_by(events_table.c.timestamp)
        ).all()
    assert [tuple(r) for r in rows] == [(1800000100.0, "feed-from-file"), (1800000200.0, None)]


# --- experiments ------------------------------------------------------------------------------


def test_an_experiment_splits_users_labels_pages_and_stops(api: TestClient, world: World) -> None:
    body = start(
        api,
        "pop-vs-model",
        [
            {"name": "model", "share": 0.5},
            {"name": "popular", "share": 0.5, "ranker": "popularity"},
        ],
    )
    assert body["status"] == "running" and [v["name"] for v in body["variants"]] == [
        "model",
        "popular",
    ]
    experiment = world.recommender.experiment
    assert experiment is not None and experiment.name == "pop-vs-model"
    pages: dict[str, list[list[str]]] = {"model": [], "popular": []}
    rankers_seen: set[str] = set()
    for user in world.users[20:60]:
        page = feed(api, user, limit=10)
        assert page["variant"] == experiment.assign(user).name
        pages[page["variant"]].append([i["item_id"] for i in page["items"]])
        rows = stored(world, page["feed_id"])
        assert set(rows["experiment"]) == {"pop-vs-model"}
        assert set(rows["variant"]) == {page["variant"]}
        # The model variant ranks with the version's learned ranker, or the blend for a
        # user with too few likes (or a version without one); each page with one of them.
        allowed = [{"learned"}, {"blend"}] if page["variant"] == "model" else [{"popularity"}]
        assert set(rows["ranker"]) in allowed
        rankers_seen.update(rows["ranker"])
    assert len(pages["model"]) >= 10 and len(pages["popular"]) >= 10
    has_ranker = world.recommender.require_state().ranker is not None
    assert ("learned" in rankers_seen) == has_ranker

    def mean_overlap(lists: list[list[str]]) -> float:
        pairs = list(itertools.combinations(lists, 2))
        return sum(len(set(a) & set(b)) / 10 for a, b in pairs) / len(pairs)

    # Popularity shows everyone much the same page (less what each consumed, and the page's
    # category cap); the model shows each user their own.
    assert mean_overlap(pages["popular"]) > 2 * mean_overlap(pages["model"])

    # One at a time, and names are never reused.
    second = api.post("/v1/experiments", json={"name": "other", "variants": body["variants"]})
    assert second.status_code == 409 and "running" in second.json()["detail"]
    stop(api, "pop-vs-model")
    stop(api, "pop-vs-model")  # stopping twice changes nothing
    assert world.recommender.experiment is None
    assert feed(api, world.users[20], limit=3)["variant"] is None
    again = api.post("/v1/experiments", json={"name": "pop-vs-model", "variants": body["variants"]})
    assert again.status_code == 409 and "exists" in again.json()["detail"]
    listed = api.get("/v1/experiments").json()
    assert [e["name"] for e in listed][-1] == "pop-vs-model"
    assert api.post("/v1/experiments/nope/stop").status_code == 404
    assert api.get("/v1/experiments/nope").status_code == 404


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.6}], "add up to 1"),
        ([{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}], "distinct"),
        ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "feed": {"x": 1}}], "unknown"),
        (
            [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "model_version": "gone"}],
            "no complete model version",
        ),
        ([{"name": "a", "share": 1.0}], "variants"),
    ],
)
def test_invalid_experiments_are_422_and_start_nothing(
    api: TestClient, world: World, variants: list[dict[str, Any]], message: str
) -> None:
    response = api.post("/v1/experiments", json={"name": "bad", "variants": variants})
    assert response.status_code == 422, response.text
    assert message in response.text
    assert api.get("/v1/experiments/bad").status_code == 404


def test_attributed_actions_land_on_the_variant_that_served_them(
    api: TestClient, world: World
) -> None:
    start(api, "attribution", [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}])
    experiment = world.recommender.experiment
    assert experiment is not None
    in_a = next(u for u in world.users[60:] if experiment.assign(u).name == "a")
    in_b = next(u for u in world.users[60:] if experiment.assign(u).name == "b")
    page_a, page_b = feed(api, in_a, limit=5), feed(api, in_b, limit=4)
    first_a, second_a = (i["item_id"] for i in page_a["items"][:2])
    first_b = page_b["items"][0]["item_id"]
    events = [
        {"user_id": in_a, "item_id": first_a, "type": "like", "feed_id": page_a["feed_id"]},
        {"user_id": in_a, "item_id": second_a, "type": "skip", "feed_id": page_a["feed_id"]},
        # Not attributed: no feed_id, or one that no page had.
        {"user_id": in_a, "item_id": second_a, "type": "like"},
        {"user_id": in_b, "item_id": first_b, "type": "like", "feed_id": "not-a-page"},
        {
            "user_id": in_b,
            "item_id": first_b,
            "type": "view",
            "dwell_seconds": 0.5,  # a bounce: not an action
            "feed_id": page_b["feed_id"],
        },
    ]
    for n, event in enumerate(events):
        event["timestamp"] = 1.9e9 + n
    assert api.post("/v1/events", json={"events": events}).status_code == 200
    assert world.recommender.impressions is not None
    world.recommender.impressions.flush()
    report = api.get("/v1/experiments/attribution").json()
    by_name = {v["name"]: v for v in report["variants"]}
    assert (by_name["a"]["users"], by_name["a"]["impressions"]) == (1, 5)
    assert (by_name["a"]["actions"], by_name["a"]["skips"]) == (1, 1)
    assert by_name["a"]["action_rate"] == pytest.approx(0.2)
    assert (by_name["b"]["users"], by_name["b"]["impressions"]) == (1, 4)
    assert (by_name["b"]["actions"], by_name["b"]["skips"]) == (0, 0)
    assert by_name["b"]["dwell_per_impression"] == pytest.approx(0.5 / 4)
    # One user per variant: no interval, no test.
    assert by_name["a"]["action_rate_ci"] is None and report["p_value"] is None
    stop(api, "attribution")
    # The report stays after the experiment stops.
    assert api.get("/v1/experiments/attribution").json()["variants"] == report["variants"]


def test_the_cli_reports_an_experiment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app
    from recsys.config import get_settings

    for name, value in {"RECSYS_HOME": str(world.home)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        shown = runner.invoke(app, ["experiments", "report", "attribution"])
        assert shown.exit_code == 0, shown.output
        assert "a " in shown.output and "p-value" in shown.output
        missing = runner.invoke(app, ["experiments", "report", "nope"])
        assert missing.exit_code != 0 and "no experiment" in missing.output
        listed = runner.invoke(app, ["experiments", "list"])
        assert "attribution" in listed.output and "stopped" in listed.output
    finally:
        get_settings.cache_clear()


def test_store_side_impressions_survive_another_open(world: World) -> None:
    """The store is the truth: a fresh handle sees what the service wrote."""
    other = open_store(world.settings)
    try:
        with other.read() as conn:
            assert conn.execute(select(impressions_table.c.feed_id).limit(1)).first() is not None
    finally:
        other.dispose()
