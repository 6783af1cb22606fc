"""Fixtures of the reliability tests: one trained demo world, built once per run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.api.helpers import build_trained_home
from tests.conftest import POSTGRES_URL, require_postgres


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home (SQLite store, vectors, artifacts) with the demo world (scale 0.2: 200 users,
    ~890 items, 20,000 events) imported and one published model. Copy it, never write it."""
    home = tmp_path_factory.mktemp("reliability-world") / "home"
    build_trained_home(home, seed=7, scale=0.2)
    return home


def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards); skips when
    PostgreSQL is unreachable, fails under CI=true. For fixtures wider than one test."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
