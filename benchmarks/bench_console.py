"""Server time per web console page, against the library calls each page is built on.

The world is ``bench_feed.py``'s (the demo world at 50k users x 100k items and 2.5M
events by default, imported and trained by the real nightly job; ``--home`` keeps and
reuses it). The app serves in process (``fastapi.testclient``: no network, no browser),
so a page's time is what the server spends: its queries, the feed inspection, the
template. Per page kind, ``--calls`` requests cycle through ``--sample-users`` users with
about ``--seen`` consumed items (the user page) or as many of the most active items (the
item page). Beside each, in the same run, the bare library calls the page makes:

* overview: ``store_counts``, ``events_per_day``, ``recent_type_mix`` (its store reads);
* user: ``Recommender.feed`` for the same user (the page adds every source's list, the
  fatigue and diversity verdicts and the history table);
* item: ``Recommender.similar`` of the four kinds + ``item_events_per_day``;
* models: ``list_runs`` + ``list_versions``.

Goals (issue 16): every page <= 200 ms, the user page <= 300 ms (p50 and p95 printed).

    python benchmarks/bench_console.py --home var/bench-world    # the full world
    python benchmarks/bench_console.py --quick                    # 5k x 10k x 250k
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import describe_machine, load_average, percentiles  # noqa: E402
from benchmarks.bench_feed import (  # noqa: E402
    FULL,
    QUICK,
    add_world_arguments,
    pick_users,
    prepare_world,
    world_home,
)

GOAL_MS = 200.0
GOAL_USER_MS = 300.0


def timed(calls: int, job: Callable[[int], Any]) -> list[float]:
    """Seconds per call of ``job(i)`` for i in 0..calls-1, after 3 warm-up calls."""
    for i in range(3):
        job(i)
    out = []
    for i in range(calls):
        started = time.perf_counter()
        job(i)
        out.append(time.perf_counter() - started)
    return out


def most_active_items(store: Any, want: int) -> list[str]:
    from sqlalchemy import func, select

    from recsys.store.schema import events

    query = (
        select(events.c.item_id)
        .group_by(events.c.item_id)
        .order_by(func.count().desc(), events.c.item_id)
        .limit(want)
    )
    with store.read() as conn:
        return [str(row[0]) for row in conn.execute(query)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser, "5k users, 10k items, 250k events")
    parser.add_argument("--calls", type=int, default=60, help="requests per page kind")
    parser.add_argument("--home", type=Path, default=None, help="keep/reuse the world here")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)

    from fastapi.testclient import TestClient

    from recsys.api import create_app
    from recsys.serving import Recommender
    from recsys.store.events import event_time_range
    from recsys.store.overview import (
        events_per_day,
        item_events_per_day,
        recent_type_mix,
        store_counts,
    )
    from recsys.store.runs import list_runs

    print(describe_machine())
    with world_home(args.home, "bench-console-") as home:
        world = prepare_world(home, seed=args.seed, **sizes)
        # No keys: the service binds to loopback and every page is open (the key check is
        # one constant-time comparison per configured key).
        settings = world.settings.model_copy(update={"api_keys": ""})
        recommender = Recommender.open(world.store, settings, record_impressions=False)
        try:
            users = pick_users(
                world.store, args.seen, args.sample_users, settings.feed.seen_view_seconds
            )
            items = most_active_items(world.store, args.sample_users)
            if not users:
                raise SystemExit(f"no user has about {args.seen} consumed items")
            print(
                f"data: {world.description}; {len(users)} users with about {args.seen} "
                f"consumed items, the {len(items)} most active items; {args.calls} requests "
                f"per page kind; load avg {load_average()}"
            )
            app = create_app(settings, recommender, refresh_interval=3600)
            rows: list[tuple[str, list[float], list[float], str]] = []
            with TestClient(app) as client:

                def page(path_of: Callable[[int], str]) -> Callable[[int], Any]:
                    def get(i: int) -> None:
                        response = client.get(path_of(i))
                        if response.status_code != 200:
                            raise SystemExit(f"{path_of(i)}: {response.status_code}")

                    return get

                def overview_bare(_: int) -> None:
                    with recommender.store.read() as conn:
                        store_counts(conn)
                        newest = event_time_range(conn)[1] or time.time()
                        days = [newest - 86_400 * back for back in range(30)]
                        events_per_day(conn, days)
                        recent_type_mix(conn)

                def item_bare(i: int) -> None:
                    item = items[i % len(items)]
                    for kind in ("content", "behavioural", "blend", "item2item"):
                        recommender.similar(item, kind, 10)  # type: ignore[arg-type]
                    with recommender.store.read() as conn:
                        item_events_per_day(conn, item)

                def models_bare(_: int) -> None:
                    with recommender.store.read() as conn:
                        list_runs(conn, limit=50)
                    recommender.vectors.list_versions()

                quote = urllib.parse.quote
                kinds: list[tuple[str, Callable[[int], str], Callable[[int], Any], str]] = [
                    ("overview /ui", lambda i: "/ui", overview_bare, "its store reads"),
                    (
                        "user /ui/users/{id}",
                        lambda i: f"/ui/users/{quote(users[i % len(users)], safe='')}",
                        lambda i: recommender.feed(users[i % len(users)], limit=20),
                        "Recommender.feed",
                    ),
                    (
                        "item /ui/items/{id}",
                        lambda i: f"/ui/items/{quote(items[i % len(items)], safe='')}",
                        item_bare,
                        "4 x similar + 1 read",
                    ),
                    ("models /ui/models", lambda i: "/ui/models", models_bare, "2 reads"),
                    ("reports /ui/reports", lambda i: "/ui/reports", lambda i: None, "none"),
                ]
                for name, path_of, bare, what in kinds:
                    # Interleaved halves: the page, then its bare calls, twice over.
                    half = max(args.calls // 2, 1)
                    page_times = timed(half, page(path_of))
                    bare_times = timed(half, bare)
                    page_times += timed(half, lambda i, p=path_of, h=half: page(p)(i + h))
                    bare_times += timed(half, lambda i, b=bare, h=half: b(i + h))
                    rows.append((name, page_times, bare_times, what))
        finally:
            recommender.close()
            world.store.dispose()

    print(
        f"\n  {'page':<22}{'p50 ms':>9}{'p95 ms':>9}{'bare p50':>10}{'page/bare':>10}  "
        f"{'goal':<16}bare = the library calls it makes"
    )
    for name, page_times, bare_times, what in rows:
        p = percentiles(page_times)
        b = statistics.median(bare_times)
        goal = GOAL_USER_MS if name.startswith("user") else GOAL_MS
        met = p["p95"] * 1e3 <= goal
        ratio = f"{p['p50'] / b:.1f}x" if b > 1e-6 else "-"
        print(
            f"  {name:<22}{p['p50'] * 1e3:>9.1f}{p['p95'] * 1e3:>9.1f}{b * 1e3:>10.1f}"
            f"{ratio:>10}  {f'<= {goal:g} ms: ' + ('met' if met else 'MISSED'):<16}{what}"
        )
    print(f"load avg after: {load_average()}")


if __name__ == "__main__":
    main()
