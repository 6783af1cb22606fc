"""Shared fixtures: a fresh store on SQLite and (when reachable) on PostgreSQL."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from recsys.config import Settings
from recsys.store import Store
from recsys.store.engine import make_engine

POSTGRES_URL = os.environ.get(
    "RECSYS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DATASETS_DIR = Path(
    os.environ.get(
        "RECSYS_DATASETS_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    )
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any driver or network error means "not here"
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {exc.__class__.__name__}"


_PG_PROBLEM = _postgres_reachable()


def require_postgres() -> None:
    if _PG_PROBLEM:
        _missing(_PG_PROBLEM)


def _missing(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail under CI=true, where a skip would hide the test."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_datasets(name: str) -> Path:
    path = DATASETS_DIR / name
    if not path.is_dir():
        _missing(f"dataset {name} not found under {DATASETS_DIR} (set RECSYS_DATASETS_DIR)")
    return path


def require_module(name: str) -> Any:
    """Import an optional test dependency (the dev extra), as ``require_datasets`` does."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"{name} is not installed (a dev dependency: pip install -e '.[dev]')")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]


def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards); skips when
    PostgreSQL is unreachable, fails under CI=true. For fixtures of any scope."""
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    yield from postgres_schema()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(make_engine(store_url))
    yield store
    store.dispose()


@dataclass
class TrainedWorld:
    settings: Settings
    store: Store
    items: pd.DataFrame


def build_trained_world(
    home: Path, scale: float = 0.3, seed: int = 7, **overrides: object
) -> TrainedWorld:
    """A demo world imported into SQLite under ``home`` and trained through the real pipeline."""
    from pipelines.demo_world import generate_world
    from pipelines.ingest import import_frames
    from pipelines.train import train

    settings = Settings(home=home, _env_file=None, **overrides)  # type: ignore[call-arg]
    store = Store(make_engine(settings.sqlalchemy_url))
    world = generate_world(seed=seed, scale=scale)
    import_frames(store, settings, world.items, world.iter_events())
    train(store, settings)
    return TrainedWorld(settings=settings, store=store, items=world.items)


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedWorld]:
    world = build_trained_world(tmp_path_factory.mktemp("trained") / "home")
    yield world
    world.store.dispose()
