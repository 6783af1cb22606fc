"""The nightly job: events -> interaction matrix -> three embeddings -> a new Qdrant version.

Stages: read (stream events into matrices) -> gate (fit on older events, score the newest
ones, compare with popularity and the live model) -> fit (ALS, hybrid, content on all
events) -> save artifacts -> publish (build a new vector version off to the side, then
switch the live pointer) -> cleanup. A kill at any stage leaves the live version serving;
the next run removes what the killed one left behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from tqdm import tqdm

from recsys.columns import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT
from recsys.config import Settings
from recsys.dataset import InteractionData
from recsys.evaluation.metrics import evaluate_rankings
from recsys.models import ALSModel, ContentModel, HybridModel
from recsys.models.base import EmbeddingModel
from recsys.signals import InteractionBuilder
from recsys.store import Store
from recsys.store import runs as registry
from recsys.store.catalog import load_items
from recsys.store.events import count_events
from recsys.store.schema import events as events_table
from recsys.vectors.versions import open_vector_store

log = logging.getLogger("recsys.train")

ARTIFACT_FORMAT_VERSION = 1
GATE_K = 10
GATE_MAX_USERS = 5_000
MODEL_NAMES = ("als", "hybrid", "content")


class TrainingError(RuntimeError):
    """A run that cannot proceed (empty store, another run in progress)."""


class GateRefused(RuntimeError):
    """The quality gate refused to publish the new model."""


@dataclass
class TrainResult:
    version: str
    status: str
    published: bool
    data_stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@contextmanager
def training_lock(home: Path) -> Iterator[None]:
    """One training run at a time per home; a killed run's lock dies with its process."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "train.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise TrainingError("another training run is in progress") from exc
        yield


class Stages:
    """Per-stage timings, a progress bar on a terminal and structured log lines."""

    def __init__(self, names: list[str]) -> None:
        self.timings: dict[str, float] = {}
        self._bar = tqdm(
            total=len(names), desc="train", unit="stage", disable=not sys.stderr.isatty()
        )

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._bar.set_description(f"train: {name}")
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        log.info("stage=%s seconds=%.3f", name, self.timings[name])
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def new_version() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def catalogue_for(interactions: InteractionData, items: pd.DataFrame) -> pd.DataFrame:
    """The catalogue in id-map order, with bare rows for items seen only in events."""
    frame = items.set_index(ITEM_ID).reindex(interactions.items.external_ids)
    frame["title"] = frame["title"].fillna("")
    frame["text"] = frame["text"].fillna("")
    frame["tags"] = [t if isinstance(t, list) else [] for t in frame["tags"]]
    category = frame["category"].astype(object)
    frame["category"] = category.where(category.notna(), None)
    return frame.rename_axis(ITEM_ID).reset_index()


def holdout_cut(store: Store, fraction: float) -> float | None:
    """The timestamp that leaves the newest ``fraction`` of events for the gate."""
    with store.read() as conn:
        total = count_events(conn)
        offset = int(total * (1.0 - fraction))
        if total < 100 or offset >= total:
            return None
        cut = conn.execute(
            select(events_table.c.timestamp)
            .order_by(events_table.c.timestamp)
            .offset(offset)
            .limit(1)
        ).scalar_one()
    return float(cut)


def positives_frame(data: InteractionData) -> pd.DataFrame:
    coo = data.matrix.tocoo()
    keep = coo.data > 0
    return pd.DataFrame(
        {
            USER_ID: data.users.to_external(coo.row[keep]),
            ITEM_ID: data.items.to_external(coo.col[keep]),
            WEIGHT: coo.data[keep].astype(np.float64),
        }
    )


def popularity(data: InteractionData) -> np.ndarray:
    """Users with a positive interaction, per item."""
    positive = data.matrix.copy()
    positive.data = (positive.data > 0).astype(np.float32)
    return np.asarray(positive.sum(axis=0)).ravel()


def gate_metrics(
    train: InteractionData, test: pd.DataFrame, settings: Settings, seed: int = 0
) -> dict[str, Any]:
    """NDCG@10 of ALS trained on the older events and of popularity, on the newest events."""
    test = test[test[USER_ID].isin(pd.Index(train.users.external_ids))]
    users = test[USER_ID].unique()
    if len(users) == 0:
        return {"skipped": "no holdout user has older events"}
    if len(users) > GATE_MAX_USERS:
        users = np.random.default_rng(seed).choice(users, GATE_MAX_USERS, replace=False)
        test = test[test[USER_ID].isin(users)]
    rows = train.users.to_internal(users)
    seen = train.matrix[rows]
    model = ALSModel(settings.als).fit(train)
    als_items, _ = model.recommend(rows, GATE_K, filter_seen=seen)
    # Popularity: the most-liked items of the training window, minus what each user has seen.
    order = np.argsort(-popularity(train), kind="stable")[: GATE_K + 200]
    pop_lists = []
    for r in range(len(rows)):
        seen_cols = set(seen[r].indices.tolist())
        pop_lists.append([c for c in order if c not in seen_cols][:GATE_K])
    results = {}
    for name, lists in (("als", als_items), ("popularity", np.asarray(pop_lists))):
        recs = {
            u: train.items.to_external(row).tolist() for u, row in zip(users, lists, strict=True)
        }
        report = evaluate_rankings(recs, test, [GATE_K], remove_seen=False)
        results[name] = {
            "ndcg@10": report["metrics"][f"ndcg@{GATE_K}"],
            "n_users": report["n_users"],
        }
    return results


def check_gate(
    metrics: dict[str, Any], live_metrics: dict[str, Any] | None, margin: float
) -> str | None:
    """The reason to refuse publishing, or None."""
    if "skipped" in metrics:
        return None
    new = metrics["als"]["ndcg@10"]
    baseline = metrics["popularity"]["ndcg@10"]
    if new < baseline:
        return f"NDCG@10 {new:.4f} is below the popularity baseline {baseline:.4f}"
    live = (live_metrics or {}).get("gate", {}).get("als", {}).get("ndcg@10")
    if live is not None and new < live * (1.0 - margin):
        return f"NDCG@10 {new:.4f} is below the live model's {live:.4f} by more than {margin:.0%}"
    return None


def _atomic_dir(final: Path) -> Path:
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def cleanup_artifacts(artifacts_dir: Path, keep: set[str]) -> list[str]:
    """Remove interrupted artifact builds and versions that are no longer kept."""
    removed: list[str] = []
    if not artifacts_dir.is_dir():
        return removed
    for path in artifacts_dir.iterdir():
        if path.name.endswith(".partial") or (path.is_dir() and path.name not in keep):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def train(store: Store, settings: Settings, *, force: bool = False) -> TrainResult:
    """Run the nightly job once. Raises ``TrainingError``/``GateRefused`` on refusal."""
    with training_lock(settings.home):
        return _train_locked(store, settings, force=force)


def _train_locked(store: Store, settings: Settings, *, force: bool) -> TrainResult:
    version = new_version()
    with store.read() as conn:
        if count_events(conn) == 0:
            raise TrainingError(
                "the store has no events yet: import some first "
                "(`recsys import events PATH`, `recsys import movielens DIR` or `recsys demo`)"
            )
    vectors = open_vector_store(settings)
    stages = Stages(["read", "gate", *MODEL_NAMES, "save", "publish", "cleanup"])
    params = {
        "signals": settings.signals.model_dump(),
        "custom_event_types": settings.custom_event_types,
        "als": settings.als.model_dump(),
        "hybrid": settings.hybrid.model_dump(),
        "content": settings.content.model_dump(),
        "gate_holdout_fraction": settings.gate_holdout_fraction,
    }
    with store.read() as conn:
        live = vectors.live_version()
        live_run = registry.get_run(conn, live) if live else None
    with store.transaction() as conn:
        # Holding the training lock, any run still marked running was killed.
        conn.execute(
            registry.model_runs.update()
            .where(registry.model_runs.c.status == registry.RUNNING)
            .values(status=registry.FAILED, message="interrupted", finished_at=time.time())
        )
        registry.start_run(conn, version, params)
    result = TrainResult(version=version, status=registry.RUNNING, published=False)
    try:
        _run_stages(store, settings, vectors, stages, version, result, live_run, force)
    except GateRefused as exc:
        result.status, result.message = registry.REFUSED, str(exc)
    except BaseException as exc:
        result.status, result.message = registry.FAILED, f"{type(exc).__name__}: {exc}"
        _record(store, result)
        raise
    finally:
        stages.close()
        result.timings = stages.timings
        vectors.close()
    _record(store, result)
    if result.status == registry.REFUSED:
        raise GateRefused(result.message)
    return result


def _record(store: Store, result: TrainResult) -> None:
    with store.transaction() as conn:
        registry.finish_run(
            conn,
            result.version,
            result.status,
            data_stats=result.data_stats,
            timings=result.timings,
            metrics=result.metrics,
            message=result.message or None,
            artifact_uri=str(result.data_stats.get("artifacts")) if result.published else None,
        )


def _run_stages(
    store: Store,
    settings: Settings,
    vectors: Any,
    stages: Stages,
    version: str,
    result: TrainResult,
    live_run: registry.ModelRun | None,
    force: bool,
) -> None:
    with stages.stage("read"):
        cut = holdout_cut(store, settings.gate_holdout_fraction)
        with store.read() as conn:
            items = load_items(conn)
            newest = conn.execute(
                select(events_table.c.timestamp).order_by(events_table.c.timestamp.desc()).limit(1)
            ).scalar_one()
        builders = {
            name: InteractionBuilder(
                settings.signals,
                items=items,
                custom_weights=settings.custom_event_types,
                now=newest,
            )
            for name in ("all", "train", "test")
        }
        from recsys.store.events import iter_events

        with store.read() as conn:
            for chunk in iter_events(conn, chunk_rows=settings.import_chunk_rows * 5):
                builders["all"].add(chunk)
                if cut is not None:
                    older = chunk[TIMESTAMP] < cut
                    builders["train"].add(chunk[older])
                    builders["test"].add(chunk[~older])
        reference_dwell = builders["all"].reference_dwell
        data = builders["all"].build()
        result.data_stats = {
            "reference_dwell": reference_dwell,
            "newest_event": newest,
            "events": builders["all"].n_events,
            "users": len(data.users),
            "items": len(data.items),
            "catalogue_items": len(items),
            "nonzeros": int(data.matrix.nnz),
            "holdout_cut": cut,
        }

    with stages.stage("gate"):
        gate: dict[str, Any] = {"skipped": "too few events for a holdout"}
        if cut is not None and builders["train"].n_events and builders["test"].n_events:
            gate = gate_metrics(
                builders["train"].build(), positives_frame(builders["test"].build()), settings
            )
        del builders
        result.metrics["gate"] = gate
        reason = check_gate(gate, live_run.metrics if live_run else None, settings.gate_margin)
        if reason and not force:
            log.warning("quality gate refused version %s: %s", version, reason)
            raise GateRefused(reason)
        if reason:
            log.warning("quality gate would refuse (%s); publishing because of --force", reason)
            result.metrics["gate_overridden"] = reason

    catalogue = catalogue_for(data, items)
    models: dict[str, EmbeddingModel[Any]] = {}
    candidates: tuple[tuple[str, EmbeddingModel[Any]], ...] = (
        ("als", ALSModel(settings.als)),
        ("hybrid", HybridModel(settings.hybrid)),
        ("content", ContentModel(settings.content)),
    )
    for name, model in candidates:
        with stages.stage(name):
            models[name] = model.fit(data, catalogue)

    with stages.stage("save"):
        final = settings.artifacts_dir / version
        partial = _atomic_dir(final)
        data.save(partial / "interactions")
        # Aligned with the item id map; the recommender's popularity fallback reads it.
        np.save(partial / "popularity.npy", popularity(data))
        for name, fitted in models.items():
            fitted.save(partial / name)
        (partial / "manifest.json").write_text(
            json.dumps(
                {
                    "format_version": ARTIFACT_FORMAT_VERSION,
                    "version": version,
                    # Data time, not wall time: "fresh" means created after the newest event.
                    "trained_at": newest,
                    "models": list(models),
                    "data_stats": result.data_stats,
                }
            )
        )
        os.replace(partial, final)
        result.data_stats["artifacts"] = str(final)

    with stages.stage("publish"):
        dims = {name: int(m.item_factors.shape[1]) for name, m in models.items()}  # type: ignore[union-attr]
        build = vectors.begin(version, dims)
        try:
            item_ids = data.items.to_json()
            pop = popularity(data)
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
                    catalogue["category"].tolist(),
                    catalogue["tags"].tolist(),
                    catalogue["created_at"].tolist(),
                    pop,
                    strict=True,
                )
            ]
            build.upsert_items(item_ids, {n: m.item_factors for n, m in models.items()}, payloads)
            build.upsert_users(data.users.to_json(), {n: m.user_factors for n, m in models.items()})
            build.commit()
        except BaseException:
            build.abort()
            raise
        vectors.activate(version)
        result.published = True
        result.status = registry.PUBLISHED

    with stages.stage("cleanup"):
        removed = vectors.cleanup(keep=settings.keep_versions)
        kept = {v.version for v in vectors.list_versions()}
        removed += cleanup_artifacts(settings.artifacts_dir, kept | {version})
        if removed:
            log.info("removed old or interrupted versions: %s", ", ".join(sorted(set(removed))))
