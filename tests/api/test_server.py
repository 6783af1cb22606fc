"""``serve()``: the loopback rule without keys, and a real uvicorn process end to end."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from recsys.api import InsecureBindError, serve
from recsys.api.metrics import METRICS_DIR_ENV
from recsys.api.server import SETTINGS_ENV, is_loopback
from recsys.api.workers import WorkerSupervisor, listening_socket
from recsys.config import Settings
from tests.api.helpers import API_KEYS, READ_KEY, WRITE_KEY, bearer, settings_for
from tests.reliability.service import copy_home


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(kwargs))
    return runs


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "", "127.0.0.1.nip.io"]
)
def test_no_keys_refuses_to_bind_off_loopback(
    tmp_path: Path, uvicorn_runs: list[dict[str, Any]], host: str
) -> None:
    with pytest.raises(InsecureBindError, match="RECSYS_API_KEYS"):
        serve(host=host, port=8000, settings=settings_for(tmp_path / "home"))
    assert uvicorn_runs == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "LOCALHOST", "127.0.0.2"])
def test_no_keys_on_loopback_starts_with_a_warning(
    tmp_path: Path,
    uvicorn_runs: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    host: str,
) -> None:
    caplog.set_level(logging.WARNING)
    serve(host=host, port=8123, settings=settings_for(tmp_path / "home"), workers=1)
    assert uvicorn_runs[0]["host"] == host and uvicorn_runs[0]["port"] == 8123
    assert uvicorn_runs[0]["workers"] == 1
    assert "no API keys configured" in caplog.text


def test_with_keys_any_address_is_allowed(
    tmp_path: Path, uvicorn_runs: list[dict[str, Any]]
) -> None:
    settings = settings_for(tmp_path / "home", api_keys=API_KEYS)
    serve(host="0.0.0.0", port=8000, settings=settings, workers=1)
    assert uvicorn_runs[0]["host"] == "0.0.0.0"


def test_workers_default_to_one_per_core_and_get_the_given_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    def run(supervisor: WorkerSupervisor) -> None:
        # What a worker process would build its app from, read while the service runs.
        config = supervisor.config
        seen.append(
            {
                "app": config.app,
                "factory": config.factory,
                "workers": supervisor.count,
                "metrics_dir": os.environ[METRICS_DIR_ENV],
                "settings": Settings.model_validate_json(os.environ[SETTINGS_ENV]),
            }
        )

    monkeypatch.setattr(WorkerSupervisor, "run", run)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    settings = settings_for(
        tmp_path / "home", api_keys=API_KEYS, feed={"candidates_per_source": 77}
    )
    serve(port=8000, settings=settings)
    (run_args,) = seen
    assert run_args["app"] == "recsys.api.server:worker_app" and run_args["factory"]
    assert run_args["workers"] == 3
    worker_settings = run_args["settings"]
    assert worker_settings.feed.candidates_per_source == 77
    assert worker_settings.api_keys == API_KEYS
    # Each worker opens its own copy of the embedded index.
    assert worker_settings.edge_replicas and worker_settings.home == (tmp_path / "home")
    # Nothing is left behind: the metrics directory and the variables go with the service.
    assert not Path(run_args["metrics_dir"]).exists()
    assert METRICS_DIR_ENV not in os.environ and SETTINGS_ENV not in os.environ
    serve(port=8000, settings=settings, workers=2)
    assert seen[-1]["workers"] == 2
    with pytest.raises(ValueError, match="workers"):
        serve(port=8000, settings=settings, workers=-1)


def test_worker_sockets_share_the_port_and_answer_without_nagle_delays() -> None:
    first = listening_socket("127.0.0.1", 0, 16)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port, 16)
    try:
        assert second.getsockname()[1] == port
        # A TCP socket by protocol, so asyncio turns Nagle off on what it accepts.
        assert first.proto == socket.IPPROTO_TCP
    finally:
        first.close()
        second.close()


def test_is_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "::1", "[::1]", "localhost", "127.8.9.10"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.0.1", "localhost.evil", ""]))


# --- a real server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    trained_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``recsys.api.serve`` in its own process, on loopback, with read and write keys."""
    root = tmp_path_factory.mktemp("server")
    copy_home(trained_template, root / "home")
    port = free_port()
    env = {
        **os.environ,
        "RECSYS_HOME": str(root / "home"),
        "RECSYS_API_KEYS": API_KEYS,
        "RECSYS_MAX_BODY_BYTES": "2048",
        # Off by default; on here to show that a logged request never carries its key.
        "RECSYS_ACCESS_LOG": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", f"from recsys.api import serve; serve(port={port}, workers=1)"],
        cwd=root,  # no stray .env file
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server did not start:\n{process.communicate()[0]}")
        time.sleep(0.2)
    yield base, process
    if process.poll() is None:
        process.kill()
        process.communicate()


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


@pytest.mark.slow
def test_real_server_end_to_end(server: tuple[str, subprocess.Popen[str]]) -> None:
    base, process = server
    with httpx.Client(base_url=base, timeout=30) as http:
        feed = http.get("/v1/users/demo-user-0001/feed?limit=5", headers=bearer(READ_KEY))
        assert feed.status_code == 200 and len(feed.json()["items"]) == 5
        assert http.get("/v1/users/demo-user-0001/feed").status_code == 401
        wrong = http.get("/v1/users/demo-user-0001/feed", headers=bearer("nope-" + READ_KEY))
        assert wrong.status_code == 401

        event = {"user_id": "demo-user-0001", "item_id": "demo-item-00001", "type": "like"}
        posted = http.post("/v1/events", json={"events": [event]}, headers=bearer(WRITE_KEY))
        assert posted.status_code == 200 and posted.json()["accepted"] == 1

        # Over the 2048-byte limit: declared, and streamed without a length.
        big = json.dumps({"events": [event] * 40}).encode()
        headers = {**bearer(WRITE_KEY), "content-type": "application/json"}
        declared = http.post("/v1/events", content=big, headers=headers)
        assert declared.status_code == 413 and declared.json()["detail"]
        streamed = http.post("/v1/events", content=iter([big[:1500], big[1500:]]), headers=headers)
        assert streamed.request.headers.get("transfer-encoding") == "chunked"
        assert streamed.status_code == 413 and streamed.json()["detail"]

        metrics = http.get("/metrics", headers=bearer(READ_KEY)).text
        assert "recsys_model_info{version=" in metrics

    output = stop(process)
    assert '"GET /v1/users/demo-user-0001/feed?limit=5 HTTP/1.1" 200' in output, output
    for key in (READ_KEY, WRITE_KEY):
        assert key not in output
