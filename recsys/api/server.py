"""``serve()``: run the API under uvicorn, refusing an unauthenticated public bind."""

from __future__ import annotations

import ipaddress
import logging

from recsys.config import Settings, get_settings

log = logging.getLogger("recsys.api")

LOOPBACK_NAMES = frozenset({"localhost"})


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


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Settings | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Serve the API until interrupted. Raises InsecureBindError (before binding anything)
    when no API keys are configured and ``host`` is not loopback."""
    import uvicorn

    from recsys.api.app import create_app

    settings = settings or get_settings()
    check_bind(host, settings)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        # One worker, always: the embedded Qdrant Edge shard (the default vector backend) may
        # be opened by one process only, and each worker would be a process of its own.
        # Requests still run concurrently in the worker's thread pool.
        workers=1,
        log_level=log_level,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
