"""The whole pipeline on the server code path: ``ClientStore`` over qdrant-client.

qdrant-client's local mode (in memory, exact search) stands in for a Qdrant server: the seam
is ``open_vector_store`` as the nightly job and the recommender call it, so everything above
it (training, publishing, hot swap, the feed) is the production code. The same world is
trained on the Edge path too, with deterministic settings (one LightFM thread), so both paths
fit the same models and the feeds can be compared item by item.

The switch to a new version is one alias update that moves ``items`` and ``users``
together: a reader polling the aliases during a run never sees them apart, the version is
complete before the switch, and a recommender serving during the run swaps without a
single failed or degraded feed.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

import pipelines.train
import recsys.serving.recommender
from pipelines.train import train
from recsys.config import Settings
from recsys.models import ALSModel, ContentModel, HybridModel
from recsys.serving import Recommender
from recsys.store import Store
from recsys.store.engine import make_engine
from recsys.vectors import set_stage_hook
from recsys.vectors.client import ClientStore
from recsys.vectors.edge import EdgeStore
from recsys.vectors.versions import VectorStore

WARM_USERS = ["demo-user-0001", "demo-user-0002", "demo-user-0007", "demo-user-0042"]
COLD_USER = "server-path-newcomer"
ITEMS = ["demo-item-00001", "demo-item-00010", "demo-item-00100"]


@dataclass
class Paths:
    edge: Settings
    edge_store: Store
    edge_version: str
    client: Settings
    client_store: Store
    client_version: str
    qdrant: QdrantClient
    vectors: Callable[[Settings | None], VectorStore]


def deterministic(home: Path) -> Settings:
    """LightFM with one thread: with several it is Hogwild and not reproducible."""
    return Settings(home=home, hybrid={"num_threads": 1}, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def paths(world_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    root = tmp_path_factory.mktemp("server-path")
    homes = {}
    for name in ("edge", "client"):
        homes[name] = root / name
        homes[name].mkdir()
        # The same events and catalogue, and nothing trained yet.
        shutil.copy(world_template / "recsys.db", homes[name] / "recsys.db")
    edge = deterministic(homes["edge"])
    edge_store = Store(make_engine(edge.sqlalchemy_url))
    edge_version = train(edge_store, edge).version

    qdrant = QdrantClient(location=":memory:")

    def vectors(settings: Settings | None = None) -> VectorStore:
        keep = settings.keep_versions if settings else 3
        return ClientStore(qdrant, keep=keep)

    client = deterministic(homes["client"])
    client_store = Store(make_engine(client.sqlalchemy_url))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipelines.train, "open_vector_store", vectors)
        patch.setattr(recsys.serving.recommender, "open_vector_store", vectors)
        client_version = train(client_store, client).version
        yield Paths(
            edge, edge_store, edge_version, client, client_store, client_version, qdrant, vectors
        )
    edge_store.dispose()
    client_store.dispose()
    qdrant.close()


def test_training_publishes_through_the_aliases(paths: Paths) -> None:
    store = paths.vectors(paths.client)
    assert store.live_version() == paths.client_version
    aliases = {a.alias_name: a.collection_name for a in paths.qdrant.get_aliases().aliases}
    assert aliases == {
        "items": f"items_{paths.client_version}",
        "users": f"users_{paths.client_version}",
    }
    with EdgeStore(paths.edge.vectors_dir) as edge:
        (edge_info,) = edge.list_versions()
    client_info = next(v for v in store.list_versions() if v.version == paths.client_version)
    assert (client_info.items, client_info.users, client_info.dims) == (
        edge_info.items,
        edge_info.users,
        edge_info.dims,
    )
    # Both paths fit the same models from the same data.
    models: dict[str, type[ALSModel] | type[HybridModel] | type[ContentModel]] = {
        "als": ALSModel,
        "hybrid": HybridModel,
        "content": ContentModel,
    }
    for name, model in models.items():
        one = model.load(paths.edge.artifacts_dir / paths.edge_version / name)
        other = model.load(paths.client.artifacts_dir / paths.client_version / name)
        assert one.item_factors is not None and other.item_factors is not None
        np.testing.assert_allclose(one.item_factors, other.item_factors, rtol=1e-4, atol=1e-5)


def test_feeds_agree_with_the_edge_path(paths: Paths) -> None:
    # open_vector_store is patched for the module: the Edge side is built by hand.
    edge = Recommender(paths.edge_store, paths.edge, EdgeStore(paths.edge.vectors_dir))
    edge.refresh()
    client = Recommender.open(paths.client_store, paths.client)
    try:
        assert isinstance(client.vectors, ClientStore) and isinstance(edge.vectors, EdgeStore)
        assert client.model_version == paths.client_version
        for user in [*WARM_USERS, COLD_USER]:
            one, other = edge.feed(user, limit=10), client.feed(user, limit=10)
            assert not one.degraded and not other.degraded
            ids_one = [i.item_id for i in one.items]
            ids_other = [i.item_id for i in other.items]
            assert len(ids_one) == len(ids_other) == 10
            # Edge searches its index, local mode brute-forces: near-ties may swap places,
            # nothing more.
            assert ids_one[:3] == ids_other[:3], user
            assert len(set(ids_one) & set(ids_other)) >= 9, (user, ids_one, ids_other)
            # And the second page carries on the same way.
            two = edge.feed(user, limit=10, cursor=one.next_cursor)
            three = client.feed(user, limit=10, cursor=other.next_cursor)
            overlap = {i.item_id for i in two.items} & {i.item_id for i in three.items}
            assert len(overlap) >= 8, user
        for item in ITEMS:
            for kind in ("content", "behavioural"):
                similar_one = [i.item_id for i in edge.similar(item, kind=kind, limit=10)]
                similar_other = [i.item_id for i in client.similar(item, kind=kind, limit=10)]
                assert len(set(similar_one) & set(similar_other)) >= 9, (item, kind)
    finally:
        edge.close()
        client.close()


@dataclass
class AliasWatch:
    """Polls the aliases on a thread and records every pair it reads."""

    qdrant: QdrantClient
    pairs: list[tuple[str | None, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            aliases = {a.alias_name: a.collection_name for a in self.qdrant.get_aliases().aliases}
            self.pairs.append((aliases.get("items"), aliases.get("users")))


def test_the_alias_switch_publishes_atomically(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = paths.vectors(paths.client)
    old = store.live_version()
    assert old is not None
    recommender = Recommender.open(paths.client_store, paths.client)
    watch = AliasWatch(paths.qdrant)
    feeds: list[tuple[str | None, bool, int]] = []
    serving = threading.Event()

    def serve() -> None:
        n = 0
        while not serving.is_set():
            page = recommender.feed(WARM_USERS[n % len(WARM_USERS)], limit=10)
            feeds.append((page.model_version, page.degraded, len(page.items)))
            recommender.refresh()
            n += 1

    # At each stage of the switch: the complete versions, and what the aliases name.
    seen: dict[str, tuple[set[str], set[str]]] = {}

    def hook(name: str) -> None:
        if name in ("committed", "switch", "switched"):
            complete = {v.version for v in store.list_versions()}
            named = {a.collection_name for a in paths.qdrant.get_aliases().aliases}
            seen[name] = (complete, named)

    calls: list[Any] = []
    real_update = paths.qdrant.update_collection_aliases

    def update_collection_aliases(**kwargs: Any) -> Any:
        calls.append(kwargs["change_aliases_operations"])
        return real_update(**kwargs)

    monkeypatch.setattr(paths.qdrant, "update_collection_aliases", update_collection_aliases)
    previous_hook = set_stage_hook(hook)
    threads = [threading.Thread(target=watch.run), threading.Thread(target=serve)]
    for thread in threads:
        thread.start()
    try:
        new = train(paths.client_store, paths.client).version
        deadline = time.monotonic() + 30
        while new not in {v for v, _, _ in feeds} and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        set_stage_hook(previous_hook)
        watch.stop.set()
        serving.set()
        for thread in threads:
            thread.join(timeout=60)
        recommender.close()

    assert new != old and store.live_version() == new
    # One alias update, moving both aliases.
    assert len(calls) == 1
    created = {
        op.create_alias.alias_name: op.create_alias.collection_name
        for op in calls[0]
        if getattr(op, "create_alias", None)
    }
    assert created == {"items": f"items_{new}", "users": f"users_{new}"}
    # Complete before the switch; the aliases named the old version until the switch and
    # the new one right after it.
    for stage, version in (("committed", old), ("switch", old), ("switched", new)):
        complete, named = seen[stage]
        assert new in complete, stage
        assert named == {f"items_{version}", f"users_{version}"}, stage
    # Never apart, and never anything but the old or the new version.
    assert len(watch.pairs) > 10
    assert set(watch.pairs) <= {
        (f"items_{old}", f"users_{old}"),
        (f"items_{new}", f"users_{new}"),
    }
    assert (f"items_{new}", f"users_{new}") in watch.pairs
    # The recommender served throughout, and swapped without a restart.
    assert feeds and all(not degraded and n == 10 for _, degraded, n in feeds)
    assert {version for version, _, _ in feeds} == {old, new}
