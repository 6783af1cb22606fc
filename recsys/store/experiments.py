"""Experiments: at most one running at a time, which the database itself enforces."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from recsys.store.schema import experiments


class ExperimentConflict(RuntimeError):
    """The name is taken, or another experiment is running."""


def create_experiment(
    conn: Connection, name: str, variants: list[dict[str, Any]], *, now: float | None = None
) -> None:
    """Start an experiment. Raises ExperimentConflict when the name exists or another one
    runs (the unique ``running`` column refuses a second one under any concurrency)."""
    if get_experiment(conn, name) is not None:
        raise ExperimentConflict(f"an experiment named {name!r} exists already")
    current = running_experiment(conn)
    if current is not None:
        raise ExperimentConflict(
            f"experiment {current['name']!r} is running; stop it first (one at a time)"
        )
    try:
        # A savepoint: a concurrent creator's win must not abort the caller's transaction.
        with conn.begin_nested():
            conn.execute(
                insert(experiments).values(
                    name=name,
                    status="running",
                    running=True,
                    variants=variants,
                    started_at=time.time() if now is None else now,
                )
            )
    except IntegrityError:
        raise ExperimentConflict("another experiment started at the same moment") from None


def stop_experiment(conn: Connection, name: str, *, now: float | None = None) -> bool | None:
    """Stop a running experiment: True if it was running, False if it had stopped
    already, None if there is no such experiment."""
    row = get_experiment(conn, name)
    if row is None:
        return None
    if row["status"] != "running":
        return False
    conn.execute(
        update(experiments)
        .where(experiments.c.name == name)
        .values(status="stopped", running=None, stopped_at=time.time() if now is None else now)
    )
    return True


def get_experiment(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(experiments).where(experiments.c.name == name)).mappings().first()
    return dict(row) if row is not None else None


def running_experiment(conn: Connection) -> dict[str, Any] | None:
    """The running experiment's row, or None: one indexed lookup (each worker asks four
    times a second)."""
    row = (
        conn.execute(select(experiments).where(experiments.c.running.is_(True))).mappings().first()
    )
    return dict(row) if row is not None else None


def list_experiments(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(experiments).order_by(experiments.c.started_at.desc())).mappings()
    return [dict(row) for row in rows]


def running_experiment_name(conn: Connection) -> str | None:
    """Just the running experiment's name: the cheap question a worker's refresh asks."""
    name: str | None = conn.execute(
        select(experiments.c.name).where(experiments.c.running.is_(True))
    ).scalar()
    return name
