"""Split protocols: no leakage, the cut respected, proportions, determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from eval_fixtures import make_interactions
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.columns import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT
from recsys.evaluation.splits import (
    PROTOCOLS,
    Split,
    cold_item_split,
    global_temporal_split,
    keep_known,
    last_fraction_per_user_split,
    last_n_per_user_split,
    leave_last_one_out,
    make_split,
    stratified_split,
    validation_split,
)


def assert_partition(df: pd.DataFrame, split: Split, *, complete: bool = True) -> None:
    """Train and test are disjoint sets of input rows (and cover all of them)."""
    train_idx, test_idx = set(split.train.index), set(split.test.index)
    assert not train_idx & test_idx, "a row is in both train and test"
    assert train_idx | test_idx <= set(df.index)
    if complete:
        assert train_idx | test_idx == set(df.index)
    # Rows are carried through unchanged.
    pd.testing.assert_frame_equal(split.train, df.loc[split.train.index])
    pd.testing.assert_frame_equal(split.test, df.loc[split.test.index])


def pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df[USER_ID], df[ITEM_ID], strict=True))


def test_split_unpacks_and_describes(interactions: pd.DataFrame) -> None:
    split = leave_last_one_out(interactions)
    train, test = split
    assert train is split.train and test is split.test
    described = split.describe()
    assert described["protocol"] == "leave_last_one_out"
    assert described["n_train"] + described["n_test"] == len(interactions)


# -- global temporal ---------------------------------------------------------------


@pytest.mark.parametrize("quantile", [0.5, 0.8, 0.95])
def test_global_temporal_quantile_cut(interactions: pd.DataFrame, quantile: float) -> None:
    split = global_temporal_split(interactions, quantile=quantile)
    assert_partition(interactions, split)
    cut = split.params["cut_timestamp"]
    assert cut == pytest.approx(np.quantile(interactions[TIMESTAMP], quantile))
    assert split.train[TIMESTAMP].max() < cut <= split.test[TIMESTAMP].min()
    # Roughly the requested share of events is before the cut (ties move it a little).
    assert abs(len(split.train) / len(interactions) - quantile) < 0.05


def test_global_temporal_fixed_timestamp(interactions: pd.DataFrame) -> None:
    split = global_temporal_split(interactions, timestamp=5000.0)
    assert_partition(interactions, split)
    assert (split.train[TIMESTAMP] < 5000.0).all()
    assert (split.test[TIMESTAMP] >= 5000.0).all()
    with pytest.raises(ValueError):
        global_temporal_split(interactions)
    with pytest.raises(ValueError):
        global_temporal_split(interactions, quantile=0.5, timestamp=1.0)


# -- per-user temporal -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_last_n_per_user(interactions: pd.DataFrame, n: int) -> None:
    split = last_n_per_user_split(interactions, n)
    assert_partition(interactions, split)
    sizes = interactions.groupby(USER_ID).size()
    test_sizes = split.test.groupby(USER_ID).size().reindex(sizes.index, fill_value=0)
    # n held out from users with at least n + 1 events, none from the others.
    expected = np.where(sizes >= n + 1, n, 0)
    np.testing.assert_array_equal(test_sizes.to_numpy(), expected)
    # Per user, every test event is at or after every train event.
    latest_train = split.train.groupby(USER_ID)[TIMESTAMP].max()
    earliest_test = split.test.groupby(USER_ID)[TIMESTAMP].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()


def test_leave_last_one_out_by_hand() -> None:
    df = pd.DataFrame(
        {
            USER_ID: ["a", "a", "a", "b", "c", "c"],
            ITEM_ID: ["x", "y", "z", "x", "x", "y"],
            TIMESTAMP: [3.0, 1.0, 2.0, 5.0, 7.0, 7.0],
            WEIGHT: 1.0,
        }
    )
    split = leave_last_one_out(df)
    # a: latest is x (t=3); b has one event and stays in train; c: tie at t=7, the later
    # row (y) counts as the last event.
    assert pairs(split.test) == {("a", "x"), ("c", "y")}
    everyone = leave_last_one_out(df, min_train_events=0)
    assert pairs(everyone.test) == {("a", "x"), ("b", "x"), ("c", "y")}


def test_last_fraction_per_user(interactions: pd.DataFrame) -> None:
    split = last_fraction_per_user_split(interactions, 0.3)
    assert_partition(interactions, split)
    sizes = interactions.groupby(USER_ID).size()
    test_sizes = split.test.groupby(USER_ID).size().reindex(sizes.index, fill_value=0)
    expected = [min(math.ceil(0.3 * n - 1e-9), n - 1) for n in sizes]
    np.testing.assert_array_equal(test_sizes.to_numpy(), expected)
    latest_train = split.train.groupby(USER_ID)[TIMESTAMP].max()
    earliest_test = split.test.groupby(USER_ID)[TIMESTAMP].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()


# -- stratified (Microsoft Recommenders protocol) ----------------------------------


def test_stratified_proportions_per_user(interactions: pd.DataFrame) -> None:
    split = stratified_split(interactions)
    assert_partition(interactions, split)
    assert not pairs(split.train) & pairs(split.test)
    sizes = interactions.groupby(USER_ID).size()
    train_sizes = split.train.groupby(USER_ID).size().reindex(sizes.index, fill_value=0)
    # round-half-to-even(0.75 n) in train, the rest in test.
    np.testing.assert_array_equal(train_sizes.to_numpy(), np.round(0.75 * sizes.to_numpy()))
    assert len(split.train) / len(interactions) == pytest.approx(0.75, abs=0.02)


def test_stratified_small_users_by_hand() -> None:
    # Users with 1, 2, 3, 6 and 10 ratings: round(0.75 n) = 1, 2, 2, 4 (4.5 -> 4), 8 (7.5).
    rows = [(f"n{n}", f"i{i}") for n in (1, 2, 3, 6, 10) for i in range(n)]
    df = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID]).assign(**{WEIGHT: 1.0})
    split = stratified_split(df)
    train = split.train.groupby(USER_ID).size().to_dict()
    test = split.test.groupby(USER_ID).size().to_dict()
    assert train == {"n1": 1, "n2": 2, "n3": 2, "n6": 4, "n10": 8}
    assert test == {"n3": 1, "n6": 2, "n10": 2}


def test_stratified_is_deterministic_with_seed(interactions: pd.DataFrame) -> None:
    a = stratified_split(interactions, seed=7)
    b = stratified_split(interactions, seed=7)
    c = stratified_split(interactions, seed=8)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert set(a.test.index) != set(c.test.index)
    # Per-user sizes do not depend on the seed.
    pd.testing.assert_series_equal(a.test.groupby(USER_ID).size(), c.test.groupby(USER_ID).size())


def test_stratified_min_rating_and_item_mode(interactions: pd.DataFrame) -> None:
    split = stratified_split(interactions, 0.7, min_rating=10, filter_by="item")
    kept = interactions.groupby(ITEM_ID).filter(lambda g: len(g) >= 10)
    assert_partition(kept, split)
    sizes = kept.groupby(ITEM_ID).size()
    train_sizes = split.train.groupby(ITEM_ID).size().reindex(sizes.index, fill_value=0)
    np.testing.assert_array_equal(train_sizes.to_numpy(), np.round(0.7 * sizes.to_numpy()))


# -- cold items --------------------------------------------------------------------


def test_cold_item_split_has_no_leakage(interactions: pd.DataFrame) -> None:
    split = cold_item_split(interactions, 0.25, seed=3)
    assert_partition(interactions, split)
    cold = set(split.cold_items or ())
    n_items = interactions[ITEM_ID].nunique()
    assert len(cold) == round(0.25 * n_items)
    assert set(split.test[ITEM_ID]) == cold
    assert not set(split.train[ITEM_ID]) & cold
    # Every interaction of a cold item is in test.
    assert len(split.test) == interactions[ITEM_ID].isin(cold).sum()


def test_cold_item_split_is_seeded_and_order_independent(interactions: pd.DataFrame) -> None:
    a = cold_item_split(interactions, 0.2, seed=1)
    shuffled = interactions.sample(frac=1.0, random_state=0)
    b = cold_item_split(shuffled, 0.2, seed=1)
    c = cold_item_split(interactions, 0.2, seed=2)
    assert a.cold_items == b.cold_items
    assert a.cold_items != c.cold_items


def test_cold_item_split_restricted_candidates(interactions: pd.DataFrame) -> None:
    candidates = sorted(interactions[ITEM_ID].unique())[:10]
    split = cold_item_split(interactions, 0.5, items=candidates)
    assert set(split.cold_items or ()) <= set(candidates)
    assert len(split.cold_items or ()) == 5


# -- helpers -----------------------------------------------------------------------


def test_keep_known_drops_new_users() -> None:
    df = make_interactions(seed=4)
    split = keep_known(global_temporal_split(df, quantile=0.9))
    assert set(split.test[USER_ID]) <= set(split.train[USER_ID])
    both = keep_known(global_temporal_split(df, quantile=0.9), items=True)
    assert set(both.test[ITEM_ID]) <= set(both.train[ITEM_ID])


@pytest.mark.parametrize(
    ("protocol", "params"),
    [
        ("temporal_global", {"quantile": 0.8}),
        ("last_n_per_user", {"n": 2}),
        ("leave_last_one_out", {}),
        ("last_fraction_per_user", {"fraction": 0.25}),
        ("stratified", {"ratio": 0.75, "seed": 42}),
        ("cold_items", {"fraction": 0.2, "seed": 0}),
    ],
)
def test_validation_split_never_sees_test(
    interactions: pd.DataFrame, protocol: str, params: dict
) -> None:
    outer = make_split(interactions, protocol, **params)
    inner = validation_split(outer)
    assert inner.protocol == outer.protocol
    # The validation split only partitions the outer train part.
    assert_partition(outer.train, inner)
    assert not set(inner.train.index) & set(outer.test.index)
    assert not set(inner.test.index) & set(outer.test.index)
    assert len(inner.test) > 0


def test_validation_split_of_fixed_timestamp_cut(interactions: pd.DataFrame) -> None:
    outer = global_temporal_split(interactions, timestamp=8000.0)
    with pytest.raises(ValueError):
        validation_split(outer)
    inner = validation_split(outer, quantile=0.8)
    assert inner.train[TIMESTAMP].max() < inner.test[TIMESTAMP].min()
    assert inner.test[TIMESTAMP].max() < 8000.0
    frame_inner = validation_split(outer.train, "leave_last_one_out")
    assert_partition(outer.train, frame_inner)
    with pytest.raises(ValueError):
        validation_split(outer.train)


def test_make_split_rejects_unknown_protocol(interactions: pd.DataFrame) -> None:
    assert set(PROTOCOLS) >= {"stratified", "cold_items", "temporal_global"}
    with pytest.raises(ValueError, match="unknown protocol"):
        make_split(interactions, "nope")


# -- properties --------------------------------------------------------------------


@st.composite
def logs(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(2, 60))
    users = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    return pd.DataFrame(
        {
            USER_ID: [f"u{u}" for u in users],
            ITEM_ID: [f"i{i}" for i in items],
            TIMESTAMP: np.asarray(times, dtype=float),
            WEIGHT: 1.0,
        }
    )


@settings(max_examples=25, deadline=None)
@given(df=logs(), n=st.integers(1, 3), fraction=st.floats(0.05, 0.95))
def test_per_user_temporal_properties(df: pd.DataFrame, n: int, fraction: float) -> None:
    for split in (last_n_per_user_split(df, n), last_fraction_per_user_split(df, fraction)):
        assert_partition(df, split)
        # Every user keeps at least one train event.
        assert set(df[USER_ID]) == set(split.train[USER_ID])
        latest_train = split.train.groupby(USER_ID)[TIMESTAMP].max()
        earliest_test = split.test.groupby(USER_ID)[TIMESTAMP].min()
        assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()


@settings(max_examples=25, deadline=None)
@given(df=logs(), ratio=st.floats(0.1, 0.9), seed=st.integers(0, 2**31))
def test_stratified_properties(df: pd.DataFrame, ratio: float, seed: int) -> None:
    split = stratified_split(df, ratio, seed=seed)
    assert_partition(df, split)
    sizes = df.groupby(USER_ID).size()
    train_sizes = split.train.groupby(USER_ID).size().reindex(sizes.index, fill_value=0)
    np.testing.assert_array_equal(train_sizes.to_numpy(), np.round(ratio * sizes.to_numpy()))
    again = stratified_split(df, ratio, seed=seed)
    assert list(again.test.index) == list(split.test.index)


@settings(max_examples=25, deadline=None)
@given(df=logs(), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_cold_item_properties(df: pd.DataFrame, fraction: float, seed: int) -> None:
    if df[ITEM_ID].nunique() < 2:
        with pytest.raises(ValueError):
            cold_item_split(df, fraction, seed=seed)
        return
    split = cold_item_split(df, fraction, seed=seed)
    assert_partition(df, split)
    cold = set(split.cold_items or ())
    assert 1 <= len(cold) < df[ITEM_ID].nunique()
    assert not set(split.train[ITEM_ID]) & cold
    assert set(split.test[ITEM_ID]) == cold
