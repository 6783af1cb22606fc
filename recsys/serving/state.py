"""The serving state of one model version: its models, its open vector index and its
catalogue snapshot, loaded from a published version."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys import registry, release
from recsys.config import Settings
from recsys.models.activity import ActivityByRow, ActivityLog, ItemActivity
from recsys.models.ranker import RankerModel
from recsys.serving.catalogue import Catalogue, build_catalogue, trending_scores
from recsys.store import Store
from recsys.store.activity import recent_activity
from recsys.store.catalog import load_items
from recsys.vectors.base import VectorIndex
from recsys.vectors.versions import VectorStore

# The trending score counts positive events of this many days before the newest one.
TRENDING_DAYS = 14.0


@dataclass
class ServingState:
    """Everything version-specific a request reads: immutable but for the catalogue, which
    item upserts replace (copy on write) under ``lock``."""

    version: str
    trained_at: float
    index: VectorIndex
    models: dict[str, Any]
    catalogue: Catalogue
    reference_dwell: float
    # Versions trained before revisions: the newest item update the run read (inf after).
    catalogue_through: float = math.inf
    # The catalogue revision its index holds every item of: the version's own (None for
    # versions trained before revisions), then each item sync's (see LiveVersion.sync_items).
    items_revision: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # When another version replaced this one (None while it serves).
    retired_at: float | None = None
    # The learned ranker's model, when one passed its gate (None: the hand blend ranks).
    ranker: RankerModel | None = None
    # Per-item activity as of ``trained_at`` (the learned ranker's item features).
    activity: ItemActivity = field(
        default_factory=lambda: ActivityByRow(ActivityLog.empty(), np.zeros(0, np.int64))
    )

    # Per neighbour model: (its column per catalogue row, the catalogue row per column).
    neighbour_maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def fold_in_models(self) -> dict[str, Any]:
        return fold_in_models(self.models)

    def neighbour_map(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Model ``name``'s item column per catalogue row (-1: unknown to it) and the
        catalogue row per column (-1: not in the catalogue), built on first use. It stays
        true as items arrive: catalogue rows only grow, and every item the model knows
        was in the catalogue when the state loaded (rows past the map are unknown)."""
        maps = self.neighbour_maps.get(name)
        if maps is None:
            items = self.models[name].items
            catalogue = self.catalogue
            columns = np.asarray(items.to_internal(catalogue.ids, strict=False), dtype=np.int64)
            rows = np.full(len(items), -1, dtype=np.int64)
            known = np.flatnonzero(columns >= 0)
            rows[columns[known]] = known
            maps = self.neighbour_maps.setdefault(name, (columns, rows))
        return maps


def fold_in_models(models: dict[str, Any]) -> dict[str, Any]:
    """The served models that fold a user in from their history, by name."""
    return {
        spec.name: models[spec.name]
        for spec in registry.served()
        if spec.folds_in_user and spec.name in models
    }


def load_state(
    store: Store, settings: Settings, vectors: VectorStore, version: str
) -> ServingState:
    """Open ``version``: its models, its vector index and a catalogue snapshot."""
    manifest = release.read_manifest(settings.artifacts_dir, version)
    models = release.load_models(settings.artifacts_dir, version)
    index = vectors.open_version(version)
    try:
        with store.read() as conn:
            items = load_items(conn)
        popularity = release.load_popularity(settings.artifacts_dir, version)
        catalogue = build_catalogue(
            items,
            models[registry.CONTENT_MODEL],
            fold_in_models(models),
            popularity.scores if popularity is not None else None,
        )
        with store.read() as conn:
            newest, item_ids, timestamps = recent_activity(conn, TRENDING_DAYS)
        catalogue.trending = trending_scores(catalogue, newest, item_ids, timestamps)
        activity = ActivityByRow(
            release.load_activity(settings.artifacts_dir, version),
            models[registry.CONTENT_MODEL].items.to_internal(catalogue.ids, strict=False),
            manifest.trained_at,
        )
        ranker = RankerModel.load(
            release.version_dir(settings.artifacts_dir, version) / release.RANKER_DIR
        )
    except BaseException:
        index.close()
        raise
    return ServingState(
        version=version,
        trained_at=manifest.trained_at,
        index=index,
        models=models,
        catalogue=catalogue,
        reference_dwell=manifest.reference_dwell,
        catalogue_through=manifest.catalogue_through,
        items_revision=manifest.catalogue_revision,
        ranker=ranker,
        activity=activity,
    )
