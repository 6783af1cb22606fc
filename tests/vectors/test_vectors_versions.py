"""Versions: build off to the side, activate, roll back, clean up; both backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from vectors_testdata import Items, brute_search, make_items, make_users, new_store

from recsys.config import Settings
from recsys.vectors import NoLiveVersionError, VectorStore, open_vector_store
from recsys.vectors.base import Nearest
from recsys.vectors.edge import EdgeStore

SMALL = {"als": 8, "content": 4}


def small_items(seed: int) -> Items:
    return make_items(60, seed, SMALL)


def build(store: VectorStore, version: str, items: Items) -> None:
    with store.begin(version, SMALL) as b:
        b.upsert_items(items.ids, items.vectors, items.payloads, batch_size=25)
        users = make_users(5, 0, SMALL)
        b.upsert_users(users.ids, users.vectors)


def top_ids(store: VectorStore, items: Items) -> list[str]:
    with store.open_live() as index:
        return [h.item_id for h in index.search("als", items.vectors["als"][0], 5, exact=True)]


def expected_ids(items: Items) -> list[str]:
    return [i for i, _ in brute_search(items, "als", items.vectors["als"][0], 5)]


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[VectorStore]:
    s = new_store(backend, tmp_path / "vectors")
    yield s
    s.close()


def test_lifecycle(store: VectorStore) -> None:
    v1, v2, v3 = small_items(1), small_items(2), small_items(3)
    assert store.live_version() is None
    assert store.list_versions() == []
    with pytest.raises(NoLiveVersionError):
        store.open_live()

    build(store, "v1", v1)
    assert [v.version for v in store.list_versions()] == ["v1"]
    assert store.live_version() is None  # complete is not live
    store.activate("v1")
    assert store.live_version() == "v1"
    assert top_ids(store, v1) == expected_ids(v1)
    with pytest.raises(ValueError, match="already exists"):
        store.begin("v1", SMALL)

    serving = store.open_live()
    building = store.begin("v2", SMALL)
    building.upsert_items(v2.ids, v2.vectors, v2.payloads)
    assert store.live_version() == "v1"  # a build in progress changes nothing
    with pytest.raises(ValueError, match="not a complete version"):
        store.activate("v2")
    info = building.commit()
    assert (info.version, info.items, info.users, info.dims) == ("v2", 60, 0, SMALL)
    assert building.status == "committed"
    with pytest.raises(RuntimeError, match="committed"):
        building.search("als", v2.vectors["als"][0])

    store.activate("v2")
    # A server polls live_version() to notice the switch; until it swaps, its open index
    # keeps serving the version it was opened on.
    assert store.live_version() == "v2"
    hits = serving.search("als", v1.vectors["als"][0], 5, exact=True)
    assert [h.item_id for h in hits] == expected_ids(v1)
    serving.close()
    assert top_ids(store, v2) == expected_ids(v2)
    versions = store.list_versions()
    assert [(v.version, v.live) for v in versions] == [("v1", False), ("v2", True)]
    assert (versions[0].items, versions[0].users, versions[0].dims) == (60, 5, SMALL)

    assert store.rollback() == "v1"
    assert store.live_version() == "v1"
    with pytest.raises(ValueError, match="older than the live"):
        store.rollback()
    assert store.rollback("v2") == "v2"
    with store.open_version("v1") as old:  # a version need not be live to be read
        assert old.count() == 60
    with pytest.raises(ValueError, match="not a complete version"):
        store.open_version("nope")

    build(store, "v3", v3)
    store.rollback("v1")
    # The newest `keep` complete versions stay, and so does the live one.
    assert store.cleanup(keep=1) == ["v2"]
    assert [(v.version, v.live) for v in store.list_versions()] == [("v1", True), ("v3", False)]
    assert store.cleanup(keep=1) == []
    assert top_ids(store, v1) == expected_ids(v1)
    with pytest.raises(ValueError, match="keep"):
        store.cleanup(keep=0)


def test_failed_build_is_discarded(store: VectorStore) -> None:
    items = small_items(3)
    with pytest.raises(RuntimeError, match="boom"), store.begin("v1", SMALL) as b:
        b.upsert_items(items.ids, items.vectors, items.payloads)
        raise RuntimeError("boom")
    assert b.status == "aborted"
    assert store.list_versions() == []
    with pytest.raises(RuntimeError, match="aborted"):
        b.upsert_items(items.ids, items.vectors, items.payloads)
    # The name is free again; closing a build without committing it discards it too.
    b = store.begin("v1", SMALL)
    b.close()
    assert b.status == "aborted"
    assert store.list_versions() == []
    assert store.cleanup() == []


# -- Edge specifics ---------------------------------------------------------------------------


def test_edge_cleanup(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    build(store, "v1", small_items(1))
    build(store, "v2", small_items(2))
    store.activate("v2")
    assert (tmp_path / "CURRENT").read_text() == "v2\n"
    names = {p.name for p in (tmp_path / "v2").iterdir()}
    assert {"items", "users", "schema.json", "VERSION.json"} <= names

    serving_old = store.open_version("v1")  # a server that has not swapped yet
    # An Edge shard opens once per process: a second reader shares the open shards, and
    # closing one handle leaves the other serving.
    second_reader = store.open_version("v1")
    assert second_reader.count() == serving_old.count() == len(small_items(1).ids)
    second_reader.close()
    assert second_reader.closed and not serving_old.closed  # type: ignore[attr-defined]
    assert serving_old.count() == len(small_items(1).ids)
    v3 = small_items(3)
    in_progress = store.begin("v3", SMALL)
    in_progress.upsert_items(v3.ids, v3.vectors, v3.payloads)
    # Leftovers of crashed builds, deletions and pointer switches.
    (tmp_path / "v4.partial" / "items").mkdir(parents=True)
    (tmp_path / "v4.partial" / "items" / "junk").write_bytes(b"x" * 100)
    (tmp_path / ".v0.deleting").mkdir()
    tmp_pointer = f"CURRENT.{os.getpid() + 1}.tmp"
    (tmp_path / tmp_pointer).write_text("v4\n")
    (tmp_path / "stray").mkdir()  # no completion marker: not a version, not ours

    other = EdgeStore(tmp_path, keep=1)  # as if from another process
    assert sorted(other.cleanup()) == sorted([".v0.deleting", "v4.partial", tmp_pointer])
    # v1 is in use and v3 is being built: both spared.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".store.lock",
        "CURRENT",
        "stray",
        "v1",
        "v2",
        "v3.partial",
    ]
    with pytest.raises(ValueError, match="being built"):
        other.begin("v3", SMALL)

    serving_old.close()
    in_progress.commit()
    assert other.cleanup() == ["v1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".store.lock",
        "CURRENT",
        "stray",
        "v2",
        "v3",
    ]
    assert other.live_version() == "v2"


def test_client_leftovers_are_removed(tmp_path: Path) -> None:
    from recsys.vectors.client import ClientStore

    store = new_store("client", tmp_path)
    assert isinstance(store, ClientStore)
    build(store, "v1", small_items(1))
    store.activate("v1")
    items = small_items(2)
    crashed = store.begin("v2", SMALL)  # its builder dies: never committed nor aborted
    crashed.upsert_items(items.ids, items.vectors, items.payloads)
    store.client.create_collection("items_foreign", vectors_config={})  # not ours
    assert store.cleanup() == ["v2"]
    names = {c.name for c in store.client.get_collections().collections}
    assert names == {"items_v1", "users_v1", "items_foreign"}
    assert store.live_version() == "v1"
    build(store, "v2", items)  # the name is free again
    store.close()


# -- inputs and the factory -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["", "../x", "a/b", "x.partial", "CURRENT", ".hidden", "a b"])
def test_bad_version_names(store: VectorStore, version: str) -> None:
    with pytest.raises(ValueError):
        store.begin(version, SMALL)


@pytest.mark.parametrize(
    "dims", [{}, {"bogus": 4}, {"als": 0}, {"als": -1}, {"als": 2.5}, {"als": True}]
)
def test_bad_schemas(store: VectorStore, dims: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        store.begin("v1", dims)  # type: ignore[arg-type]
    assert store.list_versions() == []


def test_factory_embedded(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, keep_versions=5)
    store = open_vector_store(settings)
    assert isinstance(store, EdgeStore)
    assert store.root == tmp_path / "vectors" and store.keep == 5


def test_factory_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import qdrant_client

    from recsys.vectors.client import ClientStore

    seen: dict[str, object] = {}
    real_client = qdrant_client.QdrantClient

    def fake_client(**kwargs: object) -> qdrant_client.QdrantClient:
        seen.update(kwargs)
        return real_client(":memory:")

    monkeypatch.setattr(qdrant_client, "QdrantClient", fake_client)
    settings = Settings(
        qdrant_url="http://qdrant:6333",
        qdrant_api_key="k",
        keep_versions=2,
        qdrant_timeout=3,
        qdrant_shards=4,
        qdrant_replicas=2,
    )
    store = open_vector_store(settings)
    assert isinstance(store, ClientStore) and store.keep == 2
    assert seen == {"url": "http://qdrant:6333", "api_key": "k", "timeout": 3}
    # Every version's collections are laid out as configured.
    created: list[dict[str, object]] = []
    create_collection = store.client.create_collection

    def recording(name: str, **kwargs: object) -> bool:
        created.append({"name": name, **kwargs})
        return create_collection(name, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store.client, "create_collection", recording)
    with store.begin("v1", SMALL) as build:
        build.upsert_items(["a"], {"als": np.ones((1, 8)), "content": np.ones((1, 4))})
    assert [(c["shard_number"], c["replication_factor"]) for c in created] == [(4, 2), (4, 2)]
    store.close()


def test_a_server_that_does_not_answer_is_not_asked_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A recommend query whose examples are missing is retried with those that exist; a
    # timeout is not that, and retrying it doubled the wait.
    from qdrant_client.http.exceptions import ResponseHandlingException

    store = new_store("client", Path("unused"))
    items = small_items(3)
    build(store, "v1", items)
    store.activate("v1")
    calls = {"n": 0}

    def hanging(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        raise ResponseHandlingException(TimeoutError("timed out"))

    with store.open_live() as index:
        for method in ("query_points", "retrieve"):
            monkeypatch.setattr(index.client, method, hanging)  # type: ignore[attr-defined]
        with pytest.raises(ResponseHandlingException):
            index.recommend("als", [items.ids[0]], [], 5)
    assert calls["n"] == 1
    store.close()


def test_query_batch_names_items_added_after_earlier_batches(store: VectorStore) -> None:
    # Batch queries return item ids without reading payloads: an item upserted into a live
    # index that has already answered must still come back under its own id, as must an
    # item replaced with a new vector.
    items = small_items(4)
    build(store, "v1", items)
    store.activate("v1")
    target = np.asarray(items.vectors["als"][7], dtype=np.float32)
    with store.open_live() as index:
        before = index.query_batch([Nearest("als", target, 5)])[0]
        assert before[0].item_id == items.ids[7]
        payload = dict(items.payloads[7], item_id="added-later")
        index.upsert_items(
            ["added-later"],
            {name: np.asarray(v[7:8], dtype=np.float32) * 2 for name, v in items.vectors.items()},
            [payload],
        )
        after = index.query_batch([Nearest("als", target, 5)])[0]
        assert after[0].item_id == "added-later"
        assert [h.item_id for h in after[1:]] == [h.item_id for h in before[:4]]
        assert all(h.payload == {"item_id": h.item_id} for h in after)
