"""Every error is JSON with a ``detail`` sentence; request validation adds per-field ``errors``.

* 4xx: the request is at fault, and the body names the problem.
* 503: a dependency (the store, the model) is unavailable; the client may retry. Nothing is
  cached about the outage, so the next request after recovery succeeds.
* 500: a bug. The body says nothing more than "internal error"; the traceback is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.serving import NoModel
from recsys.store.engine import StoreUnavailable

log = logging.getLogger("recsys.api")

BATCH_FIELDS = ("events", "items")
# Errors that mean "the database cannot be reached right now", not "this query is wrong".
STORE_DOWN = (StoreUnavailable, OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


class ServiceUnavailable(StarletteHTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=503, detail=detail, headers={"Retry-After": "1"})


class BatchInvalid(Exception):
    """Some events or items of a batch broke the library's rules; nothing was stored."""

    def __init__(self, what: str, total: int, errors: list[dict[str, Any]]) -> None:
        bad = len({e["index"] for e in errors})
        noun = what if total == 1 else f"{what}s"
        verb = "is" if bad == 1 else "are"
        super().__init__(f"{bad} of {total} {noun} {verb} invalid; nothing was stored")
        self.errors = errors


def field_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI error dicts as ``{field, message, location[, index]}``.

    The offending input is never echoed: it may be large, or a secret in the wrong field.
    """
    out: list[dict[str, Any]] = []
    for error in raw:
        loc = list(error.get("loc", ()))
        location = (
            str(loc.pop(0)) if loc and loc[0] in ("body", "query", "path", "header") else None
        )
        index: int | None = None
        if len(loc) >= 2 and loc[0] in BATCH_FIELDS and isinstance(loc[1], int):
            index = loc[1]
            loc = loc[2:] or loc[:1]
        names = [str(part) for part in loc if not isinstance(part, int)]
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "json_invalid":
            message = f"not valid JSON: {error.get('ctx', {}).get('error', message)}"
        entry: dict[str, Any] = {
            "field": ".".join(names) or location or "body",
            "message": message,
            "location": location,
        }
        if index is not None:
            entry["index"] = index
        out.append(entry)
    return out


def _summary(raw: Sequence[Any], errors: list[dict[str, Any]]) -> str:
    """``invalid request: events[2].user_id: <message>`` for the first problem."""
    first = raw[0] if raw else {}
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    if first.get("type") == "json_invalid":
        loc = []
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid request: {where or errors[0]['field']}: {errors[0]['message']}{more}"


# FastAPI's words for a body it could not decode at all (bad UTF-8, absurd nesting or
# numbers); the cause is not worth echoing, the remedy is.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 400 and detail == _UNPARSABLE_BODY:
        detail = "the request body could not be parsed: send a UTF-8 JSON object"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    content_type = request.headers.get("content-type", "")
    for error in errors:
        # FastAPI leaves a body undecoded unless it is declared as JSON.
        if error["field"] == "body" and "json" not in content_type.lower():
            error["message"] = "expected a JSON object: send Content-Type: application/json"
    if not errors:
        errors = [{"field": "body", "message": "invalid request", "location": None}]
    return JSONResponse(
        {"detail": _summary(exc.errors(), errors), "errors": errors}, status_code=422
    )


async def batch_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchInvalid)
    return JSONResponse({"detail": str(exc), "errors": exc.errors}, status_code=422)


async def store_down(request: Request, exc: Exception) -> JSONResponse:
    # The driver's message may hold a host name or user; log it, never return it.
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "store unavailable"}, status_code=503, headers={"Retry-After": "1"}
    )


async def no_model(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "no model has been published yet"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(BatchInvalid, batch_invalid)
    app.add_exception_handler(NoModel, no_model)
    for kind in STORE_DOWN:
        app.add_exception_handler(kind, store_down)
    app.add_exception_handler(Exception, internal_error)
