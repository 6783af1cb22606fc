"""Signal weighting: the documented defaults, as properties that must hold for any input."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.config import SignalWeights
from recsys.signals import build_interactions, event_weights, newest_per_user

W = SignalWeights()
NOW = 1_700_000_000.0


def frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "user_id": ["u"] * n,
        "item_id": ["i"] * n,
        "type": ["like"] * n,
        "timestamp": [NOW] * n,
        "dwell_seconds": [np.nan] * n,
        "value": [np.nan] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def weigh(events: pd.DataFrame, durations=None, weights: SignalWeights = W, **kw) -> np.ndarray:
    durations = np.full(len(events), np.nan) if durations is None else np.asarray(durations, float)
    return event_weights(events, weights, item_durations=durations, reference_dwell=60.0, **kw)


def test_explicit_signals_have_the_documented_signs() -> None:
    w = weigh(frame(type=["like", "dislike", "skip"]))
    assert w[0] > 0 > w[2] > w[1]


def test_the_documented_default_weights() -> None:
    # The README's table, value by value: a default that moves must move the docs too.
    defaults = SignalWeights()
    events = frame(
        type=["like", "dislike", "skip", "view", "view", "view", "view", "view"]
        + ["rating"] * 5
        + ["play", "play", "play"],
        dwell_seconds=[np.nan] * 3 + [100.0, 50.0, 10.0, 9.0, 500.0] + [np.nan] * 8,
        value=[np.nan] * 8 + [5.0, 4.0, 3.0, 2.0, 1.0] + [np.nan, 1.0, 9.0],
    )
    durations = [np.nan] * 3 + [100.0] * 5 + [np.nan] * 8
    got = weigh(events, durations=durations, weights=defaults)
    expected = [4.0, -4.0, -1.0]
    # A full view is +2, half a view +1, a tenth +0.2, under a tenth a bounce (-0.5), and
    # dwell beyond the length counts as a full view.
    expected += [2.0, 1.0, 0.2, -0.5, 2.0]
    # Ratings: 5 -> 2, 4 -> 1, 3 -> 0.25, 2 and 1 -> -1.
    expected += [2.0, 1.0, 0.25, -1.0, -1.0]
    # Plays: log(1 + count); a play without a count is one play.
    expected += [np.log(2.0), np.log(2.0), np.log(10.0)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # Repeats on one pair add up, clipped to +-10: three likes are 10, not 12.
    items = pd.DataFrame({"item_id": ["i"], "duration_seconds": [np.nan]})
    three = build_interactions([frame(type=["like"] * 3)], defaults, items=items, now=NOW)
    assert three.matrix[0, 0] == 10.0
    assert defaults.half_life_days == 0.0  # no decay unless asked for


def test_ratings_map_by_value() -> None:
    w = weigh(frame(type=["rating"] * 5, value=[1.0, 2.0, 3.0, 4.0, 5.0]))
    assert w[0] < 0 and w[1] < 0  # at most 2 is negative
    assert 0 < w[2] < w[3] < w[4]  # at least 4 is positive, more stars more weight


def test_plays_are_log_scaled() -> None:
    w = weigh(frame(type=["play"] * 3, value=[1.0, 10.0, 1000.0]))
    assert np.allclose(w, np.log1p([1.0, 10.0, 1000.0]))


def test_view_without_item_length_uses_catalogue_median_dwell() -> None:
    w = weigh(frame(type=["view", "view"], dwell_seconds=[60.0, 3.0]))
    assert w[0] == W.view_full  # the median dwell counts as a full view
    assert w[1] == W.view_bounce  # 5% of it is a bounce


@settings(max_examples=200, deadline=None)
@given(
    duration=st.floats(1.0, 10_000.0),
    dwell_a=st.floats(0.0, 20_000.0),
    dwell_b=st.floats(0.0, 20_000.0),
)
def test_view_weight_is_monotone_in_dwell_and_bounded(duration, dwell_a, dwell_b) -> None:
    low, high = sorted([dwell_a, dwell_b])
    w = weigh(frame(type=["view", "view"], dwell_seconds=[low, high]), durations=[duration] * 2)
    assert w[0] <= w[1]
    assert W.view_bounce <= w[0] and w[1] <= W.view_full
    if high / duration < W.view_bounce_fraction:
        assert w[1] < 0  # a very short dwell is a weak negative


@settings(max_examples=100, deadline=None)
@given(age_a=st.floats(0, 3650), age_b=st.floats(0, 3650), half_life=st.floats(1, 365))
def test_decay_halves_per_half_life_and_never_flips_sign(age_a, age_b, half_life) -> None:
    weights = SignalWeights(half_life_days=half_life)
    ages = np.array([age_a, age_b])
    events = frame(type=["like", "like"], timestamp=NOW - ages * 86_400)
    w = weigh(events, weights=weights, now=NOW)
    assert np.all(w >= 0)  # decay shrinks toward zero (it may underflow), never past it
    assert np.allclose(w, W.like * 0.5 ** (ages / half_life), rtol=1e-9, atol=1e-300)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["like", "dislike", "skip", "play", "rating"]),
            st.floats(0, 50),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 7),
)
def test_matrix_sums_pairs_clips_and_does_not_depend_on_chunking(rows, chunk) -> None:
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "value"])
    events["timestamp"] = NOW
    events["dwell_seconds"] = np.nan
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "duration_seconds": np.nan})
    whole = build_interactions([events], W, items=items, now=NOW)
    parts = [events.iloc[i : i + chunk] for i in range(0, len(events), chunk)]
    chunked = build_interactions(parts, W, items=items, now=NOW)
    assert np.allclose(whole.matrix.toarray(), chunked.matrix.toarray(), atol=1e-5)
    assert np.all(np.abs(whole.matrix.data) <= W.max_abs_weight + 1e-6)
    # Expected sum for one pair, computed independently.
    expected = weigh(events, now=NOW)
    u, i = events.iloc[0]["user_id"], events.iloc[0]["item_id"]
    pair = (events["user_id"] == u) & (events["item_id"] == i)
    want = np.clip(expected[pair.to_numpy()].sum(), -W.max_abs_weight, W.max_abs_weight)
    got = whole.matrix[whole.users.index_of(u), whole.items.index_of(i)]
    assert np.isclose(got, want, atol=1e-4)


def test_catalogue_items_without_events_keep_a_column() -> None:
    items = pd.DataFrame({"item_id": ["new", "a"], "duration_seconds": [100.0, np.nan]})
    data = build_interactions([frame(item_id=["a"])], W, items=items, now=NOW)
    assert data.items.to_json() == ["new", "a"]
    assert data.matrix.shape == (1, 2) and data.matrix[0, 0] == 0


def test_arrow_and_object_string_columns_weigh_alike() -> None:
    """The store hands over Arrow-backed strings; the feed passes plain object arrays."""
    types = ["like", "view", "skip", "rating", "play", "dislike", "bookmark", "view"]
    plain = frame(
        user_id=["u1", "u2"] * 4,
        item_id=list("abcdefgh"),
        type=types,
        dwell_seconds=[np.nan, 30.0, np.nan, np.nan, np.nan, np.nan, np.nan, 1.0],
        value=[np.nan, np.nan, np.nan, 5.0, 3.0, np.nan, np.nan, np.nan],
    )
    arrow = plain.astype({"user_id": "string[pyarrow]", "item_id": "str", "type": "str"})
    custom = {"bookmark": 2.5}
    want = weigh(plain, custom_weights=custom)
    assert np.array_equal(weigh(arrow, custom_weights=custom), want)
    assert want[6] == 2.5 and want[0] == W.like and want[2] == W.skip
    items = pd.DataFrame({"item_id": list("abcdefgh"), "duration_seconds": 60.0})
    a = build_interactions([plain], W, items=items, now=NOW, custom_weights=custom)
    b = build_interactions([arrow], W, items=items, now=NOW, custom_weights=custom)
    assert a.users == b.users and a.items == b.items
    assert (a.matrix != b.matrix).nnz == 0


def test_views_of_items_without_length_wait_for_the_median_of_all_chunks() -> None:
    items = pd.DataFrame({"item_id": ["short", "open"], "duration_seconds": [10.0, np.nan]})
    first = frame(user_id=["u1"], item_id=["open"], type=["view"], dwell_seconds=[30.0])
    # The later chunks move the median dwell to 60 s: the first view is then half watched.
    later = frame(
        user_id=["u2", "u3"],
        item_id=["short", "short"],
        type=["view", "view"],
        dwell_seconds=[60.0, 90.0],
    )
    data = build_interactions([first, later], W, items=items, now=NOW)
    got = data.matrix[data.users.index_of("u1"), data.items.index_of("open")]
    assert np.isclose(got, W.view_full * 0.5, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9)), min_size=1, max_size=80),
    st.floats(0.05, 0.49),
)
def test_newest_per_user_holds_out_each_users_newest_share(events, fraction) -> None:
    rows = np.array([user for user, _ in events], dtype=np.int32)
    times = np.array([float(time) for _, time in events])
    held = newest_per_user(rows, times, fraction)
    for user in set(rows.tolist()):
        # The user's events oldest first; among equal times, the later one is newer.
        mine = sorted(np.flatnonzero(rows == user), key=lambda i: (times[i], i))
        n_held = int(np.ceil(fraction * len(mine))) if len(mine) > 1 else 0
        assert [bool(held[i]) for i in mine] == [False] * (len(mine) - n_held) + [True] * n_held
