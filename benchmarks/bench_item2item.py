"""The item-to-item model's fit against a bare numpy EASE fit of the same matrix.

The matrix is a synthetic implicit-feedback log: users with a few topics each, items in
topics, popularity skewed by a power law (so co-occurrence is realistic, not uniform).
Timed, alternating, ``--repeats`` times each:

* ``ItemToItemModel.fit``: positives, the Gram matrix, its inverse, the weights and the
  top ``neighbours`` per item kept as a sparse matrix;
* bare: the same positives, ``X.T @ X`` densified, ``numpy.linalg.inv`` and the division
  by the diagonal: the textbook fit, with nothing kept sparse.

    python benchmarks/bench_item2item.py                 # 20,000 items (the default cap)
    python benchmarks/bench_item2item.py --items 5000    # quicker
    python benchmarks/bench_item2item.py --quick         # 3,000 items, one repeat
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import describe_machine  # noqa: E402
from recsys.dataset import IdMap, InteractionData  # noqa: E402
from recsys.models.configs import ItemToItemConfig  # noqa: E402
from recsys.models.item2item import ItemToItemModel  # noqa: E402


def synthetic_log(users: int, items: int, per_user: int, seed: int) -> InteractionData:
    rng = np.random.default_rng(seed)
    topics = 40
    item_topic = rng.integers(0, topics, items)
    weight = 1.0 / np.arange(1, items + 1) ** 0.8
    rng.shuffle(weight)
    by_topic = [np.flatnonzero(item_topic == t) for t in range(topics)]
    probabilities = [weight[members] / weight[members].sum() for members in by_topic]
    rows, cols = [], []
    for user in range(users):
        for topic in rng.choice(topics, size=3, replace=False):
            picked = rng.choice(
                by_topic[topic],
                size=min(per_user // 3, len(by_topic[topic])),
                replace=False,
                p=probabilities[topic],
            )
            rows.append(np.full(len(picked), user))
            cols.append(picked)
    matrix = sp.csr_matrix(
        (np.ones(sum(map(len, rows)), np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(users, items),
    )
    return InteractionData(
        matrix=matrix,
        users=IdMap([f"u{i}" for i in range(users)]),
        items=IdMap([f"i{j}" for j in range(items)]),
    )


def bare_ease(matrix: sp.csr_matrix, regularization: float) -> np.ndarray:
    x = (matrix > 0).astype(np.float32)
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)
    gram[np.diag_indices_from(gram)] += regularization
    inverse = np.linalg.inv(gram)
    weights = inverse / -np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 items, one repeat")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=None, help="default: 5 x items")
    parser.add_argument("--per-user", type=int, default=60, help="interactions per user")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.quick:
        args.items, args.repeats = 3_000, 1
    users = args.users or 5 * args.items
    data = synthetic_log(users, args.items, args.per_user, args.seed)
    config = ItemToItemConfig(max_items=args.items)
    print(describe_machine())
    print(
        f"data: {users:,} users x {args.items:,} items, {data.matrix.nnz:,} interactions; "
        f"lambda {config.regularization:g}, {config.neighbours} neighbours kept per item"
    )
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model = ItemToItemModel(config).fit(data)
        ours.append(time.perf_counter() - started)
        del model
        started = time.perf_counter()
        weights = bare_ease(data.matrix, config.regularization)
        bare.append(time.perf_counter() - started)
        del weights
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(f"{'what':<34}{'median s':>10}{'runs':>28}")
    print(f"{'ItemToItemModel.fit':<34}{ours_median:>10.2f}{[round(t, 2) for t in ours]!s:>28}")
    print(f"{'bare numpy EASE':<34}{bare_median:>10.2f}{[round(t, 2) for t in bare]!s:>28}")
    print(f"fit / bare: {ours_median / bare_median:.2f}x (goal <= 3x); peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
