"""The one owner of a model version: its artifact layout, its manifest, and making it live.

A version is two halves that must agree: its artifacts under ``artifacts_dir/<version>/``
and its vectors in the vector store. The artifacts directory holds::

    manifest.json       format, version, data time, models, data stats, catalogue revision
    interactions/       the id maps and matrix the models were fitted on
    popularity.npy      the popularity model, aligned with the item id map
    activity.npz        every positive event's (item, time): the learned ranker's item
                        activity features
    ranker/             the learned ranker (LightGBM text model + JSON), when it passed its
                        gate
    <model>/            one directory per registered model (``recsys.registry``)

It is built as ``<version>.partial`` and renamed when complete, so a killed run leaves
nothing that looks like a version. Training writes a version with ``write_version``; the
serving state reads it with ``read_manifest`` and ``load_models``; the API and the CLI make
one live with ``activate``, which checks both halves the same way for both.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import registry
from recsys.dataset import InteractionData
from recsys.models.activity import ActivityLog
from recsys.models.popularity import PopularityModel
from recsys.store import Store
from recsys.store.runs import mark_published
from recsys.vectors.versions import VectorStore, check_version

ARTIFACT_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INTERACTIONS_DIR = "interactions"
ACTIVITY_FILE = "activity.npz"
RANKER_DIR = "ranker"
PARTIAL_SUFFIX = ".partial"
NO_SUCH_VERSION = "no complete model version by this name (see `recsys models list`)"


class UnknownVersion(LookupError):
    """No complete version by this name: a bad name, no artifacts, or no vectors."""


@dataclass(frozen=True)
class Manifest:
    version: str
    # Data time, not wall time: "fresh" means created after the newest event.
    trained_at: float
    models: list[str]
    data_stats: dict[str, Any] = field(default_factory=dict)
    # Versions trained before revisions: the newest item update the run read (later
    # upserts are not in its index). Newer versions leave it at inf and give the revision.
    catalogue_through: float = math.inf
    # The catalogue revision it read (recsys.store.catalog.item_revision): items written in
    # later revisions are not in its index. None in versions trained before revisions.
    catalogue_revision: int | None = None
    format_version: int = ARTIFACT_FORMAT_VERSION

    @property
    def reference_dwell(self) -> float:
        return float(self.data_stats.get("reference_dwell", 60.0))

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Manifest:
        return cls(
            version=str(payload.get("version", "")),
            trained_at=float(payload.get("trained_at", time.time())),
            models=list(payload.get("models", [])),
            data_stats=dict(payload.get("data_stats", {})),
            catalogue_through=float(payload.get("catalogue_through", math.inf)),
            catalogue_revision=(
                int(payload["catalogue_revision"])
                if payload.get("catalogue_revision") is not None
                else None
            ),
            format_version=int(payload.get("format_version", ARTIFACT_FORMAT_VERSION)),
        )


def version_dir(artifacts_dir: Path, version: str) -> Path:
    return artifacts_dir / check_version(version)


def has_artifacts(artifacts_dir: Path, version: str) -> bool:
    """Whether ``version`` has a complete artifacts directory (its manifest is written last)."""
    try:
        return (version_dir(artifacts_dir, version) / MANIFEST_FILE).is_file()
    except ValueError:
        return False


def read_manifest(artifacts_dir: Path, version: str) -> Manifest:
    path = version_dir(artifacts_dir, version) / MANIFEST_FILE
    if not path.is_file():
        raise UnknownVersion(f"no artifacts for model version {version}")
    return Manifest.from_json(json.loads(path.read_text()))


def load_models(artifacts_dir: Path, version: str) -> dict[str, Any]:
    """Every registered model the version holds, by name."""
    directory = version_dir(artifacts_dir, version)
    return {
        spec.name: spec.load(directory / spec.name)
        for spec in registry.specs()
        if (directory / spec.name).is_dir()
    }


def load_popularity(artifacts_dir: Path, version: str) -> PopularityModel | None:
    return PopularityModel.load(version_dir(artifacts_dir, version))


def load_activity(artifacts_dir: Path, version: str) -> ActivityLog:
    """The positive events per item over time (empty in versions older than the file)."""
    path = version_dir(artifacts_dir, version) / ACTIVITY_FILE
    return ActivityLog.load(path) if path.is_file() else ActivityLog.empty()


def write_version(
    artifacts_dir: Path,
    manifest: Manifest,
    data: InteractionData,
    popularity: PopularityModel,
    models: dict[str, Any],
    *,
    activity: ActivityLog | None = None,
    ranker: Any | None = None,
) -> Path:
    """Save a version's artifacts off to the side, then rename them into place."""
    final = version_dir(artifacts_dir, manifest.version)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    data.save(partial / INTERACTIONS_DIR)
    popularity.save(partial)
    for name, model in models.items():
        model.save(partial / name)
    if activity is not None:
        activity.save(partial / ACTIVITY_FILE)
    if ranker is not None:
        ranker.save(partial / RANKER_DIR)
    # Written last: a directory with a manifest is a complete version.
    (partial / MANIFEST_FILE).write_text(json.dumps(asdict(manifest)))
    os.replace(partial, final)
    return final


def publish_vectors(
    vectors: VectorStore,
    version: str,
    data: InteractionData,
    catalogue: pd.DataFrame,
    models: dict[str, Any],
    popularity: PopularityModel,
) -> None:
    """Build ``version``'s vectors off to the side (every model that publishes vectors;
    item payloads for the index's filters) and commit them; not made live here."""
    # (user factors, item factors) per model's named vector.
    factors = {
        registry.get(name).vector: m.factors()
        for name, m in models.items()
        if registry.get(name).publishes_vectors
    }
    build = vectors.begin(version, {n: int(f[1].shape[1]) for n, f in factors.items()})
    try:
        # Retired items are trained on but never published.
        published = ~catalogue["retired"].eq(True).to_numpy()
        item_ids = [i for i, keep in zip(data.items.to_json(), published, strict=True) if keep]
        assert popularity.scores is not None
        payloads = [
            {
                "item_id": item_id,
                "category": category,
                "tags": tags,
                # Unknown creation times (NaN) are absent, not a number.
                "created_at": created if created == created else None,
                "popularity": float(p),
            }
            for item_id, category, tags, created, p in zip(
                item_ids,
                catalogue["category"][published].tolist(),
                catalogue["tags"][published].tolist(),
                catalogue["created_at"][published].tolist(),
                popularity.scores[published],
                strict=True,
            )
        ]
        build.upsert_items(item_ids, {n: f[1][published] for n, f in factors.items()}, payloads)
        build.upsert_users(data.users.to_json(), {n: f[0] for n, f in factors.items()})
        build.commit()
    except BaseException:
        build.abort()
        raise


def cleanup_artifacts(artifacts_dir: Path, keep: set[str]) -> list[str]:
    """Remove interrupted artifact builds and versions that are no longer kept."""
    removed: list[str] = []
    if not artifacts_dir.is_dir():
        return removed
    for path in artifacts_dir.iterdir():
        if path.name.endswith(PARTIAL_SUFFIX) or (path.is_dir() and path.name not in keep):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def activate(store: Store, vectors: VectorStore, artifacts_dir: Path, version: str) -> str | None:
    """Make a complete, kept ``version`` live (back or forward) and mark it published.

    Returns the version live before. Raises ``UnknownVersion`` when the name is malformed,
    its artifacts are missing or its vectors are not complete; other errors (the index
    unreachable) propagate.
    """
    # The artifacts first: a version whose vectors exist but whose models were removed
    # could go live and then fail to load in every serving process.
    if not has_artifacts(artifacts_dir, version):
        raise UnknownVersion(NO_SUCH_VERSION)
    previous = vectors.live_version()
    try:
        vectors.rollback(version)
    except ValueError:
        # Not complete, or removed by a cleanup since the artifacts were checked.
        raise UnknownVersion(NO_SUCH_VERSION) from None
    with store.transaction() as conn:
        mark_published(conn, version)
    return previous


__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "MANIFEST_FILE",
    "NO_SUCH_VERSION",
    "Manifest",
    "UnknownVersion",
    "activate",
    "cleanup_artifacts",
    "has_artifacts",
    "load_activity",
    "load_models",
    "load_popularity",
    "publish_vectors",
    "read_manifest",
    "version_dir",
    "write_version",
]
