"""The HTTP service: feeds, similar items, event and catalogue writes, health and metrics.

``create_app`` composes the library (``recsys.serving.Recommender`` and the validators in
``recsys.events`` and ``recsys.store.catalog``) with the routes of ``recsys.api.routes``
(the /v1 contract) and ``recsys.api.operations``; no recommendation logic lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import recsys
from recsys.api import errors, experiment_routes  # noqa: F401 (registers /v1/experiments)
from recsys.api.auth import KeyRing
from recsys.api.console import console
from recsys.api.metrics import ApiMetrics
from recsys.api.middleware import BodyLimitMiddleware, TimingMiddleware
from recsys.api.operations import freeze_heap, swapped
from recsys.api.routes import v1
from recsys.api.routing import operations
from recsys.config import Settings, get_settings
from recsys.serving import Recommender
from recsys.store import Store, open_store

log = logging.getLogger("recsys.api")

# Several serving processes share one store: what one of them is told (an item written,
# a version activated) reaches the others within this interval plus the work it takes.
REFRESH_INTERVAL_SECONDS = 0.25


def _refresh_and_sync(recommender: Recommender) -> bool:
    changed = recommender.refresh()
    recommender.sync_items()
    recommender.sync_experiment()
    return changed


async def _refresh_loop(app: FastAPI, interval: float) -> None:
    """Hot swap, item and experiment sync: ask the recommender once per ``interval``
    whether a new model version was published, index the items written since it last
    looked, and follow the running experiment. Each is a pointer read or one indexed
    read when nothing changed."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        recommender: Recommender | None = app.state.recommender
        if recommender is None:
            continue
        try:
            changed = await anyio.to_thread.run_sync(_refresh_and_sync, recommender)
        except Exception as exc:
            if not failing:
                log.warning("model refresh or item sync failed (will keep trying): %s", exc)
            failing = True
            continue
        if failing:
            log.info("model refresh and item sync work again")
        failing = False
        if changed:
            log.info("now serving model version %s", recommender.model_version)
            await anyio.to_thread.run_sync(swapped, app.state.metrics)


def create_app(
    settings: Settings | None = None,
    recommender: Recommender | None = None,
    *,
    refresh_interval: float = REFRESH_INTERVAL_SECONDS,
) -> FastAPI:
    """The FastAPI app.

    Without ``recommender``, the app's lifespan opens one from ``settings`` (and closes it
    on shutdown); a given recommender stays the caller's to close. Either way a background
    task calls ``recommender.refresh()`` every ``refresh_interval`` seconds while the app
    runs.
    """
    settings = settings or get_settings()
    keys = KeyRing(settings.parsed_api_keys())
    if keys.enabled:
        log.info("API keys: %s", ", ".join(keys.describe()))
    else:
        log.warning(
            "no API keys configured (RECSYS_API_KEYS): every request is allowed; "
            "serve on loopback only"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: tuple[Recommender, Store] | None = None
        # Synchronous routes run on this limiter's threads (see Settings.request_threads).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        if app.state.recommender is None:
            store = open_store(settings)
            opened = await run_in_threadpool(Recommender.open, store, settings)
            app.state.recommender = opened
            owned = (opened, store)
            log.info("recommender open; model version %s", opened.model_version)
        app.state.metrics.follow_impressions(getattr(app.state.recommender, "impressions", None))
        await run_in_threadpool(freeze_heap)
        task = asyncio.create_task(_refresh_loop(app, refresh_interval))
        app.state.refresh_task = task
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if owned is not None:
                app.state.recommender = None
                await run_in_threadpool(owned[0].close)
                owned[1].dispose()

    app = FastAPI(
        title="recsys",
        version=recsys.__version__,
        summary="Personalized feeds, similar items, and the writes that shape them.",
        description=(
            "Authenticate with `Authorization: Bearer <key>`: read scope for GET, write "
            "scope for POST and PUT. `/healthz` and `/readyz` are open; `/metrics` needs "
            "read scope. Every error is JSON with a `detail`; ids in paths may be any text "
            "(percent-encoded) and come back unchanged."
        ),
        lifespan=lifespan,
        # The routes themselves, not include_router(): included routes are matched by
        # FastAPI's own copies of their patterns, which would undo Route's.
        routes=[*v1.routes, *operations.routes, *console.routes],
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.recommender = recommender
    app.state.metrics = ApiMetrics(
        lambda: app.state.recommender.model_version if app.state.recommender else None
    )
    errors.install(app)
    # Added last is outermost: timing sees every response, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware, observe=app.state.metrics.observe_request)
    return app
