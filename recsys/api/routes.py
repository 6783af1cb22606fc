"""The /v1 contract: feeds, similar items, event and catalogue writes, model activation.

Endpoints run as plain ``def`` functions, so FastAPI runs them in its thread pool: the
recommender and the store are synchronous, and a slow query must not stall the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from recsys import release
from recsys.api.auth import require_read, require_write
from recsys.api.errors import STORE_DOWN, BatchInvalid, ServiceUnavailable
from recsys.api.operations import swapped
from recsys.api.routing import (
    READ_ERRORS,
    WRITE_ERRORS,
    FilterValues,
    PathId,
    error_responses,
    metrics_of,
    recommender_of,
    v1,
)
from recsys.api.schemas import (
    MAX_CURSOR_CHARS,
    ActivateOut,
    EventsIn,
    EventsOut,
    FeedItemOut,
    FeedOut,
    ForgottenOut,
    ItemPut,
    ItemsIn,
    ItemsOut,
    RetiredOut,
    SimilarKind,
    SimilarOut,
)
from recsys.columns import MAX_ID_LENGTH, STORED_EVENT_COLUMNS
from recsys.config import Settings
from recsys.events import validate_events
from recsys.serving import FeedFilters, FeedItem, InvalidCursor, NoModel, UnknownItem
from recsys.store.catalog import ITEM_FIELDS, validate_items

log = logging.getLogger("recsys.api")


def _item_out(item: FeedItem) -> FeedItemOut:
    """The recommender's own typed values: built without a second validation."""
    return FeedItemOut.model_construct(
        item_id=item.item_id,
        score=float(item.score),
        sources=[str(s) for s in item.sources],
        reason=item.reason,
    )


# --- reads ----------------------------------------------------------------------------------


@v1.get(
    "/v1/users/{user_id:path}/feed",
    response_model=FeedOut,
    responses={**READ_ERRORS, **error_responses(400)},
    dependencies=[Depends(require_read)],
    tags=["feeds"],
    summary="A page of a user's feed",
)
async def get_feed(
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
) -> Response:
    """Ranked for the user from their history up to this request: an event posted a moment
    ago already counts, and consumed items do not come back. Repeat `category` or `tag` to
    allow several values. Users without history get a cold-start feed."""
    filters = FeedFilters(categories=category or None, tags=tag or None)
    # The hot path: one trip to the thread pool for the page and its JSON, instead of one
    # for the endpoint and another for FastAPI to validate what it returned.
    body = await run_in_threadpool(_feed_json, request, user_id, limit, cursor, filters)
    return Response(body, media_type="application/json")


def _feed_json(
    request: Request, user_id: str, limit: int, cursor: str | None, filters: FeedFilters
) -> bytes:
    recommender = recommender_of(request)
    try:
        page = recommender.feed(user_id, limit=limit, cursor=cursor, filters=filters)
    except InvalidCursor as exc:
        raise HTTPException(400, f"invalid cursor: {exc}") from None
    metrics_of(request).observe_feed(
        (item.sources[0] if item.sources else "none" for item in page.items), page.degraded
    )
    # Built from the recommender's own typed values, so it is serialised without being
    # validated again (FeedOut stays the documented schema).
    out = FeedOut.model_construct(
        user_id=page.user_id,
        items=[_item_out(item) for item in page.items],
        model_version=page.model_version,
        next_cursor=page.next_cursor,
        degraded=page.degraded,
        feed_id=page.feed_id,
        variant=page.variant,
    )
    return FeedOut.__pydantic_serializer__.to_json(out)


@v1.get(
    "/v1/items/{item_id:path}/similar",
    response_model=SimilarOut,
    responses={**READ_ERRORS, **error_responses(404)},
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
            "blend: both; item2item: what liking this item predicts (EASE)."
        ),
    ] = "content",
    user_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            description="Who is looking, when known: the answer's impressions are theirs.",
        ),
    ] = None,
) -> SimilarOut:
    recommender = recommender_of(request)
    try:
        page = recommender.similar_page(item_id, kind=kind, limit=limit, user_id=user_id)
    except UnknownItem:
        raise HTTPException(404, "no item with this id in the catalogue") from None
    except (NoModel, *STORE_DOWN):
        raise
    except Exception:
        log.exception("similar items failed for kind=%s", kind)
        raise ServiceUnavailable("vector index unavailable") from None
    return SimilarOut(
        item_id=item_id,
        items=[_item_out(item) for item in page.items],
        model_version=page.model_version,
        feed_id=page.feed_id,
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
    recommender = recommender_of(request)
    settings: Settings = request.app.state.settings
    frame = _frame([event.model_dump() for event in batch.events], STORED_EVENT_COLUMNS)
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
    metrics = metrics_of(request)
    metrics.events.labels("inserted").inc(result.inserted)
    metrics.events.labels("duplicate").inc(result.duplicates)
    return EventsOut(accepted=result.inserted, duplicates=result.duplicates)


@v1.delete(
    "/v1/users/{user_id:path}",
    response_model=ForgottenOut,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_write)],
    tags=["users"],
    summary="Forget a user",
)
def forget_user(request: Request, user_id: PathId) -> ForgottenOut:
    """Erases the user's events and profile from the store and their vector from every
    kept model version, before the response: their next feed is a cold one and the next
    training does not see them. Repeating the call erases nothing more."""
    recommender = recommender_of(request)
    try:
        forgotten = recommender.forget_user(user_id)
    except STORE_DOWN:
        raise
    except Exception:
        log.exception("forgetting a user failed")
        raise ServiceUnavailable(
            "vector index unavailable; nothing was erased from the store"
        ) from None
    log.info(
        "forgot a user: %d events, vectors in %d versions",
        forgotten.events,
        len(forgotten.vector_versions),
    )
    return ForgottenOut(
        user_id=forgotten.user_id,
        events=forgotten.events,
        profile=forgotten.profile,
        vector_versions=forgotten.vector_versions,
    )


@v1.delete(
    "/v1/items/{item_id:path}",
    response_model=RetiredOut,
    responses={**WRITE_ERRORS, **error_responses(404)},
    dependencies=[Depends(require_write)],
    tags=["items"],
    summary="Retire an item",
)
def retire_item(request: Request, item_id: PathId) -> RetiredOut:
    """Takes the item out of circulation before the response: it leaves every feed and
    every similar-items list, and the next training does not publish it. Its events stay
    (see `RECSYS_TRAIN_ON_RETIRED_ITEMS`); sending the item again brings it back."""
    recommender = recommender_of(request)
    try:
        newly = recommender.retire_items([item_id])
    except UnknownItem:
        raise HTTPException(404, "no such item") from None
    return RetiredOut(item_id=item_id, newly_retired=bool(newly))


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
    recommender = recommender_of(request)
    frame = _frame(records, (*ITEM_FIELDS, "retired"))
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
    responses={**error_responses(401, 403, 404, 422, 503)},
    dependencies=[Depends(require_write)],
    tags=["models"],
    summary="Make a complete model version live (roll back or forward)",
)
def activate_model(request: Request, version: ModelVersion) -> ActivateOut:
    """Switches the live model of every serving process to `version`, which must be a
    complete version (its vectors and its artifacts) that is still kept; the model registry
    marks it published. This process serves it before the response; the others pick it up
    within about a second. Activating the live version changes nothing."""
    recommender = recommender_of(request)
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
        swapped(metrics_of(request))
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
