"""End to end on real data: every model and the production feed, one report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.datasets import read_movielens
from pipelines.evaluate import evaluate, prepare
from recsys.config import Settings
from recsys.evaluation.report import compare_reports
from tests.conftest import require_datasets


@pytest.mark.slow
def test_movielens_report_has_every_section_and_the_feed_beats_popularity(tmp_path: Path) -> None:
    items, events = read_movielens(require_datasets("ml-latest-small"))
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    data = prepare("ml-latest-small", items, events, settings)
    result = evaluate(
        data, settings, protocol="temporal", k_values=[5, 10], out_dir=tmp_path / "reports"
    )

    document = json.loads((result.report_dir / "metrics.json").read_text())
    models = document["models"]
    # The learned ranker, when its gate kept it, serves the feed, and the hand blend over the
    # same version is reported beside it.
    ranker = result.document["params"]["ranker"]
    published = ranker["status"] == "published"
    other_ranker = {"blend"} if published else set()
    candidate_rows = {"ranked_candidates", "blend_candidates"} if published else set()
    assert ranker["status"] in ("published", "refused")
    assert set(models) == {
        "popularity",
        "als",
        "hybrid",
        "content",
        "item2item",
        "feed",
        *other_ranker,
        *candidate_rows,
    }
    for entry in models.values():
        for metric in ("precision@10", "recall@10", "ndcg@10", "map@10", "mrr@10", "coverage@10"):
            assert metric in entry["metrics"]
        assert {"users_cold", "users_medium", "users_heavy"} <= set(entry["slices"])
    feed, popularity = (
        models["feed"]["metrics"]["ndcg@10"],
        models["popularity"]["metrics"]["ndcg@10"],
    )
    assert feed > popularity
    # Every test user got a list from the production feed.
    for row in ("feed", *other_ranker):
        assert models[row]["n_users_without_recommendations"] == 0
    if published:
        # The candidate lists before the page step, in each ranker's order: the same
        # users, two different orders of the same candidates.
        ranked, blended = models["ranked_candidates"], models["blend_candidates"]
        assert ranked["n_users"] == blended["n_users"] == models["feed"]["n_users"]
        assert ranked["metrics"]["ndcg@10"] > popularity
        assert ranked["metrics"]["ndcg@10"] != blended["metrics"]["ndcg@10"]

    html = (result.report_dir / "index.html").read_text()
    for section in ("summary", "curves", "segments", "popularity"):
        assert f'id="{section}' in html, section
    assert "data:image/png;base64," in html

    frame = compare_reports(
        result.report_dir / "metrics.json", result.report_dir / "metrics.json", echo=False
    )
    assert len(frame) and (frame["delta"].fillna(0) == 0).all()


@pytest.mark.slow
def test_cold_item_protocol_reports_every_model_and_the_feed(tmp_path: Path) -> None:
    """A fifth of the items with every interaction held out: the item-to-item model, which
    has no vectors to score them with, is reported without a cold-start section, and the
    feed, with a place per page kept for new items, shows the users some of them."""
    import pandas as pd

    from pipelines.demo_world import generate_world
    from recsys.config import FeedConfig

    world = generate_world(seed=3, scale=0.3)
    events = pd.concat(list(world.iter_events()), ignore_index=True)
    settings = Settings(
        home=tmp_path / "home",
        feed=FeedConfig(new_item_slots=1),
        _env_file=None,  # type: ignore[call-arg]
    )
    data = prepare("demo", world.items, events, settings)
    result = evaluate(
        data, settings, protocol="cold_items", k_values=[10], out_dir=tmp_path / "reports"
    )
    models = result.document["models"]
    assert {"popularity", "als", "hybrid", "content", "item2item", "feed"} <= set(models)
    assert models["hybrid"]["cold_start"]["metrics"]["auc"] > 0.5
    assert models["item2item"].get("cold_start") is None
    # Every relevant test item is cold: a feed that never showed one would score 0.
    assert models["feed"]["metrics"]["ndcg@10"] > 0


def test_planted_split_trains_on_every_event_and_scores_untouched_planted_likes(
    tmp_path: Path,
) -> None:
    """The planted protocol's test set is the world's planted likes on items the user has
    no event on: nothing logged is held out, nothing logged is scored."""
    import pandas as pd

    from pipelines.demo_world import generate_world
    from pipelines.evaluate import make_protocol_split

    world = generate_world(seed=7, scale=0.1)
    events = world.events()
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    data = prepare("demo", world.items, events, settings)
    with pytest.raises(ValueError, match="planted tastes"):
        make_protocol_split(data, "planted", 42)

    data.planted = world.hidden_likes(events, seed=42)
    split = make_protocol_split(data, "planted", 42)
    assert len(split.train) == len(events)
    touched = pd.MultiIndex.from_frame(events[["user_id", "item_id"]].astype(str))
    scored = pd.MultiIndex.from_frame(split.test[["user_id", "item_id"]])
    assert len(split.test) > world.n_users  # more than one planted like per user
    assert not scored.isin(touched).any()
    assert set(split.test["item_id"]) <= set(world.items["item_id"])
    # Planted tastes, not chance: most users' hidden likes lean to their favourite topic.
    topic = world.items.set_index("item_id")["category"]
    favourite = world.users.set_index("user_id")["top_topic"]
    leaning = (
        split.test.assign(topic=topic.reindex(split.test["item_id"]).to_numpy())
        .groupby("user_id")["topic"]
        .agg(lambda t: t.value_counts().index[0])
    )
    assert (leaning == favourite.reindex(leaning.index)).mean() > 0.5
    # The same seed draws the same truth.
    assert world.hidden_likes(events, seed=42).equals(data.planted)


@pytest.mark.slow
def test_planted_protocol_reports_every_model_and_the_feed(tmp_path: Path) -> None:
    from pipelines.demo_world import generate_world

    world = generate_world(seed=8, scale=0.2)
    events = world.events()
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    data = prepare("demo", world.items, events, settings)
    data.planted = world.hidden_likes(events, seed=8)
    with pytest.raises(ValueError, match="nothing to validate on"):
        evaluate(data, settings, protocol="planted", validation=True, out_dir=tmp_path / "v")
    result = evaluate(data, settings, protocol="planted", k_values=[10], out_dir=tmp_path / "r")
    models = result.document["models"]
    assert {"popularity", "als", "hybrid", "content", "item2item", "feed"} <= set(models)
    assert result.document["protocol"]["n_train"] == len(events)
    ndcg = {name: model["metrics"]["ndcg@10"] for name, model in models.items()}
    # Tastes learned from the logs find planted likes that popularity alone does not.
    assert ndcg["als"] > ndcg["popularity"] and ndcg["feed"] > ndcg["popularity"]


def test_validation_scores_a_split_of_the_train_part_and_never_reads_test(
    tmp_path: Path,
) -> None:
    """``--validation`` repeats the protocol inside the train part: the scored events are
    the inner split's, and none of the outer test events is trained on or scored."""
    import pandas as pd

    from pipelines.demo_world import generate_world
    from pipelines.evaluate import make_protocol_split
    from recsys.evaluation.splits import validation_split

    world = generate_world(seed=5, scale=0.2)
    events = pd.concat(list(world.iter_events()), ignore_index=True)
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    data = prepare("demo", world.items, events, settings)
    outer = make_protocol_split(data, "temporal", 42)
    inner = validation_split(outer)

    result = evaluate(
        data,
        settings,
        protocol="temporal",
        k_values=[10],
        validation=True,
        include_feed=False,
        out_dir=tmp_path / "reports",
    )
    split = result.document["protocol"]
    assert result.document["params"]["validation"] is True
    assert (split["n_train"], split["n_test"]) == (len(inner.train), len(inner.test))
    assert split["n_train"] + split["n_test"] == len(outer.train)

    plain = evaluate(
        data,
        settings,
        protocol="temporal",
        k_values=[10],
        include_feed=False,
        out_dir=tmp_path / "reports-plain",
    )
    assert plain.document["protocol"]["n_test"] == len(outer.test)
    assert plain.document["params"]["validation"] is False


def test_served_pages_are_scored_at_their_own_size() -> None:
    """A page of 5 is not the head of the page of 10: @5 comes from the pages of 5."""
    import pandas as pd

    from pipelines.evaluate import evaluate_pages

    test = pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": ["hit", "hit"], "relevance": [1.0, 1.0]}
    )
    train = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["old", "old"]})
    tens = {u: ["hit", *(f"x{i}" for i in range(9))] for u in ("u1", "u2")}
    fives = {u: [f"y{i}" for i in range(5)] for u in ("u1", "u2")}
    scoring = {"train": train, "relevance_column": "relevance", "relevance_threshold": 0.5}
    result = evaluate_pages({5: fives, 10: tens}, test, scoring)
    assert result["k_values"] == [5, 10]
    assert result["metrics"]["ndcg@10"] == pytest.approx(1.0)
    # The hit leads the page of 10, but the page of 5 does not have it.
    assert result["metrics"]["ndcg@5"] == 0.0 and result["metrics"]["hit_rate@5"] == 0.0
    assert result["slices"]["users_cold"]["metrics"]["ndcg@5"] == 0.0


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``cli("evaluate", ...)`` runs the CLI in process on an empty embedded home; set more
    RECSYS_* variables with monkeypatch before calling it."""
    from typer.testing import CliRunner

    from recsys import config
    from recsys.cli import app

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    runner = CliRunner()

    def run(*args: str) -> Any:
        config.get_settings.cache_clear()
        return runner.invoke(app, list(args))

    yield run
    config.get_settings.cache_clear()


def test_cli_evaluate_on_an_empty_store_says_so(cli: Callable[..., Any]) -> None:
    result = cli("evaluate")
    assert result.exit_code == 1
    assert "the store has no events" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_cli_runs_as_a_module() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "train" in done.stdout


def test_cli_refuses_planted_without_a_world_or_with_validation(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    result = cli("evaluate", "--dataset", "demo", "--protocol", "planted", "--validation")
    assert result.exit_code == 1 and "no train part" in result.output
    result = cli("evaluate", "--dataset", "demo", "--scale", "0", "--protocol", "planted")
    assert result.exit_code == 1 and "--scale must be positive" in result.output
    events = tmp_path / "plays.csv"
    rows = [f"u{u},i{(u * 7 + k) % 40},play,{1304208000 + k}" for u in range(30) for k in range(8)]
    events.write_text("user_id,item_id,type,timestamp\n" + "\n".join(rows) + "\n")
    assert cli("import", "events", str(events)).exit_code == 0
    result = cli("evaluate", "--protocol", "planted")
    assert result.exit_code == 1 and "use --dataset demo" in result.output


def test_cli_refuses_a_temporal_split_of_timeless_events(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    events = tmp_path / "plays.csv"
    rows = [f"u{u},i{(u * 7 + k) % 40},play,1304208000" for u in range(30) for k in range(8)]
    events.write_text("user_id,item_id,type,timestamp\n" + "\n".join(rows) + "\n")
    assert cli("import", "events", str(events)).exit_code == 0
    result = cli("evaluate", "--protocol", "temporal")
    assert result.exit_code == 1
    assert "use --protocol stratified" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("RECSYS_API_KEYS", "k:admin", "RECSYS_API_KEYS: Value error, API key scope"),
        ("RECSYS_SIGNALS__LIKE", "abc", "RECSYS_SIGNALS__LIKE: Input should be a valid number"),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    result = cli("models", "list")
    assert result.exit_code == 1
    assert f"error: invalid configuration: {named}" in result.output
    assert "Traceback" not in result.output
