"""Request and response bodies: the HTTP contract, documented in the OpenAPI schema.

These models check shapes and types only. What makes an event or an item valid (known event
types, a view needs ``dwell_seconds``, timestamps between 1970 and 2100, ...) is decided by
the library (``recsys.events.validate_events``, ``recsys.store.catalog.validate_items``), so
the API, the file importer and the nightly job agree on one set of rules.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from recsys.columns import FEED_ID_LENGTH
from recsys.store.schema import MAX_ID_LENGTH

MAX_BATCH = 1_000
MAX_TAGS = 100
MAX_TEXT_CHARS = 100_000
MAX_CURSOR_CHARS = 16_384
MAX_FILTER_VALUES = 50

SimilarKind = Literal["content", "behavioural", "blend", "item2item"]


def storable_text(value: str) -> str:
    """Text every supported database can store: no NUL character and valid UTF-8.

    PostgreSQL rejects NUL in text, and a lone surrogate (legal in JSON escapes) cannot be
    encoded at all; both would otherwise surface as a server error deep in the store.
    """
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "unpaired_surrogate", "must be valid Unicode (no unpaired surrogates)"
        ) from None
    return value


Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(storable_text),
]
FeedId = Annotated[
    str,
    Field(min_length=1, max_length=FEED_ID_LENGTH),
    AfterValidator(storable_text),
]
Label = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(storable_text)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(storable_text)]


def _timestamp(value: object) -> float | str:
    """A JSON number (not a boolean) or text; the library parses and range-checks it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise PydanticCustomError("finite_number", "must be a finite number")
        return float(value)
    if isinstance(value, str):
        if len(value) > 64:
            raise PydanticCustomError("timestamp_too_long", "must be at most 64 characters")
        return storable_text(value)
    raise PydanticCustomError("timestamp_type", "must be unix seconds (a number) or ISO 8601 text")


Timestamp = Annotated[
    float | str,
    PlainValidator(_timestamp),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string", "maxLength": 64}],
            "description": "Unix seconds, or ISO 8601 text (UTC unless it names a zone).",
            "examples": [1718000000.5, "2024-06-10T06:13:20Z"],
        }
    ),
]
# Numbers are JSON numbers: true or "42" is a client bug worth reporting, not coercing.
Number = Annotated[float, Strict()]


class _Model(BaseModel):
    # Unknown fields are errors: a misspelt "dwell_second" must not be dropped silently.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --- errors ---------------------------------------------------------------------------------


class FieldError(BaseModel):
    """One problem with one field of the request."""

    field: str = Field(description="The field at fault, e.g. `user_id` or `limit`.")
    message: str = Field(description="What is wrong with it.")
    location: str | None = Field(
        default=None, description="Where the field is: `body`, `query`, `path` or `header`."
    )
    index: int | None = Field(
        default=None,
        description="For a batch, the 0-based position of the event or item at fault.",
    )


class ErrorOut(BaseModel):
    """Every error response: a sentence naming the problem, and per-field details for 422."""

    detail: str = Field(description="What went wrong, in one sentence.")
    errors: list[FieldError] | None = Field(
        default=None, description="Per-field problems, for request validation errors."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "1 of 2 events is invalid; nothing was stored",
                    "errors": [
                        {
                            "index": 1,
                            "field": "dwell_seconds",
                            "message": "view without dwell_seconds",
                            "location": "body",
                        }
                    ],
                },
                {"detail": "store unavailable"},
            ]
        }
    )


# --- events ---------------------------------------------------------------------------------


class EventIn(_Model):
    """One interaction. The same event sent twice is stored once."""

    event_id: Id | None = Field(
        default=None,
        description=(
            "Your id for the event. Without one, an id is derived from "
            "(user_id, item_id, type, timestamp), so a retried batch is not counted twice. "
            "With neither an id nor a timestamp, send an Idempotency-Key header for that."
        ),
    )
    user_id: Id
    item_id: Id
    type: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(storable_text)] = Field(
        description=(
            "like, dislike, skip, view (needs dwell_seconds), rating (needs value), "
            "play (value = play count, default 1), or a configured custom type."
        ),
        examples=["like"],
    )
    timestamp: Timestamp | None = Field(
        default=None, description="When it happened; missing means now."
    )
    dwell_seconds: Number | None = Field(
        default=None, ge=0, description="Seconds spent on the item; required for a view."
    )
    value: Number | None = Field(
        default=None, description="The rating for a rating, the play count for a play."
    )
    feed_id: FeedId | None = Field(
        default=None,
        description=(
            "The `feed_id` of the feed or similar-items answer this event acts on: it "
            "attributes the event to what was shown (and to an experiment's variant)."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "u-42", "item_id": "clip-7", "type": "like"},
                {
                    "event_id": "evt-0001",
                    "user_id": "u-42",
                    "item_id": "clip-9",
                    "type": "view",
                    "timestamp": "2024-06-10T06:13:20Z",
                    "dwell_seconds": 31.5,
                },
            ]
        }
    )


class EventsIn(_Model):
    """A batch of events, stored all together or not at all."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {"user_id": "u-42", "item_id": "clip-7", "type": "like"},
                        {
                            "user_id": "u-42",
                            "item_id": "clip-9",
                            "type": "view",
                            "dwell_seconds": 31.5,
                        },
                    ]
                }
            ]
        }
    )


class EventsOut(BaseModel):
    """What happened to a batch; ``accepted + duplicates`` is the batch size."""

    accepted: int = Field(description="Events stored by this request.")
    duplicates: int = Field(
        description="Events already stored (an earlier request, or repeated in this batch)."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"accepted": 2, "duplicates": 0}]})


# --- items ----------------------------------------------------------------------------------


class _ItemFields(_Model):
    title: Text = ""
    text: Text = Field(default="", description="Body text or description; feeds the content model.")
    tags: list[Label] = Field(default_factory=list, max_length=MAX_TAGS)
    category: Label | None = None
    created_at: Timestamp | None = Field(default=None, description="When the item was published.")
    duration_seconds: Number | None = Field(default=None, ge=0)
    retired: bool = Field(
        default=False,
        description="Out of circulation: in no feed and no similar-items list. An item sent "
        "again without it is back in circulation.",
    )


_ITEM_EXAMPLE: dict[str, Any] = {
    "item_id": "clip-7",
    "title": "Fresh pasta in ten minutes",
    "text": "A quick guide to fresh pasta with three ingredients.",
    "tags": ["recipes", "pasta"],
    "category": "cooking",
    "created_at": "2024-06-01T12:00:00Z",
    "duration_seconds": 95,
}


class ItemIn(_ItemFields):
    """A catalogue item. Sending an existing ``item_id`` replaces that item."""

    item_id: Id

    model_config = ConfigDict(json_schema_extra={"examples": [_ITEM_EXAMPLE]})


class ItemPut(_ItemFields):
    """A catalogue item at ``/v1/items/{item_id}``; a body ``item_id``, if any, must match."""

    item_id: Id | None = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{k: v for k, v in _ITEM_EXAMPLE.items() if k != "item_id"}]}
    )


class ItemsIn(_Model):
    """A batch of catalogue items, stored all together or not at all."""

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_ITEM_EXAMPLE]}]})


class ItemsOut(BaseModel):
    """Items stored, embedded and indexed; they can be recommended at once."""

    inserted: int = Field(description="Items new to the catalogue.")
    updated: int = Field(description="Items that replaced an existing one.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"inserted": 1, "updated": 0}]})


# --- feeds ----------------------------------------------------------------------------------


class FeedItemOut(BaseModel):
    """One recommended item and why it was picked."""

    item_id: str
    score: float = Field(description="Blended score; comparable within one response only.")
    sources: list[str] = Field(
        description=(
            "Candidate sources that proposed the item, strongest first: behavioural, hybrid, "
            "content, fresh, popular."
        )
    )
    reason: str = Field(description="A short explanation fit for display.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "clip-9",
                    "score": 1.21,
                    "sources": ["behavioural", "content"],
                    "reason": "because you liked Fresh pasta in ten minutes",
                }
            ]
        }
    )


class FeedOut(BaseModel):
    """One page of a user's feed."""

    user_id: str
    items: list[FeedItemOut]
    model_version: str | None = Field(description="The model version that ranked this page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there is nothing more. "
        "Pages of one cursor chain never repeat an item, and a chain ends after 1,000 items."
    )
    degraded: bool = Field(
        description="True when the vector index was unavailable and the page is popularity only."
    )
    feed_id: str | None = Field(
        default=None,
        description="This answer's id: send it back as an event's `feed_id` to attribute "
        "the event to what was shown. Null when impressions are not recorded.",
    )
    variant: str | None = Field(
        default=None,
        description="The experiment variant that served this page (null outside experiments).",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u-42",
                    "items": [
                        {
                            "item_id": "clip-9",
                            "score": 1.21,
                            "sources": ["behavioural", "content"],
                            "reason": "because you liked Fresh pasta in ten minutes",
                        }
                    ],
                    "model_version": "20240610T020000Z-1a2b3c",
                    "next_cursor": "eJwBLQDS_wEAAAAB04wT",
                    "degraded": False,
                    "feed_id": "9b2f6c1e0a4d4f5e8c7b6a5d4c3b2a19",
                    "variant": None,
                }
            ]
        }
    )


class SimilarOut(BaseModel):
    """Items similar to one item."""

    item_id: str
    items: list[FeedItemOut]
    model_version: str | None
    feed_id: str | None = Field(
        default=None,
        description="This answer's id, as for feeds: events that send it back are "
        "attributed to it. Null when impressions are not recorded.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "clip-7",
                    "items": [
                        {
                            "item_id": "clip-12",
                            "score": 0.86,
                            "sources": ["content"],
                            "reason": "similar to Fresh pasta in ten minutes",
                        }
                    ],
                    "model_version": "20240610T020000Z-1a2b3c",
                }
            ]
        }
    )


# --- models ---------------------------------------------------------------------------------


class RetiredOut(BaseModel):
    """An item taken out of circulation."""

    item_id: str
    newly_retired: bool = Field(description="False when the item was retired already.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"item_id": "clip-7", "newly_retired": True}]}
    )


class ForgottenOut(BaseModel):
    """What was erased for a user: nothing of them is left to serve or to train on."""

    user_id: str
    events: int = Field(description="Events deleted from the store.")
    profile: bool = Field(description="Whether the store held a user record.")
    vector_versions: list[str] = Field(
        description="Model versions whose vector index held a vector of the user, now removed."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u-42",
                    "events": 187,
                    "profile": True,
                    "vector_versions": ["20261204T101500Z-1a2b3c"],
                }
            ]
        }
    )


class ActivateOut(BaseModel):
    """The model version made live by an activation (a rollback or a roll forward)."""

    live_version: str = Field(description="The version now live for every serving process.")
    previous_version: str | None = Field(
        description="The version that was live before this request, if any."
    )
    model_version: str | None = Field(
        description=(
            "The version this service process serves after the request; the others pick the "
            "new one up within about a second."
        )
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "live_version": "20240609T020000Z-9f8e7d",
                    "previous_version": "20240610T020000Z-1a2b3c",
                    "model_version": "20240609T020000Z-9f8e7d",
                }
            ]
        }
    )


# --- operations -----------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    """Readiness: every check must pass for the service to take traffic."""

    detail: str = Field(description="`ready`, or which checks fail.")
    ready: bool
    checks: dict[str, bool] = Field(
        description="store: the database answers; index: the vector index answers; "
        "model: a model version is loaded."
    )
    model_version: str | None = Field(
        default=None, description="The version this worker serves (null before the first)."
    )
    worker: int = Field(
        description="The answering worker's process id: each worker answers for itself."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "ready",
                    "ready": True,
                    "checks": {"store": True, "index": True, "model": True},
                    "model_version": "20261205-031500",
                    "worker": 4242,
                }
            ]
        }
    )


# --- experiments ----------------------------------------------------------------------------


class VariantIn(_Model):
    """One arm of an experiment; without overrides it is the service as configured."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    share: Number = Field(gt=0, le=1, description="The fraction of users it gets.")
    model_version: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="A complete version that ranks this variant's pages."
    )
    ranker: Literal["auto", "blend", "popularity"] | None = Field(
        default=None,
        description="auto: the learned ranker where it passed its gate; blend: the hand "
        "blend; popularity: the blend over the popular source only (a baseline).",
    )
    feed: dict[str, Any] | None = Field(
        default=None,
        description="Feed settings to override (the RECSYS_FEED__* names, lower case), "
        'e.g. {"mmr_lambda": 0.8}.',
    )


class ExperimentIn(_Model):
    """An A/B experiment: users are split between variants by a hash of (name, user)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    variants: list[VariantIn] = Field(min_length=2, max_length=10)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "ranker-vs-blend",
                    "variants": [
                        {"name": "control", "share": 0.5},
                        {"name": "ranker", "share": 0.5, "ranker": "auto"},
                    ],
                }
            ]
        }
    )


class VariantOut(BaseModel):
    name: str
    share: float
    model_version: str | None
    ranker: str | None
    feed: dict[str, Any]


class ExperimentOut(BaseModel):
    """An experiment's definition and status."""

    name: str
    status: Literal["running", "stopped"]
    started_at: float
    stopped_at: float | None
    variants: list[VariantOut]


class VariantReportOut(VariantOut):
    users: int = Field(description="Users shown at least one page of this variant.")
    impressions: int
    actions: int = Field(
        description="Positive events (a like, a long view, a play, a high rating) sent "
        "with the feed_id of one of this variant's pages."
    )
    action_rate: float | None = Field(description="Actions per impression.")
    action_rate_ci: list[float | None] | None = Field(
        description="95 % confidence interval of the action rate, with users as the unit."
    )
    skips: int
    skip_rate: float | None
    dwell_per_impression: float | None = Field(description="Seconds of viewing per impression.")


class ExperimentReportOut(BaseModel):
    """What each variant's users did with what they were shown."""

    name: str
    status: Literal["running", "stopped"]
    started_at: float
    stopped_at: float | None
    variants: list[VariantReportOut]
    p_value: float | None = Field(
        description="Of equal action rates (the first variant against each other one, "
        "Bonferroni-corrected when there are more than two); null without data."
    )
