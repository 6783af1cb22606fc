"""Evaluation reports: ``reports/<timestamp>/index.html`` plus ``metrics.json``.

``index.html`` is one self-contained page (inline CSS, plots embedded as base64 PNG data
URIs, no external resources). ``metrics.json`` is the machine-readable twin: dataset,
protocol, parameters, per-model metrics@k, slices, timings and library versions.
:func:`compare_reports` diffs two ``metrics.json`` files.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch), so rendering works headless and does not disturb other matplotlib users.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recsys.evaluation.metrics import ACCURACY_METRICS
from recsys.evaluation.splits import Split

__all__ = [
    "SCHEMA_VERSION",
    "ModelResult",
    "build_metrics_document",
    "compare_reports",
    "format_comparison",
    "load_metrics",
    "render_html",
    "write_report",
]

SCHEMA_VERSION = 1
SECTIONS = (
    "run",
    "summary",
    "curves",
    "segments",
    "popularity",
    "beyond-accuracy",
    "cold-start",
    "timings",
    "versions",
)
SEGMENTS = ("users_cold", "users_medium", "users_heavy", "items_cold")
BEYOND_ACCURACY = (
    "coverage",
    "novelty",
    "arp",
    "popularity_lift",
    "ild_content",
    "category_share",
    "category_ild",
)
_VERSION_PACKAGES = ("recsys", "numpy", "pandas", "scipy", "matplotlib")


@dataclass
class ModelResult:
    """One model's evaluation, as it goes into a report.

    ``evaluation`` is the dict returned by ``evaluate_rankings``; ``cold_start`` the one
    from ``evaluate_cold_start`` (optional). ``timings`` holds seconds by phase (e.g.
    ``{"fit": 12.3, "recommend": 1.2}``) and ``params`` the model's hyper-parameters.
    """

    name: str
    evaluation: Mapping[str, Any]
    timings: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    cold_start: Mapping[str, Any] | None = None


# ---------------------------------------------------------------------------
# metrics.json
# ---------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON types only; NaN and infinities become null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Index)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return value.name
    return str(value)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in _VERSION_PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            module = sys.modules.get(package)
            out[package] = str(getattr(module, "__version__", "unknown"))
    return out


def _describe_protocol(protocol: str | Mapping[str, Any] | Split) -> dict[str, Any]:
    if isinstance(protocol, Split):
        described = protocol.describe()
        return {"name": described.pop("protocol"), **described}
    if isinstance(protocol, str):
        return {"name": protocol}
    return dict(protocol)


def build_metrics_document(
    results: Iterable[ModelResult],
    *,
    dataset: str | Mapping[str, Any],
    protocol: str | Mapping[str, Any] | Split,
    params: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` content (JSON-ready)."""
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    models: dict[str, Any] = {}
    k_values: set[int] = set()
    for result in results:
        if result.name in models:
            raise ValueError(f"duplicate model name {result.name!r}")
        evaluation = result.evaluation
        k_values.update(int(k) for k in evaluation.get("k_values", ()))
        entry: dict[str, Any] = {
            "n_users": evaluation.get("n_users"),
            "n_users_without_recommendations": evaluation.get("n_users_without_recommendations"),
            "metrics": dict(evaluation.get("metrics", {})),
            "slices": dict(evaluation.get("slices", {})),
            "settings": dict(evaluation.get("settings", {})),
            "timings": dict(result.timings),
            "params": dict(result.params),
        }
        if result.cold_start is not None:
            entry["cold_start"] = dict(result.cold_start)
        models[result.name] = entry
    document = {
        "schema_version": SCHEMA_VERSION,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": {"name": dataset} if isinstance(dataset, str) else dict(dataset),
        "protocol": _describe_protocol(protocol),
        "params": dict(params or {}),
        "k_values": sorted(k_values),
        "models": models,
        "versions": dict(versions) if versions is not None else _versions(),
    }
    return dict(_jsonable(document))


def load_metrics(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A ``metrics.json`` document from a file, a report directory, or a loaded dict."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "models" not in document:
        raise ValueError(f"{path.name} is not a metrics document (no 'models')")
    return document


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _png_data_uri(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _value(metrics: Mapping[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _reference_k(k_values: Sequence[int]) -> int | None:
    if not k_values:
        return None
    return 10 if 10 in k_values else max(k_values)


def _plot_curves(document: Mapping[str, Any]) -> str | None:
    models = document["models"]
    k_values = document["k_values"]
    if not models or not k_values:
        return None
    figure = Figure(figsize=(12, 6.5))
    axes = figure.subplots(2, 3)
    for ax, metric in zip(axes.ravel(), ACCURACY_METRICS, strict=True):
        for name, entry in models.items():
            values = [_value(entry["metrics"], f"{metric}@{k}") for k in k_values]
            ax.plot(k_values, values, marker="o", label=name)
        ax.set_title(f"{metric}@k")
        ax.set_xlabel("k")
        ax.set_xticks(k_values)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    figure.tight_layout()
    return _png_data_uri(figure)


def _plot_segments(document: Mapping[str, Any], metric: str) -> str | None:
    models = document["models"]
    if not any(entry.get("slices") for entry in models.values()):
        return None
    figure = Figure(figsize=(10, 4.5))
    ax = figure.subplots()
    width = 0.8 / max(len(models), 1)
    positions = np.arange(len(SEGMENTS))
    for i, (name, entry) in enumerate(models.items()):
        slices = entry.get("slices", {})
        values = [_value(slices.get(s, {}).get("metrics", {}), metric) for s in SEGMENTS]
        ax.bar(positions + i * width, np.nan_to_num(values), width, label=name)
    first = next(iter(models.values())).get("slices", {})
    labels = [f"{s}\n(n={first.get(s, {}).get('n_users', 0)})" for s in SEGMENTS]
    ax.set_xticks(positions + width * (len(models) - 1) / 2, labels)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by segment")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _png_data_uri(figure)


def _plot_popularity(document: Mapping[str, Any], k: int, accuracy: str) -> str | None:
    models = document["models"]
    names = [n for n, e in models.items() if f"arp@{k}" in e["metrics"]]
    if not names:
        return None
    figure = Figure(figsize=(11, 4.5))
    left, right = figure.subplots(1, 2)
    arp = [_value(models[n]["metrics"], f"arp@{k}") for n in names]
    left.bar(names, arp, color="tab:orange")
    train_arp = [_value(models[n]["metrics"], "train_arp") for n in names]
    if np.isfinite(train_arp).any():
        left.axhline(float(np.nanmean(train_arp)), color="black", linestyle="--", label="train")
        left.legend(fontsize="small")
    left.set_ylabel("mean train users per item")
    left.set_title(f"Average recommendation popularity @{k}")
    left.tick_params(axis="x", rotation=30)
    for name in names:
        metrics = models[name]["metrics"]
        x, y = _value(metrics, f"arp@{k}"), _value(metrics, accuracy)
        right.scatter([x], [y], s=60)
        right.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    right.set_xlabel(f"arp@{k}")
    right.set_ylabel(accuracy)
    right.set_title("Accuracy vs popularity")
    right.grid(alpha=0.3)
    figure.tight_layout()
    return _png_data_uri(figure)


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
img{max-width:100%}.note{color:#666;font-style:italic}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<p class="note">No data for this plot ({html.escape(alt)}).</p>'
    return f'<img alt="{html.escape(alt)}" src="{uri}">'


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def render_html(document: Mapping[str, Any]) -> str:
    """The self-contained ``index.html`` for a metrics document."""
    models: Mapping[str, Any] = document["models"]
    k_values: list[int] = list(document["k_values"])
    k_ref = _reference_k(k_values)
    accuracy_ref = f"ndcg@{k_ref}"
    dataset = document.get("dataset", {})
    protocol = document.get("protocol", {})
    title = f"Evaluation: {dataset.get('name', 'dataset')} / {protocol.get('name', 'protocol')}"

    run_rows = [("created_at", document.get("created_at"))]
    run_rows += [(f"dataset.{k}", v) for k, v in dataset.items()]
    run_rows += [(f"protocol.{k}", v) for k, v in protocol.items()]
    run_rows += [(f"params.{k}", v) for k, v in document.get("params", {}).items()]
    parts = [_section("run", "Run", _table(("field", "value"), run_rows))]

    summary_cols = [f"{m}@{k}" for k in k_values for m in ACCURACY_METRICS]
    summary = _table(
        ["model", "users", *summary_cols],
        (
            [name, entry.get("n_users"), *(entry["metrics"].get(c) for c in summary_cols)]
            for name, entry in models.items()
        ),
    )
    parts.append(_section("summary", "Accuracy", summary))
    parts.append(
        _section("curves", "Metric@k curves", _image(_plot_curves(document), "metric@k curves"))
    )

    segment_rows = []
    for name, entry in models.items():
        for segment in SEGMENTS:
            data = entry.get("slices", {}).get(segment)
            if data is not None:
                metrics = data.get("metrics", {})
                segment_rows.append(
                    [
                        name,
                        segment,
                        data.get("n_users"),
                        *(metrics.get(f"{m}@{k_ref}") for m in ACCURACY_METRICS),
                    ]
                )
    segment_body = _image(_plot_segments(document, accuracy_ref), "per-segment bars")
    segment_body += _table(
        ["model", "segment", "users", *(f"{m}@{k_ref}" for m in ACCURACY_METRICS)],
        segment_rows,
    )
    parts.append(_section("segments", "Segments", segment_body))

    popularity_rows = [
        [
            name,
            entry["metrics"].get("train_arp"),
            *(entry["metrics"].get(f"arp@{k}") for k in k_values),
            *(entry["metrics"].get(f"popularity_lift@{k}") for k in k_values),
        ]
        for name, entry in models.items()
    ]
    popularity_body = _image(
        _plot_popularity(document, k_ref, accuracy_ref) if k_ref else None, "popularity bias"
    )
    popularity_body += _table(
        [
            "model",
            "train_arp",
            *(f"arp@{k}" for k in k_values),
            *(f"popularity_lift@{k}" for k in k_values),
        ],
        popularity_rows,
    )
    parts.append(_section("popularity", "Popularity bias", popularity_body))

    beyond_cols = [
        f"{m}@{k}"
        for k in k_values
        for m in BEYOND_ACCURACY
        if any(f"{m}@{k}" in e["metrics"] for e in models.values())
    ]
    parts.append(
        _section(
            "beyond-accuracy",
            "Coverage, novelty and diversity",
            _table(
                ["model", *beyond_cols],
                ([n, *(e["metrics"].get(c) for c in beyond_cols)] for n, e in models.items()),
            ),
        )
    )

    cold = {n: e["cold_start"] for n, e in models.items() if e.get("cold_start")}
    if cold:
        cold_cols = sorted(
            {c for c_data in cold.values() for c in c_data.get("metrics", {})},
            key=lambda c: (c != "auc", c),
        )
        cold_body = _table(
            ["model", "users", "cold items", *cold_cols],
            (
                [
                    n,
                    c.get("n_users"),
                    c.get("n_cold_items"),
                    *(c["metrics"].get(m) for m in cold_cols),
                ]
                for n, c in cold.items()
            ),
        )
    else:
        cold_body = '<p class="note">No cold-start evaluation in this run.</p>'
    parts.append(_section("cold-start", "Item cold start", cold_body))

    timing_cols = sorted({t for e in models.values() for t in e.get("timings", {})})
    parts.append(
        _section(
            "timings",
            "Timings (seconds)",
            _table(
                ["model", *timing_cols],
                (
                    [n, *(e.get("timings", {}).get(t) for t in timing_cols)]
                    for n, e in models.items()
                ),
            ),
        )
    )
    parts.append(
        _section(
            "versions",
            "Versions",
            _table(("package", "version"), sorted(document.get("versions", {}).items())),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>" + "".join(parts) + "</body></html>\n"
    )


def write_report(
    results: Iterable[ModelResult],
    *,
    dataset: str | Mapping[str, Any],
    protocol: str | Mapping[str, Any] | Split,
    params: Mapping[str, Any] | None = None,
    out_dir: str | Path = "reports",
    created_at: datetime | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``<out_dir>/<UTC timestamp>/index.html`` and ``metrics.json``; return the
    report directory. The directory name is ``YYYYmmdd-HHMMSS`` (a ``-2``, ``-3`` ...
    suffix is added when it already exists)."""
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    document = build_metrics_document(
        results,
        dataset=dataset,
        protocol=protocol,
        params=params,
        created_at=created,
        versions=versions,
    )
    base = Path(out_dir)
    stem = created.strftime("%Y%m%d-%H%M%S")
    directory = base / stem
    suffix = 2
    while directory.exists():
        directory = base / f"{stem}-{suffix}"
        suffix += 1
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(
        json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8"
    )
    (directory / "index.html").write_text(render_html(document), encoding="utf-8")
    return directory


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

COMPARISON_COLUMNS = ("model", "section", "metric", "a", "b", "delta", "rel_delta")


def _flatten(entry: Mapping[str, Any]) -> dict[tuple[str, str], float | None]:
    out: dict[tuple[str, str], float | None] = {}

    def put(section: str, values: Mapping[str, Any]) -> None:
        for metric, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(section, metric)] = float(value)
            elif value is None:
                out[(section, metric)] = None

    put("overall", entry.get("metrics", {}))
    for name, data in entry.get("slices", {}).items():
        put(name, data.get("metrics", {}))
        if "n_users" in data:
            out[(name, "n_users")] = float(data["n_users"])
    if entry.get("cold_start"):
        put("cold_start", entry["cold_start"].get("metrics", {}))
    put("timings", entry.get("timings", {}))
    return out


def _comparison_frame(a: Mapping[str, Any], b: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    models_a, models_b = a.get("models", {}), b.get("models", {})
    names = list(models_a) + [n for n in models_b if n not in models_a]
    for name in names:
        flat_a = _flatten(models_a.get(name, {}))
        flat_b = _flatten(models_b.get(name, {}))
        keys = list(flat_a) + [key for key in flat_b if key not in flat_a]
        for section, metric in keys:
            va = flat_a.get((section, metric))
            vb = flat_b.get((section, metric))
            delta = vb - va if va is not None and vb is not None else None
            rel = delta / abs(va) if delta is not None and va not in (None, 0.0) else None
            rows.append((name, section, metric, va, vb, delta, rel))
    frame = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    for column in ("a", "b", "delta", "rel_delta"):
        frame[column] = frame[column].astype(np.float64)
    return frame


def format_comparison(frame: pd.DataFrame, *, sections: Iterable[str] | None = None) -> str:
    """A plain-text table of a :func:`compare_reports` frame, one block per model."""
    if sections is not None:
        frame = frame.loc[frame["section"].isin(list(sections))]
    if frame.empty:
        return "(nothing to compare)"

    def number(value: float) -> str:
        return "-" if not math.isfinite(value) else f"{value:.4f}"

    def signed(value: float) -> str:
        return "-" if not math.isfinite(value) else f"{value:+.4f}"

    def percent(value: float) -> str:
        return "-" if not math.isfinite(value) else f"{value * 100:+.1f}%"

    header = ("section", "metric", "A", "B", "delta", "delta %")
    blocks = []
    for model, group in frame.groupby("model", sort=False):
        cells = [
            (
                row.section,
                row.metric,
                number(row.a),
                number(row.b),
                signed(row.delta),
                percent(row.rel_delta),
            )
            for row in group.itertuples(index=False)
        ]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

        def line(values: Sequence[str], widths: Sequence[int] = widths) -> str:
            left = [v.ljust(w) for v, w in zip(values[:2], widths[:2], strict=True)]
            right = [v.rjust(w) for v, w in zip(values[2:], widths[2:], strict=True)]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(line(header))
        blocks.append("\n".join([f"model: {model}", line(header), rule, *map(line, cells)]))
    return "\n\n".join(blocks)


def compare_reports(
    a: str | Path | Mapping[str, Any],
    b: str | Path | Mapping[str, Any],
    *,
    echo: bool = True,
    file: TextIO | None = None,
    sections: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Diff two metrics documents (paths to ``metrics.json``, report directories, or
    loaded dicts): B relative to A.

    Returns one row per (model, section, metric) with columns ``model, section,
    metric, a, b, delta (= b - a), rel_delta (= delta / |a|)``; values missing on one
    side are NaN. Sections are ``overall``, each slice name, ``cold_start`` and
    ``timings``. With ``echo`` the readable table (restricted to ``sections`` when given)
    is printed to ``file`` (default: standard output).
    """
    frame = _comparison_frame(load_metrics(a), load_metrics(b))
    if echo:
        print(format_comparison(frame, sections=sections), file=file or sys.stdout)
    return frame
