"""Pure ASGI middleware: the request body limit and per-route latency.

Both wrap ``receive``/``send`` instead of using Starlette's ``BaseHTTPMiddleware``, so they
never buffer a body, work for every response type and add no task per request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    It is an HTTPException so that FastAPI, which wraps most errors met while reading a
    body in a 400, re-raises it and the app's handler renders it as a 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413, detail=f"request body is larger than the limit of {limit} bytes"
        )

    def body(self) -> dict[str, object]:
        return {"detail": self.detail}


async def send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: by ``Content-Length`` before reading anything, and
    by counting the bytes of a chunked (or understated) body as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_json(send, 413, BodyTooLarge(limit).body())
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            # Reached only when the app let the error escape instead of answering it.
            if started:
                raise
            await send_json(send, 413, exc.body())


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class TimingMiddleware:
    """Calls ``observe(method, route, status, seconds)`` once per HTTP request.

    ``route`` is the matched path template (``/v1/users/{user_id}/feed``), never the raw path,
    so metric labels stay few whatever ids clients send; unmatched paths are ``unmatched``.
    """

    def __init__(self, app: ASGIApp, observe: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path_format", None) or getattr(
                scope.get("route"), "path", None
            )
            method = scope.get("method", "")
            self.observe(
                method if method in KNOWN_METHODS else "OTHER",
                route or "unmatched",
                status,
                time.perf_counter() - started,
            )
