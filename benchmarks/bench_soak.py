"""Soak: a steady mix of feed reads and event writes against the real service, over loopback.

Builds the demo world (``--scale``, default 1: 1,000 users, 2,000 items, 100,000 events),
imports and trains it, starts ``recsys.api.serve`` with ``--workers`` processes (default one
per core) in a process tree of its own, then sends ``--rate`` requests a second for
``--seconds`` seconds: 80 % feed pages of random users (some of them new), 20 % batches of
``--batch`` events. Arrivals follow a fixed schedule (an open loop): a slow answer does not
slow the offered load down, up to ``--concurrency`` requests in flight.

It prints the machine, the data size, the achieved rate, the errors (any non-200 answer, any
transport error, any degraded feed: there must be none), p50/p95/p99 latency per kind, and
each worker's resident memory (VmRSS) at the start of the load and at its end, with the
growth (the goal is at most 10 % per worker). Before the service starts, the same run times two
baselines on the same world: the bare filtered Qdrant Edge top-20 query (as in
``bench_feed.py``) and ``Recommender.feed`` in process, one caller; each latency row shows
its p50 against both.

    python benchmarks/bench_soak.py                   # 60 s at 200 requests/s, scale 1
    python benchmarks/bench_soak.py --quick           # 15 s, scale 0.3
    python benchmarks/bench_soak.py --seconds 300 --rate 300
    python benchmarks/bench_soak.py --workers 1

It also counts the items in the feed answers received and, once the service has stopped,
the impressions stored: every item shown must be exactly one impression.

The exit status is non-zero when any request failed or an impression is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from benchmarks._load import rss_kib, tree_cpu, worker_pids  # noqa: E402
from benchmarks._machine import describe_machine, load_average, percentiles  # noqa: E402

WRITE_KEY = "bench-soak-write-key-6f1d2c9a"
FEED_SHARE = 0.8
NEW_USER_SHARE = 0.05
EVENT_TYPES = ("like", "skip", "view", "dislike", "play")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_world(home: Path, seed: int, scale: float) -> dict[str, float]:
    """Demo world -> import -> train, through the real pipelines; the sizes and timings."""
    from pipelines.demo_world import generate_world
    from pipelines.ingest import import_frames
    from pipelines.train import train
    from recsys.config import Settings
    from recsys.store import open_store

    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    store = open_store(settings)
    started = time.perf_counter()
    world = generate_world(seed=seed, scale=scale)
    import_frames(store, settings, world.items, world.iter_events())
    imported = time.perf_counter()
    result = train(store, settings, force=True)
    trained = time.perf_counter()
    store.dispose()
    return {
        "items": float(len(world.items)),
        "users": float(result.data_stats["users"]),
        "events": float(result.data_stats["events"]),
        "import_s": imported - started,
        "train_s": trained - imported,
    }


def count_rows(home: Path) -> dict[str, int]:
    from sqlalchemy import func, select

    from recsys.config import Settings
    from recsys.store import open_store
    from recsys.store.schema import events, impressions, items, users

    store = open_store(Settings(home=home, _env_file=None))  # type: ignore[call-arg]
    try:
        with store.read() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in (
                    ("items", items),
                    ("users", users),
                    ("events", events),
                    ("impressions", impressions),
                )
            }
    finally:
        store.dispose()


def start_service(
    home: Path, workdir: Path, workers: int
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_HOME=str(home),
        RECSYS_API_KEYS=f"{WRITE_KEY}:write",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    log = workdir / "service.log"
    code = (
        f"from recsys.api import serve; serve(port={port}, log_level='warning', workers={workers})"
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=workdir, env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    ready: set[int] = set()
    while True:
        try:
            answer = httpx.get(f"{base}/readyz", timeout=2)
            if answer.status_code == 200:
                # Each worker answers for itself: wait until every one has.
                ready.add(int(answer.json()["worker"]))
                if len(ready) == workers:
                    return process, base, log
                continue
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the service did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_service(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Results:
    latency: dict[str, list[float]] = field(default_factory=lambda: {"feed": [], "events": []})
    errors: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    late: int = 0  # requests that left more than 100 ms after their scheduled time
    unsent: int = 0  # requests still waiting for a free slot when the time was up
    events_accepted: int = 0
    # Items in the feed answers received: each must become exactly one stored impression.
    items_served: int = 0


class Traffic:
    """Requests drawn from the world's own users and items, plus some new users."""

    def __init__(self, seed: int, users: list[str], items: list[str], batch: int) -> None:
        self.rng = random.Random(seed)
        self.users = users
        self.items = items
        self.batch = batch
        self.counter = 0

    def user(self) -> str:
        if self.rng.random() < NEW_USER_SHARE:
            return f"soak-new-user-{self.rng.randrange(10_000):05d}"
        return self.rng.choice(self.users)

    def feed_path(self) -> str:
        return f"/v1/users/{self.user()}/feed?limit=20"

    def events(self) -> dict[str, object]:
        now = time.time()
        batch = []
        for _ in range(self.batch):
            self.counter += 1
            kind = self.rng.choice(EVENT_TYPES)
            event: dict[str, object] = {
                "user_id": self.user(),
                "item_id": self.rng.choice(self.items),
                "type": kind,
                "timestamp": now - self.rng.uniform(0, 60),
            }
            if kind == "view":
                event["dwell_seconds"] = round(self.rng.uniform(0, 300), 1)
            if self.counter % 2:
                event["event_id"] = f"soak-{self.counter:09d}"
            batch.append(event)
        return {"events": batch}


async def one(http: httpx.AsyncClient, kind: str, traffic: Traffic, results: Results) -> None:
    started = time.perf_counter()
    try:
        if kind == "feed":
            response = await http.get(traffic.feed_path())
        else:
            response = await http.post("/v1/events", json=traffic.events())
    except httpx.HTTPError as exc:
        results.errors[f"{kind}: {type(exc).__name__}"] += 1
        return
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        results.errors[f"{kind}: HTTP {response.status_code}"] += 1
        return
    body = response.json()
    if kind == "feed" and (body.get("degraded") or not body.get("items")):
        results.errors["feed: degraded or empty"] += 1
        return
    if kind == "events":
        results.events_accepted += int(body["accepted"])
    else:
        results.items_served += len(body["items"])
    results.latency[kind].append(elapsed)


async def soak(
    base: str,
    seconds: float,
    rate: float,
    concurrency: int,
    traffic: Traffic,
    pid: int,
    rss_samples: list[tuple[float, int]],
) -> tuple[Results, float]:
    results = Results()
    # Idle connections expire before uvicorn's 5 s keep-alive timeout closes them: reusing
    # one the server is closing at that moment would be reset, a race of the client's own.
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0
    )
    headers = {"Authorization": f"Bearer {WRITE_KEY}"}
    gate = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as http:

        async def run(kind: str) -> None:
            try:
                await one(http, kind, traffic, results)
            finally:
                gate.release()

        started = time.perf_counter()
        total = int(seconds * rate)
        next_sample = 0.0
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            if time.perf_counter() - started >= seconds:
                # Out of time: what is left was offered but never sent (all slots were busy).
                gate.release()
                results.unsent = total - n
                break
            if time.perf_counter() - due > 0.1:
                results.late += 1
            kind = "feed" if traffic.rng.random() < FEED_SHARE else "events"
            results.sent[kind] += 1
            task = asyncio.create_task(run(kind))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            now = time.perf_counter() - started
            if now >= next_sample:
                rss_samples.append((now, sum(rss_kib(w) for w in worker_pids(pid))))
                next_sample += 5.0
        if tasks:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return results, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="length of the load (60)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (200)")
    parser.add_argument("--scale", type=float, default=None, help="demo world scale (1)")
    parser.add_argument("--batch", type=int, default=50, help="events per write batch (50)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (64)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="15 s over a scale 0.3 world")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="serving processes (cores)"
    )
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (15.0 if args.quick else 60.0)
    scale = args.scale if args.scale is not None else (0.3 if args.quick else 1.0)

    print(describe_machine())
    print(
        f"load     : {seconds:.0f} s at {args.rate:.0f} requests/s offered, "
        f"{FEED_SHARE:.0%} feeds / {1 - FEED_SHARE:.0%} batches of {args.batch} events, "
        f"up to {args.concurrency} in flight, over loopback, {args.workers} worker(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        root = Path(tmp)
        home = root / "home"
        built = build_world(home, args.seed, scale)
        print(
            f"data     : demo world scale {scale:g}: {built['items']:.0f} items, "
            f"{built['users']:.0f} users, {built['events']:.0f} events "
            f"(import {built['import_s']:.1f} s, train {built['train_s']:.1f} s)",
            flush=True,
        )
        from recsys.store import open_store  # noqa: F401  (warm the import for count_rows)

        baseline = in_process_baseline(home, built)
        # After the baseline: its in-process feeds record impressions too.
        rows = count_rows(home)
        print(
            f"baseline : bare EdgeShard.query top-20 p50 {baseline['bare p50'] * 1e3:.3f} ms; "
            f"in-process Recommender.feed p50 {baseline['feed p50'] * 1e3:.3f} ms "
            f"({baseline['users']:.0f} users, same world, before the service starts)",
            flush=True,
        )
        process, base, service_log = start_service(home, root, args.workers)
        try:
            users = [f"demo-user-{n:04d}" for n in range(1, int(built["users"]) + 1)]
            items = [f"demo-item-{n:05d}" for n in range(1, int(built["items"]) + 1)]
            traffic = Traffic(args.seed, users, items, args.batch)
            workers = worker_pids(process.pid)
            ready_rss = {pid: rss_kib(pid) for pid in workers}
            # Warm-up: first requests build caches a steady state already has.
            warm_items = 0
            with httpx.Client(base_url=base, timeout=60) as http:
                for user in users[:50]:
                    warm = http.get(
                        f"/v1/users/{user}/feed",
                        headers={"Authorization": f"Bearer {WRITE_KEY}"},
                    )
                    warm.raise_for_status()
                    warm_items += len(warm.json()["items"])
            start_rss = {pid: rss_kib(pid) for pid in workers}
            samples: list[tuple[float, int]] = []
            cpu_before = os.times()
            results, elapsed = asyncio.run(
                soak(base, seconds, args.rate, args.concurrency, traffic, process.pid, samples)
            )
            end_rss = {pid: rss_kib(pid) for pid in workers}
            service_cpu = sum(tree_cpu(process.pid).values())
            alive = process.poll() is None
        finally:
            stop_service(process)
        client_cpu = sum(os.times()[:2]) - sum(cpu_before[:2])
        after = count_rows(home)
        log_tail = service_log.read_text(errors="replace").splitlines()[-40:]

    done = sum(len(v) for v in results.latency.values())
    failed = sum(results.errors.values())
    sent = sum(results.sent.values())
    print(
        f"store    : {rows['events']} events before, {after['events']} after "
        f"({results.events_accepted} accepted during the run)"
    )
    print(
        f"rate     : {done / elapsed:.1f} requests/s answered OK over {elapsed:.1f} s "
        f"({done} of {sent} sent; {results.unsent} of the offered never sent for want of a "
        f"free slot, {results.late} sent >100 ms late)"
    )
    print(f"errors   : {failed}" + (f" {dict(results.errors)}" if failed else ""))
    served = warm_items + results.items_served
    stored = after["impressions"] - rows["impressions"]
    # A request that failed in transport may have been served without the client knowing.
    kept = stored == served if not failed else stored >= served
    print(
        f"shown    : {served} items in the feed answers received (warm-up included), "
        f"{stored} impressions stored after the service stopped: "
        f"{'all kept' if kept else 'MISMATCH'}"
    )
    if failed or not alive:
        print("service log (last lines):\n  " + "\n  ".join(log_tail))
    for kind in ("feed", "events"):
        p = percentiles(results.latency[kind])
        print(
            f"{kind:<9}: {len(results.latency[kind]):6d} OK   p50 {p['p50'] * 1e3:7.1f} ms   "
            f"p95 {p['p95'] * 1e3:7.1f} ms   p99 {p['p99'] * 1e3:7.1f} ms   "
            f"p50 {p['p50'] / baseline['bare p50']:.0f}x bare query, "
            f"{p['p50'] / baseline['feed p50']:.1f}x in-process feed"
        )
    growths = {}
    for pid in start_rss:
        growths[pid] = (end_rss[pid] - start_rss[pid]) / start_rss[pid] * 100
        print(
            f"rss      : worker {pid}: {start_rss[pid] / 1024:.1f} MiB at the start of the load "
            f"({ready_rss[pid] / 1024:.1f} MiB when ready), {end_rss[pid] / 1024:.1f} MiB at "
            f"the end: {growths[pid]:+.1f} % (goal <= 10 %)"
        )
    growth = max(growths.values())
    trend = ", ".join(f"{t:.0f}s {kib / 1024:.0f}" for t, kib in samples)
    print(f"rss MiB  : all workers together: {trend}")
    print(
        f"cpu      : service {service_cpu:.1f} s, load generator {client_cpu:.1f} s; "
        f"load avg at the end {load_average()}"
    )
    verdicts = [
        f"rate {'met' if done / elapsed >= 0.98 * args.rate else 'NOT met'}",
        f"errors {'none' if not failed else 'PRESENT'}",
        f"rss growth {'within' if growth <= 10 else 'ABOVE'} 10 % in every worker",
        "service alive" if alive else "service DIED",
        f"impressions {'all kept' if kept else 'MISMATCH'}",
    ]
    print("verdict  : " + ", ".join(verdicts))
    print(
        json.dumps(
            {
                "rate": done / elapsed,
                "errors": failed,
                "rss_growth_pct": growth,
                "items_served": served,
                "impressions_stored": stored,
            }
        )
    )
    return 1 if failed or not alive or not kept else 0


def in_process_baseline(home: Path, built: dict[str, float], calls: int = 300) -> dict[str, float]:
    """The bare filtered top-20 Edge query and the in-process feed, on this world's live
    version, for the first users that have stored vectors (then everything is closed: the
    service opens the shard next, and a shard opens in one process at a time)."""
    import statistics

    from benchmarks.bench_feed import bare_latencies, live_index, probes
    from recsys.config import Settings
    from recsys.serving import Recommender
    from recsys.store import open_store

    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    store = open_store(settings)
    recommender = Recommender.open(store, settings)
    try:
        users = probes(recommender, [f"demo-user-{n:04d}" for n in range(1, 101)])
        bare = bare_latencies(live_index(recommender), users, calls)
        feed = []
        for q in range(calls + 20):
            started = time.perf_counter()
            recommender.feed(users[q % len(users)].user_id, limit=20)
            if q >= 20:
                feed.append(time.perf_counter() - started)
    finally:
        recommender.close()
        store.dispose()
    return {
        "bare p50": statistics.median(bare),
        "feed p50": statistics.median(feed),
        "users": float(len(users)),
    }


if __name__ == "__main__":
    sys.exit(main())
