"""The comparison of two reports' ``metrics.json`` documents, metric by metric."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from recsys.evaluation.report_document import load_metrics

__all__ = ["COMPARISON_COLUMNS", "compare_reports", "format_comparison"]

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
