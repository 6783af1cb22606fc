from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from vectors_testdata import DIMS, Items, Users, make_items, make_users, new_store

from recsys.vectors import VectorIndex

N_ITEMS = 2000
N_USERS = 100
SEED = 20240601
BACKENDS = ["edge", "client"]


@pytest.fixture(scope="session")
def items() -> Items:
    return make_items(N_ITEMS, SEED)


@pytest.fixture(scope="session")
def users() -> Users:
    return make_users(N_USERS, SEED)


def _built(backend: str, root: Path, items: Items, users: Users) -> Iterator[VectorIndex]:
    store = new_store(backend, root)
    with store.begin("contract", DIMS) as build:
        build.upsert_items(items.ids, items.vectors, items.payloads, batch_size=500)
        build.upsert_users(users.ids, users.vectors)
    store.activate("contract")
    index = store.open_live()
    yield index
    index.close()
    store.close()


@pytest.fixture(scope="session")
def edge_index(
    tmp_path_factory: pytest.TempPathFactory, items: Items, users: Users
) -> Iterator[VectorIndex]:
    yield from _built("edge", tmp_path_factory.mktemp("edge-contract"), items, users)


@pytest.fixture(scope="session")
def client_index(
    tmp_path_factory: pytest.TempPathFactory, items: Items, users: Users
) -> Iterator[VectorIndex]:
    yield from _built("client", tmp_path_factory.mktemp("client-contract"), items, users)


@pytest.fixture(params=BACKENDS)
def index(request: pytest.FixtureRequest) -> VectorIndex:
    """The same seeded data behind each backend; read-only for the tests."""
    index: VectorIndex = request.getfixturevalue(f"{request.param}_index")
    return index


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
