"""Evaluation reports: ``reports/<timestamp>/index.html`` plus ``metrics.json``.

``index.html`` is one self-contained page (inline CSS, plots embedded as base64 PNG data
URIs, no external resources). ``metrics.json`` is the machine-readable twin, built in
:mod:`recsys.evaluation.report_document`; the figures are drawn in
:mod:`recsys.evaluation.report_plots`. :func:`compare_reports` (from
:mod:`recsys.evaluation.report_comparison`) diffs two ``metrics.json`` files.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.evaluation.accuracy import ACCURACY_METRICS
from recsys.evaluation.report_comparison import compare_reports, format_comparison
from recsys.evaluation.report_document import (
    SCHEMA_VERSION,
    SEGMENTS,
    ModelResult,
    build_metrics_document,
    load_metrics,
)
from recsys.evaluation.report_plots import _plot_curves, _plot_popularity, _plot_segments
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
BEYOND_ACCURACY = (
    "coverage",
    "novelty",
    "arp",
    "popularity_lift",
    "ild_content",
    "category_share",
    "category_ild",
)


def _reference_k(k_values: Sequence[int]) -> int | None:
    if not k_values:
        return None
    return 10 if 10 in k_values else max(k_values)


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
