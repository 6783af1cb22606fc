"""The HTTP service: feeds, similar items, event and catalogue writes, health and metrics.

``create_app`` composes the library (``recsys.serving.Recommender`` and the validators in
``recsys.events`` and ``recsys.store.catalog``); no recommendation logic lives here.

Endpoints run as plain ``def`` functions, so FastAPI runs them in its thread pool: the
recommender and the store are synchronous, and a slow query must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

import anyio
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator
from starlette.exceptions import HTTPException

import recsys
from recsys import release
from recsys.api import errors
from recsys.api.auth import AuthFirstRoute, KeyRing, require_read, require_write
from recsys.api.errors import STORE_DOWN, BatchInvalid, ServiceUnavailable
from recsys.api.metrics import ApiMetrics
from recsys.api.middleware import BodyLimitMiddleware, TimingMiddleware
from recsys.api.schemas import (
    MAX_CURSOR_CHARS,
    MAX_FILTER_VALUES,
    ActivateOut,
    ErrorOut,
    EventsIn,
    EventsOut,
    FeedItemOut,
    FeedOut,
    HealthOut,
    ItemPut,
    ItemsIn,
    ItemsOut,
    Label,
    ReadyOut,
    SimilarKind,
    SimilarOut,
    storable_text,
)
from recsys.columns import EVENT_COLUMNS
from recsys.config import Settings, get_settings
from recsys.events import validate_events
from recsys.serving import FeedFilters, FeedItem, InvalidCursor, NoModel, Recommender, UnknownItem
from recsys.store import Store, open_store
from recsys.store.catalog import ITEM_FIELDS, validate_items
from recsys.store.schema import MAX_ID_LENGTH

log = logging.getLogger("recsys.api")

REFRESH_INTERVAL_SECONDS = 1.0

PathId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="Any text up to 512 characters; percent-encode '/', '?', '#' and '%'.",
    ),
    AfterValidator(storable_text),
]
FilterValues = Annotated[
    list[Label] | None,
    Query(max_length=MAX_FILTER_VALUES),
]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Malformed request: a body that cannot be decoded, or a cursor this service "
        "did not issue.",
        401: "Missing or unknown API key.",
        403: "The API key lacks the scope this endpoint needs.",
        404: "No such item, or no complete model version by that name.",
        413: "Request body larger than the configured limit.",
        422: "The request is invalid; `errors` names each field at fault.",
        503: "The store or the model is unavailable; retry later.",
    }
    return {code: {"model": ErrorOut, "description": described[code]} for code in codes}


READ_ERRORS = _errors(401, 422, 503)
WRITE_ERRORS = _errors(400, 401, 403, 413, 422, 503)


class Route(AuthFirstRoute):
    """Routes whose path parameters may hold any character, newlines included.

    Starlette anchors route patterns with ``$`` (which also matches before a final newline)
    and its ``path`` convertor is ``.*`` (which stops at a newline), so an id such as
    ``"a\\n"`` would be cut short or not found. Ids are arbitrary text, so match them as such.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        pattern = self.path_regex.pattern
        if pattern.endswith("$"):
            pattern = pattern[:-1] + r"\Z"
        self.path_regex = re.compile(pattern, re.DOTALL)
        self.query_names = _query_names(self.dependant)


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters an endpoint takes, its dependencies' included."""
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        names.update(field.alias for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the endpoint does not take: a misspelt ``categories=``
    must not silently return an unfiltered feed."""
    allowed: frozenset[str] = getattr(request.scope.get("route"), "query_names", frozenset())
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in allowed]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "unknown query parameter"
                    + (f"; this endpoint takes {', '.join(sorted(allowed))}" if allowed else ""),
                }
                for name in unknown
            ]
        )


# The contract (/v1) is strict about query parameters; operations endpoints stay lenient,
# since probes and scrapers sometimes add their own.
v1 = APIRouter(route_class=Route, dependencies=[Depends(reject_unknown_query)])
operations = APIRouter(route_class=Route)


def _recommender(request: Request) -> Recommender:
    recommender: Recommender | None = request.app.state.recommender
    if recommender is None:
        raise ServiceUnavailable("the recommender is not loaded yet")
    return recommender


def _metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def _item_out(item: FeedItem) -> FeedItemOut:
    return FeedItemOut(
        item_id=item.item_id,
        score=float(item.score),
        sources=[str(s) for s in item.sources],
        reason=item.reason,
    )


# --- reads ----------------------------------------------------------------------------------


@v1.get(
    "/v1/users/{user_id:path}/feed",
    response_model=FeedOut,
    responses={**READ_ERRORS, **_errors(400)},
    dependencies=[Depends(require_read)],
    tags=["feeds"],
    summary="A page of a user's feed",
)
def get_feed(
    request: Request,
    user_id: PathId,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_CHARS,
            description="`next_cursor` of the previous page; pages never repeat an item.",
        ),
    ] = None,
    category: FilterValues = None,
    tag: FilterValues = None,
) -> FeedOut:
    """Ranked for the user from their history up to this request: an event posted a moment
    ago already counts, and consumed items do not come back. Repeat `category` or `tag` to
    allow several values. Users without history get a cold-start feed."""
    recommender = _recommender(request)
    filters = FeedFilters(categories=category or None, tags=tag or None)
    try:
        page = recommender.feed(user_id, limit=limit, cursor=cursor, filters=filters)
    except InvalidCursor as exc:
        raise HTTPException(400, f"invalid cursor: {exc}") from None
    _metrics(request).observe_feed(
        (item.sources[0] if item.sources else "none" for item in page.items), page.degraded
    )
    return FeedOut(
        user_id=page.user_id,
        items=[_item_out(item) for item in page.items],
        model_version=page.model_version,
        next_cursor=page.next_cursor,
        degraded=page.degraded,
    )


@v1.get(
    "/v1/items/{item_id:path}/similar",
    response_model=SimilarOut,
    responses={**READ_ERRORS, **_errors(404)},
    dependencies=[Depends(require_read)],
    tags=["items"],
    summary="Items similar to an item",
)
def get_similar(
    request: Request,
    item_id: PathId,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    kind: Annotated[
        SimilarKind,
        Query(
            description="content: by text and tags; behavioural: watched by the same people; "
            "blend: both."
        ),
    ] = "content",
) -> SimilarOut:
    recommender = _recommender(request)
    try:
        items = recommender.similar(item_id, kind=kind, limit=limit)
    except UnknownItem:
        raise HTTPException(404, "no item with this id in the catalogue") from None
    except (NoModel, *STORE_DOWN):
        raise
    except Exception:
        log.exception("similar items failed for kind=%s", kind)
        raise ServiceUnavailable("vector index unavailable") from None
    return SimilarOut(
        item_id=item_id,
        items=[_item_out(item) for item in items],
        model_version=recommender.model_version,
    )


# --- writes ---------------------------------------------------------------------------------


@v1.post(
    "/v1/events",
    response_model=EventsOut,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_write)],
    tags=["events"],
    summary="Record interactions",
)
def post_events(
    request: Request,
    batch: EventsIn,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="The client's name for this batch, the same on every resend. Needed "
            "only for events sent with neither `event_id` nor `timestamp`: those are "
            "recognised on a resend by this key and their place in the batch.",
        ),
    ] = None,
) -> EventsOut:
    """All or nothing: if any event is invalid, the response is a 422 listing each bad event
    by `index` and nothing is stored. On a 2xx every event is durable in the store, and the
    next feed request already reflects it. Idempotent: a resent event with the same
    `event_id`, or the same user, item, type and `timestamp`, is counted as a duplicate; an
    event with neither is stamped "now", and is recognised on a resend only through the
    `Idempotency-Key` header."""
    recommender = _recommender(request)
    settings: Settings = request.app.state.settings
    frame = _frame([event.model_dump() for event in batch.events], EVENT_COLUMNS)
    checked = validate_events(
        frame,
        event_types=settings.event_types,
        default_timestamp=time.time(),
        row_numbers=np.arange(len(frame)),
        idempotency_key=idempotency_key,
    )
    if len(checked.rejects):
        raise BatchInvalid("event", len(frame), _reject_errors(checked.rejects))
    result = recommender.ingest_events(checked.valid)
    metrics = _metrics(request)
    metrics.events.labels("inserted").inc(result.inserted)
    metrics.events.labels("duplicate").inc(result.duplicates)
    return EventsOut(accepted=result.inserted, duplicates=result.duplicates)


@v1.put(
    "/v1/items/{item_id:path}",
    response_model=ItemsOut,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_write)],
    tags=["items"],
    summary="Create or replace one catalogue item",
)
def put_item(request: Request, item_id: PathId, item: ItemPut) -> ItemsOut:
    """Stored, embedded and indexed before the response: the item can be recommended and
    found by `similar` at once."""
    if item.item_id is not None and item.item_id != item_id:
        raise BatchInvalid(
            "item",
            1,
            [
                {
                    "field": "item_id",
                    "message": "does not match the item id in the path",
                    "location": "body",
                    "index": 0,
                }
            ],
        )
    record = {**item.model_dump(), "item_id": item_id}
    return _upsert(request, [record])


@v1.post(
    "/v1/items",
    response_model=ItemsOut,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_write)],
    tags=["items"],
    summary="Create or replace catalogue items",
)
def post_items(request: Request, batch: ItemsIn) -> ItemsOut:
    """All or nothing, like events. An `item_id` sent twice keeps the last one."""
    return _upsert(request, [item.model_dump() for item in batch.items])


def _upsert(request: Request, records: list[dict[str, Any]]) -> ItemsOut:
    recommender = _recommender(request)
    frame = _frame(records, ITEM_FIELDS)
    checked = validate_items(frame, row_numbers=np.arange(len(frame)))
    if len(checked.rejects):
        raise BatchInvalid("item", len(frame), _reject_errors(checked.rejects))
    try:
        inserted, updated = recommender.upsert_items(checked.valid)
    except (NoModel, *STORE_DOWN):
        raise
    except Exception:
        # The store write commits first; only embedding or indexing can fail here.
        log.exception("indexing %d items failed", len(checked.valid))
        raise ServiceUnavailable(
            "vector index unavailable: the items were stored but not indexed; retry to index them"
        ) from None
    return ItemsOut(inserted=inserted, updated=updated)


def _frame(records: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Records as the validators' input: object columns, so a missing value stays None.

    Left to inference, a text column with gaps becomes a string column whose gaps are NaN,
    and a NaN category or tag list is not "missing" to every consumer downstream.
    """
    return (
        pd.DataFrame.from_records(records, columns=list(columns))
        .astype(object)
        .where(lambda frame: frame.notna(), None)
    )


def _reject_errors(rejects: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"index": int(row), "field": str(field), "message": str(reason), "location": "body"}
        for row, field, reason in sorted(
            rejects[["row", "field", "reason"]].itertuples(index=False, name=None)
        )
    ]


# --- models ---------------------------------------------------------------------------------

ModelVersion = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="A version listed by `recsys models list`.",
    ),
]
NO_SUCH_VERSION = release.NO_SUCH_VERSION


@v1.post(
    "/v1/models/{version}/activate",
    response_model=ActivateOut,
    responses={**_errors(401, 403, 404, 422, 503)},
    dependencies=[Depends(require_write)],
    tags=["models"],
    summary="Make a complete model version live (roll back or forward)",
)
def activate_model(request: Request, version: ModelVersion) -> ActivateOut:
    """Switches the live model of every serving process to `version`, which must be a
    complete version (its vectors and its artifacts) that is still kept; the model registry
    marks it published. This process serves it before the response; the others pick it up
    within about a second. Activating the live version changes nothing."""
    recommender = _recommender(request)
    settings: Settings = request.app.state.settings
    try:
        previous = release.activate(
            recommender.store, recommender.vectors, settings.artifacts_dir, version
        )
    except release.UnknownVersion:
        raise HTTPException(404, NO_SUCH_VERSION) from None
    except Exception:
        log.exception("activating model version %s failed", version)
        raise ServiceUnavailable("vector index unavailable") from None
    log.info("model version %s activated (was %s)", version, previous)
    if recommender.refresh():
        _swapped(_metrics(request))
    if recommender.model_version != version:
        log.warning(
            "model version %s is live, but this process could not load it and still serves %s",
            version,
            recommender.model_version,
        )
    return ActivateOut(
        live_version=version,
        previous_version=previous,
        model_version=recommender.model_version,
    )


# --- operations -----------------------------------------------------------------------------


@operations.get("/healthz", response_model=HealthOut, tags=["operations"], summary="Liveness")
async def healthz() -> HealthOut:
    """The process is up. Open: no API key needed."""
    return HealthOut()


@operations.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready; `checks` says why."}},
    tags=["operations"],
    summary="Readiness",
)
def readyz(request: Request) -> JSONResponse:
    """200 when the store and the vector index answer and a model is loaded, else 503.
    Open: no API key needed."""
    recommender: Recommender | None = request.app.state.recommender
    checks = {"store": False, "index": False, "model": False}
    if recommender is not None:
        try:
            checks.update({k: bool(v) for k, v in recommender.ready().items()})
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
    failing = [name for name, ok in checks.items() if not ok]
    body = ReadyOut(
        ready=not failing,
        checks=checks,
        detail="ready" if not failing else "not ready: " + ", ".join(failing),
    )
    return JSONResponse(body.model_dump(), status_code=503 if failing else 200)


@operations.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        **_errors(401),
    },
    dependencies=[Depends(require_read)],
    tags=["operations"],
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    """Request latency per route, the feed source mix and the model version. Read scope."""
    return Response(generate_latest(_metrics(request).registry), media_type=CONTENT_TYPE_LATEST)


# --- the app --------------------------------------------------------------------------------


def freeze_heap() -> None:
    """Take what is alive now (the loaded model state, the imported modules) out of the
    cyclic garbage collector's scans.

    With the 100k-item benchmark world loaded, a full collection walked 274k objects for
    150 ms, a pause that any request could land in; with them frozen it takes 0.01 ms.
    Frozen objects are still freed by reference counting, and unfreezing first lets the
    collection reclaim any cycles a retired model state left behind: one such full
    collection at start-up and per model swap, instead of at random.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _swapped(metrics: ApiMetrics) -> None:
    """What follows every model swap, whoever triggered it."""
    metrics.model_swaps.inc()
    freeze_heap()


async def _refresh_loop(app: FastAPI, interval: float) -> None:
    """Hot swap: ask the recommender about once per ``interval`` whether a new model version
    was published. ``refresh()`` is a pointer read when nothing changed."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        recommender: Recommender | None = app.state.recommender
        if recommender is None:
            continue
        try:
            swapped = await anyio.to_thread.run_sync(recommender.refresh)
        except Exception as exc:
            if not failing:
                log.warning("model refresh failed (will keep trying): %s", exc)
            failing = True
            continue
        if failing:
            log.info("model refresh works again")
        failing = False
        if swapped:
            log.info("now serving model version %s", recommender.model_version)
            await anyio.to_thread.run_sync(_swapped, app.state.metrics)


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
        routes=[*v1.routes, *operations.routes],
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
