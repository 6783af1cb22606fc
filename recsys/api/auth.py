"""API keys: ``Authorization: Bearer <key>``, each key with a read or a write scope.

Scopes per endpoint:

* ``GET /healthz`` and ``GET /readyz`` are open. Orchestrator probes rarely carry
  credentials, and the answers say no more than "alive" and three booleans.
* ``GET /metrics`` needs read scope: it reveals traffic per route and the model version.
  Prometheus sends a bearer token with ``authorization: {credentials: ...}`` in its scrape
  config.
* Every other ``GET`` needs read scope; ``POST`` and ``PUT`` need write scope (a write key
  may also read).

A missing or unknown key is a 401 with ``WWW-Authenticate: Bearer``; a read key on a write
endpoint is a 403. With no keys configured every request is allowed, which is only safe on
loopback: ``recsys.api.server.serve`` refuses to bind anywhere else in that case.

A key never reaches a log line, an error body or a metric label: keys are identified by a
short fingerprint (a SHA-256 prefix), and the presented key is compared with every
configured key in constant time, so the comparison neither stops at the first match nor
leaks how much of a key was right.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger("recsys.api.auth")

Scope = Literal["read", "write"]
_GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
}

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key with read scope (GET) or write scope (POST, PUT; implies read).",
)


def fingerprint(key: str) -> str:
    """A short, stable, non-reversible label for a key, safe to log."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]


@dataclass(frozen=True)
class Principal:
    """Who made a request: a key fingerprint (``anonymous`` with no keys) and its scope."""

    fingerprint: str
    scope: Scope

    def can(self, scope: Scope) -> bool:
        return scope in _GRANTS[self.scope]


ANONYMOUS = Principal(fingerprint="anonymous", scope="write")


class AuthError(HTTPException):
    """401 or 403, rendered as JSON by the app's HTTP error handler."""


class KeyRing:
    """The configured keys, held as bytes for constant-time comparison."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        for scope in keys.values():
            if scope not in _GRANTS:
                raise ValueError(f"API key scope must be read or write, got {scope!r}")
        self._keys: list[tuple[bytes, Principal]] = [
            (key.encode("utf-8"), Principal(fingerprint(key), cast(Scope, scope)))
            for key, scope in keys.items()
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, presented: str) -> Principal | None:
        """The principal holding ``presented``, or None.

        Every configured key is compared, whatever the outcome, so the time taken does not
        depend on which key (if any) matched.
        """
        # Header values arrive as latin-1 text; encoding back gives the octets sent.
        candidate = presented.encode("latin-1", "replace")
        found: Principal | None = None
        for key, principal in self._keys:
            if hmac.compare_digest(candidate, key) and found is None:
                found = principal
        return found

    def describe(self) -> list[str]:
        """``fingerprint:scope`` per key, for a startup log line."""
        return [f"{p.fingerprint}:{p.scope}" for _, p in self._keys]


def _unauthorized(detail: str, error: str | None = None) -> AuthError:
    challenge = 'Bearer realm="recsys"'
    if error:
        challenge += f', error="{error}"'
    return AuthError(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})


def authorize(
    request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scope
) -> Principal:
    """The principal allowed to make this request with ``scope``, or an AuthError."""
    checked: Principal | None = getattr(request.state, "principal", None)
    if checked is not None and checked.can(scope):
        return checked
    ring: KeyRing = request.app.state.keys
    if not ring.enabled:
        return ANONYMOUS
    if credentials is None:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    principal = ring.identify(credentials.credentials)
    if principal is None:
        log.info(
            "rejected unknown API key (fingerprint %s) for %s %s",
            fingerprint(credentials.credentials),
            request.method,
            request.url.path,
        )
        raise _unauthorized("invalid API key", "invalid_token")
    if not principal.can(scope):
        log.info(
            "key %s (scope %s) refused %s scope for %s %s",
            principal.fingerprint,
            principal.scope,
            scope,
            request.method,
            request.url.path,
        )
        raise AuthError(
            status_code=403,
            detail=f"this API key lacks the {scope} scope",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="recsys", error="insufficient_scope", scope="{scope}"'
                )
            },
        )
    request.state.principal = principal
    return principal


_SCOPE_OF: dict[Callable[..., Any], Scope] = {}


class AuthFirstRoute(APIRoute):
    """A route that checks the API key before the request body is read or parsed.

    FastAPI reads and decodes the body before it resolves dependencies, so without this an
    anonymous client could make the service parse a large body, and would learn about a
    malformed one (422) before learning it is not allowed in (401).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needed = [_SCOPE_OF[d.dependency] for d in self.dependencies if d.dependency in _SCOPE_OF]
        if not needed:
            return handler
        scope: Scope = "write" if "write" in needed else "read"

        async def checked(request: Request) -> Response:
            authorize(request, await bearer(request), scope)
            return await handler(request)

        return checked


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_read(request: Request, credentials: Credentials) -> Principal:
    """Dependency: a key with read scope (or no keys configured)."""
    return authorize(request, credentials, "read")


async def require_write(request: Request, credentials: Credentials) -> Principal:
    """Dependency: a key with write scope (or no keys configured)."""
    return authorize(request, credentials, "write")


_SCOPE_OF.update({require_read: "read", require_write: "write"})
