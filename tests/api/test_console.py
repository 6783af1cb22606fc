"""The web console (/ui) on a real trained world: access with the API's keys, CSRF on every
action, and pages that show the service's own data (the browser tests are in
tests/browser/)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.api import create_app
from recsys.api.console import CSRF_COOKIE, KEY_COOKIE, service_figures
from recsys.columns import ITEM_ID, USER_ID
from recsys.evaluation.metrics import evaluate_rankings
from recsys.evaluation.report import write_report
from recsys.evaluation.report_document import ModelResult
from recsys.store.events import user_events
from recsys.store.overview import store_counts
from tests.api.helpers import (
    API_KEYS,
    READ_KEY,
    WRITE_KEY,
    TestClient,
    World,
    bearer,
    clone_version,
    copy_world,
    path_id,
)
from tests.reliability.service import copy_home

CLONE = "20991231T000000Z-c10ne0"


def make_reports(directory: Path, users: list[str], items: list[str]) -> list[str]:
    """Two real evaluation reports (recsys.evaluation.report), one better than the other."""
    test = pd.DataFrame({USER_ID: users[:20], ITEM_ID: items[:20], "weight": 1.0})
    good = {u: [i, *items[40:49]] for u, i in zip(users[:20], items[:20], strict=True)}
    poor = {u: items[40:50] for u in users[:20]}
    names = []
    for hour, (label, recs) in enumerate((("first", poor), ("second", good))):
        written = write_report(
            [ModelResult("als", evaluate_rankings(recs, test, [10]))],
            dataset={"name": f"demo-{label}"},
            protocol="temporal",
            out_dir=directory,
            created_at=pd.Timestamp(2026, 12, 1, hour, tz="UTC").to_pydatetime(),
        )
        names.append(written.name)
    return names


@pytest.fixture(scope="module")
def world(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("console")
    template = root / "template"
    copy_home(trained_template, template)
    live = (template / "vectors" / "CURRENT").read_text().strip()
    clone_version(template, live, CLONE)
    home = root / "home"
    opened = copy_world(template, home, api_keys=API_KEYS, reports_dir=home / "reports")
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def reports(world: World) -> list[str]:
    return make_reports(world.settings.reports_dir, world.users, world.items[ITEM_ID].tolist())


@pytest.fixture()
def client(world: World) -> Iterator[TestClient]:
    app = create_app(world.settings, world.recommender, refresh_interval=0.1)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def sign_in(client: TestClient, key: str) -> str:
    """Sign in through the form, as a browser does; returns the CSRF token."""
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([0-9a-f]{32})"', form.text)
    assert form.status_code == 200 and token, form.text
    done = client.post("/ui/login", data={"csrf": token.group(1), "key": key, "next": "/ui/models"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/models"
    # Signing in issues a new token: one planted before is worth nothing after.
    fresh = client.cookies.get(CSRF_COOKIE, path="/ui")
    assert fresh and fresh != token.group(1)
    return str(fresh)


def pages(world: World, reports: list[str]) -> list[str]:
    user = world.users[0]
    item = str(world.items[ITEM_ID].iloc[0])
    return [
        "/ui",
        f"/ui/users/{path_id(user)}",
        f"/ui/items/{path_id(item)}",
        "/ui/models",
        "/ui/experiments",
        "/ui/reports",
        f"/ui/reports?a={reports[0]}&b={reports[1]}",
        f"/ui/reports/{reports[0]}/",
        "/ui/users",
        "/ui/items",
    ]


def test_with_keys_no_page_shows_data_without_a_valid_key(
    client: TestClient, world: World, reports: list[str]
) -> None:
    user = world.users[0]
    title = str(world.items["title"].iloc[0])
    for path in pages(world, reports):
        for cookies in ({}, {KEY_COOKIE: "not-a-key"}):
            client.cookies.clear()
            client.cookies.update(cookies)
            response = client.get(path)
            assert response.status_code == 303, (path, response.status_code)
            assert response.headers["location"].startswith("/ui/login?next=%2Fui")
            assert user not in response.text and title not in response.text
    # The API's bearer header works too (for scripts), with the same scopes.
    client.cookies.clear()
    assert client.get("/ui/models", headers=bearer(READ_KEY)).status_code == 200
    assert client.get("/ui/models", headers=bearer("wrong")).status_code == 303


def test_sign_in_keeps_the_key_in_a_strict_httponly_cookie(client: TestClient) -> None:
    form = client.get("/ui/login")
    csrf_cookie = form.headers["set-cookie"]
    assert csrf_cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in csrf_cookie
    assert "samesite=strict" in csrf_cookie.lower()
    token = re.search(r'name="csrf" value="([0-9a-f]{32})"', form.text)
    assert token is not None and token.group(1) == client.cookies.get(CSRF_COOKIE)
    done = client.post("/ui/login", data={"csrf": token.group(1), "key": READ_KEY, "next": "/ui"})
    assert done.status_code == 303
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{KEY_COOKIE}=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower() and "Path=/ui" in cookie
    assert client.get("/ui").status_code == 200
    # Unknown key: the form again, 401, nothing set.
    client.cookies.clear()
    client.get("/ui/login")
    token_value = client.cookies.get(CSRF_COOKIE)
    refused = client.post("/ui/login", data={"csrf": token_value, "key": "guess", "next": "/ui"})
    assert refused.status_code == 401 and "Unknown key" in refused.text
    assert KEY_COOKIE not in refused.headers.get("set-cookie", "")
    # No CSRF token: refused even with the right key.
    client.cookies.clear()
    forged = client.post("/ui/login", data={"key": READ_KEY, "next": "/ui"})
    assert forged.status_code == 403
    # An outside "next" is never followed.
    client.cookies.clear()
    client.get("/ui/login")
    away = client.post(
        "/ui/login",
        data={"csrf": client.cookies.get(CSRF_COOKIE), "key": READ_KEY, "next": "//evil.test/"},
    )
    assert away.headers["location"] == "/ui"


def test_pages_show_the_services_own_data(
    client: TestClient, world: World, reports: list[str]
) -> None:
    sign_in(client, READ_KEY)
    for path in pages(world, reports)[:8]:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert "Content-Security-Policy" in response.headers
    overview = client.get("/ui").text
    with world.store.read() as conn:
        counts = store_counts(conn)
    for value in counts.values():
        assert f"{value:,}" in overview
    assert world.recommender.model_version in overview
    # The user page lists the feed the API answers, in the same order.
    user = world.users[3]
    api_items = [
        i["item_id"]
        for i in client.get(f"/v1/users/{path_id(user)}/feed", headers=bearer(READ_KEY)).json()[
            "items"
        ]
    ]
    page = client.get(f"/ui/users/{path_id(user)}").text
    # The consumed items are named, each linked to its item page.
    consumed = page.split('id="consumed"', 1)[1].split("</details>", 1)[0]
    with world.store.read() as conn:
        touched = set(user_events(conn, user)[ITEM_ID])
    linked = {urllib.parse.unquote(i) for i in re.findall(r'href="/ui/items/([^"]+)"', consumed)}
    assert linked and linked <= touched
    feed_table = page.split('id="feed"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-item-id="([^"]+)"', feed_table) == api_items
    # The next page follows the feed's cursor.
    first = client.get(f"/v1/users/{path_id(user)}/feed", headers=bearer(READ_KEY)).json()
    second = client.get(
        f"/v1/users/{path_id(user)}/feed",
        params={"cursor": first["next_cursor"]},
        headers=bearer(READ_KEY),
    ).json()
    link = re.search(r'id="next-page" href="([^"]+)"', page)
    assert link is not None
    next_page = client.get(link.group(1).replace("&amp;", "&")).text
    next_table = next_page.split('id="feed"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-item-id="([^"]+)"', next_table) == [
        i["item_id"] for i in second["items"]
    ]
    assert "served on an earlier page" in next_page
    bad = client.get(f"/ui/users/{path_id(user)}", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    # Filters reach the page: one category only.
    category = str(world.items["category"].dropna().iloc[0])
    filtered = client.get(f"/ui/users/{path_id(user)}", params={"category": category, "limit": 5})
    shown = re.findall(r'data-item-id="([^"]+)"', filtered.text.split('id="feed"', 1)[1])
    assert 0 < len(shown) <= 5
    by_id = world.items.set_index(ITEM_ID)["category"]
    assert {by_id[i] for i in shown} == {category}
    # The item page: its fields, similar items of each kind, and its interactions.
    item = world.items.iloc[5]
    item_page = client.get(f"/ui/items/{path_id(str(item[ITEM_ID]))}").text
    assert str(item["title"]) in item_page
    for kind in ("content", "behavioural", "blend", "item2item"):
        assert f'data-kind="{kind}"' in item_page
    assert client.get("/ui/items/no-such-item").status_code == 404
    # Reports: listed, opened in place, compared.
    listing = client.get("/ui/reports").text
    assert all(name in listing for name in reports)
    opened = client.get(f"/ui/reports/{reports[1]}/")
    assert (
        "demo-second" in opened.text
        and "script-src" not in opened.headers["Content-Security-Policy"]
    )
    compared = client.get("/ui/reports", params={"a": reports[0], "b": reports[1]}).text
    assert 'id="comparison"' in compared and "ndcg@10" in compared.lower()
    for bad in ("%2E%2E", "%2E%2E%2Fhome", ".hidden", "nope"):
        assert client.get(f"/ui/reports/{bad}/").status_code == 404, bad
    assert "Choose two reports" in client.get("/ui/reports", params={"a": "..", "b": "x"}).text


def _activate(client: TestClient, version: str, csrf: str | None) -> Any:
    data = {"csrf": csrf} if csrf is not None else {}
    return client.post(f"/ui/models/{version}/activate", data=data)


def test_a_read_key_cannot_activate_and_a_write_key_rolls_back(
    client: TestClient, world: World
) -> None:
    vectors = world.recommender.vectors
    live = vectors.live_version()
    assert live is not None and live != CLONE
    token = sign_in(client, READ_KEY)
    models = client.get("/ui/models").text
    assert CLONE in models and "needs a write key" in models
    refused = _activate(client, CLONE, token)
    assert refused.status_code == 403 and vectors.live_version() == live
    client.cookies.clear()
    token = sign_in(client, WRITE_KEY)
    assert _activate(client, CLONE, None).status_code == 403
    assert _activate(client, CLONE, "0" * 32).status_code == 403
    assert vectors.live_version() == live
    done = _activate(client, CLONE, token)
    assert done.status_code == 303 and vectors.live_version() == CLONE
    assert world.recommender.model_version == CLONE
    assert f'<b id="live">{CLONE}</b>' in client.get(done.headers["location"]).text
    # And back: the rollback the operators need most.
    assert _activate(client, live, token).status_code == 303
    assert vectors.live_version() == live
    assert _activate(client, "no-such-version", token).status_code == 404


def test_without_keys_actions_still_need_the_same_site_token(world: World) -> None:
    settings = world.settings.model_copy(update={"api_keys": ""})
    app = create_app(settings, world.recommender, refresh_interval=0.1)
    with TestClient(app, follow_redirects=False) as open_client:
        assert open_client.get("/ui").status_code == 200
        assert open_client.get("/ui/login").headers["location"] == "/ui"
        live = world.recommender.vectors.live_version()
        # A form posted from another site carries no SameSite=Strict cookie.
        open_client.cookies.clear()
        forged = open_client.post(f"/ui/models/{CLONE}/activate", data={"csrf": "f" * 32})
        assert forged.status_code == 403
        assert world.recommender.vectors.live_version() == live


def test_service_figures_come_from_the_services_own_metrics() -> None:
    from recsys.api.metrics import ApiMetrics

    metrics = ApiMetrics(lambda: "v1")
    route = "/v1/users/{user_id}/feed"
    # 50 feeds in the 5-10 ms bucket, 40 in 10-25 ms, 10 slower than every bound.
    for seconds in [0.007] * 50 + [0.02] * 40 + [12.0] * 10:
        metrics.observe_request("GET", route, 200, seconds)
    metrics.observe_request("GET", route, 404, 0.001)  # not an answered feed
    metrics.observe_request("GET", "/v1/items/{item_id}/similar", 200, 0.001)
    for _ in range(3):
        metrics.observe_feed(["als", "als", "popular", "als"], degraded=False)
    metrics.impressions.labels("written").inc(400)
    figures = service_figures(metrics.exposition())
    assert figures["feeds"] == 100
    assert figures["p50_ms"] == 10.0  # the 50th of 100 is the top of the 5-10 ms bucket
    assert figures["p95_ms"] == 10_000.0  # in +Inf: the highest finite bound, as PromQL says
    assert [row["label"] for row in figures["source_mix"]] == ["als", "popular"]
    assert figures["source_mix"][0]["value"] == 75.0
    assert figures["impressions_written"] == 400 and figures["impressions_dropped"] == 0


def test_hostile_tokens_origins_and_ids_get_answers_not_errors(
    client: TestClient, world: World, reports: list[str]
) -> None:
    token = sign_in(client, WRITE_KEY)
    live = world.recommender.vectors.live_version()
    activate = f"/ui/models/{CLONE}/activate"
    # Tokens this console never issues: non-hex, non-ASCII, planted in cookie and form.
    for planted in ("x", "é" * 32, "0" * 31):
        client.cookies.set(CSRF_COOKIE, "x" if planted == "x" else token, path="/ui")
        assert client.post(activate, data={"csrf": planted}).status_code == 403, planted
    client.cookies.set(CSRF_COOKIE, token, path="/ui")
    # The right token, but the browser says the form came from elsewhere.
    for headers in (
        {"Origin": "http://evil.test"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port or subdomain
    ):
        refused = client.post(activate, data={"csrf": token}, headers=headers)
        assert refused.status_code == 403, headers
    assert world.recommender.vectors.live_version() == live
    # Ids are any text, as in the API: '/', '%', a newline; a NUL is refused plainly.
    for odd in ("a/b", "%41", "line\nbreak", "x" * 512):
        page = client.get(f"/ui/users/{path_id(odd)}")
        assert page.status_code == 200, odd
        assert "No events: a cold user" in page.text
        assert client.get(f"/ui/items/{path_id(odd)}").status_code == 404
    for bad in ("nul\x00", "x" * 513):
        assert client.get(f"/ui/users/{path_id(bad)}").status_code == 422
        assert client.get(f"/ui/items/{path_id(bad)}").status_code == 422
    # A page size the form did not mean: the default page, not a JSON error.
    user = path_id(world.users[0])
    for limit in ("abc", "", "-3", "100000"):
        page = client.get(f"/ui/users/{user}", params={"limit": limit})
        assert page.status_code == 200, limit
        rows = re.findall(
            r'data-item-id="', page.text.split('id="feed"', 1)[1].split("</table>")[0]
        )
        assert len(rows) == {"abc": 20, "": 20, "-3": 1, "100000": 100}[limit]
    # A report whose metrics cannot be read is named, not a server error.
    broken = world.settings.reports_dir / "20000101-000000"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "metrics.json").write_text("{}")
    page = client.get("/ui/reports", params={"a": broken.name, "b": reports[0]})
    assert page.status_code == 200 and "cannot be compared" in page.text
    # Signed out, a POST goes to the sign-in form, then back to the models page.
    client.cookies.clear()
    away = client.post(activate, data={"csrf": token})
    assert away.status_code == 303 and away.headers["location"] == "/ui/login?next=%2Fui%2Fmodels"
    # The path as sent comes back after sign-in: user "%41" stays "%41".
    to_login = client.get("/ui/users/%2541").headers["location"]
    next_page = urllib.parse.parse_qs(urllib.parse.urlsplit(to_login).query)["next"][0]
    assert next_page == "/ui/users/%2541"


def test_the_overview_shows_a_version_without_a_recorded_run(
    client: TestClient, world: World
) -> None:
    token = sign_in(client, WRITE_KEY)
    live = world.recommender.vectors.live_version()
    assert live is not None
    try:
        assert _activate(client, CLONE, token).status_code == 303
        overview = client.get("/ui")
        assert overview.status_code == 200 and CLONE in overview.text
        assert "no run recorded for this version" in overview.text
    finally:
        assert _activate(client, live, token).status_code == 303


def test_a_key_beyond_ascii_signs_in_as_it_authenticates_over_the_api(world: World) -> None:
    key = "clé-de-lecture-0123456789"
    settings = world.settings.model_copy(update={"api_keys": f"{key}:read"})
    app = create_app(settings, world.recommender, refresh_interval=0.1)
    with TestClient(app, follow_redirects=False) as keyed:
        keyed.get("/ui/login")
        done = keyed.post(
            "/ui/login",
            data={"csrf": keyed.cookies.get(CSRF_COOKIE), "key": key, "next": "/ui/models"},
        )
        assert done.status_code == 303
        assert keyed.get("/ui/models").status_code == 200


def test_experiments_and_what_a_user_was_shown(client: TestClient, world: World) -> None:
    api = bearer(WRITE_KEY)
    name = "console-ab"
    body = {
        "name": name,
        "variants": [
            {"name": "model", "share": 0.5},
            {"name": "popular", "share": 0.5, "ranker": "popularity"},
        ],
    }
    assert client.post("/v1/experiments", json=body, headers=api).status_code == 201
    try:
        world.recommender.sync_experiment()
        user = world.users[7]
        page = client.get(f"/v1/users/{path_id(user)}/feed", headers=api).json()
        liked = page["items"][2]["item_id"]
        event = {"user_id": user, "item_id": liked, "type": "like", "feed_id": page["feed_id"]}
        assert client.post("/v1/events", json={"events": [event]}, headers=api).status_code == 200
        for other in world.users[8:30]:
            client.get(f"/v1/users/{path_id(other)}/feed", headers=api)
        assert world.recommender.impressions is not None
        world.recommender.impressions.flush()
        sign_in(client, READ_KEY)
        listing = client.get("/ui/experiments")
        assert listing.status_code == 200
        section = listing.text.split(f'data-experiment="{name}"', 1)[1]
        assert ">model<" in section and ">popular<" in section and "running" in section
        report = client.get(f"/v1/experiments/{name}", headers=api).json()
        for variant in report["variants"]:
            assert f"{variant['impressions']:,}" in section
        assert name in client.get("/ui").text
        # The user page lists what this user was shown, in page order, and what they acted on.
        shown = client.get(f"/ui/users/{path_id(user)}").text.split('id="shown"', 1)[1]
        rows = re.findall(r"<tr><td>[^<]*</td><td>feed</td><td class=\"num\">(\d+)</td>", shown)
        assert [int(r) for r in rows[:20]] == list(range(1, len(page["items"]) + 1))
        assert page["feed_id"][:8] in shown and f"{name} / {page['variant']}" in shown
        assert "<td>yes</td>" in shown
    finally:
        client.post(f"/v1/experiments/{name}/stop", headers=api)
        world.recommender.sync_experiment()
