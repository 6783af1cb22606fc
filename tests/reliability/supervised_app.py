"""A minimal ASGI app under ``WorkerSupervisor``, for the supervision tests: each answer is
the answering worker's pid, so a test can see which process serves and when one is replaced.

Run as ``python -m tests.reliability.supervised_app PORT WORKERS HEALTHCHECK_SECONDS``;
``SUPERVISED_APP_START_DELAY=S`` makes each worker take S seconds longer to start.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import uvicorn

from recsys.api.workers import WorkerSupervisor

# A worker's interpreter imports this module as ``__mp_main__`` before it can answer any
# ping: a delay here is a worker slow to start (a loaded host).
START_DELAY_ENV = "SUPERVISED_APP_START_DELAY"
if __name__ == "__mp_main__" and os.environ.get(START_DELAY_ENV):
    time.sleep(float(os.environ[START_DELAY_ENV]))


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
