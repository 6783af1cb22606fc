"""Regenerate ``ms_reference.json``: split and ranking-metric values computed by the
Microsoft Recommenders library itself, which the tests compare against.

Run it in a separate environment (not the project's), e.g. with
``pip install recommenders==1.2.1 --no-deps`` plus ``pandas<3``, ``numpy<2.3`` and
``scikit-learn``:

    python tests/evaluation/data/make_ms_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).with_name("ms_reference.json")
COLS = {
    "col_user": "user_id",
    "col_item": "item_id",
    "col_rating": "rating",
    "col_prediction": "prediction",
}


def build_frame() -> pd.DataFrame:
    rng = np.random.RandomState(7)
    n = 2400
    users = rng.randint(0, 90, n)
    # Skewed item popularity so some items are rare (exercises min_rating).
    items = np.minimum(rng.geometric(0.02, n), 160)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u:03d}" for u in users],
            "item_id": [f"i{i:03d}" for i in items],
            "rating": rng.randint(1, 6, n).astype(float),
            "timestamp": rng.randint(0, 10**6, n).astype(float),
        }
    )
    frame = frame.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    # A few users with one or two ratings.
    extra = pd.DataFrame(
        {
            "user_id": ["u900", "u901", "u901"],
            "item_id": ["i001", "i002", "i003"],
            "rating": [4.0, 5.0, 3.0],
            "timestamp": [1.0, 2.0, 3.0],
        }
    )
    return pd.concat([frame, extra], ignore_index=True)


def main() -> None:
    from recommenders.datasets.python_splitters import python_stratified_split
    from recommenders.evaluation import python_evaluation as ev

    frame = build_frame()
    splits = {}
    for name, kwargs in {
        "user_075_seed42": {"ratio": 0.75, "seed": 42, "filter_by": "user", "min_rating": 1},
        "item_070_seed3_min5": {"ratio": 0.7, "seed": 3, "filter_by": "item", "min_rating": 5},
    }.items():
        train, test = python_stratified_split(
            frame.copy(), col_user="user_id", col_item="item_id", **kwargs
        )
        splits[name] = {
            "params": kwargs,
            "train_index": sorted(int(i) for i in train.index),
            "test_index": sorted(int(i) for i in test.index),
        }

    # Ranking metrics on the per-user split with random scores, train items removed.
    train, test = python_stratified_split(
        frame.copy(), ratio=0.75, seed=42, col_user="user_id", col_item="item_id"
    )
    rng = np.random.RandomState(11)
    all_users = np.sort(frame["user_id"].unique())
    all_items = np.sort(frame["item_id"].unique())
    grid = pd.DataFrame(
        {
            "user_id": np.repeat(all_users, len(all_items)),
            "item_id": np.tile(all_items, len(all_users)),
        }
    )
    # Random scores, nudged towards the held-out pairs so that hits land at many ranks.
    in_test = grid.merge(test[["user_id", "item_id"]], how="left", indicator=True)["_merge"]
    grid["prediction"] = rng.rand(len(grid)) + 0.35 * (in_test == "both").to_numpy()
    seen = grid.merge(train[["user_id", "item_id"]], how="left", indicator=True)["_merge"]
    predictions = grid.loc[(seen == "left_only").to_numpy()].reset_index(drop=True)
    metrics = {}
    for k in (5, 10):
        metrics[str(k)] = {
            "precision": ev.precision_at_k(test, predictions, k=k, **COLS),
            "recall": ev.recall_at_k(test, predictions, k=k, **COLS),
            "ndcg": ev.ndcg_at_k(test, predictions, k=k, **COLS),
            "map_at_k": ev.map_at_k(test, predictions, k=k, **COLS),
            "map": ev.map(test, predictions, k=k, **COLS),
        }
    payload = {
        "generator": "recommenders==1.2.1",
        "frame": {c: frame[c].tolist() for c in frame.columns},
        "splits": splits,
        "scores": "RandomState(11).rand over the sorted user x item grid + 0.35 on test pairs",
        "metrics": metrics,
    }
    OUT.write_text(json.dumps(payload, indent=None, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
