"""Shared synthetic data for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT


def make_interactions(
    n_users: int = 60,
    n_items: int = 80,
    n_rows: int = 1500,
    *,
    seed: int = 0,
    unique_pairs: bool = True,
) -> pd.DataFrame:
    """A small interaction log with skewed item popularity, ties in time and a few
    negative weights."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    items = np.minimum(rng.geometric(0.04, n_rows), n_items) - 1
    frame = pd.DataFrame(
        {
            USER_ID: [f"u{u:03d}" for u in users],
            ITEM_ID: [f"i{i:03d}" for i in items],
            # Rounded so that equal timestamps occur.
            TIMESTAMP: np.round(rng.uniform(0, 1e4, n_rows), -1),
            WEIGHT: rng.choice([1.0, 2.0, -1.0], n_rows, p=[0.6, 0.25, 0.15]),
        }
    )
    if unique_pairs:
        frame = frame.drop_duplicates([USER_ID, ITEM_ID])
    return frame.reset_index(drop=True)
