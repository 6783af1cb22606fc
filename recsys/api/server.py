"""``serve()``: run the API under uvicorn, on one process or several behind one port,
refusing an unauthenticated public bind."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from recsys.api.metrics import METRICS_DIR_ENV
from recsys.config import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("recsys.api")

LOOPBACK_NAMES = frozenset({"localhost"})
# The settings of the worker processes, as JSON (see worker_app).
SETTINGS_ENV = "RECSYS_WORKER_SETTINGS"


class InsecureBindError(RuntimeError):
    """No API keys are configured and the requested address is not loopback."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; anything else (0.0.0.0, a LAN address, a name)
    may be reachable from other machines."""
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Raise InsecureBindError when serving on ``host`` would expose an API without keys."""
    if settings.parsed_api_keys() or is_loopback(host):
        return
    raise InsecureBindError(
        f"refusing to serve on {host!r}: no API keys are configured, so anyone who can reach "
        "this address could read feeds and write events and items. Set RECSYS_API_KEYS "
        "(e.g. RECSYS_API_KEYS='<secret>:write,<secret>:read') or bind to 127.0.0.1."
    )


def worker_count(requested: int | None, settings: Settings) -> int:
    """How many serving processes: as requested, else the setting, else one per core."""
    count = requested if requested is not None else settings.serve_workers
    if count < 0:
        raise ValueError(f"workers must be 0 (one per core) or more, got {count}")
    return count or os.cpu_count() or 1


def worker_app() -> FastAPI:
    """One worker's app, made with the settings the supervisor was given (workers are
    fresh interpreters: they inherit the environment, not objects)."""
    from recsys.api.app import create_app

    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]))


@contextlib.contextmanager
def _worker_environment(settings: Settings) -> Iterator[None]:
    """What the worker processes inherit: their settings, with replicas of the embedded
    index (a shard opens in one process only), and a directory where every worker writes
    its metrics, which any worker's /metrics adds up. Undone when the service stops."""
    saved = {name: os.environ.get(name) for name in (SETTINGS_ENV, METRICS_DIR_ENV)}
    metrics_dir = tempfile.mkdtemp(prefix="recsys-metrics-")
    try:
        replicas = not settings.qdrant_url
        os.environ[SETTINGS_ENV] = settings.model_copy(
            # Absolute, whatever directory a worker starts in.
            update={
                "edge_replicas": replicas or settings.edge_replicas,
                "home": settings.home.resolve(),
            }
        ).model_dump_json()
        os.environ[METRICS_DIR_ENV] = metrics_dir
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Settings | None = None,
    *,
    workers: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve the API until interrupted (SIGINT or SIGTERM: requests in flight finish,
    then every process stops). Raises InsecureBindError (before binding anything) when no
    API keys are configured and ``host`` is not loopback.

    With more than one worker a supervisor (``recsys.api.workers``) runs that many
    processes, each accepting on a socket of its own on the port and serving from its own
    replica of the embedded index, and restarts any that dies.
    """
    import uvicorn

    from recsys.api.app import create_app

    settings = settings or get_settings()
    check_bind(host, settings)
    count = worker_count(workers, settings)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": settings.access_log,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if count == 1:
        # Requests still run concurrently in the worker's thread pool.
        uvicorn.run(create_app(settings), workers=1, **common)
        return
    from recsys.api.workers import WorkerSupervisor

    with _worker_environment(settings):
        config = uvicorn.Config(
            "recsys.api.server:worker_app",
            factory=True,
            workers=count,
            # A worker loading a model version can keep the GIL for seconds (the embedded
            # index does not release it): give its health check room before a restart.
            timeout_worker_healthcheck=60,
            **common,
        )
        supervisor = WorkerSupervisor(config, count)
        supervisor.run()
    if supervisor.failed:
        raise RuntimeError("a worker failed to start (its log is above); the service stopped")
