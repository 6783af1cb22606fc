"""Vector index benchmark: EdgeIndex against bare qdrant_edge calls on the same shard.

Measures, for N items x D dims (default 100k x 64, the ``als`` vector):

* upsert throughput through ``EdgeIndex.upsert_items`` and through bare ``EdgeShard.update``
  (same points, ids precomputed for the bare run), median of ``--repeats`` fresh shards;
* ``optimize()`` time (HNSW build);
* filtered top-20 latency p50/p95/p99 through ``EdgeIndex.search`` and through a bare
  ``EdgeShard.query`` with the same filter, interleaved query by query on the same shard;
  each percentile is the median over ``--repeats`` rounds. The ratio is wrapper / bare.

Every figure depends on the machine and on what else runs on it: the machine and its load
average are printed first and last.

    python benchmarks/bench_vectors.py                 # 100k x 64, 3 rounds
    python benchmarks/bench_vectors.py --quick         # 10k x 64, a smoke run
    python benchmarks/bench_vectors.py --items 1000000 --dim 128
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import (  # noqa: E402
    describe_machine,
    load_average,
    package_version,
    percentiles,
)
from recsys.vectors import ItemFilter  # noqa: E402
from recsys.vectors.base import point_id  # noqa: E402
from recsys.vectors.edge import EdgeIndex  # noqa: E402

N_CATEGORIES = 20
N_TAGS = 50
T0 = 1_700_000_000.0
YEAR = 365 * 86_400.0


def make_data(n: int, dim: int, seed: int) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    ids = [f"item-{i}" for i in range(n)]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    cats = rng.integers(N_CATEGORIES, size=n)
    created = T0 + rng.uniform(0, YEAR, size=n)
    popularity = rng.exponential(10.0, size=n)
    tag_picks = rng.integers(N_TAGS, size=(n, 3))
    payloads = [
        {
            "category": f"cat-{cats[i]}",
            "tags": sorted({f"tag-{t}" for t in tag_picks[i]}),
            "created_at": float(created[i]),
            "popularity": float(popularity[i]),
        }
        for i in range(n)
    ]
    return ids, vectors, payloads


def bare_points(
    ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]], start: int, stop: int
) -> list[qe.Point]:
    rows = vectors[start:stop].tolist()
    return [qe.Point(ids[i], {"als": rows[i - start]}, payloads[i]) for i in range(start, stop)]


def upsert_rates(
    workdir: Path,
    ids: list[str],
    vectors: np.ndarray,
    payloads: list[dict[str, Any]],
    batch: int,
    repeats: int,
) -> tuple[float, float, EdgeIndex]:
    """Median points/s through EdgeIndex and bare; returns the last EdgeIndex, kept open."""
    n, dim = vectors.shape
    wrapped: list[float] = []
    bare: list[float] = []
    point_ids = [point_id.__wrapped__(i) for i in ids]  # without filling the id cache
    bare_payloads = [{"item_id": i, **p} for i, p in zip(ids, payloads, strict=True)]
    index: EdgeIndex | None = None
    for r in range(repeats):
        if index is not None:
            index.close()
        index = EdgeIndex.create(workdir / f"wrapped-{r}", {"als": dim})
        point_id.cache_clear()  # a bulk load meets ids it has not seen
        t0 = time.perf_counter()
        index.upsert_items(ids, {"als": vectors}, payloads, batch_size=batch)
        wrapped.append(n / (time.perf_counter() - t0))

        shard = EdgeIndex.create(workdir / f"bare-{r}", {"als": dim})
        raw = shard.items_shard
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            points = bare_points(point_ids, vectors, bare_payloads, start, stop)
            raw.update(qe.UpdateOperation.upsert_points(points))
        bare.append(n / (time.perf_counter() - t0))
        shard.close()
        shutil.rmtree(workdir / f"bare-{r}")
        print(f"  round {r + 1}: EdgeIndex {wrapped[-1]:,.0f} pts/s, bare {bare[-1]:,.0f} pts/s")
    assert index is not None
    return statistics.median(wrapped), statistics.median(bare), index


FILTER_KINDS = {
    "category": "1 of 20 categories (~5%)",
    "tags+recent": "any of 3 of 50 tags, created in the last half year (~6%)",
    "feed": "4 of 20 categories, last 9 months, 200 seen ids excluded (~15%)",
    "broad": "created in the last ~8 months, 200 seen ids excluded (~70%)",
}


def random_filter(rng: np.random.Generator, kind: str, n: int) -> ItemFilter:
    seen = [f"item-{i}" for i in rng.integers(0, n, size=200)]
    if kind == "category":
        return ItemFilter(categories=[f"cat-{rng.integers(N_CATEGORIES)}"])
    if kind == "tags+recent":
        return ItemFilter(
            tags=[f"tag-{t}" for t in rng.integers(N_TAGS, size=3)],
            created_after=T0 + YEAR * 0.5,
        )
    if kind == "feed":
        return ItemFilter(
            categories=[f"cat-{c}" for c in rng.choice(N_CATEGORIES, size=4, replace=False)],
            created_after=T0 + YEAR * 0.25,
            exclude_ids=seen,
        )
    return ItemFilter(created_after=T0 + YEAR * 0.3, exclude_ids=seen)


def bare_filter(f: ItemFilter) -> qe.Filter:
    """The same filter written directly against qdrant_edge."""
    must: list[Any] = []
    if f.categories is not None:
        must.append(qe.FieldCondition("category", match=qe.MatchAny(list(f.categories))))
    if f.tags is not None:
        must.append(qe.FieldCondition("tags", match=qe.MatchAny(list(f.tags))))
    if f.created_after is not None:
        must.append(qe.FieldCondition("created_at", range=qe.RangeFloat(gt=f.created_after)))
    must_not: list[Any] | None = (
        [qe.HasIdCondition({point_id(i) for i in f.exclude_ids})] if f.exclude_ids else None
    )
    return qe.Filter(must=must or None, must_not=must_not)


def ms_percentiles(samples: list[float]) -> tuple[float, float, float]:
    p = percentiles(x * 1e3 for x in samples)
    return p["p50"], p["p95"], p["p99"]


def latencies(
    index: EdgeIndex, dim: int, kind: str, queries: int, repeats: int, exact: bool
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Median-over-rounds (p50, p95, p99) in ms for EdgeIndex.search and the bare query."""
    shard = index.items_shard
    params = qe.SearchParams(exact=True) if exact else None
    rounds_wrapped: list[tuple[float, float, float]] = []
    rounds_bare: list[tuple[float, float, float]] = []
    clock = time.perf_counter
    for r in range(repeats):
        rng = np.random.default_rng(1000 + r)
        wrapped: list[float] = []
        bare: list[float] = []
        for q in range(queries + 20):
            vector = rng.standard_normal(dim).astype(np.float32)
            f = random_filter(rng, kind, index.count())

            def run_wrapped(vector: np.ndarray = vector, f: ItemFilter = f) -> Any:
                return index.search("als", vector, 20, f, exact=exact)

            def run_bare(vector: np.ndarray = vector, f: ItemFilter = f) -> Any:
                request = qe.QueryRequest(
                    limit=20,
                    query=qe.Query.Nearest(vector.tolist(), using="als"),
                    filter=bare_filter(f),
                    with_payload=True,
                    params=params,
                )
                return shard.query(request)

            order: list[tuple[Callable[[], Any], list[float]]] = [
                (run_wrapped, wrapped),
                (run_bare, bare),
            ]
            if q % 2:
                order.reverse()
            results = []
            for fn, sink in order:
                t0 = clock()
                results.append(fn())
                elapsed = clock() - t0
                if q >= 20:  # warm-up
                    sink.append(elapsed)
            hits, points = (results[0], results[1]) if q % 2 == 0 else (results[1], results[0])
            assert [h.item_id for h in hits] == [p.payload["item_id"] for p in points]
        rounds_wrapped.append(ms_percentiles(wrapped))
        rounds_bare.append(ms_percentiles(bare))
    return _median_of_rounds(rounds_wrapped), _median_of_rounds(rounds_bare)


def _median_of_rounds(rounds: list[tuple[float, float, float]]) -> tuple[float, ...]:
    return tuple(statistics.median(r[i] for r in rounds) for i in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k items, 200 queries a round")
    parser.add_argument("--items", type=int, default=None, help="default 100000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=None, help="per round and filter kind")
    parser.add_argument("--exact", action="store_true", help="also time exact (brute) search")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    args = parser.parse_args()
    if args.items is None:
        args.items = 10_000 if args.quick else 100_000
    if args.queries is None:
        args.queries = 200 if args.quick else 500

    print(describe_machine())
    print(
        f"data: {args.items:,} items x {args.dim}-d float32 (dot), {N_CATEGORIES} categories, "
        f"{N_TAGS} tags (1-3 per item), created_at over a year; qdrant-edge "
        f"{package_version('qdrant-edge-py')}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-vectors-", dir=args.dir))
    try:
        ids, vectors, payloads = make_data(args.items, args.dim, args.seed)
        print(f"\nupsert (batch {args.batch}, {args.repeats} fresh shards):")
        wrapped_rate, bare_rate, index = upsert_rates(
            workdir, ids, vectors, payloads, args.batch, args.repeats
        )
        print(
            f"  median: EdgeIndex.upsert_items {wrapped_rate:,.0f} pts/s | bare EdgeShard.update "
            f"{bare_rate:,.0f} pts/s | ratio {bare_rate / wrapped_rate:.2f}x slower"
        )

        t0 = time.perf_counter()
        index.optimize()
        index.flush()
        indexed = index.items_shard.info().indexed_vectors_count
        print(
            f"\noptimize + flush: {time.perf_counter() - t0:.1f} s "
            f"({indexed:,} of {args.items:,} vectors in an HNSW graph)"
        )

        for exact in (False, True) if args.exact else (False,):
            mode = "exact" if exact else ("HNSW" if indexed else "plain, below indexing threshold")
            print(
                f"\nfiltered top-20, {mode}, {args.queries} queries x {args.repeats} rounds "
                "(ms; median of rounds)"
            )
            print(
                f"  {'filter':<12} {'EdgeIndex p50/p95/p99':>24} {'bare p50/p95/p99':>24} "
                f"{'ratio p50':>10}"
            )
            for kind in FILTER_KINDS:
                w, b = latencies(index, args.dim, kind, args.queries, args.repeats, exact)
                print(
                    f"  {kind:<12} {w[0]:7.3f} {w[1]:7.3f} {w[2]:7.3f}   "
                    f"{b[0]:7.3f} {b[1]:7.3f} {b[2]:7.3f}   {w[0] / b[0]:8.2f}x"
                )
        print("\nfilters: " + "; ".join(f"{k}: {v}" for k, v in FILTER_KINDS.items()))
        print(f"load avg : {load_average()} (1/5/15 min, after the timed runs)")
        index.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
