"""The model registry: one row per training run in ``model_runs``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update

from recsys.store.schema import model_runs

RUNNING, FAILED, REFUSED, COMPLETED, PUBLISHED = (
    "running",
    "failed",
    "refused",
    "completed",
    "published",
)


@dataclass
class ModelRun:
    version: str
    status: str
    started_at: float
    finished_at: float | None
    published_at: float | None
    params: dict[str, Any]
    data_stats: dict[str, Any]
    timings: dict[str, Any]
    metrics: dict[str, Any]
    artifact_uri: str | None
    message: str | None


def start_run(conn: Connection, version: str, params: dict[str, Any]) -> None:
    conn.execute(
        model_runs.insert().values(
            version=version,
            started_at=time.time(),
            status=RUNNING,
            params=params,
            data_stats={},
            timings={},
            metrics={},
        )
    )


def finish_run(conn: Connection, version: str, status: str, **fields: Any) -> None:
    values = {"status": status, "finished_at": time.time(), **fields}
    if status == PUBLISHED and "published_at" not in values:
        values["published_at"] = values["finished_at"]
    conn.execute(update(model_runs).where(model_runs.c.version == version).values(**values))


def mark_published(conn: Connection, version: str) -> None:
    conn.execute(
        update(model_runs)
        .where(model_runs.c.version == version)
        .values(status=PUBLISHED, published_at=time.time())
    )


def _row(row: Any) -> ModelRun:
    return ModelRun(**{key: row._mapping[key] for key in ModelRun.__dataclass_fields__})


def get_run(conn: Connection, version: str) -> ModelRun | None:
    row = conn.execute(select(model_runs).where(model_runs.c.version == version)).first()
    return _row(row) if row else None


def list_runs(conn: Connection, limit: int = 50) -> list[ModelRun]:
    rows = conn.execute(select(model_runs).order_by(model_runs.c.started_at.desc()).limit(limit))
    return [_row(row) for row in rows]


def recover_interrupted(conn: Connection, live_version: str | None) -> None:
    """Close the runs a killed trainer left marked running.

    Called by a trainer that holds the training lock, so any run still marked running was
    killed. One killed after its switch went live is published, whatever happened to it
    afterwards; every other one failed.
    """
    running = model_runs.c.status == RUNNING
    now = time.time()
    if live_version is not None:
        conn.execute(
            update(model_runs)
            .where(running, model_runs.c.version == live_version)
            .values(
                status=PUBLISHED,
                published_at=now,
                finished_at=now,
                message="interrupted after going live",
            )
        )
    conn.execute(
        update(model_runs)
        .where(running)
        .values(status=FAILED, message="interrupted", finished_at=now)
    )
