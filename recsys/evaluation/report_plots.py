"""The report's figures, rendered to PNG data URIs for embedding in ``index.html``.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch), so rendering works headless and does not disturb other matplotlib users.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recsys.evaluation.accuracy import ACCURACY_METRICS
from recsys.evaluation.report_document import SEGMENTS


def _png_data_uri(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _value(metrics: Mapping[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else float("nan")


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
