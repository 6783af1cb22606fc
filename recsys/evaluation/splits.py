"""Train/test split protocols for interaction logs.

Every protocol takes an interaction frame (``user_id``, ``item_id``, ``timestamp``,
``weight`` and any other columns, which are carried through untouched) and returns a
:class:`Split`. A ``Split`` unpacks like a tuple, so ``train, test = leave_last_one_out(df)``
works; it also records the protocol name and parameters so that a report can say how the
numbers were produced and :func:`validation_split` can repeat the protocol on the train part.

Row order inside ``train`` and ``test`` follows the input frame; the input index is kept, so
``train.index`` and ``test.index`` are disjoint subsets of ``df.index`` (for a frame with a
unique index) and together cover every row the protocol keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, TIMESTAMP, USER_ID

__all__ = [
    "PROTOCOLS",
    "Split",
    "cold_item_split",
    "global_temporal_split",
    "keep_known",
    "last_fraction_per_user_split",
    "last_n_per_user_split",
    "leave_last_one_out",
    "make_split",
    "stratified_split",
    "validation_split",
]

# Float slack for "fraction of n" arithmetic, so that e.g. 0.2 * 10 counts as exactly 2.
_EPS = 1e-9


@dataclass(frozen=True, eq=False)
class Split:
    """The result of a split protocol.

    Iterating yields ``(train, test)``. ``cold_items`` is set only by the cold-start
    protocol: the ids of the items whose interactions were all moved to ``test``.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    params: dict[str, Any] = field(default_factory=dict)
    cold_items: tuple[str, ...] | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.train, self.test))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``metrics.json``)."""
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "params": dict(self.params),
            "n_train": len(self.train),
            "n_test": len(self.test),
            "n_train_users": int(self.train[USER_ID].nunique()),
            "n_test_users": int(self.test[USER_ID].nunique()),
        }
        if self.cold_items is not None:
            out["n_cold_items"] = len(self.cold_items)
        return out


def _check_columns(df: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"interactions frame is missing columns: {missing}")


def _by_user_time(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions in (user, timestamp) order, each row's position in its user's
    history, and its user's event count. Equal timestamps keep input row order."""
    users = pd.factorize(df[USER_ID])[0]
    ts = df[TIMESTAMP].to_numpy(dtype=np.float64)
    order = np.lexsort((np.arange(len(df)), ts, users))
    sorted_users = users[order]
    counts = np.bincount(users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.arange(len(df)) - starts[sorted_users]
    return order, position, counts[sorted_users]


def _from_mask(
    df: pd.DataFrame,
    test_mask: np.ndarray,
    protocol: str,
    params: dict[str, Any],
    cold_items: tuple[str, ...] | None = None,
) -> Split:
    return Split(
        train=df.loc[~test_mask].copy(),
        test=df.loc[test_mask].copy(),
        protocol=protocol,
        params=params,
        cold_items=cold_items,
    )


def global_temporal_split(
    df: pd.DataFrame,
    *,
    quantile: float | None = None,
    timestamp: float | None = None,
) -> Split:
    """One time cut for everybody: ``train`` is every event strictly before the cut,
    ``test`` every event at or after it.

    Give exactly one of ``quantile`` (the cut is that quantile of all event timestamps,
    e.g. 0.8 keeps roughly the first 80 % of events for training) or ``timestamp``.
    """
    _check_columns(df, (USER_ID, ITEM_ID, TIMESTAMP))
    if (quantile is None) == (timestamp is None):
        raise ValueError("give exactly one of quantile or timestamp")
    if quantile is not None:
        if not 0.0 < quantile < 1.0:
            raise ValueError("quantile must be in (0, 1)")
        cut = float(np.quantile(df[TIMESTAMP].to_numpy(dtype=np.float64), quantile))
        params: dict[str, Any] = {"quantile": quantile, "cut_timestamp": cut}
    else:
        assert timestamp is not None
        cut = float(timestamp)
        params = {"cut_timestamp": cut}
    test_mask = df[TIMESTAMP].to_numpy(dtype=np.float64) >= cut
    return _from_mask(df, test_mask, "temporal_global", params)


def last_n_per_user_split(df: pd.DataFrame, n: int = 1, *, min_train_events: int = 1) -> Split:
    """Each user's last ``n`` events (by timestamp; ties keep input row order) go to test.

    A user keeps at least ``min_train_events`` events in train: users with fewer than
    ``n + min_train_events`` events stay entirely in train (they are never evaluated
    with an empty history). Use ``min_train_events=0`` to hold out regardless.
    """
    _check_columns(df, (USER_ID, ITEM_ID, TIMESTAMP))
    if n < 1:
        raise ValueError("n must be >= 1")
    if min_train_events < 0:
        raise ValueError("min_train_events must be >= 0")
    order, position, count = _by_user_time(df)
    in_test = (position >= count - n) & (count >= n + min_train_events)
    test_mask = np.zeros(len(df), dtype=bool)
    test_mask[order] = in_test
    return _from_mask(
        df, test_mask, "last_n_per_user", {"n": n, "min_train_events": min_train_events}
    )


def leave_last_one_out(df: pd.DataFrame, *, min_train_events: int = 1) -> Split:
    """Each user's most recent event goes to test (users with a single event stay in
    train unless ``min_train_events=0``)."""
    split = last_n_per_user_split(df, 1, min_train_events=min_train_events)
    return Split(
        split.train, split.test, "leave_last_one_out", {"min_train_events": min_train_events}
    )


def last_fraction_per_user_split(
    df: pd.DataFrame, fraction: float = 0.2, *, min_train_events: int = 1
) -> Split:
    """Each user's most recent ``ceil(fraction * n_events)`` events go to test.

    The held-out count is lowered so that at least ``min_train_events`` events stay in
    train; a user left with nothing to hold out stays entirely in train.
    """
    _check_columns(df, (USER_ID, ITEM_ID, TIMESTAMP))
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    if min_train_events < 0:
        raise ValueError("min_train_events must be >= 0")
    order, position, count = _by_user_time(df)
    n_test = np.ceil(count * fraction - _EPS).astype(np.int64)
    n_test = np.minimum(n_test, count - min_train_events)
    in_test = position >= count - n_test
    in_test &= n_test > 0
    test_mask = np.zeros(len(df), dtype=bool)
    test_mask[order] = in_test
    return _from_mask(
        df,
        test_mask,
        "last_fraction_per_user",
        {"fraction": fraction, "min_train_events": min_train_events},
    )


def stratified_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    *,
    seed: int = 42,
    min_rating: int = 1,
    filter_by: Literal["user", "item"] = "user",
) -> Split:
    """Per-user (or per-item) stratified random split, the protocol of
    ``python_stratified_split`` in Microsoft Recommenders, reproduced row for row.

    The procedure, which this function follows exactly so that the same input frame
    (same rows in the same order) and seed give the same split:

    1. groups (users, or items with ``filter_by="item"``) with fewer than ``min_rating``
       rows are dropped entirely (they are in neither part);
    2. every row gets a uniform random number from the legacy NumPy generator seeded
       with ``seed`` (``np.random.seed(seed); np.random.rand(n_rows)``), in input row
       order, after the filter of step 1;
    3. within each group rows are ranked by that number; the first
       ``round(ratio * n)`` rows of a group of size n go to train and the rest to test,
       with NumPy's round-half-to-even. So a user with 1 or 2 ratings stays entirely in
       train (round(0.75) = 1, round(1.5) = 2), 3 ratings split 2/1, 6 split 4/2
       (round(4.5) = 4) and 10 split 8/2 (round(7.5) = 8).

    This is the rule of the current library (checked against ``recommenders==1.2.1``).
    Older releases kept the rows with ``rank / n <= ratio`` (``floor(ratio * n)`` in
    train, so a single-rating user went to test); numbers published with those
    releases can differ slightly for users with few ratings.

    The Microsoft Recommenders MovieLens benchmark uses ``ratio=0.75, min_rating=1``,
    the default seed 42, k=10, every test rating relevant and train items removed from
    the recommendations (see :func:`recsys.evaluation.metrics.evaluate_rankings` with
    ``remove_seen=True``, ``relevance_threshold=None`` and
    ``missing_recommendations="skip"``). Its README describes the split as per user,
    which is the library default and this function's default; published versions of
    the benchmark notebook pass ``filter_by="item"`` instead, so pick ``filter_by`` to
    match the exact run being reproduced.
    """
    _check_columns(df, (USER_ID, ITEM_ID))
    if not 0.0 < ratio < 1.0:
        raise ValueError("ratio must be in (0, 1)")
    if min_rating < 1:
        raise ValueError("min_rating must be >= 1")
    if filter_by not in ("user", "item"):
        raise ValueError("filter_by must be 'user' or 'item'")
    key = USER_ID if filter_by == "user" else ITEM_ID
    params: dict[str, Any] = {
        "ratio": ratio,
        "seed": seed,
        "min_rating": min_rating,
        "filter_by": filter_by,
    }

    groups = pd.factorize(df[key])[0]
    sizes = np.bincount(groups)
    kept = sizes[groups] >= min_rating
    data = df.loc[kept]
    groups = groups[kept]

    random = np.random.RandomState(seed).rand(len(data))
    order = np.lexsort((random, groups))
    sorted_groups = groups[order]
    sizes = np.bincount(groups, minlength=int(sizes.size))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.empty(len(data), dtype=np.int64)
    rank[order] = np.arange(len(data)) - starts[sorted_groups] + 1
    count = sizes[groups].astype(np.float64)

    # Same arithmetic as the reference: cumulative sums of [ratio, 1 - ratio] times the
    # group size, rounded half to even (NumPy rounding).
    train_cut, test_cut = np.cumsum([ratio, 1.0 - ratio])
    train_n = np.round(train_cut * count)
    test_n = np.round(test_cut * count)
    train_mask = rank <= train_n
    test_mask = (rank > train_n) & (rank <= test_n)
    return Split(
        train=data.loc[train_mask].copy(),
        test=data.loc[test_mask].copy(),
        protocol="stratified",
        params=params,
    )


def cold_item_split(
    df: pd.DataFrame,
    fraction: float = 0.2,
    *,
    seed: int = 42,
    items: Iterable[str] | None = None,
) -> Split:
    """Item cold-start: every interaction of a seeded random ``fraction`` of the items
    goes to test, all other interactions to train.

    The candidate items are those with at least one interaction (or the ids given in
    ``items``, restricted to those). Only interactions move: item content (titles,
    tags, vectors) is not touched, so a content or hybrid model can still score the
    cold items. ``Split.cold_items`` lists them; test holds only their interactions,
    and no interaction of a cold item is in train. The choice depends only on the set
    of candidate ids and the seed, not on row order.
    """
    _check_columns(df, (USER_ID, ITEM_ID))
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    present = pd.Index(df[ITEM_ID].unique())
    if items is not None:
        present = present.intersection(pd.Index(list(items)))
    candidates = np.sort(present.to_numpy(dtype=object).astype(str))
    if candidates.size < 2:
        raise ValueError("need at least two items with interactions")
    n_cold = min(max(1, round(fraction * candidates.size)), candidates.size - 1)
    chosen = np.random.default_rng(seed).permutation(candidates.size)[:n_cold]
    cold = tuple(sorted(candidates[chosen].tolist()))
    test_mask = df[ITEM_ID].astype(str).isin(cold).to_numpy()
    return _from_mask(
        df,
        test_mask,
        "cold_items",
        {"fraction": fraction, "seed": seed, "n_cold_items": n_cold},
        cold_items=cold,
    )


def keep_known(split: Split, *, users: bool = True, items: bool = False) -> Split:
    """Drop test rows whose user (and/or item) never occurs in train.

    Useful after a global temporal cut, where new users have no history to rank from.
    Do not apply ``items=True`` to the cold-item protocol: it would empty the test set.
    """
    test = split.test
    mask = np.ones(len(test), dtype=bool)
    if users:
        mask &= test[USER_ID].isin(split.train[USER_ID].unique()).to_numpy()
    if items:
        mask &= test[ITEM_ID].isin(split.train[ITEM_ID].unique()).to_numpy()
    params = {**split.params, "keep_known_users": users, "keep_known_items": items}
    return Split(split.train, test.loc[mask].copy(), split.protocol, params, split.cold_items)


PROTOCOLS: dict[str, Callable[..., Split]] = {
    "temporal_global": global_temporal_split,
    "last_n_per_user": last_n_per_user_split,
    "leave_last_one_out": leave_last_one_out,
    "last_fraction_per_user": last_fraction_per_user_split,
    "stratified": stratified_split,
    "cold_items": cold_item_split,
}

# Parameters that are recorded in Split.params for information but are not arguments.
_DERIVED_PARAMS = {"cut_timestamp", "n_cold_items", "keep_known_users", "keep_known_items"}


def make_split(df: pd.DataFrame, protocol: str, **params: Any) -> Split:
    """Run a protocol by name (one of :data:`PROTOCOLS`)."""
    try:
        splitter = PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}") from None
    return splitter(df, **params)


def validation_split(
    split: Split | pd.DataFrame, protocol: str | None = None, **params: Any
) -> Split:
    """Split the train part again, for hyper-parameter search.

    Only ``split.train`` is looked at, so tuning on the result never sees the test
    part. With a :class:`Split` and no ``protocol`` the same protocol and parameters
    are repeated on the train part (``params`` override single values); a frame needs an
    explicit ``protocol``. A global cut given as a fixed timestamp cannot be repeated
    (the train part has nothing after it): pass ``quantile=`` or ``timestamp=`` then.
    The returned split's ``train`` is the inner training set, its ``test`` the
    validation set.
    """
    if isinstance(split, Split):
        train = split.train
        if protocol is None:
            protocol = split.protocol
            inherited = {k: v for k, v in split.params.items() if k not in _DERIVED_PARAMS}
            explicit_cut = bool({"quantile", "timestamp"} & params.keys())
            if protocol == "temporal_global" and not explicit_cut and "quantile" not in inherited:
                raise ValueError(
                    "the outer split used a fixed timestamp; pass quantile= or timestamp="
                )
            if {"quantile", "timestamp"} & params.keys():
                inherited.pop("quantile", None)
            params = {**inherited, **params}
    else:
        train = split
        if protocol is None:
            raise ValueError("protocol is required when splitting a bare frame")
    return make_split(train, protocol, **params)
