"""Exactly-once ingestion over HTTP under concurrency, on SQLite and on PostgreSQL.

The real service (uvicorn in its own process) runs over a trained world whose store holds
the catalogue and no events. Twenty clients, each on its own thread and connection, send
5,000 events apiece in batches of 250: half of the events carry the client's own
``event_id``, half get the derived one; every batch also carries events that other clients
send too, one batch per client repeats an event inside itself, and one batch in ten is sent
twice, as a client does after a timeout (half of those retries race the original request,
the other half follow its response). Afterwards the store holds exactly the unique events,
byte for byte, and the ``accepted`` counts of all the responses add up to that number.

A client that dies halfway through sending a batch (a raw socket with a Content-Length
larger than what it sent, then closed) leaves nothing of it behind.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pandas as pd
import pytest
from sqlalchemy import select

from pipelines.ingest import import_frames
from recsys.config import Settings
from recsys.events import derive_event_ids
from recsys.store import Store
from recsys.store.catalog import load_items
from recsys.store.engine import make_engine
from recsys.store.events import count_events
from recsys.store.schema import events as events_table
from tests.conftest import postgres_schema
from tests.reliability.service import (
    WRITE_KEY,
    Service,
    bearer,
    copy_home,
    start_service,
    stop_service,
)

CLIENTS = 20
EVENTS_PER_CLIENT = 5_000
BATCH = 250
SHARED_PER_BATCH = 10  # events of each batch drawn from a pool every client sends from
OWN_PER_BATCH = BATCH - SHARED_PER_BATCH
BATCHES = EVENTS_PER_CLIENT // BATCH
SHARED_POOL = 300
RESEND_SHARE = 0.10
SEED = 20_240_612
BASE_TIME = 1_730_000_000.0


@dataclass
class Ingest:
    service: Service
    store: Store
    url: str
    item_ids: list[str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ingest(
    request: pytest.FixtureRequest,
    world_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ingest]:
    """The service over a copy of the trained world, with a store that holds the catalogue
    and no events (SQLite file or a fresh PostgreSQL schema)."""
    root = tmp_path_factory.mktemp(f"exactly-once-{request.param}")
    home = copy_home(world_template, root / "home")
    schemas: Iterator[str] | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'ingest.db'}"
    else:
        schemas = postgres_schema()
        url = next(schemas)
    template = Store(make_engine(Settings(home=home, _env_file=None).sqlalchemy_url))  # type: ignore[call-arg]
    with template.read() as conn:
        items = load_items(conn)
    template.dispose()
    store = Store(make_engine(url))
    try:
        settings = Settings(home=home, database_url=url, _env_file=None)  # type: ignore[call-arg]
        import_frames(store, settings, items, [])
        service = start_service(home, root / "run", database_url=url)
        try:
            yield Ingest(service, store, url, sorted(items["item_id"]))
        finally:
            stop_service(service)
    finally:
        store.dispose()
        if schemas is not None:
            schemas.close()


# --- the traffic -----------------------------------------------------------------------------

TYPES = ("like", "skip", "view", "rating", "play", "dislike")


def make_event(
    rng: random.Random, item_ids: list[str], user: str, ts: float, eid: str | None
) -> dict[str, Any]:
    kind = rng.choice(TYPES)
    event: dict[str, Any] = {
        "user_id": user,
        "item_id": rng.choice(item_ids),
        "type": kind,
        "timestamp": ts,
    }
    if kind == "view":
        event["dwell_seconds"] = round(rng.uniform(0, 300), 3)
    elif kind == "rating":
        event["value"] = float(rng.randint(1, 5))
    elif kind == "play":
        event["value"] = float(rng.randint(1, 9))
    if eid is not None:
        event["event_id"] = eid
    return event


@dataclass
class Plan:
    """Every client's batches, which of them are resent and how, and the unique events."""

    batches: list[list[list[dict[str, Any]]]]  # client -> batch -> events
    resend: dict[tuple[int, int], str]  # (client, batch) -> "race" | "after"
    unique: dict[str, tuple[str, str, str, float]] = field(default_factory=dict)
    sent: int = 0


def effective_ids(events: list[dict[str, Any]]) -> list[str]:
    """The id the store keys each event by: the given one, else the derived one."""
    frame = pd.DataFrame.from_records(events)
    derived = derive_event_ids(
        frame["user_id"], frame["item_id"], frame["type"], frame["timestamp"].astype(float)
    )
    given = [e.get("event_id") for e in events]
    return [g if g is not None else d for g, d in zip(given, derived, strict=True)]


def make_plan(item_ids: list[str]) -> Plan:
    rng = random.Random(SEED)
    shared = [
        make_event(
            rng,
            item_ids,
            f"xo-shared-user-{n % 40:02d}",
            BASE_TIME - 86_400 + n * 0.5,
            f"xo-shared-{n:04d}" if n % 2 else None,
        )
        for n in range(SHARED_POOL)
    ]
    batches: list[list[list[dict[str, Any]]]] = []
    for client in range(CLIENTS):
        own = [
            make_event(
                rng,
                item_ids,
                f"xo-user-{client:02d}-{k % 25:02d}",
                # A millisecond apart: derived ids (microsecond timestamps) never collide.
                BASE_TIME + client * 10_000 + k * 0.001,
                f"xo-{client:02d}-{k:05d}" if rng.random() < 0.5 else None,
            )
            for k in range(BATCHES * OWN_PER_BATCH)
        ]
        mine: list[list[dict[str, Any]]] = []
        for b in range(BATCHES):
            batch = own[b * OWN_PER_BATCH : (b + 1) * OWN_PER_BATCH]
            batch += rng.sample(shared, SHARED_PER_BATCH)
            rng.shuffle(batch)
            mine.append(batch)
        # One batch per client repeats an event inside itself.
        mine[3][1] = dict(mine[3][0])
        batches.append(mine)
    resend: dict[tuple[int, int], str] = {}
    for client, mine in enumerate(batches):
        for b in range(len(mine)):
            if rng.random() < RESEND_SHARE:
                resend[(client, b)] = "race" if rng.random() < 0.5 else "after"
    plan = Plan(batches, resend)
    sent = [event for mine in batches for batch in mine for event in batch]
    for event, eid in zip(sent, effective_ids(sent), strict=True):
        row = (event["user_id"], event["item_id"], event["type"], event["timestamp"])
        assert plan.unique.setdefault(eid, row) == row, f"the plan reuses the id {eid}"
    plan.sent = len(sent)
    return plan


@dataclass
class Tally:
    accepted: int = 0
    duplicates: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, batch: list[dict[str, Any]], response: httpx.Response) -> None:
        with self.lock:
            self.requests += 1
            if response.status_code != 200:
                self.failures.append(f"{response.status_code}: {response.text[:300]}")
                return
            body = response.json()
            if body["accepted"] + body["duplicates"] != len(batch):
                self.failures.append(f"{body} for a batch of {len(batch)}")
            self.accepted += body["accepted"]
            self.duplicates += body["duplicates"]


def run_client(base: str, client: int, plan: Plan, tally: Tally, start: threading.Barrier) -> None:
    rng = random.Random(SEED + client)
    headers = {**bearer(WRITE_KEY), "content-type": "application/json"}
    with httpx.Client(base_url=base, timeout=300) as http, ThreadPoolExecutor(1) as retrier:
        start.wait()
        for b, batch in enumerate(plan.batches[client]):
            body = json.dumps({"events": batch}).encode()
            how = plan.resend.get((client, b))
            if how == "race":
                # The retry goes out while the original is still being handled, as when a
                # client times out on a slow answer and resends at once.
                def again(body: bytes = body, delay: float = rng.uniform(0, 0.02)) -> Any:
                    time.sleep(delay)
                    with httpx.Client(base_url=base, timeout=300) as other:
                        return other.post("/v1/events", content=body, headers=headers)

                retry = retrier.submit(again)
                tally.add(batch, http.post("/v1/events", content=body, headers=headers))
                tally.add(batch, retry.result())
            else:
                tally.add(batch, http.post("/v1/events", content=body, headers=headers))
                if how == "after":
                    tally.add(batch, http.post("/v1/events", content=body, headers=headers))


def stored_events(store: Store) -> dict[str, tuple[str, str, str, float]]:
    columns = [events_table.c[n] for n in ("event_id", "user_id", "item_id", "type", "timestamp")]
    with store.read() as conn:
        rows = conn.execute(select(*columns)).all()
    return {eid: (user, item, kind, float(ts)) for eid, user, item, kind, ts in rows}


@pytest.mark.slow
def test_concurrent_clients_store_every_event_exactly_once(ingest: Ingest) -> None:
    plan = make_plan(ingest.item_ids)
    assert plan.sent == CLIENTS * EVENTS_PER_CLIENT
    tally = Tally()
    start = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(run_client, ingest.service.base, c, plan, tally, start)
            for c in range(CLIENTS)
        ]
        for future in futures:
            future.result()

    assert not tally.failures, tally.failures[:5]
    resent = sum(len(plan.batches[c][b]) for c, b in plan.resend)
    assert tally.requests == CLIENTS * BATCHES + len(plan.resend)
    stored = stored_events(ingest.store)
    # None lost, none doubled (event_id is the primary key, so the count is the set size).
    with ingest.store.read() as conn:
        assert count_events(conn) == len(plan.unique)
    assert set(stored) == set(plan.unique)
    # And each stored event is the one sent under that id, unaltered.
    assert stored == plan.unique
    # Every unique event was accepted by exactly one response; the rest were duplicates.
    assert tally.accepted == len(plan.unique)
    assert tally.duplicates == plan.sent + resent - len(plan.unique)
    assert ingest.service.alive()


# --- a client that disappears mid-body -------------------------------------------------------


def raw_request(base: str, head: bytes, body: bytes, *, wait_for_answer: bool = False) -> bytes:
    """Send ``head`` and ``body`` on a fresh connection, then close it (reading the answer
    first only when asked to)."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + body)
        if not wait_for_answer:
            return b""
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def head_for(length: int | None, *, chunked: bool = False) -> bytes:
    lines = [
        "POST /v1/events HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {WRITE_KEY}",
        "Content-Type: application/json",
    ]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def partial_batch(tag: str, n: int = 200) -> tuple[list[str], bytes]:
    ids = [f"partial-{tag}-{k:04d}" for k in range(n)]
    events = [
        {
            "event_id": eid,
            "user_id": f"partial-user-{k % 7}",
            "item_id": f"partial-item-{k % 11}",
            "type": "like",
            "timestamp": BASE_TIME + k,
        }
        for k, eid in enumerate(ids)
    ]
    return ids, json.dumps({"events": events}).encode()


def present(store: Store, ids: list[str]) -> set[str]:
    with store.read() as conn:
        rows = conn.execute(select(events_table.c.event_id).where(events_table.c.event_id.in_(ids)))
        return {row[0] for row in rows}


@pytest.mark.slow
def finished_event_posts(base: str) -> int:
    """POST /v1/events requests the service has finished, whatever their end (the timing
    middleware observes every request once, in a finally)."""
    text = httpx.get(f"{base}/metrics", headers=bearer(WRITE_KEY), timeout=10).text
    pattern = (
        r'recsys_http_request_duration_seconds_count\{method="POST",'
        r'route="/v1/events",status="\d+"\} (\d+(?:\.\d+)?)'
    )
    return int(sum(float(n) for n in re.findall(pattern, text)))


def test_a_client_dropping_mid_body_leaves_nothing_behind(ingest: Ingest) -> None:
    base, store = ingest.service.base, ingest.store
    finished_before = finished_event_posts(base)
    abandoned: list[str] = []

    # Half the body, with the full length declared; then the connection closes.
    ids, body = partial_batch("half")
    raw_request(base, head_for(len(body)), body[: len(body) // 2])
    abandoned += ids
    # Everything but the last byte.
    ids, body = partial_batch("last-byte")
    raw_request(base, head_for(len(body)), body[:-1])
    abandoned += ids
    # A complete, valid JSON document, but the declared length promises more to come.
    ids, body = partial_batch("overstated")
    raw_request(base, head_for(len(body) + 100), body)
    abandoned += ids
    # Chunked: the whole body in one chunk, but never the terminating zero-length chunk.
    ids, body = partial_batch("chunked")
    raw_request(base, head_for(None, chunked=True), f"{len(body):x}\r\n".encode() + body + b"\r\n")
    abandoned += ids
    # Control: the same kind of request, complete, closed without reading the answer. The
    # server has all of it, so it is stored: the check below can tell the two apart.
    control, body = partial_batch("complete")
    raw_request(base, head_for(len(body)), body)

    # Wait until the service has finished all five requests (the four abandoned ones end
    # when it sees the connection gone), so nothing can still be on its way to the store.
    deadline = time.monotonic() + 60
    while finished_event_posts(base) < finished_before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert finished_event_posts(base) == finished_before + 5
    assert present(store, control) == set(control)
    assert present(store, abandoned) == set()

    # The service is unharmed and a proper retry of an abandoned batch goes through whole.
    ids, body = partial_batch("half")
    answer = raw_request(base, head_for(len(body)), body, wait_for_answer=True)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert present(store, ids) == set(ids)
    assert present(store, [i for i in abandoned if not i.startswith("partial-half-")]) == set()
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    assert ingest.service.alive()
