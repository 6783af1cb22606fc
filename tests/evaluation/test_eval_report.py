"""The HTML/JSON report and the comparison of two runs."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eval_fixtures import make_interactions

from recsys.columns import ITEM_ID, USER_ID
from recsys.evaluation import report as report_module
from recsys.evaluation.metrics import evaluate_cold_start, evaluate_rankings
from recsys.evaluation.report import (
    SECTIONS,
    ModelResult,
    build_metrics_document,
    compare_reports,
    format_comparison,
    load_metrics,
    render_html,
    write_report,
)
from recsys.evaluation.splits import cold_item_split, stratified_split

CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
VERSIONS = {"python": "3.11", "recsys": "0.1.0"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results() -> tuple[list[ModelResult], object]:
    df = make_interactions(seed=1)
    split = stratified_split(df)
    train, test = split
    items = sorted(df[ITEM_ID].unique())
    popular = train[ITEM_ID].value_counts().index.tolist()
    rng = np.random.default_rng(0)
    users = sorted(test[USER_ID].unique())
    random_recs = {u: list(rng.permutation(items)[:30]) for u in users}
    vectors = pd.DataFrame(rng.normal(size=(len(items), 4)), index=items)
    categories = {item: f"c{i % 5}" for i, item in enumerate(items)}
    common = {"train": train, "item_vectors": vectors, "item_categories": categories}
    cold = cold_item_split(df, 0.2, seed=0)
    scores = pd.DataFrame(
        rng.normal(size=(len(users), len(cold.cold_items or ()))),
        index=users,
        columns=list(cold.cold_items or ()),
    )
    results = [
        ModelResult(
            "popular",
            evaluate_rankings({u: popular for u in users}, test, [5, 10, 20], **common),
            timings={"fit": 0.01, "recommend": 0.02},
            params={"kind": "most popular"},
        ),
        ModelResult(
            "random <b>",  # a name that needs escaping in HTML
            evaluate_rankings(random_recs, test, [5, 10, 20], **common),
            timings={"fit": 0.0, "recommend": 0.01},
            cold_start=evaluate_cold_start(scores, cold.test, cold.cold_items or (), [10]),
        ),
    ]
    return results, split


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    results, split = _results()
    out = tmp_path_factory.mktemp("reports")
    directory = write_report(
        results,
        dataset={"name": "synthetic", "n_rows": 1500},
        protocol=split,
        params={"k_values": [5, 10, 20]},
        out_dir=out,
        created_at=CREATED,
        versions=VERSIONS,
    )
    expected = build_metrics_document(
        results,
        dataset={"name": "synthetic", "n_rows": 1500},
        protocol=split,
        params={"k_values": [5, 10, 20]},
        created_at=CREATED,
        versions=VERSIONS,
    )
    return directory, expected


def test_report_layout(report: tuple[Path, dict]) -> None:
    directory, _ = report
    assert directory.name == "20250102-030405"
    assert sorted(p.name for p in directory.iterdir()) == ["index.html", "metrics.json"]


def test_html_has_every_section_and_embedded_images(report: tuple[Path, dict]) -> None:
    directory, _ = report
    page = (directory / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert {alt for alt, _ in images} == {"metric@k curves", "per-segment bars", "popularity bias"}
    for _, payload in images:
        assert base64.b64decode(payload).startswith(PNG_MAGIC)
    # Self-contained: nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    # Names are escaped; both models and the cold-start numbers appear.
    assert "random &lt;b&gt;" in page and "random <b>" not in page
    assert "popular" in page and "auc" in page
    assert "No cold-start evaluation" not in page


def test_metrics_json_round_trips(report: tuple[Path, dict]) -> None:
    directory, expected = report
    loaded = load_metrics(directory / "metrics.json")
    assert loaded == expected
    assert load_metrics(directory) == loaded
    assert loaded["schema_version"] == 1
    assert loaded["created_at"] == "2025-01-02T03:04:05Z"
    assert loaded["protocol"]["name"] == "stratified"
    assert loaded["protocol"]["params"]["seed"] == 42
    assert loaded["k_values"] == [5, 10, 20]
    assert loaded["versions"] == VERSIONS
    popular = loaded["models"]["popular"]
    assert set(popular) >= {"metrics", "slices", "timings", "params", "n_users"}
    assert popular["metrics"]["ndcg@10"] == pytest.approx(
        expected["models"]["popular"]["metrics"]["ndcg@10"]
    )
    assert popular["timings"] == {"fit": 0.01, "recommend": 0.02}
    assert set(popular["slices"]) == {"users_cold", "users_medium", "users_heavy", "items_cold"}
    assert "cold_start" in loaded["models"]["random <b>"]
    # Strict JSON: NaN is written as null (the heavy-user slice is empty here).
    text = (directory / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_compare_reports_shows_deltas(report: tuple[Path, dict], tmp_path: Path) -> None:
    directory, expected = report
    changed = json.loads(json.dumps(expected))
    changed["models"]["popular"]["metrics"]["ndcg@10"] = (
        expected["models"]["popular"]["metrics"]["ndcg@10"] + 0.05
    )
    changed["models"]["popular"]["timings"]["fit"] = 0.02
    del changed["models"]["random <b>"]
    changed["models"]["new"] = {"metrics": {"ndcg@10": 0.3}}
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps(changed))

    printed = io.StringIO()
    frame = compare_reports(directory, other, file=printed)
    assert list(frame.columns) == ["model", "section", "metric", "a", "b", "delta", "rel_delta"]
    row = frame.set_index(["model", "section", "metric"]).loc[("popular", "overall", "ndcg@10")]
    assert row["delta"] == pytest.approx(0.05)
    assert row["rel_delta"] == pytest.approx(0.05 / row["a"])
    fit = frame.set_index(["model", "section", "metric"]).loc[("popular", "timings", "fit")]
    assert fit["delta"] == pytest.approx(0.01)
    unchanged = frame.loc[(frame["model"] == "popular") & (frame["metric"] == "recall@10")]
    # Equal values: zero delta; an empty slice has no values: NaN.
    assert (unchanged.dropna(subset=["a"])["delta"] == 0).all()
    slices = expected["models"]["popular"]["slices"]
    empty = sorted(name for name, data in slices.items() if data["n_users"] == 0)
    assert empty and sorted(unchanged.loc[unchanged["a"].isna(), "section"]) == empty
    # Models on one side only: the other side is NaN.
    gone = frame.loc[frame["model"] == "random <b>"]
    assert gone["b"].isna().all() and gone["a"].notna().any()
    new = frame.loc[frame["model"] == "new"]
    assert new["a"].isna().all() and new["b"].iloc[0] == 0.3

    text = printed.getvalue()
    assert "model: popular" in text and "model: new" in text
    ndcg_line = next(line for line in text.splitlines() if " ndcg@10 " in line)
    assert "+0.0500" in ndcg_line
    assert format_comparison(frame, sections=["timings"]).count("timings") >= 2

    quiet = io.StringIO()
    compare_reports(expected, expected, echo=False, file=quiet)
    assert quiet.getvalue() == ""


def test_render_without_optional_parts() -> None:
    test = pd.DataFrame({USER_ID: ["u1"], ITEM_ID: ["a"], "weight": [1.0]})
    evaluation = evaluate_rankings({"u1": ["a", "b"]}, test, [1, 2])
    document = build_metrics_document(
        [ModelResult("only", evaluation)],
        dataset="tiny",
        protocol="leave_last_one_out",
        created_at=CREATED,
        versions=VERSIONS,
    )
    page = render_html(document)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    # Without train there are no slices and no popularity numbers: notes instead of plots.
    assert page.count("<img ") == 1
    assert "No cold-start evaluation" in page


def test_write_report_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "_plot_curves", lambda document: None)  # speed only
    document_args = {"dataset": "d", "protocol": "p", "created_at": CREATED, "versions": VERSIONS}
    test = pd.DataFrame({USER_ID: ["u1"], ITEM_ID: ["a"], "weight": [1.0]})
    results = [ModelResult("m", evaluate_rankings({"u1": ["a"]}, test, [1]))]
    first = write_report(results, out_dir=tmp_path, **document_args)
    second = write_report(results, out_dir=tmp_path, **document_args)
    assert first != second and second.name == "20250102-030405-2"
    with pytest.raises(ValueError):
        write_report(results * 2, out_dir=tmp_path, **document_args)
