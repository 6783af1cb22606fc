"""The ranker's label windows when the gate holds back each user's newest events: every
further window is drawn from what each user had before the window after it, so neither
its first-stage fits nor its labels see a later event."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from pipelines.train import GateSplit, gate_split, more_label_windows
from recsys import registry
from recsys.config import RankerConfig, Settings, SignalWeights
from recsys.rank_training import UserLists, forward_check, labelled_users
from recsys.signals import InteractionBuilder

NOW = 1_700_000_000.0
HOUR = 3600.0
USERS, LIKES, ITEMS = 30, 50, 80


def hourly_likes() -> InteractionBuilder:
    """User u likes LIKES distinct items an hour apart: the k-th at NOW - (LIKES - k) h - u s."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        [
            (f"u{u}", f"i{item}", "like", NOW - (LIKES - k) * HOUR - u)
            for u in range(USERS)
            for k, item in enumerate(rng.choice(ITEMS, LIKES, replace=False))
        ],
        columns=["user_id", "item_id", "type", "timestamp"],
    ).assign(dwell_seconds=np.nan, value=np.nan)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(ITEMS)], "duration_seconds": 100.0})
    builder = InteractionBuilder(SignalWeights(), items=items, now=NOW)
    builder.add(frame)
    return builder


def user_offsets(builder: InteractionBuilder, rows: np.ndarray) -> np.ndarray:
    """The u of each user row."""
    return np.array([int(user[1:]) for user in builder.build().users.to_external(rows)])


def settings(label_windows: int = 2) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        gate_holdout="newest",
        gate_holdout_fraction=0.2,
        ranker=RankerConfig(label_windows=label_windows),
    )


def test_an_earlier_window_is_drawn_from_what_users_had_before_the_later_one() -> None:
    builder = hourly_likes()
    later = gate_split(builder, settings())
    assert isinstance(later, GateSplit)
    earlier = gate_split(builder, settings(), within=later.known_before)
    assert isinstance(earlier, GateSplit)
    rows, _, _, times = builder.triples()
    offsets = user_offsets(builder, rows)

    def from_like(k: int) -> np.ndarray:
        """Each triple at or after its user's k-th like."""
        return times >= NOW - (LIKES - k) * HOUR - offsets - 0.5

    # The later window: each user's 10 newest likes (ceil(0.2 * 50)).
    np.testing.assert_array_equal(later.holdout.held, from_like(40))
    # The earlier one never sees them: its triples are the 40 likes before, its labels the
    # newest 8 of those (ceil(0.2 * 40)), its first-stage fit the 32 oldest.
    window = earlier.holdout
    assert len(window.rows) == USERS * 40
    np.testing.assert_array_equal(window.held, from_like(32)[~from_like(40)])
    expected = builder.build(keep=~from_like(32)).matrix
    assert window.train.matrix.shape == expected.shape
    assert (window.train.matrix != expected).nnz == 0
    np.testing.assert_array_equal(earlier.known_before, ~from_like(32))
    # Its users are asked as of their 32nd like, with its 8 likes to find.
    labels = labelled_users(window)
    assert labels.groupby("row").size().tolist() == [8] * USERS
    moments = labels.groupby("row")["moment"].first()
    expected_moments = NOW - (LIKES - 32) * HOUR - user_offsets(builder, moments.index.to_numpy())
    np.testing.assert_array_equal(moments.to_numpy(), expected_moments)


def test_newest_holdouts_give_the_ranker_windows_further_back_in_time() -> None:
    builder = hourly_likes()
    later = gate_split(builder, settings(label_windows=3))
    assert isinstance(later, GateSplit)
    windows = more_label_windows(builder, settings(label_windows=3), later.holdout)
    assert len(windows) == 2 and not any(window.holdout.randomly for window in windows)
    holdouts = [later.holdout, *(window.holdout for window in windows)]
    # 10 of 50, 8 of the 40 before them, 7 of the 32 before those (ceil(0.2 * n)).
    assert [np.bincount(h.rows[h.held]).tolist() for h in holdouts] == [
        [10] * USERS,
        [8] * USERS,
        [7] * USERS,
    ]
    # Each window ends before the next one starts, user by user, and its fit knows only
    # what came before it.
    for newer, older in itertools.pairwise(holdouts):
        newer_start = labelled_users(newer).groupby("row")["moment"].first()
        older_end = pd.Series(older.times[older.held], index=older.rows[older.held])
        assert (older_end.groupby(level=0).max() < newer_start).all()
        assert older.train.matrix.nnz == int((~older.held).sum())
    assert all(window.fitted[registry.gated().name].is_fitted for window in windows)
    # One window when asked.
    assert more_label_windows(builder, settings(label_windows=1), later.holdout) == []


def _lists(window: int, likes_high: bool, rng: np.random.Generator) -> list[UserLists]:
    """60 users of 30 candidates: the 3 relevant ones are those with the highest first
    feature (``likes_high``) or the lowest; the blend's scores are noise."""
    out = []
    for user in range(60):
        features = rng.random((30, 2))
        order = np.argsort(-features[:, 0] if likes_high else features[:, 0])
        labels = np.zeros(30, dtype=np.int64)
        labels[order[:3]] = 3
        out.append(
            UserLists(f"u{user}", features, labels, rng.random(30), relevant=3, window=window)
        )
    return out


def test_the_forward_check_scores_the_newest_window_with_a_ranker_of_the_earlier_ones() -> None:
    params = {
        "objective": "lambdarank",
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "seed": 0,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    config = RankerConfig()
    rng = np.random.default_rng(0)
    names = ("first", "second")
    earlier = _lists(1, likes_high=True, rng=rng)
    # The newest window wants what the earlier one taught: the ranker finds it.
    same = forward_check(params, [*_lists(0, True, rng), *earlier], names, 30, rng, config)
    assert same["forward_users"] == 60
    assert same["forward_ndcg@10"] > 0.9 > 0.5 > same["forward_blend_ndcg@10"]
    # Tastes turned around: what the earlier window taught ranks the relevant items last,
    # however well it fitted there; the blend's noise scores above it.
    turned = forward_check(params, [*_lists(0, False, rng), *earlier], names, 30, rng, config)
    assert turned["forward_ndcg@10"] < 0.05 < turned["forward_blend_ndcg@10"]
    # One window: nothing to say.
    assert forward_check(params, _lists(0, True, rng), names, 30, rng, config) == {}
