"""A minimal ASGI app under ``WorkerSupervisor``, for the supervision tests: each answer is
the answering worker's pid, so a test can see which process serves and when one is replaced.

Run as ``python -m tests.reliability.supervised_app PORT WORKERS HEALTHCHECK_SECONDS``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import uvicorn

from recsys.api.workers import WorkerSupervisor


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to set up
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    port, workers, healthcheck = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    config = uvicorn.Config(
        "tests.reliability.supervised_app:app",
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        timeout_worker_healthcheck=healthcheck,
    )
    WorkerSupervisor(config, workers).run()


if __name__ == "__main__":
    main()
