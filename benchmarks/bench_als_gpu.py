"""Behavioural training on the CPU and, where implicit has a usable CUDA build, on the GPU.

Fits ``ALSModel`` (the pipeline's behavioural model) and, as the baseline, implicit's bare
``AlternatingLeastSquares`` on the same matrix with the same settings, on each device
available. The matrix is shaped like the demo world at 5M events (50k users x 14k items,
long-tailed item popularity, ~4.3M nonzero confidences with some negatives), generated
with a fixed seed so runs compare.

    python benchmarks/bench_als_gpu.py [--users 50000 --items 14142 --nnz 4300000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import describe_machine, gpu_description  # noqa: E402


def demo_like_matrix(users: int, items: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    rows = rng.integers(0, users, nnz)
    cols = rng.choice(items, size=nnz, p=popularity)
    # Mostly positive confidences, a tenth negative (skips, dislikes), as the signals give.
    values = np.where(rng.random(nnz) < 0.1, -1.0, rng.gamma(2.0, 1.5, nnz)).astype(np.float32)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(users, items))
    matrix.sum_duplicates()
    np.clip(matrix.data, -10.0, 10.0, out=matrix.data)
    matrix.eliminate_zeros()
    return matrix


def timed(fit, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fit()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=14_142)
    parser.add_argument("--nnz", type=int, default=4_300_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import implicit.als
    from threadpoolctl import threadpool_limits

    from recsys.dataset import IdMap, InteractionData
    from recsys.models.als import ALSModel, cuda_available
    from recsys.models.configs import ALSConfig

    print(describe_machine())
    print(f"gpu      : {gpu_description()}; implicit CUDA build usable: {cuda_available()}")
    matrix = demo_like_matrix(args.users, args.items, args.nnz)
    data = InteractionData(
        matrix=matrix,
        users=IdMap([f"u{i}" for i in range(args.users)]),
        items=IdMap([f"i{i}" for i in range(args.items)]),
    )
    config = ALSConfig()
    print(
        f"data: {args.users:,} users x {args.items:,} items, {matrix.nnz:,} nonzeros; "
        f"ALS {config.factors} factors, {config.iterations} iterations; "
        f"median of {args.repeats} fits"
    )
    devices = [False, True] if cuda_available() else [False]
    results: dict[bool, tuple[float, float]] = {}
    for gpu in devices:

        def bare(gpu: bool = gpu) -> None:
            # implicit's advice: one BLAS thread under its own parallel loops.
            with threadpool_limits(1, "blas"):
                model = implicit.als.AlternatingLeastSquares(
                    factors=config.factors,
                    regularization=config.regularization,
                    alpha=config.alpha,
                    dtype=np.float32,
                    iterations=config.iterations,
                    use_gpu=gpu,
                    random_state=config.random_state,
                )
                model.fit(matrix, show_progress=False)

        def ours(gpu: bool = gpu) -> None:
            ALSModel(config.model_copy(update={"use_gpu": gpu})).fit(data)

        bare()  # warm-up: CUDA context, kernels, BLAS threads
        results[gpu] = (timed(bare, args.repeats), timed(ours, args.repeats))

    print()
    print(f"{'device':<8}{'bare implicit s':>17}{'ALSModel s':>13}{'ratio':>8}")
    for gpu, (bare_s, ours_s) in results.items():
        name = "GPU" if gpu else "CPU"
        print(f"{name:<8}{bare_s:>17.2f}{ours_s:>13.2f}{ours_s / bare_s:>7.2f}x")
    if True in results:
        print(f"GPU speed-up over CPU (ALSModel): {results[False][1] / results[True][1]:.1f}x")
    else:
        print("GPU: not measured (no usable CUDA build of implicit here)")


if __name__ == "__main__":
    main()
