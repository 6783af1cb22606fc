"""Shared pieces of the API tests: keys, a stand-in recommender, and a trained world."""

from __future__ import annotations

import shutil
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import pandas as pd
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from recsys.api import create_app
from recsys.config import Settings
from recsys.forget import Forgotten
from recsys.serving import (
    FeedFilters,
    FeedItem,
    FeedPage,
    InvalidCursor,
    Recommender,
    SimilarPage,
    UnknownItem,
)
from recsys.store import Store, open_store
from recsys.store.events import InsertResult
from recsys.vectors.edge_files import copy_sparse
from tests.reliability.service import copy_home

with warnings.catch_warnings():
    # Starlette suggests another HTTP client package for its test client; httpx is the
    # pinned dev dependency and works.
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

__all__ = [
    "READ_KEY",
    "WRITE_KEY",
    "DecodeOnce",
    "FakeRecommender",
    "TestClient",
    "World",
    "bearer",
    "copy_world",
    "fake_app",
    "path_id",
]

# Distinctive strings, so a leak into a log is easy to find.
READ_KEY = "rk-5d1e0c2f9a7b4e3c8d6f1a2b3c4d5e6f"
WRITE_KEY = "wk-9f8e7d6c5b4a39281716151413121110"
API_KEYS = f"{READ_KEY}:read,{WRITE_KEY}:write"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class DecodeOnce:
    """ASGI wrapper that sets ``path`` from ``raw_path`` decoded once, as uvicorn does.

    Starlette's test client percent-decodes the path twice, so an id that contains a
    literal ``%41`` would reach the app as ``A``; real servers never do that.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = {**scope, "path": unquote(scope["raw_path"].decode("ascii"))}
        await self.app(scope, receive, send)


def path_id(raw: str) -> str:
    """An id as one path segment: every reserved character percent-encoded, and dots too,
    so that an id such as ``..`` is not taken for a relative path by the client."""
    return quote(raw, safe="").replace(".", "%2E")


@dataclass
class FakeRecommender:
    """Stands in for ``recsys.serving.Recommender`` in unit tests of auth, limits and
    validation, and records what the API asked of it."""

    model_version: str | None = "v-test"
    ingested: list[pd.DataFrame] = field(default_factory=list)
    upserted: list[pd.DataFrame] = field(default_factory=list)
    feeds: list[tuple[str, int, str | None, FeedFilters | None]] = field(default_factory=list)
    refreshes: int = 0
    syncs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(
        self,
        user_id: str,
        limit: int = 20,
        cursor: str | None = None,
        filters: FeedFilters | None = None,
    ) -> FeedPage:
        if cursor == "not-a-cursor":
            raise InvalidCursor("cursor is not one this service issued")
        self.feeds.append((user_id, limit, cursor, filters))
        items = [FeedItem("item-1", 0.9, ["content"], "popular right now", {"content": 0.9})]
        return FeedPage(user_id, items, self.model_version, "next", False)

    def similar(self, item_id: str, kind: str = "content", limit: int = 20) -> list[FeedItem]:
        if item_id == "missing":
            raise UnknownItem(item_id)
        return [FeedItem("item-2", 0.5, [kind], f"similar to {item_id}", {kind: 0.5})]

    def similar_page(
        self, item_id: str, kind: str = "content", limit: int = 20, user_id: str | None = None
    ) -> SimilarPage:
        return SimilarPage(item_id, self.similar(item_id, kind, limit), self.model_version)

    def sync_experiment(self) -> bool:
        return False

    def ingest_events(self, valid: pd.DataFrame) -> InsertResult:
        self.ingested.append(valid)
        return InsertResult(inserted=len(valid), duplicates=0)

    def upsert_items(self, valid: pd.DataFrame) -> tuple[int, int]:
        self.upserted.append(valid)
        return len(valid), 0

    def retire_items(self, item_ids: list[str]) -> int:
        if "missing" in item_ids:
            raise UnknownItem("missing")
        return len(item_ids)

    def forget_user(self, user_id: str) -> Forgotten:
        return Forgotten(user_id=user_id, events=2, profile=True, vector_versions=["v-test"])

    def refresh(self) -> bool:
        with self.lock:
            self.refreshes += 1
        return False

    def sync_items(self) -> int:
        with self.lock:
            self.syncs += 1
        return 0

    def ready(self) -> dict[str, bool]:
        return {"store": True, "index": True, "model": True}

    def close(self) -> None:
        pass


def fake_app(settings: Settings, fake: FakeRecommender, **kwargs: Any) -> FastAPI:
    """The real app around the stand-in recommender."""
    return create_app(settings, cast(Recommender, fake), **kwargs)


def settings_for(home: Path, **overrides: Any) -> Settings:
    return Settings(home=home, _env_file=None, **overrides)  # type: ignore[call-arg]


def build_trained_home(home: Path, *, seed: int = 7, scale: float = 0.2) -> None:
    """Demo world -> import -> train, through the real pipelines."""
    from pipelines.demo_world import generate_world
    from pipelines.ingest import import_frames
    from pipelines.train import train

    settings = settings_for(home)
    store = open_store(settings)
    try:
        world = generate_world(seed=seed, scale=scale)
        import_frames(store, settings, world.items, world.events())
        result = train(store, settings)
        assert result.published, result.message
    finally:
        store.dispose()


@dataclass
class World:
    """A trained home of its own, with its store and a real recommender open on it."""

    home: Path
    settings: Settings
    store: Store
    recommender: Recommender
    items: pd.DataFrame
    users: list[str]

    def close(self) -> None:
        self.recommender.close()
        self.store.dispose()


def copy_world(template: Path, home: Path, **settings: Any) -> World:
    """A private copy of a trained home, so a test module's writes stay its own."""
    copy_home(template, home)
    config = settings_for(home, **settings)
    store = open_store(config)
    recommender = Recommender.open(store, config)
    assert recommender.model_version is not None
    from recsys.store.catalog import load_items
    from recsys.store.schema import users as users_table

    with store.read() as conn:
        items = load_items(conn)
        users = sorted(row[0] for row in conn.execute(users_table.select()))
    return World(home, config, store, recommender, items, users)


def clone_version(home: Path, version: str, clone: str) -> None:
    """A second complete version, the same models under another name (what a second
    training run would publish), so activation can switch between two."""
    import json

    shutil.copytree(home / "models" / version, home / "models" / clone, copy_function=copy_sparse)
    manifest = home / "models" / clone / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": clone}))
    shutil.copytree(home / "vectors" / version, home / "vectors" / clone, copy_function=copy_sparse)
    marker = home / "vectors" / clone / "VERSION.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "version": clone}))
