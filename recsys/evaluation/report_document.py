"""The ``metrics.json`` document of a report: building it from model results and loading it.

``metrics.json`` is the machine-readable twin of ``index.html``: dataset, protocol,
parameters, per-model metrics@k, slices, timings and library versions.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.evaluation.splits import Split

__all__ = ["SCHEMA_VERSION", "ModelResult", "build_metrics_document", "load_metrics"]

SCHEMA_VERSION = 1
# Slices of ``evaluate_rankings``, in the order the report shows them.
SEGMENTS = ("users_cold", "users_medium", "users_heavy", "items_cold")
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
