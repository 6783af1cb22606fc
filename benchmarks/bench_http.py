"""The HTTP service under load: feeds and event batches through uvicorn, against bare Qdrant Edge.

Same world as ``bench_feed.py`` (demo world, 50k users x 100k items, 2.5M events, trained by
the real nightly job; ``--home`` keeps and reuses it). In one run:

1. in this process, on the live version: the bare filtered top-20 ``EdgeShard.query``
   (the measured users' vectors, their ~200 consumed ids excluded) and ``Recommender.feed``
   called one at a time; then everything is closed, since an Edge shard may be open in one
   process at a time;
2. the service, ``recsys.api.serve`` in a subprocess on a free loopback port with API keys
   set (read key for feeds, write key for events), and against it:

   a. ``GET /v1/users/{id}/feed?limit=20`` from ``--clients`` concurrent keep-alive clients
      (asyncio + one ``httpx.AsyncClient``), cycling over the same users: latency as the
      client sees it (p50/p95/p99) and feeds/s over the whole run;
   b. ``POST /v1/events`` with batches of ``--batch`` new events (unique ids, existing users
      and items, views/likes/skips), from one client and from ``--event-clients``: batch
      latency and events/s;

3. the service stopped, the bare query again (the bare column is the median of both), and
   the posted events deleted, so a kept world stays as trained.

Every row shows its p50 next to the bare query's p50 and the ratio. The load generator
shares the machine's cores with the server, so each row also shows the CPU seconds each
side used and the server's CPU per request; read the rates with the load average printed
beside them (which counts the server's own busy threads too).

    python benchmarks/bench_http.py                       # full world, 32 clients
    python benchmarks/bench_http.py --quick               # 5k users, 10k items, shorter runs
    python benchmarks/bench_http.py --home var/bench-world --clients 32 --requests 3000
    python benchmarks/bench_http.py --home var/bench-world --server-env OPENBLAS_NUM_THREADS=1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import describe_machine, load_average, percentiles  # noqa: E402
from benchmarks.bench_feed import (  # noqa: E402
    FULL,
    QUICK,
    Probe,
    add_world_arguments,
    bare_latencies,
    live_index,
    measured_users,
    prepare_world,
    world_home,
)

GOAL_FEED_P99_MS = 30.0
GOAL_FEEDS_PER_SECOND = 300.0
GOAL_EVENTS_PER_SECOND = 5_000.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Load:
    """One load phase as the client saw it."""

    name: str
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    units: int = 0  # feeds or events completed
    errors: int = 0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    load: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.units / self.wall if self.wall else 0.0

    def ms(self) -> dict[str, float]:
        return {k: v * 1e3 for k, v in percentiles(self.latencies).items()}


# --- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @property
    def cpu(self) -> float:
        return process_cpu(self.process.pid)


SERVE = (
    "import sys; from recsys.api import serve; "
    "serve(host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')"
)


@contextlib.contextmanager
def running_server(
    home: Path, keys: str, timeout: float, extra_env: dict[str, str]
) -> Iterator[Server]:
    import httpx

    home = home.resolve()  # the server runs with home as its working directory
    port = free_port()
    log = home / f"bench-http-server-{port}.log"
    env = {**os.environ, **extra_env, "RECSYS_HOME": str(home), "RECSYS_API_KEYS": keys}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port)],
            cwd=home,  # no stray .env from the caller's directory
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        started = time.perf_counter()
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited ({process.returncode}):\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200:
                    break
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"the server was not ready in {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)
        print(f"server: ready in {time.perf_counter() - started:.1f} s on {server.base_url}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- load phases ----------------------------------------------------------------------------


async def _drive(
    base_url: str,
    key: str,
    clients: int,
    jobs: list[tuple[str, str, Any]],
    warmup: int,
    load: Load,
    server_cpu: Callable[[], float],
) -> list[Any]:
    """Run ``jobs`` (method, path, json) from ``clients`` concurrent workers after ``warmup``
    of them; fill ``load`` with the timed part (latencies, wall, CPU of both sides) and
    return the decoded answers of the timed part."""
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120.0
    ) as client:

        async def call(method: str, path: str, body: Any) -> tuple[float, Any]:
            t0 = time.perf_counter()
            response = await client.request(method, path, json=body)
            elapsed = time.perf_counter() - t0
            return elapsed, (response.status_code, response.json())

        async def run(batch: list[tuple[str, str, Any]]) -> list[tuple[float, Any]]:
            queue = iter(batch)
            out: list[tuple[float, Any]] = []

            async def worker() -> None:
                for method, path, body in queue:
                    out.append(await call(method, path, body))

            await asyncio.gather(*(worker() for _ in range(clients)))
            return out

        await run(jobs[:warmup])
        cpu_client, cpu_server = time.process_time(), server_cpu()
        started = time.perf_counter()
        timed = await run(jobs[warmup:])
        load.wall = time.perf_counter() - started
        load.client_cpu = time.process_time() - cpu_client
        load.server_cpu = server_cpu() - cpu_server
    load.latencies = [t for t, _ in timed]
    load.load = load_average()
    return [answer for _, answer in timed]


def feed_load(server: Server, key: str, users: list[Probe], clients: int, requests: int) -> Load:
    warmup = 2 * clients
    jobs = [
        ("GET", f"/v1/users/{quote(users[i % len(users)].user_id, safe='')}/feed?limit=20", None)
        for i in range(warmup + requests)
    ]
    load = Load(f"HTTP feed, {clients} clients")
    answers = asyncio.run(
        _drive(server.base_url, key, clients, jobs, warmup, load, lambda: server.cpu)
    )
    ok = [body for status, body in answers if status == 200]
    load.units = len(ok)
    load.errors = len(answers) - len(ok)
    degraded = sum(bool(body.get("degraded")) for body in ok)
    short = sum(len(body.get("items", [])) < 20 for body in ok)
    load.notes.append(f"{load.errors} errors, {degraded} degraded, {short} short pages")
    return load


def event_batches(n_batches: int, batch: int, users: int, items: int, tag: str) -> list[Any]:
    import numpy as np

    from pipelines.demo_world import WORLD_END, item_id, user_id

    rng = np.random.default_rng(7)
    bodies = []
    for b in range(n_batches):
        kinds = rng.choice(["view", "like", "skip"], size=batch, p=[0.6, 0.15, 0.25])
        who = rng.integers(1, users + 1, size=batch)
        what = rng.integers(1, items + 1, size=batch)
        dwell = np.round(rng.lognormal(3.0, 1.0, size=batch), 1)
        events = []
        for i in range(batch):
            event: dict[str, Any] = {
                "event_id": f"bench-{tag}-{b}-{i}",
                "user_id": user_id(int(who[i])),
                "item_id": item_id(int(what[i])),
                "type": str(kinds[i]),
                "timestamp": WORLD_END + 60.0 + b * batch + i,
            }
            if kinds[i] == "view":
                event["dwell_seconds"] = float(dwell[i])
            events.append(event)
        bodies.append({"events": events})
    return bodies


def events_load(
    server: Server, key: str, clients: int, bodies: list[Any], batch: int, warmup: int
) -> Load:
    jobs = [("POST", "/v1/events", body) for body in bodies]
    load = Load(f"HTTP events, {clients} client{'s' if clients > 1 else ''}, {batch}/batch")
    answers = asyncio.run(
        _drive(server.base_url, key, clients, jobs, warmup, load, lambda: server.cpu)
    )
    accepted = sum(body.get("accepted", 0) for status, body in answers if status == 200)
    duplicates = sum(body.get("duplicates", 0) for status, body in answers if status == 200)
    load.units = accepted
    load.errors = sum(status != 200 for status, _ in answers)
    load.notes.append(f"{load.errors} errors, {accepted:,} accepted, {duplicates} duplicates")
    return load


def remove_events(store: Any, prefix: str) -> int:
    from sqlalchemy import delete

    from recsys.store.schema import events

    with store.transaction() as conn:
        return int(
            conn.execute(delete(events).where(events.c.event_id.startswith(prefix))).rowcount
        )


# --- main --------------------------------------------------------------------------------------


def in_process(world: Any, args: argparse.Namespace) -> tuple[list[Probe], list[float], Load]:
    """Phase 1: pick the users, time the bare query and the in-process feed, close all."""
    from recsys.serving import Recommender

    recommender = Recommender.open(world.store, world.settings)
    try:
        users = measured_users(recommender, world, args.seen, args.sample_users)
        bare = bare_latencies(live_index(recommender), users, args.bare_calls)
        feed = Load("in-process Recommender.feed, 1 caller")
        cpu = 0.0
        for q in range(args.feed_calls + 20):
            if q == 20:
                cpu = time.process_time()
            t0 = time.perf_counter()
            recommender.feed(users[q % len(users)].user_id, limit=20)
            if q >= 20:
                feed.latencies.append(time.perf_counter() - t0)
        feed.client_cpu = time.process_time() - cpu
        feed.wall, feed.units, feed.load = sum(feed.latencies), len(feed.latencies), load_average()
        return users, bare, feed
    finally:
        recommender.close()


def bare_again(world: Any, users: list[Probe], calls: int) -> list[float]:
    """Phase 3: the bare query on the same version, opened afresh."""
    from recsys.vectors import open_vector_store

    vectors = open_vector_store(world.settings)
    live = vectors.live_version()
    assert live is not None
    index = vectors.open_version(live)
    try:
        return bare_latencies(index, users, calls)
    finally:
        index.close()
        vectors.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser, "5k users, 10k items, short runs")
    parser.add_argument("--clients", type=int, default=32, help="concurrent feed clients")
    parser.add_argument("--requests", type=int, default=None, help="timed feeds (2000; 400)")
    parser.add_argument("--batch", type=int, default=500, help="events per POST")
    parser.add_argument("--event-batches", type=int, default=None, help="per row (60; 20)")
    parser.add_argument("--event-clients", type=int, default=4, help="for the concurrent row")
    parser.add_argument("--bare-calls", type=int, default=None, help="bare queries (500; 200)")
    parser.add_argument("--feed-calls", type=int, default=None, help="in-process feeds (200; 100)")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (a what-if, e.g. OPENBLAS_NUM_THREADS=1)",
    )
    parser.add_argument("--home", type=Path, default=None, help="keep/reuse the world here")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    args.requests = args.requests or (400 if args.quick else 2000)
    args.event_batches = args.event_batches or (20 if args.quick else 60)
    args.bare_calls = args.bare_calls or (200 if args.quick else 500)
    args.feed_calls = args.feed_calls or (100 if args.quick else 200)

    print(describe_machine())
    read_key, write_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    keys = f"{read_key}:read,{write_key}:write"
    with world_home(args.home, "bench-http-") as home:
        world = prepare_world(home, seed=args.seed, **sizes)
        users, bare_before, feed_in_process = in_process(world, args)
        world.store.dispose()

        rows: list[Load] = [feed_in_process]
        extra_env = dict(item.split("=", 1) for item in args.server_env)
        if extra_env:
            print("server environment: " + " ".join(f"{k}={v}" for k, v in extra_env.items()))
        with running_server(home, keys, args.ready_timeout, extra_env) as server:
            print(
                f"feed load: {args.requests} timed requests from {args.clients} clients "
                f"(after {2 * args.clients} warm-up); load avg {load_average()}"
            )
            rows.append(feed_load(server, read_key, users, args.clients, args.requests))
            tag = secrets.token_hex(4)
            for clients in (1, args.event_clients):
                warmup = 2 * clients
                bodies = event_batches(
                    warmup + args.event_batches,
                    args.batch,
                    sizes["users"],
                    sizes["items"],
                    f"{tag}-{clients}",
                )
                print(
                    f"event load: {args.event_batches} timed batches of {args.batch} from "
                    f"{clients} client(s) (after {warmup} warm-up); load avg {load_average()}"
                )
                rows.append(events_load(server, write_key, clients, bodies, args.batch, warmup))
        bare_after = bare_again(world, users, args.bare_calls)
        removed = remove_events(world.store, f"bench-{tag}-")
        print(f"removed the {removed:,} events this run posted, so the world stays as trained")
        world.store.dispose()

    before = {k: v * 1e3 for k, v in percentiles(bare_before).items()}
    after = {k: v * 1e3 for k, v in percentiles(bare_after).items()}
    bare = {k: statistics.median([before[k], after[k]]) for k in before}
    print(
        f"\nbare EdgeShard.query top-20, 200-ish ids excluded, one caller (ms): "
        f"before p50 {before['p50']:.3f} p99 {before['p99']:.3f}; "
        f"after p50 {after['p50']:.3f} p99 {after['p99']:.3f}; "
        f"used: p50 {bare['p50']:.3f} p99 {bare['p99']:.3f} "
        f"(= {1e3 / bare['p50']:,.0f} queries/s on one core)"
    )
    print(
        f"\n  {'what':<40}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'rate':>18}"
        f"{'bare p50':>10}{'p50/bare':>10}{'CPU client/server s':>22}{'CPU ms/req':>12}"
        "  load avg"
    )
    for row in rows:
        p = row.ms()
        unit = "feeds/s" if "feed" in row.name else "events/s"
        server_cpu = f"{row.server_cpu:.1f}" if row.server_cpu else "-"
        cpu = f"{row.client_cpu:.1f} / {server_cpu} in {row.wall:.1f}"
        per_request = 1e3 * (row.server_cpu or row.client_cpu) / max(len(row.latencies), 1)
        print(
            f"  {row.name:<40}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}"
            f"{row.rate:>10,.0f} {unit:<7}{bare['p50']:>10.3f}{p['p50'] / bare['p50']:>9.0f}x"
            f"{cpu:>22}{per_request:>12.1f}  {row.load}"
        )
    for row in rows:
        if row.notes:
            print(f"  {row.name}: {'; '.join(row.notes)}")

    print(
        "  (CPU ms/req: the server's CPU per request, all threads, or this process's for the "
        "in-process row)"
    )
    feed = rows[1]
    best_events = max(rows[2:], key=lambda r: r.rate)
    if feed.server_cpu and feed.units:
        per_feed = 1e3 * feed.server_cpu / len(feed.latencies)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        print(
            f"  at {per_feed:.1f} ms of server CPU per feed, {cores} free core(s) would serve at "
            f"most about {cores * 1e3 / per_feed:,.0f} feeds/s (one core: {1e3 / per_feed:,.0f})"
        )
    print(
        f"\nHTTP feed / in-process feed p50: {feed.ms()['p50'] / feed_in_process.ms()['p50']:.1f}x "
        f"({args.clients} concurrent clients against one worker process)"
    )
    for goal, ok, got in (
        (
            f"feed p99 <= {GOAL_FEED_P99_MS:g} ms",
            feed.ms()["p99"] <= GOAL_FEED_P99_MS,
            f"{feed.ms()['p99']:.1f} ms",
        ),
        (
            f">= {GOAL_FEEDS_PER_SECOND:g} feeds/s",
            feed.rate >= GOAL_FEEDS_PER_SECOND,
            f"{feed.rate:,.0f} feeds/s",
        ),
        (
            f">= {GOAL_EVENTS_PER_SECOND:,.0f} events/s",
            best_events.rate >= GOAL_EVENTS_PER_SECOND,
            f"{best_events.rate:,.0f} events/s, {best_events.name}",
        ),
    ):
        print(f"goal {goal}: {'met' if ok else 'MISSED'} ({got})")


if __name__ == "__main__":
    main()
