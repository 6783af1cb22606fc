"""``recsys serve --workers 2``: a supervisor and two worker processes behind one port,
each with its own replica of the embedded index, sharing one store.

What one worker is told (an item written, a version activated) must reach the other
within a second; a worker killed with SIGKILL is replaced while the other keeps answering;
SIGTERM stops every process and leaves no replica behind.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from recsys.config import Settings
from recsys.store import open_store
from recsys.store.catalog import upsert_items, validate_items
from tests.api.helpers import clone_version
from tests.reliability.service import (
    READ_KEY,
    WRITE_KEY,
    Service,
    bearer,
    copy_home,
    start_service,
    stop_service,
    worker_pids,
)

pytestmark = pytest.mark.slow

# The promise: a write or an activation on one worker is served by every worker within this.
PROPAGATION_SECONDS = 1.0


def pinned_clients(service: Service, workers: int) -> dict[int, httpx.Client]:
    """One keep-alive client per worker: a connection stays with the worker that took it,
    so new connections are opened until each worker has one."""
    clients: dict[int, httpx.Client] = {}
    for _ in range(400):
        client = httpx.Client(base_url=service.base, timeout=30, headers=bearer(WRITE_KEY))
        pid = client.get("/readyz").json()["worker"]
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
        if len(clients) == workers:
            return clients
    for client in clients.values():
        client.close()
    raise AssertionError(f"only workers {sorted(clients)} took connections")


def similar_ids(client: httpx.Client, item_id: str) -> list[str] | None:
    response = client.get(f"/v1/items/{item_id}/similar", params={"limit": 5})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def seconds_until_every_worker_has(clients: dict[int, httpx.Client], item_id: str) -> float:
    started = time.monotonic()
    waiting = dict(clients)
    while waiting and time.monotonic() - started < 10:
        for pid, client in list(waiting.items()):
            if similar_ids(client, item_id):
                del waiting[pid]
        time.sleep(0.02)
    assert not waiting, f"workers {sorted(waiting)} never served {item_id}"
    return time.monotonic() - started


@pytest.fixture(scope="module")
def two_workers(
    world_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Path]]:
    root = tmp_path_factory.mktemp("workers")
    home = copy_home(world_template, root / "home")
    service = start_service(home, root / "run", workers=2)
    try:
        yield service, home
    finally:
        stop_service(service)


def test_both_workers_answer_from_replicas_of_the_live_version(
    two_workers: tuple[Service, Path],
) -> None:
    service, home = two_workers
    clients = pinned_clients(service, 2)
    assert sorted(clients) == worker_pids(service.pid)
    live = (home / "vectors" / "CURRENT").read_text().strip()
    for client in clients.values():
        ready = client.get("/readyz").json()
        assert ready["ready"] and ready["model_version"] == live
        feed = client.get("/v1/users/demo-user-0001/feed", params={"limit": 5})
        assert feed.status_code == 200 and len(feed.json()["items"]) == 5
        client.close()
    # One private copy each, named by the worker that holds it; the published one untouched.
    replicas = sorted(p.name for p in (home / "vectors" / ".replicas").iterdir())
    assert replicas == sorted(f"{live}.{pid}.1" for pid in clients)


def test_an_item_written_anywhere_is_served_by_every_worker_within_a_second(
    two_workers: tuple[Service, Path],
) -> None:
    service, home = two_workers
    clients = pinned_clients(service, 2)
    writer, reader = list(clients.values())
    through_api = f"worker-item-{uuid.uuid4().hex[:8]}"
    assert similar_ids(reader, through_api) is None and similar_ids(writer, through_api) is None
    item = {
        "title": "Late night jazz piano",
        "text": "a quiet piano trio recorded live",
        "tags": ["jazz", "piano"],
        "category": "music",
    }
    assert writer.put(f"/v1/items/{through_api}", json=item).status_code == 200
    assert similar_ids(writer, through_api)  # the writing worker indexed it at once
    assert seconds_until_every_worker_has(clients, through_api) <= PROPAGATION_SECONDS

    # Written to the store by another program (an import), not through any worker.
    imported = f"imported-item-{uuid.uuid4().hex[:8]}"
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    store = open_store(settings)
    try:
        frame = pd.DataFrame([{"item_id": imported, **item, "title": "Imported piano"}])
        with store.transaction() as conn:
            upsert_items(conn, validate_items(frame).valid)
    finally:
        store.dispose()
    assert seconds_until_every_worker_has(clients, imported) <= PROPAGATION_SECONDS
    for client in clients.values():
        client.close()


def test_an_activation_on_one_worker_reaches_the_other_within_a_second(
    two_workers: tuple[Service, Path],
) -> None:
    service, home = two_workers
    live = (home / "vectors" / "CURRENT").read_text().strip()
    clone = f"{live}-clone"
    clone_version(home, live, clone)
    clients = pinned_clients(service, 2)
    first, second = list(clients.values())
    for target, via, other in ((clone, first, second), (live, second, first)):
        response = via.post(f"/v1/models/{target}/activate")
        assert response.status_code == 200 and response.json()["model_version"] == target
        started = time.monotonic()
        while other.get("/readyz").json()["model_version"] != target:
            assert time.monotonic() - started < 10, "the other worker never swapped"
            time.sleep(0.02)
        assert time.monotonic() - started <= PROPAGATION_SECONDS
    for client in clients.values():
        client.close()


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(
    two_workers: tuple[Service, Path],
) -> None:
    service, home = two_workers
    before = worker_pids(service.pid)
    assert len(before) == 2
    victim, survivor = before

    def fresh_request(_: int) -> str | None:
        """A feed on a new connection: None when it was answered, else what went wrong."""
        try:
            response = httpx.get(
                f"{service.base}/v1/users/demo-user-0002/feed", headers=bearer(READ_KEY), timeout=60
            )
        except httpx.TransportError as exc:
            return repr(exc)
        return None if response.status_code == 200 else f"{response.status_code}"

    # A burst of new connections while the victim dies: the kernel spreads them over both
    # workers' sockets, so some land on the victim's before and after its death. The victim
    # accepted none of them, so none may fail (they wait for its replacement instead).
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: None, range(64)))  # its threads started before the kill
        os.kill(victim, signal.SIGKILL)
        burst = list(pool.map(fresh_request, range(48)))
    assert [failure for failure in burst if failure] == []

    answered: set[int] = set()
    started = time.monotonic()
    while time.monotonic() - started < 120:
        failure = fresh_request(0)
        assert failure is None
        ready = httpx.get(f"{service.base}/readyz", timeout=30)
        if ready.status_code == 200:
            answered.add(ready.json()["worker"])
        if len(answered - {victim, survivor}) >= 1 and survivor in answered:
            break
    assert victim not in answered
    replacement = answered - {victim, survivor}
    assert len(replacement) == 1 and sorted(worker_pids(service.pid)) == sorted(
        replacement | {survivor}
    )
    # The dead worker's replica was removed by the one that replaced it.
    replicas = [p.name for p in (home / "vectors" / ".replicas").iterdir()]
    assert not [name for name in replicas if f".{victim}." in name]


def test_sigterm_stops_every_process_and_leaves_no_replica(
    world_template: Path, tmp_path: Path
) -> None:
    home = copy_home(world_template, tmp_path / "home")
    service = start_service(home, tmp_path / "run", workers=2)
    workers = worker_pids(service.pid)
    assert len(workers) == 2
    assert len(list((home / "vectors" / ".replicas").iterdir())) == 2
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=60) == 0
    assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []
    assert list((home / "vectors" / ".replicas").iterdir()) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{service.base}/healthz", timeout=2)
