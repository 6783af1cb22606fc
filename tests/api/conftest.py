"""Fixtures for the API tests: a stand-in recommender for unit tests, and one trained
world (demo data through the real import and training pipelines) copied per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.helpers import (
    API_KEYS,
    FakeRecommender,
    TestClient,
    build_trained_home,
    fake_app,
    settings_for,
)


@pytest.fixture
def fake() -> FakeRecommender:
    return FakeRecommender()


@pytest.fixture
def client(tmp_path: Path, fake: FakeRecommender) -> Iterator[TestClient]:
    """An app with read and write keys, a 64 KiB body limit and the stand-in recommender."""
    settings = settings_for(tmp_path / "home", api_keys=API_KEYS, max_body_bytes=64 * 1024)
    with TestClient(fake_app(settings, fake)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with a demo world imported and one published model (built once per run)."""
    home = tmp_path_factory.mktemp("api-world") / "home"
    build_trained_home(home)
    return home
