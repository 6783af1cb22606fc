"""Experiments end to end over real HTTP: simulated users with the demo world's planted
tastes read their feeds from ``recsys serve --workers 2``, react, and send every event
back with its page's ``feed_id``.

- An A/A experiment (two identical variants) shows no significant difference.
- The live model against a popularity-only variant: the model is ahead, p < 0.05.
- After SIGTERM every item served is exactly one stored impression. The flush interval
  is set far beyond the run, so every row reaches the store through the shutdown path
  of one of the two workers, not the periodic flush.
- The reports, read over HTTP from a restarted service, come from the store alone.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from pipelines.demo_world import generate_world
from pipelines.simulate import FeedClient, simulate
from recsys.config import Settings
from recsys.store import open_store
from recsys.store.impressions import count_impressions
from tests.reliability.service import (
    READ_KEY,
    WRITE_KEY,
    bearer,
    copy_home,
    start_service,
    stop_service,
)

pytestmark = pytest.mark.slow

# An A/A p-value is uniform: below this one run in a thousand fails by chance alone.
AA_FALSE_ALARM = 0.001


# A start or a stop reaches every worker within this (each follows the store on its
# refresh tick); until then the other worker serves as before.
PROPAGATION_SECONDS = 1.0


def _start(client: httpx.Client, body: dict) -> None:
    response = client.post("/v1/experiments", json=body)
    assert response.status_code == 201, response.text
    time.sleep(PROPAGATION_SECONDS)


def _stop(client: httpx.Client, name: str) -> None:
    response = client.post(f"/v1/experiments/{name}/stop")
    assert response.status_code == 200, response.text
    time.sleep(PROPAGATION_SECONDS)


def test_simulated_users_over_http_aa_ab_and_every_impression_kept(
    world_template: Path, tmp_path: Path
) -> None:
    # The world the template was trained on (tests/reliability/conftest.py).
    world = generate_world(seed=7, scale=0.2)
    users = world.users["user_id"].tolist()
    home = copy_home(world_template, tmp_path / "home")
    env = {"RECSYS_IMPRESSIONS__FLUSH_SECONDS": "60"}
    service = start_service(home, tmp_path / "run", workers=2, env=env)
    served = 0
    try:
        feeds = FeedClient(service.base, api_key=WRITE_KEY)
        with httpx.Client(base_url=service.base, headers=bearer(WRITE_KEY), timeout=30) as api:
            _start(
                api,
                {
                    "name": "aa",
                    "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}],
                },
            )
            aa = simulate(feeds, world, users, pages_per_user=3, seed=1)
            _stop(api, "aa")
            _start(
                api,
                {
                    "name": "model-vs-popular",
                    "variants": [
                        {"name": "model", "share": 0.5},
                        {"name": "popular", "share": 0.5, "ranker": "popularity"},
                    ],
                },
            )
            ab = simulate(feeds, world, users, pages_per_user=3, seed=2)
            _stop(api, "model-vs-popular")
        served = aa.impressions + ab.impressions
        assert set(aa.variants) == {"a", "b"} and set(ab.variants) == {"model", "popular"}
        assert aa.pages == ab.pages == 3 * len(users) and aa.likes > 0
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=60) == 0
    finally:
        stop_service(service)

    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    store = open_store(settings)
    try:
        with store.read() as conn:
            assert count_impressions(conn) == served
    finally:
        store.dispose()

    service = start_service(home, tmp_path / "again", workers=1)
    try:
        with httpx.Client(base_url=service.base, headers=bearer(READ_KEY), timeout=30) as api:
            report_aa = api.get("/v1/experiments/aa").json()
            report_ab = api.get("/v1/experiments/model-vs-popular").json()
    finally:
        stop_service(service)
    assert report_aa["status"] == report_ab["status"] == "stopped"
    assert sum(v["impressions"] for v in report_aa["variants"]) == aa.impressions
    assert sum(v["impressions"] for v in report_ab["variants"]) == ab.impressions
    assert report_aa["p_value"] > AA_FALSE_ALARM, report_aa
    model, popular = report_ab["variants"]
    assert model["action_rate"] > popular["action_rate"], report_ab
    assert report_ab["p_value"] < 0.05, report_ab


def test_the_simulate_command_drives_a_running_service(
    world_template: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    home = copy_home(world_template, tmp_path / "home")
    service = start_service(home, tmp_path / "run")
    world_args = ["--seed", "7", "--scale", "0.2", "--users", "20", "--pages", "2"]
    try:
        runner = CliRunner()
        done = runner.invoke(
            app, ["simulate", "--url", service.base, "--api-key", WRITE_KEY, *world_args]
        )
        assert done.exit_code == 0, done.output
        assert "20 users read 40 pages: 400 items shown" in done.output
        # A read key may read feeds but not send events: the service's answer is shown.
        refused = runner.invoke(
            app, ["simulate", "--url", service.base, "--api-key", READ_KEY, *world_args]
        )
        assert refused.exit_code == 1 and "403" in refused.output
        with httpx.Client(base_url=service.base, headers=bearer(READ_KEY)) as api:
            feed_id = api.get("/v1/users/demo-user-0001/feed").json()["feed_id"]
        assert feed_id
    finally:
        stop_service(service)
    unreachable = CliRunner().invoke(
        app, ["simulate", "--url", service.base, "--api-key", WRITE_KEY, *world_args]
    )
    assert unreachable.exit_code == 1 and "cannot reach the service" in unreachable.output
    store = open_store(Settings(home=home, _env_file=None))  # type: ignore[call-arg]
    try:
        with store.read() as conn:
            attributed = conn.exec_driver_sql(
                "SELECT count(*), count(DISTINCT feed_id) FROM events WHERE feed_id IS NOT NULL"
            ).one()
    finally:
        store.dispose()
    # Every event the users sent names its page; 40 pages at most.
    assert attributed[0] > 0 and 0 < attributed[1] <= 40
