"""Experiments without a service: assignment, validation, the statistics of the report,
and the impression log's promises (bounded, retried, flushed on close)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recsys.config import FeedConfig
from recsys.evaluation.online import (
    p_value_against_control,
    ratio_estimate,
    two_sided_p,
)
from recsys.serving.experiments import InvalidExperiment, parse_experiment, variant_index
from recsys.serving.impressions import ImpressionLog, impression_rows, new_feed_id
from recsys.serving.types import FeedItem
from recsys.store import open_store
from recsys.store.impressions import count_impressions, feed_impressions

TWO = [{"name": "control", "share": 0.5}, {"name": "treatment", "share": 0.5}]


# --- assignment -------------------------------------------------------------------------------


def test_assignment_is_deterministic_and_follows_the_shares() -> None:
    experiment = parse_experiment(
        "shares",
        [
            {"name": "a", "share": 0.2},
            {"name": "b", "share": 0.3},
            {"name": "c", "share": 0.5},
        ],
        FeedConfig(),
    )
    users = [f"user-{n}" for n in range(20_000)]
    first = [experiment.assign(u).name for u in users]
    assert first == [experiment.assign(u).name for u in users]
    counts = Counter(first)
    for name, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        expected = share * len(users)
        sigma = (len(users) * share * (1 - share)) ** 0.5
        assert abs(counts[name] - expected) < 4 * sigma, (name, counts)


def test_assignment_depends_on_the_experiment_not_only_the_user() -> None:
    users = [f"user-{n}" for n in range(2_000)]
    one = [variant_index("first", u, (0.5, 0.5)) for u in users]
    other = [variant_index("second", u, (0.5, 0.5)) for u in users]
    # Independent splits agree on about half the users, not all of them.
    agreement = np.mean(np.array(one) == np.array(other))
    assert 0.4 < agreement < 0.6


def test_assignment_is_the_same_in_another_process() -> None:
    """Workers are separate processes: the hash must not depend on one (as hash() does)."""
    users = [f"user-{n}" for n in range(50)] + ["ü/ñ?", "x" * 512]
    here = [variant_index("cross", u, (0.3, 0.7)) for u in users]
    code = (
        "import json, sys; from recsys.serving.experiments import variant_index; "
        "users = json.loads(sys.stdin.read()); "
        "print(json.dumps([variant_index('cross', u, (0.3, 0.7)) for u in users]))"
    )
    import json

    there = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(users),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert json.loads(there.stdout) == here


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "variants", "message"),
    [
        ("", TWO, "name"),
        ("has space", TWO, "name"),
        ("x" * 65, TWO, "name"),
        ("ok", [{"name": "only", "share": 1.0}], "2 to"),
        ("ok", [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}], "distinct"),
        ("ok", [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}], "add up to 1"),
        ("ok", [{"name": "a", "share": 0}, {"name": "b", "share": 1.0}], "share"),
        ("ok", [{"name": "a", "share": True}, {"name": "b", "share": 0.5}], "share"),
        ("ok", [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "ranker": "x"}], "ranker"),
        (
            "ok",
            [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "feed": {"nope": 1}}],
            "unknown settings",
        ),
        (
            "ok",
            [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "feed": {"mmr_lambda": "x"}}],
            "mmr_lambda",
        ),
        (
            "ok",
            [
                {"name": "a", "share": 0.5},
                {"name": "b", "share": 0.5, "feed": {"candidates_per_source": 0}},
            ],
            "candidates_per_source",
        ),
        ("ok", [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "colour": 1}], "unknown"),
    ],
)
def test_invalid_definitions_name_their_problem(name: str, variants: object, message: str) -> None:
    with pytest.raises(InvalidExperiment, match=message):
        parse_experiment(name, variants, FeedConfig())


def test_a_popularity_variant_weighs_only_the_popular_source() -> None:
    experiment = parse_experiment(
        "pop", [*TWO[:1], {"name": "pop", "share": 0.5, "ranker": "popularity"}], FeedConfig()
    )
    config = experiment.variants[1].feed_config(FeedConfig())
    assert config.ranker == "blend" and config.recent_weight == 0
    for weights in (config.warm_weights, config.cold_weights):
        assert weights["popular"] == 1.0
        assert all(w == 0 for source, w in weights.items() if source != "popular")
    # The control arm is the service as configured, untouched.
    assert experiment.variants[0].feed_config(FeedConfig()) == FeedConfig()


# --- statistics -------------------------------------------------------------------------------


def clustered_users(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user impressions and actions where users differ a lot in how much they act:
    impressions of one user are not independent, as in a real feed."""
    impressions = rng.integers(5, 60, size=n)
    propensity = rng.beta(0.6, 4.0, size=n)
    actions = rng.binomial(impressions, propensity)
    return actions.astype(float), impressions.astype(float)


def test_a_a_splits_are_significant_about_five_percent_of_the_time() -> None:
    """The delta method over users keeps the false-alarm rate near its nominal 5 %; the
    impression-level test it replaces does not (shown on the same splits)."""
    rng = np.random.default_rng(11)
    actions, impressions = clustered_users(rng, 600)
    ours, naive = [], []
    for _ in range(400):
        group = rng.random(len(actions)) < 0.5
        a = ratio_estimate(actions[group], impressions[group])
        b = ratio_estimate(actions[~group], impressions[~group])
        ours.append(two_sided_p(a, b) < 0.05)
        # Impressions as independent Bernoulli draws.
        pa, pb = a.rate, b.rate
        na, nb = impressions[group].sum(), impressions[~group].sum()
        pooled = (actions.sum()) / (na + nb)
        z = (pa - pb) / np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        naive.append(abs(z) > 1.96)
    assert 0.02 <= np.mean(ours) <= 0.09, np.mean(ours)
    assert np.mean(naive) > 2 * np.mean(ours)


def test_a_real_difference_is_found() -> None:
    rng = np.random.default_rng(3)
    actions, impressions = clustered_users(rng, 800)
    better = rng.binomial(impressions.astype(int), 0.25).astype(float)
    control = ratio_estimate(actions, impressions)
    treatment = ratio_estimate(better, impressions)
    assert treatment.rate > control.rate
    assert p_value_against_control([control, treatment]) < 0.001
    low, high = treatment.interval  # type: ignore[misc]
    assert low < treatment.rate < high and 0.23 < treatment.rate < 0.27


def test_statistics_without_enough_users_are_unknown_not_wrong() -> None:
    empty = ratio_estimate(np.array([]), np.array([]))
    assert np.isnan(empty.rate) and empty.interval is None
    one = ratio_estimate(np.array([2.0]), np.array([10.0]))
    assert one.rate == 0.2 and one.interval is None
    assert np.isnan(p_value_against_control([one, one]))
    # Three variants: each against the control, Bonferroni-corrected.
    rng = np.random.default_rng(5)
    actions, impressions = clustered_users(rng, 300)
    same = ratio_estimate(actions, impressions)
    p_two = p_value_against_control([same, ratio_estimate(actions * 1.3, impressions)])
    p_three = p_value_against_control([same, same, ratio_estimate(actions * 1.3, impressions)])
    assert p_three == pytest.approx(min(1.0, 2 * p_two))


# --- the impression log -----------------------------------------------------------------------


def rows_for(n_pages: int, per_page: int = 5) -> list[list[tuple[object, ...]]]:
    pages = []
    for page in range(n_pages):
        items = [FeedItem(f"item-{page}-{i}", 1.0, ["content"], "") for i in range(per_page)]
        pages.append(
            impression_rows(
                new_feed_id(),
                items,
                user_id=f"user-{page}",
                surface="feed",
                model_version="v1",
                ranker="blend",
                experiment=None,
                variant=None,
                shown_at=1_700_000_000.0 + page,
            )
        )
    return pages


def test_queued_impressions_are_written_by_the_thread_and_on_close(tmp_path: Path) -> None:
    store = open_store(url=f"sqlite:///{tmp_path / 'imp.db'}")
    log = ImpressionLog(store, flush_seconds=0.05)
    pages = rows_for(40)
    for rows in pages:
        assert log.record(rows)
    deadline = threading.Event()
    for _ in range(100):
        if log.written == 200:
            break
        deadline.wait(0.05)
    assert log.written == 200
    # Written last, flushed by close() before the thread's next tick.
    slow = ImpressionLog(store, flush_seconds=60)
    late = rows_for(3)
    for rows in late:
        slow.record(rows)
    slow.close()
    log.close()
    with store.read() as conn:
        assert count_impressions(conn) == 215
        page = feed_impressions(conn, str(pages[7][0][0]))
    assert page["position"].tolist() == [0, 1, 2, 3, 4]
    assert page["item_id"].tolist() == [f"item-7-{i}" for i in range(5)]
    assert set(page["user_id"]) == {"user-7"}


def test_a_store_outage_keeps_rows_for_the_next_try_and_a_full_queue_drops_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(url=f"sqlite:///{tmp_path / 'imp.db'}")
    store.ensure_schema()
    dropped: list[int] = []
    log = ImpressionLog(store, capacity_rows=12, flush_seconds=3600)
    log.on_dropped = dropped.append
    pages = rows_for(4, per_page=4)
    assert log.record(pages[0]) and log.record(pages[1]) and log.record(pages[2])
    assert not log.record(pages[3])  # 16 > 12: refused whole, counted
    assert dropped == [4] and log.dropped == 4

    real = store.transaction

    def down() -> object:
        raise ConnectionError("store down")

    monkeypatch.setattr(store, "transaction", down)
    with pytest.raises(ConnectionError):
        log.flush()
    assert log.pending == 12  # nothing lost while the store is down
    monkeypatch.setattr(store, "transaction", real)
    assert log.flush() == 12
    # A retried write cannot store a row twice.
    with store.transaction() as conn:
        from recsys.store.impressions import insert_impressions

        assert insert_impressions(conn, pages[0]) == 0
        assert count_impressions(conn) == 12
    log.close()
