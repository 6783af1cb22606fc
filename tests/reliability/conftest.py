"""Fixtures of the reliability tests: one trained demo world, built once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.helpers import build_trained_home


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home (SQLite store, vectors, artifacts) with the demo world (scale 0.2: 200 users,
    ~890 items, 20,000 events) imported and one published model. Copy it, never write it."""
    home = tmp_path_factory.mktemp("reliability-world") / "home"
    build_trained_home(home, seed=7, scale=0.2)
    return home
