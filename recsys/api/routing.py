"""How the service routes: the two routers, path and query rules, the documented error
responses, and the per-request access to the recommender and the metrics."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator

from recsys.api.auth import AuthFirstRoute
from recsys.api.errors import ServiceUnavailable
from recsys.api.metrics import ApiMetrics
from recsys.api.schemas import MAX_FILTER_VALUES, ErrorOut, Label, storable_text
from recsys.columns import MAX_ID_LENGTH
from recsys.serving import Recommender

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


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Malformed request: a body that cannot be decoded, or a cursor this service "
        "did not issue.",
        401: "Missing or unknown API key.",
        403: "The API key lacks the scope this endpoint needs.",
        404: "No such item, experiment, or complete model version by that name.",
        409: "Conflicts with the current state (an experiment by that name exists, or another "
        "one is running).",
        413: "Request body larger than the configured limit.",
        422: "The request is invalid; `errors` names each field at fault.",
        503: "The store or the model is unavailable; retry later.",
    }
    return {code: {"model": ErrorOut, "description": described[code]} for code in codes}


READ_ERRORS = error_responses(401, 422, 503)
WRITE_ERRORS = error_responses(400, 401, 403, 413, 422, 503)


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


def recommender_of(request: Request) -> Recommender:
    recommender: Recommender | None = request.app.state.recommender
    if recommender is None:
        raise ServiceUnavailable("the recommender is not loaded yet")
    return recommender


def metrics_of(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics
