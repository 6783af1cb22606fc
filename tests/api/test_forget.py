"""Forgetting a user: over HTTP and in the CLI, the id is left nowhere: not in the store,
not in any kept version's vector index, not in the next version's artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from pipelines.train import train
from recsys import config as config_module
from recsys.api.app import create_app
from recsys.cli import app as cli_app
from recsys.store.catalog import load_items
from recsys.store.schema import events as events_table
from recsys.store.schema import users as users_table
from recsys.vectors import open_vector_store
from tests.api.helpers import API_KEYS, READ_KEY, WRITE_KEY, World, bearer, copy_world, path_id


def stored_rows(world: World, user_id: str) -> tuple[int, int]:
    with world.store.read() as conn:
        n_events = conn.execute(
            select(func.count()).where(events_table.c.user_id == user_id)
        ).scalar_one()
        n_users = conn.execute(
            select(func.count()).where(users_table.c.user_id == user_id)
        ).scalar_one()
    return int(n_events), int(n_users)


def versions_holding(world: World, user_id: str) -> list[str]:
    held = []
    with open_vector_store(world.settings) as vectors:
        for info in vectors.list_versions():
            index = vectors.open_version(info.version)
            try:
                if any(index.get_user_vector(user_id, name) is not None for name in index.dims):
                    held.append(info.version)
            finally:
                index.close()
    return held


def files_naming(directory: Path, user_id: str) -> list[str]:
    needle = user_id.encode()
    return [str(p) for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_forget_over_http_leaves_the_id_nowhere(trained_template: Path, tmp_path: Path) -> None:
    world = copy_world(trained_template, tmp_path / "home", api_keys=API_KEYS)
    try:
        user = world.users[2]
        first = world.recommender.model_version
        # Two kept versions hold the user's vector; both must lose it.
        second = train(world.store, world.settings, force=True).version
        assert world.recommender.refresh()
        n_events, _ = stored_rows(world, user)
        assert n_events > 0 and versions_holding(world, user) == sorted([first, second])
        app = create_app(world.settings, world.recommender, refresh_interval=60)
        with TestClient(app) as client:
            assert (
                client.delete(f"/v1/users/{path_id(user)}", headers=bearer(READ_KEY)).status_code
                == 403
            )
            assert stored_rows(world, user)[0] == n_events
            response = client.delete(f"/v1/users/{path_id(user)}", headers=bearer(WRITE_KEY))
            assert response.status_code == 200, response.text
            assert response.json() == {
                "user_id": user,
                "events": n_events,
                "profile": True,
                "vector_versions": sorted([first, second]),
            }
            assert stored_rows(world, user) == (0, 0)
            assert versions_holding(world, user) == []
            # Their next page is a cold one, from the model still serving.
            page = client.get(f"/v1/users/{path_id(user)}/feed", headers=bearer(READ_KEY)).json()
            assert page["model_version"] == second and len(page["items"]) == 20
            assert not any(i["reason"].startswith("because you liked") for i in page["items"])
            again = client.delete(f"/v1/users/{path_id(user)}", headers=bearer(WRITE_KEY))
            assert again.json() == {
                "user_id": user,
                "events": 0,
                "profile": False,
                "vector_versions": [],
            }
        # The next training never sees them.
        third = train(world.store, world.settings, force=True).version
        assert files_naming(world.settings.artifacts_dir / third, user) == []
        assert files_naming(world.settings.artifacts_dir / second, world.users[3])
        assert world.recommender.refresh() and versions_holding(world, user) == []
    finally:
        world.close()


def test_forget_in_the_cli(
    trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = copy_world(trained_template, tmp_path / "home")
    user = world.users[5]
    n_events, _ = stored_rows(world, user)
    live = world.recommender.model_version
    # The embedded index opens in one process at a time: the CLI runs with no service.
    world.recommender.close()
    monkeypatch.setenv("RECSYS_HOME", str(world.home))
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    config_module.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["users", "forget", user])
        assert result.exit_code == 0, result.output
        assert f"forgot {user}: {n_events} events, profile removed" in result.output
        assert f"vectors in versions: {live}" in result.output
        assert stored_rows(world, user) == (0, 0)
        assert versions_holding(world, user) == []
        empty = CliRunner().invoke(cli_app, ["users", "forget", ""])
        assert empty.exit_code == 1 and "user_id must be a non-empty string" in empty.output
        # Retiring from the CLI, with the same rule: no service holds the index.
        item = world.items["item_id"].iloc[0]
        retired = CliRunner().invoke(cli_app, ["items", "retire", item, item])
        assert retired.exit_code == 0, retired.output
        assert "retired 1 item(s); 0 were retired already" in retired.output
        unknown = CliRunner().invoke(cli_app, ["items", "retire", "no-such-item"])
        assert unknown.exit_code == 1 and "unknown item 'no-such-item'" in unknown.output
        with world.store.read() as conn:
            assert load_items(conn, [item])["retired"].tolist() == [True]
    finally:
        config_module.get_settings.cache_clear()
        world.store.dispose()


def test_the_cli_says_so_when_a_service_holds_the_index(
    trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    home = tmp_path / "home"
    world = copy_world(trained_template, home)
    user, item = world.users[1], world.items["item_id"].iloc[1]
    n_events, _ = stored_rows(world, user)
    world.recommender.close()
    # A service in another process: the embedded index opens in one process at a time.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from recsys.config import Settings; from recsys.store import open_store;"
            "from recsys.serving import Recommender;"
            f"s = Settings(home={str(home)!r}, _env_file=None);"
            "r = Recommender.open(open_store(s), s); print(r.model_version, flush=True);"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setenv("RECSYS_HOME", str(home))
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    config_module.get_settings.cache_clear()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip()
        forget = CliRunner().invoke(cli_app, ["users", "forget", user])
        assert forget.exit_code == 1
        assert "nothing was erased" in forget.output and "DELETE /v1/users" in forget.output
        retire = CliRunner().invoke(cli_app, ["items", "retire", item])
        assert retire.exit_code == 1 and "use its HTTP API" in retire.output
        assert stored_rows(world, user)[0] == n_events
        with world.store.read() as conn:
            assert load_items(conn, [item])["retired"].tolist() == [False]
    finally:
        holder.communicate(timeout=30)
        config_module.get_settings.cache_clear()
        world.store.dispose()
