"""The nightly job: events -> interaction matrix -> every registered model -> a new version.

Stages: read (stream events into matrices) -> gate (fit on older events, score the newest
ones, compare with popularity and the live model) -> fit (ALS, hybrid, content on all
events) -> save artifacts -> publish (build a new vector version off to the side, then
switch the live pointer) -> cleanup. A kill at any stage leaves the live version serving;
the next run removes what the killed one left behind.
"""

from __future__ import annotations

import fcntl
import logging
import resource
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
from tqdm import tqdm

from recsys import registry, release
from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.config import Settings
from recsys.dataset import InteractionData
from recsys.evaluation.metrics import evaluate_rankings
from recsys.models.activity import ActivityLog
from recsys.models.base import EmbeddingModel
from recsys.models.catalog import catalogue_for
from recsys.models.popularity import PopularityModel
from recsys.rank_training import Holdout, LabelWindow, labelled_users, train_ranker
from recsys.signals import SECONDS_PER_DAY, InteractionBuilder, newest_per_user
from recsys.store import Store, runs
from recsys.store.catalog import item_revision, load_items
from recsys.store.events import (
    TRAINING_COLUMNS,
    count_events,
    event_time_range,
    iter_events,
)
from recsys.store.impressions import ignored_impressions, prune_impressions
from recsys.vectors import VectorStore, open_vector_store

log = logging.getLogger("recsys.train")

GATE_K = 10
GATE_MAX_USERS = 5_000

# Any fixed 64-bit number, other than the migrations' one.
TRAINING_LOCK_KEY = 0x7265637379730002


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
        # The process's high-water mark so far: the first stage where it jumps is the one
        # that sets the run's memory.
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("stage=%s seconds=%.3f peak_rss_mib=%.0f", name, self.timings[name], peak_mib)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def new_version() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


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


@dataclass
class GateSplit:
    """A holdout drawn for the gate (and the ranker's labels), and its targets: per (user
    row, item column), the held-back positive weight of items the user had not consumed."""

    holdout: Holdout
    targets: pd.DataFrame
    # Mask of the builder's triples known before the holdout (``known_before_holdout``):
    # what an earlier window draws from.
    known_before: np.ndarray


def gate_split(
    builder: InteractionBuilder,
    settings: Settings,
    seed: int = 0,
    *,
    within: np.ndarray | None = None,
) -> GateSplit | str:
    """Hold back each user's newest ``gate_holdout_fraction`` of events (a random share of
    them with ``gate_holdout = "random"``, or for events without time); a string says why
    there is no holdout to learn from.

    ``within`` (a mask of the builder's triples) draws the split from those triples alone,
    as if the rest had never happened: an earlier window is drawn within what every user
    had before a later one, so neither its fits nor its labels see the later events."""
    rows, cols, vals, times = builder.triples()
    ignored = builder.ignored_mask()
    if within is not None:
        rows, cols, vals, times, ignored = (
            array[within] for array in (rows, cols, vals, times, ignored)
        )
    if int((~ignored).sum()) < 100:
        return "too few events for a holdout"
    # Events without time (all logged at one moment) have no newest to hold out.
    randomly = settings.gate_holdout == "random" or bool(np.ptp(times[~ignored]) == 0)
    held = held_back(
        rows, times, ignored, settings.gate_holdout_fraction, randomly=randomly, seed=seed
    )
    if not held.any() or held.all():
        return "no user has enough events for a holdout"
    known_before = known_before_holdout(rows, times, held, ignored)
    train = builder.build(keep=_of_all_triples(known_before, within))
    # What each user acted on before the holdout: never recommended again, so never a hit.
    # An ignored impression is a weak negative in training, not a consumed item.
    consumed = (
        builder.build(keep=_of_all_triples(~held & ~ignored, within)).matrix
        if ignored.any()
        else train.matrix
    )
    targets = (
        pd.DataFrame({"row": rows[held], "col": cols[held], WEIGHT: vals[held]})
        .groupby(["row", "col"], as_index=False)[WEIGHT]
        .sum()
    )
    targets = targets[targets[WEIGHT] > 0]
    # A pair already in train cannot be recommended again, so it cannot count as a hit.
    if len(targets):
        pairs = consumed[targets["row"].to_numpy(), targets["col"].to_numpy()]
        targets = targets[np.asarray(pairs).ravel() == 0]
    if targets.empty:
        # Every held-out event is negative (say, everyone's latest event is a skip), or
        # every positive one was consumed before.
        return "the holdout has no new positive interaction"
    holdout = Holdout(rows, cols, vals, times, held, train, ignored, consumed, randomly=randomly)
    return GateSplit(holdout, targets, _of_all_triples(known_before, within))


def _of_all_triples(mask: np.ndarray, within: np.ndarray | None) -> np.ndarray:
    """A mask over the triples ``within`` selects, as a mask over all of them."""
    if within is None:
        return mask
    widened = np.zeros(len(within), dtype=bool)
    widened[within] = mask
    return widened


def gate_metrics(
    builder: InteractionBuilder, settings: Settings, seed: int = 0
) -> tuple[dict[str, Any], EmbeddingModel[Any] | None, Holdout | None]:
    """NDCG@10 of the gated model (ALS) and of popularity on each user's newest events,
    trained on the rest.

    The holdout is per user (``gate_split``), so the gate measures what the feed does:
    predict a user's next items from their past. Also returns the gated model fitted on
    the rest (same id maps as ``builder.build()``), which the full fit continues from, and
    the holdout itself (the learned ranker's labels); None when the gate was skipped.
    """
    split = gate_split(builder, settings, seed)
    if isinstance(split, str):
        return {"skipped": split}, None, None
    holdout, test = split.holdout, split.targets
    train, consumed = holdout.train, holdout.consumed_before()
    user_rows = test["row"].unique()
    if len(user_rows) > GATE_MAX_USERS:
        user_rows = np.random.default_rng(seed).choice(user_rows, GATE_MAX_USERS, replace=False)
        test = test[test["row"].isin(user_rows)]
    users = train.users.to_external(user_rows)
    test_frame = pd.DataFrame(
        {
            USER_ID: train.users.to_external(test["row"].to_numpy()),
            ITEM_ID: train.items.to_external(test["col"].to_numpy()),
            WEIGHT: test[WEIGHT].to_numpy(),
        }
    )
    seen = consumed[user_rows]
    spec = registry.gated()
    model = spec.create(settings).fit(train)
    gated_items, _ = model.recommend(user_rows, GATE_K, filter_seen=seen)
    pop_items, _ = PopularityModel().fit(train).recommend(user_rows, GATE_K, filter_seen=seen)
    results = {}
    for name, lists in ((spec.name, gated_items), (registry.GATED_BASELINE, pop_items)):
        recs = {
            u: train.items.to_external(row[row >= 0]).tolist()
            for u, row in zip(users, lists, strict=True)
        }
        report = evaluate_rankings(recs, test_frame, [GATE_K], remove_seen=False)
        results[name] = {
            "ndcg@10": report["metrics"][f"ndcg@{GATE_K}"],
            "n_users": report["n_users"],
        }
    return results, model, holdout


def more_label_windows(
    builder: InteractionBuilder, settings: Settings, holdout: Holdout | None
) -> list[LabelWindow]:
    """Further holdouts for the ranker to learn from (``ranker.label_windows``), each with
    the gated model fitted on the events before it, when fewer users than
    ``ranker.max_users`` have labels. Held back at random, each is another random share of
    every user's events; held back as each user's newest, each goes one step further back
    in time: the newest events of what every user had before the window after it."""
    config = settings.ranker
    if holdout is None or config.label_windows < 2 or not config.enabled:
        return []
    if labelled_users(holdout)["row"].nunique() >= config.max_users:
        return []
    windows = []
    spec = registry.gated()
    ignored = np.zeros(len(holdout.rows), bool) if holdout.ignored is None else holdout.ignored
    earlier = known_before_holdout(holdout.rows, holdout.times, holdout.held, ignored)
    for seed in range(1, config.label_windows):
        if holdout.randomly:
            split = gate_split(builder, settings, seed=seed)
        else:
            split = gate_split(builder, settings, within=earlier)
        if not isinstance(split, GateSplit):
            break
        model = spec.create(settings).fit(split.holdout.train)
        windows.append(LabelWindow(split.holdout, {spec.name: model}))
        earlier = split.known_before
    return windows


def held_back(
    rows: np.ndarray,
    times: np.ndarray,
    ignored: np.ndarray,
    fraction: float,
    *,
    randomly: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """The gate's targets: each user's newest ``fraction`` of events (``randomly``: a
    random ``fraction`` of them). Ignored impressions are never targets and do not count
    towards a user's share."""
    held = np.zeros(len(rows), dtype=bool)
    events = ~ignored
    order = np.random.default_rng(seed).random(int(events.sum())) if randomly else times[events]
    held[events] = newest_per_user(rows[events], order, fraction)
    return held


def known_before_holdout(
    rows: np.ndarray, times: np.ndarray, held: np.ndarray, ignored: np.ndarray
) -> np.ndarray:
    """The triples a model fitted for the gate may learn from: the events not held back,
    and the ignored impressions shown before the user's held-back events start. A later
    one would tell the model which of the held-back period's items the user passed over."""
    start = np.full(int(rows.max()) + 1 if len(rows) else 0, np.inf)
    np.minimum.at(start, rows[held], times[held])
    return ~held & ~(ignored & (times >= start[rows]))


def _impressions_for_training(
    store: Store, settings: Settings, builder: InteractionBuilder
) -> tuple[int, int]:
    """Prune impressions past the retention, then add the ignored ones to ``builder`` as
    weak negatives. Returns (pruned, added).

    Only impressions older than the ignore window are judged: a page shown an hour ago
    may still be acted on. Impressions carry the serving clock, so the cut is taken from
    this clock too, not from the newest event."""
    now = time.time()
    pruned = 0
    if settings.impressions.retention_days > 0:
        with store.transaction() as conn:
            pruned = prune_impressions(
                conn, now - settings.impressions.retention_days * SECONDS_PER_DAY
            )
    if not settings.impressions.train_on_ignored:
        return pruned, 0
    window = settings.signals.ignored_window_hours * 3600.0
    with store.read() as conn:
        ignored = ignored_impressions(
            conn, shown_from=0.0, shown_before=now - window, window_seconds=window
        )
    return pruned, builder.add_ignored(ignored)


def check_gate(
    metrics: dict[str, Any], live_metrics: dict[str, Any] | None, margin: float
) -> str | None:
    """The reason to refuse publishing, or None."""
    if "skipped" in metrics:
        return None
    gated = registry.gated().name
    new = metrics[gated]["ndcg@10"]
    baseline = metrics[registry.GATED_BASELINE]["ndcg@10"]
    if new < baseline:
        return f"NDCG@10 {new:.4f} is below the popularity baseline {baseline:.4f}"
    live = (live_metrics or {}).get("gate", {}).get(gated, {}).get("ndcg@10")
    if live is not None and new < live * (1.0 - margin):
        return f"NDCG@10 {new:.4f} is below the live model's {live:.4f} by more than {margin:.0%}"
    return None


def train(store: Store, settings: Settings, *, force: bool = False) -> TrainResult:
    """Run the nightly job once. Raises ``TrainingError``/``GateRefused`` on refusal."""
    with training_lock(settings.home), shared_training_lock(store):
        return _train_locked(store, settings, force=force)


@contextmanager
def shared_training_lock(store: Store) -> Iterator[None]:
    """One training run at a time across machines that share a PostgreSQL store.

    The home's file lock only covers one machine; on a Qdrant server, a second trainer's
    begin() would remove the first one's unfinished version. A session advisory lock on a
    connection held for the run: a killed run's lock ends with its connection.
    """
    if store.dialect != "postgresql":
        yield
        return
    with store.engine.connect() as conn:
        # Autocommit: the connection must not sit idle in a transaction for hours.
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        held = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({TRAINING_LOCK_KEY})").scalar()
        if not held:
            raise TrainingError("another training run is in progress (on this store)")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({TRAINING_LOCK_KEY})")


def _train_locked(store: Store, settings: Settings, *, force: bool) -> TrainResult:
    version = new_version()
    with store.read() as conn:
        if count_events(conn) == 0:
            raise TrainingError(
                "the store has no events yet: import some first "
                "(`recsys import events PATH`, `recsys import movielens DIR` or `recsys demo`)"
            )
    vectors = open_vector_store(settings)
    stages = Stages(["read", "gate", "ranker", *registry.names(), "save", "publish", "cleanup"])
    params: dict[str, Any] = {
        "signals": settings.signals.model_dump(),
        "custom_event_types": settings.custom_event_types,
        **{
            spec.config: getattr(settings, spec.config).model_dump()
            for spec in registry.specs()
            if spec.config
        },
        "gate_holdout_fraction": settings.gate_holdout_fraction,
        "ranker": settings.ranker.model_dump(),
    }
    with store.read() as conn:
        live = vectors.live_version()
        live_run = runs.get_run(conn, live) if live else None
    with store.transaction() as conn:
        runs.recover_interrupted(conn, live)
        runs.start_run(conn, version, params)
    result = TrainResult(version=version, status=runs.RUNNING, published=False)
    try:
        _run_stages(store, settings, vectors, stages, version, result, live_run, force)
    except GateRefused as exc:
        result.status, result.message = runs.REFUSED, str(exc)
    except BaseException as exc:
        # A failure after the switch (in the cleanup) leaves the run published.
        if not result.published:
            result.status = runs.FAILED
        result.message = f"{type(exc).__name__}: {exc}"
        _record(store, result)
        raise
    finally:
        stages.close()
        result.timings = stages.timings
        vectors.close()
    _record(store, result)
    if result.status == runs.REFUSED:
        raise GateRefused(result.message)
    return result


def _record(store: Store, result: TrainResult) -> None:
    with store.transaction() as conn:
        runs.finish_run(
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
    vectors: VectorStore,
    stages: Stages,
    version: str,
    result: TrainResult,
    live_run: runs.ModelRun | None,
    force: bool,
) -> None:
    with stages.stage("read"):
        with store.read() as conn:
            # Items written after this revision are not in the version: every serving
            # process indexes them into it from the store (recsys.serving.live). Read
            # before the items, so an item written in between is indexed twice, not missed.
            catalogue_revision = item_revision(conn)
            items = load_items(conn)
            newest = float(event_time_range(conn)[1] or 0.0)
        # Retired items' events stay in training unless the settings say otherwise.
        retired = set(items.loc[items["retired"], ITEM_ID])
        dropped = set() if settings.train_on_retired_items else retired
        builder = InteractionBuilder(
            settings.signals, items=items, custom_weights=settings.custom_event_types, now=newest
        )
        with store.read() as conn:
            for chunk in iter_events(
                conn, chunk_rows=settings.import_chunk_rows * 5, columns=TRAINING_COLUMNS
            ):
                if dropped:
                    chunk = chunk[~chunk[ITEM_ID].isin(dropped)]
                builder.add(chunk)
        pruned, ignored = _impressions_for_training(store, settings, builder)
        data = builder.build()
        result.data_stats = {
            "events": builder.n_events,
            "ignored_impressions": ignored,
            "pruned_impressions": pruned,
            "users": len(data.users),
            "items": len(data.items),
            "catalogue_items": len(items),
            "nonzeros": int(data.matrix.nnz),
            "reference_dwell": builder.reference_dwell,
            "newest_event": newest,
        }
        if not (data.matrix.data > 0).any():
            raise TrainingError(
                "no positive interaction yet (a like, a long enough view, a good rating or a "
                "play): there is nothing to learn from until there is one"
            )

    with stages.stage("gate"):
        gate, gate_model, holdout = gate_metrics(builder, settings)
        more_windows = more_label_windows(builder, settings, holdout)
        reference_dwell = builder.reference_dwell
        # Positive events per item and time: the served ranker's item activity features.
        rows_, cols_, vals_, times_ = builder.triples()
        positive = vals_ > 0
        activity = ActivityLog(cols_[positive], times_[positive], len(data.items))
        del builder, rows_, cols_, vals_, times_, positive
        result.metrics["gate"] = gate
        reason = check_gate(gate, live_run.metrics if live_run else None, settings.gate_margin)
        if reason and not force:
            log.warning("quality gate refused version %s: %s", version, reason)
            raise GateRefused(reason)
        if reason:
            log.warning("quality gate would refuse (%s); publishing because of --force", reason)
            result.metrics["gate_overridden"] = reason

    # First-stage models fitted on the events before the holdout: the gate's, then the
    # ranker's. The nightly fits continue from them where a model can (ALS, LightFM).
    fitted: dict[str, Any] = {} if gate_model is None else {registry.gated().name: gate_model}
    with stages.stage("ranker"):
        ranker = None
        if holdout is not None and gate_model is not None:
            try:
                ranker, result.metrics["ranker"] = train_ranker(
                    store,
                    settings,
                    holdout,
                    items,
                    reference_dwell,
                    fitted,
                    more_windows=more_windows,
                )
            except Exception as exc:
                # The blend serves without a ranker: a failure here costs quality, not
                # the night's models.
                log.exception("could not train the learned ranker; the blend serves")
                result.metrics["ranker"] = {
                    "status": "failed",
                    "reason": f"{type(exc).__name__}: {exc}",
                }
        else:
            result.metrics["ranker"] = {"status": "skipped", "reason": "no holdout"}
        del holdout, more_windows
        log.info("ranker: %s", result.metrics["ranker"])

    catalogue = catalogue_for(data, items)
    models: dict[str, EmbeddingModel[Any]] = {}
    for spec in registry.specs():
        with stages.stage(spec.name):
            model = spec.create(settings)
            previous = fitted.pop(spec.name, None)
            if previous is not None and hasattr(model, "fit_from"):
                # Continue from the earlier fit instead of fitting again (see ARCHITECTURE).
                models[spec.name] = model.fit_from(previous, data, catalogue)
                result.metrics[f"{spec.name}_warm_started"] = model.warm_started
            else:
                models[spec.name] = model.fit(data, catalogue)
            del previous
    del gate_model, fitted
    # Aligned with the item id map: the gate's baseline and the feed's popular source.
    popularity = PopularityModel().fit(data)

    with stages.stage("save"):
        manifest = release.Manifest(
            version=version,
            trained_at=newest,
            models=list(models),
            data_stats=result.data_stats,
            catalogue_revision=catalogue_revision,
        )
        final = release.write_version(
            settings.artifacts_dir,
            manifest,
            data,
            popularity,
            models,
            activity=activity,
            ranker=ranker,
        )
        result.data_stats["artifacts"] = str(final)

    with stages.stage("publish"):
        release.publish_vectors(vectors, version, data, catalogue, models, popularity)
        vectors.activate(version)
        result.published = True
        result.status = runs.PUBLISHED
        # Record it at once: the version serves from now on, whatever befalls the cleanup.
        result.timings = stages.timings
        _record(store, result)

    with stages.stage("cleanup"):
        removed = vectors.cleanup(keep=settings.keep_versions)
        kept = {v.version for v in vectors.list_versions()}
        removed += release.cleanup_artifacts(settings.artifacts_dir, kept | {version})
        if removed:
            log.info("removed old or interrupted versions: %s", ", ".join(sorted(set(removed))))
