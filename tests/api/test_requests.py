"""Request handling with a stand-in recommender: body limits, validation errors, error
shapes, metrics and the refresh loop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from recsys.api.app import REFRESH_INTERVAL_SECONDS
from recsys.store.engine import StoreUnavailable
from tests.api.helpers import (
    API_KEYS,
    READ_KEY,
    WRITE_KEY,
    FakeRecommender,
    TestClient,
    bearer,
    fake_app,
    settings_for,
)

LIMIT = 64 * 1024
WRITE = bearer(WRITE_KEY)


def event(**fields: object) -> dict[str, object]:
    return {"user_id": "u1", "item_id": "i1", "type": "like", **fields}


def assert_json_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- body size -------------------------------------------------------------------------------


def big_batch(min_bytes: int) -> bytes:
    events: list[dict[str, object]] = []
    while len(json.dumps({"events": events})) <= min_bytes:
        events.append(event(item_id="i" * 400))
    return json.dumps({"events": events[:1000]}).encode()


def test_oversized_body_with_content_length_is_413(
    client: TestClient, fake: FakeRecommender
) -> None:
    body = big_batch(LIMIT + 1)
    assert len(body) > LIMIT
    response = client.post(
        "/v1/events", content=body, headers={**WRITE, "content-type": "application/json"}
    )
    assert "limit" in assert_json_error(response, 413)["detail"]
    assert not fake.ingested


def test_oversized_chunked_body_is_413(client: TestClient, fake: FakeRecommender) -> None:
    body = big_batch(LIMIT + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = client.post(
        "/v1/events", content=chunks(), headers={**WRITE, "content-type": "application/json"}
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.request.headers.get("content-length") is None
    assert_json_error(response, 413)
    assert not fake.ingested


def test_oversized_item_body_is_413(client: TestClient, fake: FakeRecommender) -> None:
    response = client.put("/v1/items/i1", json={"text": "x" * (LIMIT + 1)}, headers=WRITE)
    assert_json_error(response, 413)
    assert not fake.upserted


def test_body_within_limit_is_accepted_chunked_or_not(
    client: TestClient, fake: FakeRecommender
) -> None:
    body = json.dumps({"events": [event(timestamp=1_718_000_000)]}).encode()
    headers = {**WRITE, "content-type": "application/json"}
    assert client.post("/v1/events", content=body, headers=headers).status_code == 200
    response = client.post("/v1/events", content=iter([body[:10], body[10:]]), headers=headers)
    assert response.status_code == 200
    assert len(fake.ingested) == 2


# --- validation --------------------------------------------------------------------------------


def test_one_semantically_bad_event_rejects_the_batch(
    client: TestClient, fake: FakeRecommender
) -> None:
    events = [
        event(),
        event(type="view", dwell_seconds=12.5),
        event(type="view"),  # a view needs dwell_seconds
        event(type="teleport"),
        event(timestamp="last tuesday"),
    ]
    body = assert_json_error(client.post("/v1/events", json={"events": events}, headers=WRITE), 422)
    assert "nothing was stored" in str(body["detail"])
    errors = [{k: e[k] for k in ("index", "field", "message")} for e in body["errors"]]
    assert errors == [
        {"index": 2, "field": "dwell_seconds", "message": "view without dwell_seconds"},
        {"index": 3, "field": "type", "message": "unknown event type"},
        {
            "index": 4,
            "field": "timestamp",
            "message": "unparsable timestamp (ISO 8601 or unix seconds)",
        },
    ]
    assert not fake.ingested


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"item_id": "i1", "type": "like"}, "user_id"),
        (event(user_id=""), "user_id"),
        (event(user_id="u" * 513), "user_id"),
        (event(user_id=42), "user_id"),
        (event(item_id="a\x00b"), "item_id"),
        (event(dwell_seconds=-1), "dwell_seconds"),
        (event(dwell_seconds="12"), "dwell_seconds"),
        (event(value=True), "value"),
        (event(timestamp=True), "timestamp"),
        (event(timestamp=[1]), "timestamp"),
        (event(colour="red"), "colour"),
    ],
)
def test_one_malformed_event_names_its_index_and_field(
    client: TestClient, fake: FakeRecommender, bad: dict[str, object], field: str
) -> None:
    events = [event(), event(item_id="i2"), bad]
    body = assert_json_error(client.post("/v1/events", json={"events": events}, headers=WRITE), 422)
    errors = body["errors"]
    assert isinstance(errors, list) and errors
    assert {(e["index"], e["field"]) for e in errors} == {(2, field)}
    assert all(e["message"] for e in errors)
    assert not fake.ingested


def test_a_lone_surrogate_is_a_422_naming_the_field(
    client: TestClient, fake: FakeRecommender
) -> None:
    # JSON can escape half a UTF-16 pair; no store can hold it, so it never gets that far.
    raw = '{"events": [{"user_id": "u\\ud800", "item_id": "i1", "type": "like"}]}'
    response = client.post(
        "/v1/events", content=raw, headers={**WRITE, "content-type": "application/json"}
    )
    body = assert_json_error(response, 422)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "user_id")]
    assert "unicode" in body["errors"][0]["message"].lower()
    assert not fake.ingested


def test_batch_size_bounds(client: TestClient, fake: FakeRecommender) -> None:
    assert_json_error(client.post("/v1/events", json={"events": []}, headers=WRITE), 422)
    too_many = {"events": [event(item_id=f"i{n}") for n in range(1001)]}
    body = assert_json_error(client.post("/v1/events", json=too_many, headers=WRITE), 422)
    assert body["errors"][0]["field"] == "events"
    just_enough = {"events": [event(item_id=f"i{n}") for n in range(1000)]}
    assert client.post("/v1/events", json=just_enough, headers=WRITE).status_code == 200
    assert len(fake.ingested) == 1 and len(fake.ingested[0]) == 1000


def test_missing_timestamp_means_now_and_given_ones_are_kept(
    client: TestClient, fake: FakeRecommender
) -> None:
    before = time.time()
    events = [event(), event(item_id="i2", timestamp="2024-06-10T06:13:20Z")]
    response = client.post("/v1/events", json={"events": events}, headers=WRITE)
    assert response.json() == {"accepted": 2, "duplicates": 0}
    stored = fake.ingested[0]
    assert before <= stored["timestamp"][0] <= time.time()
    assert stored["timestamp"][1] == 1_718_000_000.0
    assert stored["event_id"].notna().all()


def test_body_that_is_not_json(client: TestClient) -> None:
    headers = {**WRITE, "content-type": "application/json"}
    body = assert_json_error(client.post("/v1/events", content=b"{nope", headers=headers), 422)
    assert "JSON" in str(body["detail"])
    body = assert_json_error(
        client.post("/v1/events", content=b'{"events": []}', headers=WRITE), 422
    )
    assert "Content-Type: application/json" in str(body["detail"])
    deep = b"[" * 10_000 + b"]" * 10_000
    assert client.post("/v1/events", content=deep, headers=headers).status_code in (400, 422)


def test_put_item_body_id_must_match_path(client: TestClient, fake: FakeRecommender) -> None:
    response = client.put("/v1/items/i1", json={"item_id": "i2", "title": "x"}, headers=WRITE)
    body = assert_json_error(response, 422)
    assert body["errors"][0]["field"] == "item_id"
    assert client.put("/v1/items/i1", json={"item_id": "i1"}, headers=WRITE).status_code == 200
    assert fake.upserted[0]["item_id"].tolist() == ["i1"]


def test_item_batch_with_one_bad_item_stores_nothing(
    client: TestClient, fake: FakeRecommender
) -> None:
    items = [
        {"item_id": "a", "title": "A"},
        {"item_id": "b", "title": "B", "created_at": "not a date"},
    ]
    body = assert_json_error(client.post("/v1/items", json={"items": items}, headers=WRITE), 422)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "created_at")]
    assert not fake.upserted


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/users/u1/feed?limit=0", "limit"),
        ("/v1/users/u1/feed?limit=101", "limit"),
        ("/v1/users/u1/feed?limit=ten", "limit"),
        ("/v1/users/u1/feed?category=", "category"),
        ("/v1/items/i1/similar?kind=psychic", "kind"),
        ("/v1/users//feed", "user_id"),
        (f"/v1/users/{'u' * 513}/feed", "user_id"),
    ],
)
def test_query_and_path_errors_name_the_field(client: TestClient, path: str, field: str) -> None:
    body = assert_json_error(client.get(path, headers=WRITE), 422)
    assert body["errors"][0]["field"] == field


def test_unknown_query_parameters_are_rejected_on_the_contract(
    client: TestClient, fake: FakeRecommender
) -> None:
    body = assert_json_error(client.get("/v1/users/u1/feed?categories=jazz", headers=WRITE), 422)
    assert body["errors"][0]["field"] == "categories"
    assert "category" in body["errors"][0]["message"]  # names what it does take
    assert not fake.feeds
    assert_json_error(
        client.post("/v1/events?dry_run=1", json={"events": [event()]}, headers=WRITE), 422
    )
    assert not fake.ingested
    # Operations endpoints are lenient: probes and scrapers add their own parameters.
    assert client.get("/healthz?probe=1").status_code == 200
    assert client.get("/metrics?name[]=up", headers=WRITE).status_code == 200


def test_feed_passes_filters_and_paging_through(client: TestClient, fake: FakeRecommender) -> None:
    response = client.get(
        "/v1/users/u1/feed?limit=7&cursor=abc&category=jazz&category=cooking&tag=live",
        headers=WRITE,
    )
    assert response.status_code == 200
    user_id, limit, cursor, filters = fake.feeds[-1]
    assert (user_id, limit, cursor) == ("u1", 7, "abc")
    assert filters is not None
    assert filters.categories == ["jazz", "cooking"] and filters.tags == ["live"]


def test_error_statuses_are_json(client: TestClient) -> None:
    assert_json_error(client.get("/v1/users/u1/feed?cursor=not-a-cursor", headers=WRITE), 400)
    assert_json_error(client.get("/v1/items/missing/similar", headers=WRITE), 404)
    assert_json_error(client.get("/v2/nothing", headers=WRITE), 404)
    assert_json_error(client.delete("/v1/events", headers=WRITE), 405)


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable("down"),
        OperationalError("select 1", {}, ConnectionRefusedError("connection refused")),
    ],
)
def test_store_down_is_503_json(
    client: TestClient, fake: FakeRecommender, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise error

    for method in ("feed", "ingest_events", "upsert_items"):
        monkeypatch.setattr(fake, method, down)
    for response in (
        client.get("/v1/users/u1/feed", headers=WRITE),
        client.post("/v1/events", json={"events": [event()]}, headers=WRITE),
        client.put("/v1/items/i1", json={"title": "x"}, headers=WRITE),
    ):
        assert assert_json_error(response, 503) == {"detail": "store unavailable"}
        assert response.headers["retry-after"]


def test_unexpected_errors_are_json_500_without_details(
    client: TestClient, fake: FakeRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(fake, "feed", broken)
    client_no_raise = TestClient(client.app, raise_server_exceptions=False)
    response = client_no_raise.get("/v1/users/u1/feed", headers=WRITE)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}


# --- health, metrics, refresh ------------------------------------------------------------------


def test_readyz_reports_each_check(
    client: TestClient, fake: FakeRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"store": True, "index": True, "model": True}
    monkeypatch.setattr(fake, "ready", lambda: {"store": True, "index": False, "model": True})
    body = assert_json_error(client.get("/readyz"), 503)
    assert body["ready"] is False and "index" in str(body["detail"])


def test_metrics_expose_latency_source_mix_and_model_version(client: TestClient) -> None:
    client.get("/v1/users/some-private-user/feed", headers=WRITE)
    client.get("/v1/items/i1/similar", headers=WRITE)
    client.post("/v1/events", json={"events": [event()]}, headers=WRITE)
    text = client.get("/metrics", headers=WRITE).text
    assert (
        'recsys_http_request_duration_seconds_count{method="GET",'
        'route="/v1/users/{user_id}/feed",status="200"} 1.0'
    ) in text
    assert 'route="/v1/items/{item_id}/similar"' in text
    assert 'recsys_feed_items_total{source="content"} 1.0' in text
    assert 'recsys_feed_pages_total{degraded="false"} 1.0' in text
    assert 'recsys_events_ingested_total{outcome="inserted"} 1.0' in text
    assert 'recsys_model_info{version="v-test"} 1.0' in text
    # Labels are route templates, never raw ids.
    assert "some-private-user" not in text


def test_refresh_runs_in_the_background_and_survives_errors(
    tmp_path: Path, fake: FakeRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Swaps and item writes reach every serving process within a second: the interval plus
    # the work, so the interval itself must leave room.
    assert REFRESH_INTERVAL_SECONDS <= 0.5
    failures = {"left": 3}
    real_refresh = fake.refresh

    def flaky() -> bool:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("pointer unreadable")
        return real_refresh()

    monkeypatch.setattr(fake, "refresh", flaky)
    app = fake_app(settings_for(tmp_path / "home", api_keys=API_KEYS), fake, refresh_interval=0.02)
    with TestClient(app):
        deadline = time.monotonic() + 5
        while fake.refreshes < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        task = app.state.refresh_task
        assert not task.done()
    assert failures["left"] == 0 and fake.refreshes >= 3
    # Items are synced on the rounds where the refresh works.
    assert fake.syncs >= 1
    # The loop ends with the app: cancelled and awaited by the lifespan, not left pending.
    assert task.cancelled()


def test_healthz_is_open_and_cheap(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("threads", [1, 3])
def test_requests_run_on_the_configured_number_of_threads(
    tmp_path: Path, fake: FakeRecommender, threads: int
) -> None:
    import anyio.to_thread

    settings = settings_for(tmp_path / "home", api_keys=API_KEYS, request_threads=threads)
    with TestClient(fake_app(settings, fake)) as test_client:
        limiter = test_client.portal.call(anyio.to_thread.current_default_thread_limiter)
        assert limiter.total_tokens == threads
        assert test_client.get("/v1/users/u1/feed", headers=bearer(READ_KEY)).status_code == 200
