"""Nightly training end to end, against the bare implicit and LightFM fits on the same matrix.

Generates the demo world at ``--scale`` (50 = 5M events), imports it into an embedded
store, then times ``recsys train`` in a child process (wall time and peak RSS) and, in the
same run, the bare library fits: implicit ALS on the same confidence matrix and LightFM
WARP on the same positives, sample weights and item features, with the same hyperparameters.

    python benchmarks/bench_train.py --scale 50 [--repeats 3]

Each repeat trains and then fits the bare models, back to back; the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import describe_machine  # noqa: E402

CHILD_TRAIN = """
import json, resource, sys, time
from pipelines.train import train
from recsys.config import Settings
from recsys.store import open_store
settings = Settings(home=sys.argv[1], _env_file=None)
started = time.perf_counter()
result = train(open_store(settings), settings, force=True)
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall": wall, "peak": peak, "timings": result.timings,
                  "stats": result.data_stats, "artifacts": result.data_stats["artifacts"],
                  "ranker": result.metrics.get("ranker", {})}))
"""

CHILD_BARE = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
import implicit
from lightfm import LightFM
from recsys.config import Settings
from recsys.models.hybrid import HybridModel
import pandas as pd
from recsys.store import open_store
from recsys.store.catalog import load_items
from recsys.dataset import InteractionData

settings = Settings(home=sys.argv[1], _env_file=None)
data = InteractionData.load(Path(sys.argv[2]) / "interactions")
with open_store(settings).read() as conn:
    items = load_items(conn).set_index("item_id").reindex(data.items.external_ids).reset_index()
items["tags"] = [t if isinstance(t, list) else [] for t in items["tags"]]
items[["title", "text"]] = items[["title", "text"]].fillna("")
hybrid = HybridModel.load(Path(sys.argv[2]) / "hybrid")
features = hybrid.item_feature_matrix(items)  # built by our code, not timed
als = settings.als
h = settings.hybrid
out = {}
with threadpool_limits(1, "blas"):
    model = implicit.als.AlternatingLeastSquares(
        factors=als.factors, regularization=als.regularization, alpha=als.alpha,
        iterations=als.iterations, random_state=als.random_state)
    started = time.perf_counter()
    model.fit(data.matrix)
    out["als"] = time.perf_counter() - started
positive = data.matrix.multiply(data.matrix > 0).tocoo()
positive.eliminate_zeros()
train = sp.coo_matrix(
    (np.ones(positive.nnz, np.float32), (positive.row, positive.col)), shape=positive.shape
)
# The pipeline weighs each positive by its confidence (mean 1): WARP's sampling, and so its
# run time, depends on the weights, so the bare fit gets the same ones.
weights = None
if h.use_sample_weight:
    weights = sp.coo_matrix(
        ((positive.data / positive.data.mean()).astype(np.float32), (train.row, train.col)),
        shape=train.shape,
    )
lightfm = LightFM(no_components=h.no_components, loss="warp", learning_rate=h.learning_rate,
                  item_alpha=h.item_alpha, user_alpha=h.user_alpha, max_sampled=h.max_sampled,
                  random_state=h.random_state)
started = time.perf_counter()
lightfm.fit(train, item_features=features, sample_weight=weights, epochs=h.epochs,
            num_threads=h.num_threads)
out["lightfm"] = time.perf_counter() - started
out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def run_child(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=50.0, help="demo scale (50 = 5M events)")
    parser.add_argument("--quick", action="store_true", help="scale 2 (200k events)")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline + bare fit pairs")
    args = parser.parse_args()
    scale = 2.0 if args.quick else args.scale

    from pipelines.demo_world import generate_world
    from pipelines.ingest import import_frames
    from recsys.config import Settings
    from recsys.store import open_store

    print(describe_machine())
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        home = Path(work) / "home"
        settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
        world = generate_world(seed=42, scale=scale)
        started = time.perf_counter()
        import_frames(open_store(settings), settings, world.items, world.iter_events())
        imported = time.perf_counter() - started
        print(
            f"data: demo world scale {scale:g}: {world.n_events:,} events, "
            f"{world.n_users:,} users, {world.n_items:,} items (import {imported:.1f}s)"
        )
        # The settings in force (RECSYS_* variables apply to both runs).
        als, hybrid = settings.als, settings.hybrid
        print(
            f"models: ALS factors {als.factors}, {als.iterations} iterations; LightFM "
            f"{hybrid.no_components} components, {hybrid.epochs} epochs, "
            f"{hybrid.max_text_tokens} text tokens, {hybrid.num_threads} threads"
        )
        pipelines, bares = [], []
        for _ in range(args.repeats):
            # Back to back, so each pair sees the same moment of a noisy machine.
            pipelines.append(run_child(CHILD_TRAIN, str(home)))
            bares.append(run_child(CHILD_BARE, str(home), pipelines[-1]["artifacts"]))
    stats = pipelines[0]["stats"]
    print(f"matrix: {stats['users']:,} x {stats['items']:,}, {stats['nonzeros']:,} nonzeros")
    print(f"median of {args.repeats} runs; peak RSS is the largest seen")
    print()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    bare_totals = [b["als"] + b["lightfm"] for b in bares]
    print(f"{'what':<34}{'seconds':>10}{'peak RSS':>12}")
    peak_gb = max(p["peak"] for p in pipelines) / 2**30
    wall = median([p["wall"] for p in pipelines])
    print(f"{'recsys train (end to end)':<34}{wall:>10.1f}{peak_gb:>10.2f}GB")
    for stage in pipelines[0]["timings"]:
        seconds = median([p["timings"][stage] for p in pipelines])
        print(f"{'  stage ' + stage:<34}{seconds:>10.1f}")
    ranker = pipelines[0].get("ranker", {})
    if "first_stage_seconds" in ranker:
        # Inside the ranker stage: the models refitted on the events before the labels,
        # the serving code's features per labelled user, then LightGBM (folds and fit).
        fitting = ranker["seconds"] - ranker["first_stage_seconds"] - ranker["feature_seconds"]
        print(f"{'    of ranker: first-stage refits':<34}{ranker['first_stage_seconds']:>10.1f}")
        print(f"{'    of ranker: features':<34}{ranker['feature_seconds']:>10.1f}")
        print(f"{'    of ranker: LightGBM':<34}{fitting:>10.1f}")
        print(
            f"      ({ranker.get('users', 0):,} users, {ranker.get('rows', 0):,} rows, "
            f"{ranker.get('trees', 0)} trees, {ranker.get('status')})"
        )
    bare_peak = max(b["peak"] for b in bares) / 2**30
    print(f"{'bare implicit ALS fit':<34}{median([b['als'] for b in bares]):>10.1f}")
    print(f"{'bare LightFM WARP fit':<34}{median([b['lightfm'] for b in bares]):>10.1f}", end="")
    print(f"{bare_peak:>10.2f}GB")
    print(f"{'bare fits together':<34}{median(bare_totals):>10.1f}")
    print()
    ratios = [p["wall"] / b for p, b in zip(pipelines, bare_totals, strict=True)]
    print(
        f"pipeline / bare fits: {median(ratios):.2f}x median of the paired runs "
        f"(overhead {100 * (median(ratios) - 1):.0f}%; each: "
        + ", ".join(f"{r:.2f}x" for r in ratios)
        + ")"
    )


if __name__ == "__main__":
    main()
