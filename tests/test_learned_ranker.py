"""The learned ranker: features equal on the training and serving paths, no label event in
any feature, a text model that round-trips, the blend as the fallback, a reason for every
pick, and a gate that refuses a ranker no better than the blend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import FeedConfig, RankerConfig, Settings
from recsys.events import validate_events
from recsys.models.activity import DAY, ActivityByRow, ActivityLog
from recsys.models.ranker import RankerModel
from recsys.rank_training import (
    UserLists,
    _fit_and_gate,
    grade,
    labelled_users,
    ndcg_at_k,
    ndcg_of_lists,
    user_features,
)
from recsys.serving import Recommender
from recsys.serving.features import (
    Candidates,
    candidate_features,
    feature_names,
    recent_liked_rows,
    union,
)
from recsys.serving.learned import LearnedRanker
from recsys.serving.ranking import BlendRanker
from recsys.serving.sources import CandidateList, FeedRequest, default_sources, gather
from recsys.serving.state import ServingState
from recsys.store.runs import list_runs
from tests.conftest import TrainedWorld, build_trained_world

TYPES = Settings(_env_file=None).event_types  # type: ignore[call-arg]
NAMES = tuple(name for name, _ in feature_names())


@pytest.fixture(scope="module")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedWorld]:
    """The demo world, its ranker published whatever its gate says (on this small world it
    ties the blend), so that the serving path can be checked."""
    world = build_trained_world(
        tmp_path_factory.mktemp("ranked") / "home",
        ranker=RankerConfig(margin=-1.0),
        feed=FeedConfig(ranker="auto"),
    )
    yield world
    world.store.dispose()


@pytest.fixture(scope="module")
def recommender(trained_world: TrainedWorld):
    recommender = Recommender.open(trained_world.store, trained_world.settings)
    yield recommender
    recommender.close()


def _state(recommender: Recommender) -> ServingState:
    state = recommender.require_state()
    assert state.ranker is not None, "the demo world's ranker should pass its gate"
    return state


def _quiet_user(recommender: Recommender, state: ServingState) -> str:
    """A user with history whose every event is older than the version's newest one."""
    with recommender.store.read() as conn:
        row = conn.exec_driver_sql(
            "SELECT user_id FROM events GROUP BY user_id "
            "HAVING max(timestamp) < ? AND count(*) >= 20 ORDER BY user_id LIMIT 1",
            (state.trained_at - 3600.0,),
        ).first()
    assert row is not None
    return str(row[0])


def _as_training(state: ServingState) -> ServingState:
    """The served state read as the training reads it: item activity searched in the log
    at each moment instead of the table kept for the version's newest event."""
    return ServingState(
        version=state.version,
        trained_at=state.trained_at,
        index=state.index,
        models=state.models,
        catalogue=state.catalogue,
        reference_dwell=state.reference_dwell,
        ranker=state.ranker,
        activity=ActivityByRow(state.activity.log, state.activity.row_codes),  # type: ignore[attr-defined]
    )


def test_the_nightly_run_records_the_ranker_and_its_gate(trained_world: TrainedWorld) -> None:
    with trained_world.store.read() as conn:
        run = list_runs(conn)[0]
    ranker = run.metrics["ranker"]
    assert ranker["status"] == "published"
    assert ranker["ndcg@10"] > 0 and ranker["blend_ndcg@10"] > 0
    assert ranker["trees"] >= 10 and ranker["gate_users"] > 0
    assert ranker["labels"] == "newest"
    assert len(ranker["top_features"]) == 8


def test_training_and_serving_compute_the_same_features(recommender: Recommender) -> None:
    """The served page's features (the version's activity table at its newest event, the
    whole history) equal the training path's for the same user at the same moment (the
    activity log searched, the history read up to the moment)."""
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    served: dict[str, np.ndarray] = {}
    model = state.ranker
    assert model is not None
    original = model.leaves

    def capture(matrix: np.ndarray) -> np.ndarray:
        served["matrix"] = matrix.copy()
        return original(matrix)

    model.leaves = capture  # type: ignore[method-assign]
    try:
        history = recommender.history(state, user)
        request = recommender.request(state, user, history, 10, set(), None)
        lists = gather(default_sources(), request)
        ranked = LearnedRanker().rank(request, lists, set())
    finally:
        del model.leaves
    assert ranked is not None
    as_training = _as_training(state)
    trained = user_features(
        recommender.store, recommender.settings, as_training, user, state.trained_at
    )
    assert trained is not None
    assert trained.ids == ranked.ids
    order = [NAMES.index(name) for name in model.features]
    np.testing.assert_allclose(trained.features[:, order], served["matrix"], equal_nan=True)
    # The features carry information: ranks, activity and taste are not all missing.
    assert np.isfinite(served["matrix"]).mean() > 0.4


def test_events_after_the_moment_change_no_feature(recommender: Recommender) -> None:
    """The label events (everything from the moment on) are never in the features."""
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    as_training = _as_training(state)
    moment = state.trained_at - 2 * DAY
    before = user_features(recommender.store, recommender.settings, as_training, user, moment)
    assert before is not None
    # Likes, views and a skip of the user's own top candidates, from the moment on.
    later = pd.DataFrame(
        {
            "user_id": user,
            "item_id": before.ids[:6],
            "type": ["like", "like", "view", "view", "skip", "dislike"],
            "timestamp": moment + np.arange(6) * 60.0,
            "dwell_seconds": [None, None, 300.0, 300.0, None, None],
        }
    )
    checked = validate_events(later, event_types=TYPES)
    assert checked.rejects.empty
    recommender.ingest_events(checked.valid)
    after = user_features(recommender.store, recommender.settings, as_training, user, moment)
    assert after is not None
    assert after.ids == before.ids
    np.testing.assert_array_equal(after.features, before.features)
    # Asked a second after those events, the user has moved on.
    moved = user_features(
        recommender.store, recommender.settings, as_training, user, moment + 3600.0
    )
    assert moved is not None and moved.ids != before.ids


def test_activity_counts_only_events_before_the_moment() -> None:
    codes = np.array([0, 0, 0, 1, 1, 2])
    times = np.array([0.0, 10 * DAY, 50 * DAY, 20 * DAY, 400 * DAY, 399 * DAY])
    log = ActivityLog(codes, times, n_items=4)
    described = log.describe_codes(np.array([0, 1, 2, 3, -1]), moment=400 * DAY)
    # Windows of 7, 30, 90 and 365 days before day 400, strictly before it.
    np.testing.assert_array_equal(
        described[:, :4], [[0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0] * 4, [0] * 4]
    )
    np.testing.assert_array_equal(described[:3, 4], [0.0, 20 * DAY, 399 * DAY])
    assert np.isnan(described[3, 4]) and np.isnan(described[4, 4])
    # At day 15 only the first two events of item 0 are past (both within 30 days, one
    # within 7); item 2 is not born yet.
    early = log.describe_codes(np.array([0, 2]), moment=15 * DAY)
    np.testing.assert_array_equal(early[:, :4], [[1, 2, 2, 2], [0, 0, 0, 0]])
    assert np.isnan(early[1, 4])


def test_labels_are_graded_new_positives_of_the_held_back_events() -> None:
    import scipy.sparse as sp

    from recsys.dataset import IdMap, InteractionData
    from recsys.rank_training import Holdout

    # user 0: a like (4), a short view (0.5) and a skip on new items, and a like of an item
    # they had before; user 1: only a skip held back.
    rows = np.array([0, 0, 0, 0, 0, 1, 1])
    cols = np.array([0, 1, 2, 3, 4, 0, 1])
    vals = np.array([2.0, 4.0, 0.5, -1.0, 4.0, 2.0, -1.0], dtype=np.float32)
    times = np.array([1.0, 5.0, 6.0, 7.0, 8.0, 1.0, 9.0])
    held = np.array([False, True, True, True, True, False, True])
    train = InteractionData(
        matrix=sp.csr_matrix(([2.0, 2.0, 1.0], ([0, 1, 0], [0, 0, 4])), shape=(2, 5)),
        users=IdMap(["a", "b"]),
        items=IdMap(["i0", "i1", "i2", "i3", "i4"]),
    )
    labels = labelled_users(Holdout(rows, cols, vals, times, held, train))
    assert labels[["row", "col", "grade"]].values.tolist() == [[0, 1, 3], [0, 2, 1]]
    assert labels["moment"].tolist() == [5.0, 5.0]
    np.testing.assert_array_equal(
        grade(np.array([-1.0, 0.0, 0.5, 2.0, 4.0, 9.0])), [0, 0, 1, 2, 3, 3]
    )


def test_items_turned_down_in_the_label_period_are_the_first_negatives() -> None:
    import scipy.sparse as sp

    from recsys.dataset import IdMap, InteractionData
    from recsys.rank_training import Holdout, passed_over_in_holdout

    # User 0 (labelled by a like of item 1) skipped item 2, disliked item 3, skipped then
    # liked item 4 (nets positive) in the held-back period, and skipped item 5 before it.
    # User 1 only skipped item 2: without a label, nothing of theirs is a negative.
    rows = np.array([0, 0, 0, 0, 0, 0, 0, 1])
    cols = np.array([0, 1, 2, 3, 4, 4, 5, 2])
    vals = np.array([4.0, 4.0, -1.0, -4.0, -1.0, 4.0, -1.0, -1.0], dtype=np.float32)
    times = np.array([1.0, 5.0, 6.0, 7.0, 8.0, 9.0, 2.0, 9.0])
    held = np.array([False, True, True, True, True, True, False, True])
    train = InteractionData(
        matrix=sp.csr_matrix(([4.0, -1.0], ([0, 0], [0, 5])), shape=(2, 6)),
        users=IdMap(["a", "b"]),
        items=IdMap([f"i{i}" for i in range(6)]),
    )
    holdout = Holdout(rows, cols, vals, times, held, train)
    labels = labelled_users(holdout)
    assert sorted(labels["col"].tolist()) == [1, 4]
    found = passed_over_in_holdout(holdout, labels, RankerConfig())
    assert sorted(map(tuple, found[["row", "col"]].values.tolist())) == [(0, 2), (0, 3)]
    off = passed_over_in_holdout(holdout, labels, RankerConfig(rejected_negatives=False))
    assert off.empty


def test_ranker_file_round_trips_as_text(recommender: Recommender, tmp_path: Path) -> None:
    model = _state(recommender).ranker
    assert model is not None
    model.save(tmp_path / "ranker")
    files = sorted(p.name for p in (tmp_path / "ranker").iterdir())
    assert files == ["model.txt", "ranker.json"]
    assert (tmp_path / "ranker" / "model.txt").read_text().startswith("tree")
    loaded = RankerModel.load(tmp_path / "ranker")
    assert loaded is not None and loaded.features == model.features
    matrix = np.random.default_rng(0).normal(size=(50, len(model.features)))
    np.testing.assert_allclose(loaded.score(matrix), model.score(matrix))
    np.testing.assert_allclose(loaded.score(matrix), model.booster.predict(matrix), rtol=1e-12)
    assert RankerModel.load(tmp_path / "nothing-here") is None
    sidecar = tmp_path / "ranker" / "ranker.json"
    sidecar.write_text(sidecar.read_text().replace('"format_version": 1', '"format_version": 9'))
    with pytest.raises(ValueError, match="unsupported ranker format"):
        RankerModel.load(tmp_path / "ranker")


def test_the_ranker_serves_and_explains_every_pick(recommender: Recommender) -> None:
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    assert isinstance(recommender.ranker_for(state), LearnedRanker)
    page = recommender.feed(user, limit=20)
    assert len(page.items) == 20
    families = set(state.ranker.family_names)  # type: ignore[union-attr]
    for item in page.items:
        assert item.reason
        assert item.sources, item
        assert set(item.breakdown) - {"fatigue"} <= families
        assert set(item.sources) <= families
    # The parts are the model's own: they add up to the score's spread, not to zero.
    assert any(abs(v) > 1e-3 for item in page.items for v in item.breakdown.values())
    # And to each pick's score exactly (the fatigue penalty included).
    for item in page.items:
        assert sum(item.breakdown.values()) == pytest.approx(item.score, abs=1e-4), item


def test_contributions_add_up_to_the_score_and_credit_the_feature_that_decides() -> None:
    import lightgbm

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, len(NAMES)))
    # The grade follows the first feature and, more weakly, an interaction of two others.
    y = np.digitize(x[:, 0] + 0.3 * x[:, 1] * x[:, 2], [0.0, 1.0, 2.0])
    params = {"objective": "lambdarank", "num_leaves": 7, "verbosity": -1, "seed": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y, group=[50] * 60), 120)
    families = tuple(family for _, family in feature_names())
    model = RankerModel(booster, NAMES, families)
    rows = rng.normal(size=(40, len(NAMES)))
    parts = model.contributions(rows)
    assert parts.shape == (40, len(model.family_names))
    np.testing.assert_allclose(parts.sum(axis=1), booster.predict(rows, raw_score=True))
    # The score a page ranks by is the sum of the leaves the same call found: LightGBM's own.
    np.testing.assert_allclose(model.score(rows), booster.predict(rows), rtol=1e-12, atol=1e-12)
    leaves = model.leaves(rows)
    np.testing.assert_array_equal(model.contributions_of(leaves[5:9]), parts[5:9])
    # The baseline is the same for every row; the deciding feature's family moves most.
    assert np.ptp(parts[:, -1]) == 0.0
    spread = np.abs(parts[:, :-1]).mean(axis=0)
    assert model.family_names[int(np.argmax(spread))] == families[0]
    # Raising the deciding feature raises its family's credit.
    low, high = rows[:1].copy(), rows[:1].copy()
    low[0, 0], high[0, 0] = -3.0, 3.0
    column = model.family_names.index(families[0])
    assert model.contributions(high)[0, column] > model.contributions(low)[0, column] + 0.5


def test_the_blend_takes_over_without_a_ranker(
    recommender: Recommender, trained_world: TrainedWorld
) -> None:
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    settings = trained_world.settings.model_copy(
        update={"feed": trained_world.settings.feed.model_copy(update={"ranker": "blend"})}
    )
    blend_only = Recommender(trained_world.store, settings, recommender.vectors)
    blend_only.live = recommender.live
    assert isinstance(blend_only.ranker_for(state), BlendRanker)
    forced = Recommender(
        trained_world.store, trained_world.settings, recommender.vectors, ranker=BlendRanker()
    )
    forced.live = recommender.live
    page = blend_only.feed(user, limit=10)
    assert [i.item_id for i in page.items] == [i.item_id for i in forced.feed(user, limit=10).items]
    # The blend's breakdown is its sources' parts; the item-to-item source, weightless in
    # the blend, is not even asked.
    assert all(set(i.breakdown) - {"fatigue"} <= set(i.sources) for i in page.items)
    assert not any("item2item" in i.sources for i in page.items)
    # A version without a ranker (an older one, or one whose ranker was refused).
    without = ServingState(
        version=state.version,
        trained_at=state.trained_at,
        index=state.index,
        models=state.models,
        catalogue=state.catalogue,
        reference_dwell=state.reference_dwell,
    )
    assert isinstance(recommender.ranker_for(without), BlendRanker)


def _lists(n_users: int, signal_in_features: bool, seed: int) -> list[UserLists]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        labels = np.zeros(60, dtype=np.int64)
        labels[rng.choice(60, 4, replace=False)] = rng.integers(1, 4, 4)
        features = rng.normal(size=(60, len(NAMES)))
        blend = rng.normal(size=60)
        if signal_in_features:
            features[:, 0] += 2.0 * labels
        else:
            blend += 2.0 * labels
        out.append(UserLists(f"u{u}", features, labels, blend, relevant=int((labels > 0).sum())))
    return out


def test_the_gate_refuses_a_ranker_no_better_than_the_blend() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    # The blend sees the labels; the ranker's features are noise.
    model, metrics = _fit_and_gate(settings, _lists(200, False, 1), np.random.default_rng(0))
    assert model is None
    assert metrics["status"] == "refused"
    assert "does not beat the blend" in metrics["reason"]
    assert metrics["ndcg@10"] < metrics["blend_ndcg@10"]
    # The other way round it is kept, with its trees chosen by cross-validation.
    model, metrics = _fit_and_gate(settings, _lists(200, True, 2), np.random.default_rng(0))
    assert model is not None and metrics["status"] == "published"
    assert metrics["ndcg@10"] > 1.5 * metrics["blend_ndcg@10"]
    assert metrics["top_features"][0] == NAMES[0]


def test_ndcg_counts_relevant_items_no_source_proposed() -> None:
    labels = np.array([1, 0, 0, 1])
    assert ndcg_at_k(np.array([4.0, 3.0, 2.0, 1.0]), labels, relevant=2) == pytest.approx(
        (1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3))
    )
    # Two more relevant items that no source found lower the same ranking's NDCG.
    assert ndcg_at_k(np.array([4.0, 3.0, 2.0, 1.0]), labels, relevant=4) < ndcg_at_k(
        np.array([4.0, 3.0, 2.0, 1.0]), labels, relevant=2
    )
    assert ndcg_at_k(np.array([1.0]), np.array([0]), relevant=0) == 0.0


def test_ndcg_of_many_lists_is_each_lists_own_ndcg() -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 40, 200)
    lengths[:3] = [1, 5, 12]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    # Few distinct scores, so ties are common and their order must be the list's.
    scores = rng.integers(0, 6, bounds[-1]).astype(np.float64)
    labels = (rng.random(bounds[-1]) < 0.2) * rng.integers(1, 4, bounds[-1])
    proposed = np.add.reduceat(labels > 0, bounds[:-1])
    relevant = proposed + rng.integers(0, 3, len(lengths))
    relevant[0] = 0
    batched = ndcg_of_lists(scores, labels, bounds, relevant)
    for i in range(len(lengths)):
        part, marks = scores[bounds[i] : bounds[i + 1]], labels[bounds[i] : bounds[i + 1]]
        order = sorted(range(len(part)), key=lambda j: (-part[j], j))[:10]
        gain = sum(1 / np.log2(place + 2) for place, j in enumerate(order) if marks[j] > 0)
        ideal = sum(1 / np.log2(place + 2) for place in range(min(relevant[i], 10)))
        assert batched[i] == pytest.approx(gain / ideal if relevant[i] else 0.0)
        assert ndcg_at_k(part, marks, int(relevant[i])) == pytest.approx(batched[i])
    assert batched[0] == 0.0 and (batched[1:] > 0).any()


def _quiet_candidates(
    recommender: Recommender,
) -> tuple[ServingState, FeedRequest, list[CandidateList], Candidates]:
    """A quiet user's page request, its source lists and their union."""
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    history = recommender.history(state, user)
    request = recommender.request(state, user, history, 10, set(), None)
    lists = gather(default_sources(), request)
    candidates = union(request, lists, set())
    assert candidates is not None
    return state, request, lists, candidates


def test_features_of_unknown_candidates_are_missing(recommender: Recommender) -> None:
    state, request, lists, candidates = _quiet_candidates(recommender)
    candidates.rows[0] = -1
    matrix = candidate_features(request, lists, candidates, state.activity, NAMES)
    for name in ("popularity_share", "age_days", "content_to_likes_max", "category_affinity"):
        assert np.isnan(matrix[0, NAMES.index(name)]), name


def test_category_and_tag_affinity_are_the_shares_of_recent_likes(
    recommender: Recommender,
) -> None:
    """Each candidate's category affinity is the share of the user's recent likes in its
    category; its tag affinity, the mean over its tags of the share of likes carrying it."""
    state, request, lists, candidates = _quiet_candidates(recommender)
    matrix = candidate_features(request, lists, candidates, state.activity, NAMES)
    catalogue = state.catalogue
    liked = recent_liked_rows(request).tolist()
    assert liked, "the user should have recent likes"
    expected_category, expected_tags = [], []
    for row in candidates.rows.tolist():
        category = catalogue.categories[row]
        in_category = [catalogue.categories[r] for r in liked].count(category)
        expected_category.append(in_category / len(liked) if category is not None else 0.0)
        tags = catalogue.tags[row]
        per_tag = [sum(tag in catalogue.tags[r] for r in liked) for tag in tags]
        expected_tags.append(sum(per_tag) / len(tags) / len(liked) if tags else 0.0)
    category_column = matrix[:, NAMES.index("category_affinity")]
    tag_column = matrix[:, NAMES.index("tag_affinity")]
    np.testing.assert_allclose(category_column, expected_category, rtol=1e-12)
    np.testing.assert_allclose(tag_column, expected_tags, rtol=1e-12)
    # The data gives both columns something to say: not all equal, not all zero.
    assert len(set(category_column.round(6))) > 1 and len(set(tag_column.round(6))) > 1


def test_models_list_says_which_ranker_serves(
    trained_world: TrainedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from recsys import config
    from recsys.cli import app, ranks_with

    monkeypatch.setenv("RECSYS_HOME", str(trained_world.settings.home))
    monkeypatch.setenv("RECSYS_FEED__RANKER", "auto")
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    config.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["models", "list"])
    finally:
        config.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    live = [line for line in result.output.splitlines() if line.startswith("*")]
    assert len(live) == 1 and "ranker=learned" in live[0]
    published = {"ranker": {"status": "published"}}
    assert ranks_with(published, "blend") == "ranker=blend"
    assert ranks_with({"ranker": {"status": "refused", "reason": "x"}}, "auto") == "ranker=blend"
    assert ranks_with({}, "auto") == ""


def test_folds_keep_each_users_lists_together() -> None:
    from recsys.rank_training import UserLists, user_folds

    def lists_of(user: str) -> UserLists:
        return UserLists(user, np.zeros((1, 1)), np.zeros(1), np.zeros(1), relevant=1)

    # 30 users, ten of them labelled in a second window too.
    lists = [lists_of(f"u{i:02d}") for i in range(30)] + [lists_of(f"u{i:02d}") for i in range(10)]
    folds = user_folds(lists, 5, np.random.default_rng(0))
    fold_of_user: dict[str, set[int]] = {}
    for user, fold in zip(lists, folds, strict=True):
        fold_of_user.setdefault(user.user, set()).add(fold)
    assert all(len(f) == 1 for f in fold_of_user.values())
    # Users, not lists, are spread evenly: 6 users per fold.
    per_fold = np.bincount([f.pop() for f in fold_of_user.values()], minlength=5)
    np.testing.assert_array_equal(per_fold, np.full(5, 6))


def test_random_holdouts_give_the_ranker_a_second_window(tmp_path: Path) -> None:
    """Held back at random, with fewer labelled users than ``max_users``, the ranker learns
    from two holdouts: most users are labelled in both, each window with its own fits."""
    world = build_trained_world(tmp_path / "home", scale=0.2, gate_holdout="random")
    try:
        with world.store.read() as conn:
            ranker = list_runs(conn)[0].metrics["ranker"]
        assert ranker["labels"] == "random" and ranker["windows"] == 2
        assert ranker["users"] < ranker["lists"] <= 2 * ranker["users"]
        assert ranker["status"] in ("published", "refused")
    finally:
        world.store.dispose()


def test_newest_holdouts_give_the_ranker_an_earlier_window_and_one_when_asked(
    trained_world: TrainedWorld, tmp_path: Path
) -> None:
    """Each user's newest events held back, the ranker also learns from the window before
    them (tests/test_label_windows.py: what that window sees); one window when asked."""
    with trained_world.store.read() as conn:
        newest = list_runs(conn)[0].metrics["ranker"]
    assert newest["labels"] == "newest" and newest["windows"] == 2
    assert newest["users"] < newest["lists"] <= 2 * newest["users"]
    # A ranker of the earlier window alone, scored on the newest one.
    assert 0 < newest["forward_users"] < newest["lists"]
    assert 0.0 <= newest["forward_ndcg@10"] <= 1.0 and 0.0 <= newest["forward_blend_ndcg@10"] <= 1.0
    world = build_trained_world(
        tmp_path / "home",
        scale=0.2,
        gate_holdout="random",
        ranker=RankerConfig(label_windows=1),
    )
    try:
        with world.store.read() as conn:
            ranker = list_runs(conn)[0].metrics["ranker"]
        assert ranker["labels"] == "random" and ranker["windows"] == 1
        assert ranker["lists"] == ranker["users"]
    finally:
        world.store.dispose()


def test_random_holdout_holds_a_share_of_each_user_among_their_events() -> None:
    from pipelines.train import held_back

    rows = np.repeat(np.arange(40), 50)
    times = np.tile(np.arange(50, dtype=np.float64), 40)
    ignored = np.zeros(len(rows), dtype=bool)
    newest = held_back(rows, times, ignored, 0.2)
    randomly = held_back(rows, times, ignored, 0.2, randomly=True, seed=1)
    # The same share per user either way (ceil(0.2 * 50) = 10 events).
    np.testing.assert_array_equal(np.bincount(rows[randomly]), np.full(40, 10))
    assert times[newest].min() == 40.0
    # At random, held-back events reach back through the users' histories.
    assert times[randomly].min() < 10.0 and times[randomly].mean() < 35.0
    np.testing.assert_array_equal(
        randomly, held_back(rows, times, ignored, 0.2, randomly=True, seed=1)
    )
    assert not np.array_equal(randomly, held_back(rows, times, ignored, 0.2, randomly=True, seed=2))


def test_random_labels_ask_after_the_latest_known_event_and_hide_the_held_items() -> None:
    import scipy.sparse as sp

    from recsys.dataset import IdMap, InteractionData
    from recsys.rank_training import Holdout, hidden_items

    # user 0: items 0..4 at times 1..5; items 1 (a like) and 3 (a view of an item the user
    # also has a kept event on, item 3 at time 6) are held back among the others.
    rows = np.array([0, 0, 0, 0, 0, 0])
    cols = np.array([0, 1, 2, 3, 4, 3])
    vals = np.array([2.0, 4.0, 2.0, 1.0, 2.0, 2.0], dtype=np.float32)
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    held = np.array([False, True, False, True, False, False])
    train = InteractionData(
        matrix=sp.csr_matrix(([2.0, 2.0, 2.0, 2.0], ([0, 0, 0, 0], [0, 2, 3, 4])), shape=(1, 5)),
        users=IdMap(["a"]),
        items=IdMap(["i0", "i1", "i2", "i3", "i4"]),
    )
    holdout = Holdout(rows, cols, vals, times, held, train, randomly=True)
    labels = labelled_users(holdout)
    # Item 3 was consumed before (its kept event): only item 1 is a label.
    assert labels[["row", "col"]].values.tolist() == [[0, 1]]
    assert labels["moment"].tolist() == [7.0]
    assert hidden_items(holdout, labels) == {0: {1}}
    # Held back as the newest events, the moment is their start and nothing is hidden.
    newest = Holdout(rows, cols, vals, times, held, train)
    assert labelled_users(newest)["moment"].tolist() == [2.0]
    assert hidden_items(newest, labelled_users(newest)) == {}


def test_hidden_items_are_out_of_the_history_and_back_among_the_candidates(
    recommender: Recommender,
) -> None:
    """A label held back among the user's other events: the training path reads the user
    without it, so it is a candidate again and no feature sees it."""
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    history = recommender.history(state, user)
    liked, _ = history.liked_and_disliked()
    moment = float(history.timestamps.max()) + 1.0
    hide = frozenset(liked[:3])
    settings = recommender.settings
    shown = user_features(recommender.store, settings, state, user, moment)
    hidden = user_features(recommender.store, settings, state, user, moment, hide)
    assert shown is not None and hidden is not None
    assert not hide & set(shown.ids)
    assert hide & set(hidden.ids), "a hidden like is no longer consumed"
    read = recommender.history(state, user, until=moment)
    from recsys.serving.history import user_history

    without = user_history(
        recommender.store,
        settings,
        state.catalogue,
        state.reference_dwell,
        user,
        settings.feed.history_events,
        until=moment,
        hidden=hide,
    )
    assert not hide & set(without.item_ids.tolist())
    assert len(without) == len(read) - int(np.isin(read.item_ids, list(hide)).sum())
    likes = NAMES.index("liked_items")
    assert hidden.features[0, likes] == shown.features[0, likes] - len(hide)


def test_scores_are_relative_to_each_lists_best(recommender: Recommender) -> None:
    """A model refitted on more events scores everything higher; the features do not
    move, because each list's scores are divided by its best."""
    state = _state(recommender)
    user = _quiet_user(recommender, state)
    found = user_features(
        recommender.store, recommender.settings, state, user, state.trained_at + 1.0
    )
    assert found is not None
    for name in ("behavioural_score", "hybrid_score", "item2item_score", "als_affinity"):
        column = found.features[:, NAMES.index(name)]
        assert np.nanmax(np.abs(column)) == pytest.approx(1.0), name
    share = found.features[:, NAMES.index("popularity_share")]
    assert np.nanmin(share) >= 0.0 and np.nanmax(share) < 1.0
