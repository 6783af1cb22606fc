"""API keys: the scope matrix, constant-time comparison, and keys kept out of logs."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from recsys.api import auth as auth_module
from recsys.api.auth import KeyRing, fingerprint
from recsys.store import open_store
from recsys.store.experiments import create_experiment, stop_experiment
from recsys.vectors.versions import VersionInfo
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

EVENT = {"user_id": "u1", "item_id": "i1", "type": "like", "timestamp": 1_718_000_000}
ITEM = {"title": "Fresh pasta", "text": "Pasta in ten minutes", "tags": ["pasta"]}
EXPERIMENT = {
    "name": "e2",
    "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "ranker": "blend"}],
}
# Successes other than 200.
CREATED = {("POST", "/v1/experiments"): 201}

# (method, path, json body, scope needed: open / read / write)
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("GET", "/v1/users/u1/feed", None, "read"),
    ("GET", "/v1/items/i1/similar", None, "read"),
    ("POST", "/v1/events", {"events": [EVENT]}, "write"),
    ("PUT", "/v1/items/i1", ITEM, "write"),
    ("POST", "/v1/items", {"items": [{"item_id": "i1", **ITEM}]}, "write"),
    ("POST", "/v1/models/m1/activate", None, "write"),
    ("DELETE", "/v1/users/u1", None, "write"),
    ("DELETE", "/v1/items/i1", None, "write"),
    ("POST", "/v1/experiments", EXPERIMENT, "write"),
    ("POST", "/v1/experiments/e1/stop", None, "write"),
    ("GET", "/v1/experiments", None, "read"),
    ("GET", "/v1/experiments/e1", None, "read"),
    ("GET", "/metrics", None, "read"),
    ("GET", "/healthz", None, "open"),
    ("GET", "/readyz", None, "open"),
]
WRONG_KEY = "wrong-" + WRITE_KEY[6:]
CREDENTIALS = {
    "none": {},
    "wrong": bearer(WRONG_KEY),
    "read": bearer(READ_KEY),
    "write": bearer(WRITE_KEY),
}
EXPECTED = {
    "open": {"none": 200, "wrong": 200, "read": 200, "write": 200},
    "read": {"none": 401, "wrong": 401, "read": 200, "write": 200},
    "write": {"none": 401, "wrong": 401, "read": 403, "write": 200},
}


class StubVersions:
    """The vector store and registry behind the activate endpoint: one complete version."""

    def __init__(self) -> None:
        self.live = "m1"

    def list_versions(self) -> list[VersionInfo]:
        return [VersionInfo("m1", 0.0, live=self.live == "m1")]

    def live_version(self) -> str:
        return self.live

    def rollback(self, version: str) -> str:
        if version != "m1":
            raise ValueError(version)
        self.live = version
        return version

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        yield self

    def execute(self, statement: Any) -> None:
        pass


@pytest.fixture
def fake(tmp_path: Path) -> FakeRecommender:
    """The stand-in recommender, plus a complete model version ``m1`` to activate, and a
    real store holding a stopped experiment ``e1``."""
    recommender = FakeRecommender()
    stub = StubVersions()
    store = open_store(url=f"sqlite:///{tmp_path / 'auth.db'}")
    with store.transaction() as conn:
        create_experiment(conn, "e1", [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}])
        stop_experiment(conn, "e1")
    recommender.vectors = stub  # type: ignore[attr-defined]
    recommender.store = store  # type: ignore[attr-defined]
    manifest = tmp_path / "home" / "models" / "m1" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    return recommender


def test_matrix_covers_every_endpoint(client: TestClient) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in client.get("/openapi.json").json()["paths"].items()
        for method in operations
    }
    covered = {
        (
            method,
            path.replace("u1", "{user_id}")
            .replace("i1", "{item_id}")
            .replace("m1", "{version}")
            .replace("e1", "{name}"),
        )
        for method, path, _, _ in ENDPOINTS
    }
    assert documented == covered


@pytest.mark.parametrize("who", list(CREDENTIALS))
@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
def test_auth_matrix(
    client: TestClient,
    fake: FakeRecommender,
    method: str,
    path: str,
    body: Any,
    scope: str,
    who: str,
) -> None:
    response = client.request(method, path, json=body, headers=CREDENTIALS[who])
    expected = EXPECTED[scope][who]
    if expected == 200:
        expected = CREATED.get((method, path), 200)
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if expected in (401, 403):
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"]
        # Refused before anything reached the recommender.
        assert not fake.ingested and not fake.upserted and not fake.feeds


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {WRITE_KEY}",
        f"Bearer {WRITE_KEY[:-1]}",
        f"Bearer {WRITE_KEY}x",
        f"Bearer {WRITE_KEY.upper()}",
        "Bearer",
        "Bearer ",
        f"Token {WRITE_KEY}",
    ],
)
def test_malformed_or_near_miss_credentials_are_401(client: TestClient, header: str) -> None:
    response = client.get("/v1/users/u1/feed", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["detail"]


def test_scheme_name_is_case_insensitive(client: TestClient) -> None:
    response = client.get("/v1/users/u1/feed", headers={"Authorization": f"bearer {READ_KEY}"})
    assert response.status_code == 200


def test_unauthenticated_request_is_refused_before_its_body_is_parsed(
    client: TestClient,
) -> None:
    response = client.post(
        "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401
    response = client.post(
        "/v1/events",
        content=b"{not json",
        headers={"content-type": "application/json", **bearer(READ_KEY)},
    )
    assert response.status_code == 403


def test_every_configured_key_is_compared_in_constant_time(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        assert isinstance(a, bytes) and isinstance(b, bytes)
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    for key, status in ((READ_KEY, 200), (WRITE_KEY, 200), (WRONG_KEY, 401)):
        calls.clear()
        response = client.get("/v1/users/u1/feed", headers=bearer(key))
        assert response.status_code == status
        # Both configured keys, whichever matched (or none): no early exit.
        assert sorted(b for _, b in calls) == sorted([READ_KEY.encode(), WRITE_KEY.encode()])
        assert {a for a, _ in calls} == {key.encode()}


def test_keyring_compares_against_all_keys_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = {f"key-{n}": "read" for n in range(5)}
    ring = KeyRing(keys)
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    principal = ring.identify("key-0")
    assert principal is not None and principal.fingerprint == fingerprint("key-0")
    assert len(compared) == 5


def test_keys_never_appear_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake: FakeRecommender
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path / "home", api_keys=API_KEYS)
    with TestClient(fake_app(settings, fake)) as client:
        client.get("/v1/users/u1/feed", headers=bearer(READ_KEY))
        client.get("/v1/users/u1/feed", headers=bearer(WRONG_KEY))
        client.post("/v1/events", json={"events": [EVENT]}, headers=bearer(READ_KEY))
        client.post("/v1/events", json={"events": [EVENT]}, headers=bearer(WRITE_KEY))
        client.post("/v1/events", json={"events": [{"user_id": ""}]}, headers=bearer(WRITE_KEY))
        client.put("/v1/items/i1", json=ITEM, headers=bearer(WRONG_KEY))
        client.get("/metrics", headers=bearer(WRITE_KEY))
    text = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    # The app did log about keys, by fingerprint only.
    assert fingerprint(READ_KEY) in text and fingerprint(WRONG_KEY) in text
    for key in (READ_KEY, WRITE_KEY, WRONG_KEY):
        assert key not in text
        assert key[6:20] not in text  # not even a fragment


def test_no_keys_configured_allows_everything_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake: FakeRecommender
) -> None:
    caplog.set_level(logging.WARNING)
    app = fake_app(settings_for(tmp_path / "home"), fake)
    assert "no API keys configured" in caplog.text
    with TestClient(app) as client:
        for method, path, body, _ in ENDPOINTS:
            expected = CREATED.get((method, path), 200)
            assert client.request(method, path, json=body).status_code == expected, path


def test_bad_key_scope_in_settings_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        fake_app(settings_for(tmp_path / "home", api_keys="k1:admin"), FakeRecommender())
