"""The nightly job: publish, registry, quality gate, crash safety and cold items."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.ingest import import_frames
from pipelines.train import GateRefused, TrainingError, check_gate, train
from recsys.config import Settings
from recsys.serving import Recommender
from recsys.store import Store
from recsys.store.engine import make_engine
from recsys.store.runs import list_runs
from recsys.vectors import open_vector_store
from tests.conftest import TrainedWorld, build_trained_world

REPO = Path(__file__).resolve().parents[2]


def test_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(TrainingError, match="no events yet"):
        train(Store(make_engine(settings.sqlalchemy_url)), settings)


def _small_store(home: Path, events: list[tuple[str, str, str, float]], items: pd.DataFrame):
    settings = Settings(  # type: ignore[call-arg]
        home=home, _env_file=None, als={"factors": 8}, hybrid={"epochs": 2, "no_components": 8}
    )
    store = Store(make_engine(settings.sqlalchemy_url))
    frame = pd.DataFrame(events, columns=["user_id", "item_id", "type", "timestamp"])
    import_frames(store, settings, items, frame)
    return store, settings


def test_odd_but_legal_stores_train_or_say_why(tmp_path: Path) -> None:
    # Regressions: each of these raised from deep inside a model instead.
    catalogue = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(30)], "title": [f"song {i} jazz" for i in range(30)]}
    )
    # Everyone's newest events (the gate's fifth: 2 of 10) are skips: the gate's holdout
    # holds no positive to score.
    latest_skipped = (
        [
            (f"u{u}", f"i{(u + k) % 30}", "like", 1.7e9 + 10 * k + u)
            for u in range(20)
            for k in range(8)
        ]
        + [(f"u{u}", f"i{(u + 20) % 30}", "skip", 1.8e9 + u) for u in range(20)]
        + [(f"u{u}", f"i{(u + 21) % 30}", "skip", 1.8e9 + 100 + u) for u in range(20)]
    )
    store, settings = _small_store(tmp_path / "a", latest_skipped, catalogue)
    result = train(store, settings)
    assert result.published
    assert result.metrics["gate"] == {"skipped": "the holdout has no new positive interaction"}

    # Events, but no catalogue at all: no words for the content model.
    bare = pd.DataFrame({"item_id": pd.Series([], dtype=object)})
    store, settings = _small_store(tmp_path / "b", latest_skipped, bare)
    assert train(store, settings).published
    recommender = Recommender.open(store, settings)
    try:
        assert len(recommender.feed("u3", limit=5).items) == 5
    finally:
        recommender.close()

    # Only negative events: nothing to learn from, said plainly.
    skips = [(f"u{u}", f"i{u % 30}", "skip", 1.7e9 + u) for u in range(40)]
    store, settings = _small_store(tmp_path / "c", skips, catalogue)
    with pytest.raises(TrainingError, match="no positive interaction yet"):
        train(store, settings)


def test_run_is_published_and_recorded(trained_world: TrainedWorld) -> None:
    with trained_world.store.read() as conn:
        runs = list_runs(conn)
    published = [r for r in runs if r.status == "published"]
    assert published
    run = published[-1]
    assert run.data_stats["events"] == 30_000 and run.data_stats["users"] == 300
    assert set(run.timings) >= {"read", "gate", "als", "hybrid", "content", "save", "publish"}
    gate = run.metrics["gate"]
    assert gate["als"]["ndcg@10"] > gate["popularity"]["ndcg@10"]
    # The published ALS continued from the gate's fit instead of starting again, and
    # LightFM from the learned ranker's first-stage fit.
    assert run.metrics["als_warm_started"] is True
    assert run.metrics["ranker"]["status"] in {"published", "refused"}
    assert run.metrics["hybrid_warm_started"] is True
    with open_vector_store(trained_world.settings) as vectors:
        assert run.version in {v.version for v in vectors.list_versions()}
    assert (trained_world.settings.artifacts_dir / run.version / "manifest.json").is_file()


def test_cold_item_gets_hybrid_and_content_vectors(trained_world: TrainedWorld) -> None:
    # Items created after the last event have no interactions at all.
    recommender = Recommender.open(trained_world.store, trained_world.settings)
    state = recommender.state
    assert state is not None
    cold = [
        item
        for item, pop in zip(state.catalogue.ids, state.catalogue.popularity, strict=True)
        if pop == 0
    ]
    assert cold, "the demo world has items nobody interacted with"
    for name in ("hybrid", "content"):
        vectors = state.index.get_item_vectors(cold[:5], name)
        assert len(vectors) == 5
        assert all(np.linalg.norm(v) > 0 for v in vectors.values())
    recommender.close()


def test_gate_rule_compares_with_popularity_and_the_live_model() -> None:
    new = {"als": {"ndcg@10": 0.10}, "popularity": {"ndcg@10": 0.12}}
    assert "below the popularity baseline" in (check_gate(new, None, 0.1) or "")
    good = {"als": {"ndcg@10": 0.20}, "popularity": {"ndcg@10": 0.12}}
    assert check_gate(good, None, 0.1) is None
    live = {"gate": {"als": {"ndcg@10": 0.25}}}
    assert "below the live model" in (check_gate(good, live, 0.1) or "")
    assert check_gate(good, live, 0.25) is None  # 0.20 >= 0.25 * (1 - 0.25)
    assert check_gate({"skipped": "too few events"}, live, 0.1) is None


def test_gate_refuses_a_worse_model_and_keeps_the_live_one(tmp_path: Path) -> None:
    world = build_trained_world(tmp_path / "home", scale=0.2)
    with open_vector_store(world.settings) as vectors:
        live = vectors.live_version()
    # BPR that barely moves from its random start: its lists are noise, below popularity.
    # (A one-factor ALS is not: it learns popularity and scored above it.)
    bad = world.settings.model_copy(
        update={
            "als": world.settings.als.model_copy(
                update={"model": "bpr", "learning_rate": 1e-9, "iterations": 1, "factors": 8}
            )
        }
    )
    with pytest.raises(GateRefused, match="below the popularity baseline"):
        train(world.store, bad)
    with open_vector_store(world.settings) as vectors:
        assert vectors.live_version() == live
    with world.store.read() as conn:
        refused = list_runs(conn)[0]
    assert refused.status == "refused"
    gate = refused.metrics["gate"]
    assert gate["als"]["ndcg@10"] < gate["popularity"]["ndcg@10"]
    forced = train(world.store, bad, force=True)
    assert forced.published and "gate_overridden" in forced.metrics
    world.store.dispose()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pipelines.train import train
    from recsys.config import Settings
    from recsys.store import Store
    from recsys.store.engine import make_engine
    from recsys.vectors import versions

    stage = sys.argv[2]
    def hook(name):
        if name == stage:
            os.kill(os.getpid(), signal.SIGKILL)
    versions.set_stage_hook(hook)
    settings = Settings(home=sys.argv[1], _env_file=None)
    train(Store(make_engine(settings.sqlalchemy_url)), settings)
    """
)


@pytest.mark.parametrize("stage", ["begin", "upsert", "optimize", "mark-complete", "switch"])
def test_kill_during_publish_leaves_the_old_version_live(
    trained_world: TrainedWorld, stage: str
) -> None:
    settings = trained_world.settings
    with open_vector_store(settings) as vectors:
        live = vectors.live_version()
    before = Recommender.open(trained_world.store, settings)
    expected = [i.item_id for i in before.feed("demo-user-0009", limit=10).items]
    before.close()

    child = subprocess.run(
        [sys.executable, "-c", KILLER, str(settings.home), stage],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]

    with open_vector_store(settings) as vectors:
        assert vectors.live_version() == live
    after = Recommender.open(trained_world.store, settings)
    assert after.model_version == live
    assert [i.item_id for i in after.feed("demo-user-0009", limit=10).items] == expected
    after.close()

    # The next run succeeds, marks the killed run as failed and cleans up.
    result = train(trained_world.store, settings)
    assert result.published
    with trained_world.store.read() as conn:
        statuses = [r.status for r in list_runs(conn)]
    assert "running" not in statuses
    leftovers = [p.name for p in settings.artifacts_dir.iterdir() if p.name.endswith(".partial")]
    assert not leftovers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_unseen_matches_the_dense_ranking(seed: int) -> None:
    import numpy as np
    import scipy.sparse as sp

    from recsys.models.popularity import top_unseen

    rng = np.random.default_rng(seed)
    users, items, k = 40, 60, 10
    # Integer scores make ties, which must break by item index as a stable sort does.
    scores = rng.integers(0, 8, items).astype(np.float64)
    seen = sp.random(users, items, density=0.3, format="lil", random_state=seed)
    seen[3, :] = 1.0  # a user who has seen everything
    seen = sp.csr_matrix(seen)
    got = top_unseen(scores, seen, k)
    dense = np.tile(scores, (users, 1))
    dense[seen.nonzero()] = -np.inf
    expected = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    for user in range(users):
        unseen_count = items - seen[user].nnz
        want = expected[user][: min(k, unseen_count)]
        assert got[user][: len(want)].tolist() == want.tolist()
        assert (got[user][len(want) :] == -1).all()


def test_one_training_run_at_a_time_across_machines_sharing_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    # Two machines have two homes, so the home's lock file cannot keep their runs apart.
    from sqlalchemy import create_engine

    from pipelines.train import TRAINING_LOCK_KEY

    settings = Settings(home=tmp_path / "other-machine", _env_file=None)  # type: ignore[call-arg]
    store = Store(make_engine(postgres_url))
    holder = create_engine(postgres_url)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({TRAINING_LOCK_KEY})")
            with pytest.raises(TrainingError, match="another training run"):
                train(store, settings)
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({TRAINING_LOCK_KEY})")
        # Free again: this run gets as far as the empty store.
        with pytest.raises(TrainingError, match="no events yet"):
            train(store, settings)
    finally:
        holder.dispose()
        store.dispose()


def test_models_can_live_on_storage_shared_between_machines(tmp_path: Path) -> None:
    catalogue = pd.DataFrame({"item_id": [f"i{i}" for i in range(30)], "title": ["jazz"] * 30})
    likes = [(f"u{u}", f"i{(u + k) % 30}", "like", 1.7e9 + k) for u in range(20) for k in range(9)]
    store, settings = _small_store(tmp_path / "trainer", likes, catalogue)
    shared = tmp_path / "shared-models"
    trainer = settings.model_copy(update={"models_dir": shared})
    result = train(store, trainer)
    assert (shared / result.version / "manifest.json").is_file()
    assert not (tmp_path / "trainer" / "models").exists()
    # A service reads the models from there too (the embedded vectors stay in the home; on
    # several machines they would be on a Qdrant server).
    recommender = Recommender.open(store, trainer)
    try:
        assert recommender.model_version == result.version
    finally:
        recommender.close()
