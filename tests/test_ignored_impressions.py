"""Ignored impressions as weak negatives: the builder, the gate's split and the ranker's
negatives (the nightly job's use of them is in tests/pipelines/test_train_impressions.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.train import held_back, known_before_holdout
from recsys.config import SignalWeights
from recsys.dataset import IdMap, InteractionData
from recsys.rank_training import Holdout, UserLists, _matrix, ignored_in_holdout, labelled_users
from recsys.signals import InteractionBuilder

NOW = 1_700_000_000.0
DAY = 86_400.0


def _items(n: int, with_length: bool = True) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "duration_seconds": [100.0 if with_length else np.nan] * n,
        }
    )


def _events(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["user_id", "item_id", "type", "timestamp", "dwell_seconds"]
    ).assign(value=np.nan)


def _impressions(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "shown_at"])


def test_ignored_impressions_are_weak_negatives_of_known_users_and_items() -> None:
    weights = SignalWeights()
    builder = InteractionBuilder(weights, items=_items(4), now=NOW)
    builder.add(_events([("a", "i0", "like", NOW, np.nan), ("b", "i1", "like", NOW, np.nan)]))
    added = builder.add_ignored(
        _impressions(
            [
                ("a", "i2", NOW - 10),
                ("a", "i2", NOW - 5),  # shown and ignored twice: twice the weight
                ("a", "i0", NOW - 20),  # ignored then, liked later: still a net positive
                ("b", "i3", NOW - 1),
                ("stranger", "i1", NOW),  # never acted at all
                ("a", "gone", NOW),  # no catalogue entry and no event
            ]
        )
    )
    assert added == 4 and builder.n_ignored == 4
    data = builder.build()
    a, b = data.users.to_internal(["a", "b"])
    i0, i2, i3 = data.items.to_internal(["i0", "i2", "i3"])
    assert data.matrix[a, i2] == np.float32(2 * weights.impression_ignored)
    assert data.matrix[a, i0] == np.float32(weights.like + weights.impression_ignored)
    assert data.matrix[b, i3] == np.float32(weights.impression_ignored)
    assert len(data.users) == 2 and "gone" not in set(data.items.to_external(range(4)))


def test_the_ignored_mask_stays_aligned_when_views_wait_for_the_median_dwell() -> None:
    # Views of items without a length are appended only when triples() is first read,
    # after impressions added later: the mask must follow the triples, not the calls.
    builder = InteractionBuilder(SignalWeights(), items=_items(3, with_length=False), now=NOW)
    builder.add(_events([("a", "i0", "view", NOW, 30.0), ("a", "i1", "like", NOW, np.nan)]))
    builder.add_ignored(_impressions([("a", "i2", NOW - 60)]))
    _rows, cols, vals, _times = builder.triples()
    mask = builder.ignored_mask()
    assert len(mask) == len(vals) == 3
    assert cols[mask].tolist() == [2] and vals[mask].tolist() == [
        SignalWeights().impression_ignored
    ]
    assert sorted(cols[~mask].tolist()) == [0, 1]


def test_ignored_impressions_decay_like_events() -> None:
    weights = SignalWeights(half_life_days=10.0)
    builder = InteractionBuilder(weights, items=_items(2), now=NOW)
    builder.add(_events([("a", "i0", "like", NOW, np.nan)]))
    builder.add_ignored(_impressions([("a", "i1", NOW - 10 * DAY)]))
    _, cols, vals, _ = builder.triples()
    assert vals[cols == 1].tolist() == [np.float32(weights.impression_ignored / 2)]


def test_a_zero_weight_turns_ignored_impressions_off() -> None:
    builder = InteractionBuilder(SignalWeights(impression_ignored=0.0), items=_items(2), now=NOW)
    builder.add(_events([("a", "i0", "like", NOW, np.nan)]))
    assert builder.add_ignored(_impressions([("a", "i1", NOW)])) == 0
    assert builder.build().matrix.nnz == 1


def test_the_gate_never_targets_an_impression_nor_learns_from_a_later_one() -> None:
    # User 0: four events (the newest is held back at t=40) and impressions at t=35
    # (before the holdout: known) and t=45 (during it: unknown to the gate's fit).
    # User 1: two events, newest held at t=20; an impression at t=50 is unknown too.
    rows = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    times = np.array([10.0, 20.0, 30.0, 40.0, 35.0, 45.0, 10.0, 20.0, 50.0])
    ignored = np.array([False, False, False, False, True, True, False, False, True])
    held = held_back(rows, times, ignored, fraction=0.25)
    assert held.tolist() == [False, False, False, True, False, False, False, True, False]
    known = known_before_holdout(rows, times, held, ignored)
    assert known.tolist() == [True, True, True, False, True, False, True, False, False]


def test_the_ranker_learns_first_from_what_was_shown_and_passed_over() -> None:
    # Holdout: user 0's held-back period starts at t=5 with a like of item 1; they passed
    # over items 2 and 3 at t=6 (after the start) and item 4 at t=1 (before it: history,
    # not a label-period negative).
    rows = np.array([0, 0, 0, 0, 0, 0])
    cols = np.array([0, 1, 2, 3, 4, 2])
    vals = np.array([4.0, 4.0, -0.125, -0.125, -0.125, -0.125], dtype=np.float32)
    times = np.array([1.0, 5.0, 6.0, 6.0, 1.0, 7.0])
    ignored = np.array([False, False, True, True, True, True])
    held = np.array([False, True, False, False, False, False])
    train = InteractionData(
        matrix=sp.csr_matrix(([4.0], ([0], [0])), shape=(1, 5)),
        users=IdMap(["a"]),
        items=IdMap([f"i{i}" for i in range(5)]),
    )
    holdout = Holdout(rows, cols, vals, times, held, train, ignored)
    labels = labelled_users(holdout)
    assert labels[["row", "col"]].values.tolist() == [[0, 1]]
    passed = ignored_in_holdout(holdout, labels)
    assert sorted(passed["col"].tolist()) == [2, 3]

    # Twenty candidates: one liked, two shown and ignored; with room for three negatives
    # both passed-over ones are always taken and one random other fills the rest.
    passed_over = np.zeros(20, dtype=bool)
    passed_over[[7, 13]] = True
    labels_ = np.zeros(20, dtype=np.int64)
    labels_[2] = 3
    user = UserLists(
        "a", np.arange(20, dtype=float)[:, None], labels_, np.zeros(20), 1, passed_over
    )
    for seed in range(20):
        x, y, groups = _matrix([user], 3, np.random.default_rng(seed))
        chosen = set(x[:, 0].astype(int).tolist())
        assert {2, 7, 13} <= chosen and len(chosen) == 4 and groups.tolist() == [4]
        assert y[x[:, 0] == 2].tolist() == [3] and not y[x[:, 0] != 2].any()
    # More passed-over candidates than room: only they are sampled.
    user.passed_over = labels_ == 0
    x, _, _ = _matrix([user], 3, np.random.default_rng(0))
    assert len(x) == 4


def test_an_item_passed_over_before_is_not_consumed_and_can_still_be_a_label() -> None:
    # The user ignored item 1 at t=2 and liked it in the held-back period at t=5: the fit
    # learns the weak negative, but the like is a new positive, not a repeat.
    rows = np.array([0, 0, 0])
    cols = np.array([0, 1, 1])
    vals = np.array([4.0, -0.125, 4.0], dtype=np.float32)
    times = np.array([1.0, 2.0, 5.0])
    ignored = np.array([False, True, False])
    held = np.array([False, False, True])
    fitted_on = sp.csr_matrix(([4.0, -0.125], ([0, 0], [0, 1])), shape=(1, 2))
    consumed = sp.csr_matrix(([4.0], ([0], [0])), shape=(1, 2))
    train = InteractionData(matrix=fitted_on, users=IdMap(["a"]), items=IdMap(["i0", "i1"]))
    labels = labelled_users(Holdout(rows, cols, vals, times, held, train, ignored, consumed))
    assert labels[["row", "col"]].values.tolist() == [[0, 1]]
    # Told nothing about what was consumed, the weak negative would hide the like.
    assert labelled_users(Holdout(rows, cols, vals, times, held, train, ignored)).empty


def test_by_default_an_ignored_impression_lowers_the_item_for_the_user_in_als() -> None:
    # ALS counts a weight w as confidence alpha * |w| that the user does not want the item,
    # where an item never shown has 1: a weak negative at or below that says nothing.
    from recsys.models.als import ALSModel
    from recsys.models.configs import ALSConfig

    rng = np.random.default_rng(0)
    dense = (rng.random((60, 40)) < 0.2) * rng.uniform(1.0, 4.0, (60, 40))
    data = InteractionData(
        matrix=sp.csr_matrix(dense.astype(np.float32)),
        users=IdMap([f"u{u}" for u in range(60)]),
        items=IdMap([f"i{i}" for i in range(40)]),
    )
    model = ALSModel(ALSConfig(factors=8, iterations=5, use_gpu=False)).fit(data)
    _, item_factors = model._factors()
    weights = SignalWeights()
    liked = [0, 1, 2]
    for passed_over in range(3, 40):
        plain = model.fold_in_user(liked, [weights.like] * 3)
        told = model.fold_in_user(
            [*liked, passed_over], [weights.like] * 3 + [weights.impression_ignored]
        )
        before = float(plain @ item_factors[passed_over])
        after = float(told @ item_factors[passed_over])
        assert after < before - 1e-6 * max(1.0, abs(before)), passed_over
