"""Offline evaluation: split real interactions, fit every model on the train part, score the
held-out part, and write a report a person reads and a machine can compare.

The blended feed is evaluated through the production code path: the train split is
imported into a throwaway store, the nightly pipeline trains and publishes it, and every
test user's list comes from ``Recommender.feed``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from recsys import registry
from recsys.columns import DWELL, ITEM_ID, TIMESTAMP, TYPE, USER_ID, VALUE, WEIGHT
from recsys.config import Settings
from recsys.dataset import IdMap, InteractionData
from recsys.evaluation.metrics import evaluate_cold_start, evaluate_rankings
from recsys.evaluation.report import ModelResult, write_report
from recsys.evaluation.splits import (
    Split,
    cold_item_split,
    last_fraction_per_user_split,
    stratified_split,
    validation_split,
)
from recsys.models import ALSModel
from recsys.models.base import EmbeddingModel
from recsys.models.popularity import PopularityModel
from recsys.signals import event_weights

if TYPE_CHECKING:
    from recsys.serving.state import ServingState
    from recsys.store import Store

log = logging.getLogger("recsys.evaluate")

Protocol = Literal["temporal", "stratified", "cold_items", "planted"]
PROTOCOLS: tuple[str, ...] = ("temporal", "stratified", "cold_items", "planted")
DEFAULT_K = (5, 10, 20)
RELEVANCE = "relevance"
# The small, documented --tune grid (validation split only). implicit does not scale its
# regularization by data size, and on small catalogues the ratio regularization / alpha
# matters most (about 6 won on ml-latest-small), so the grid spans that ratio.
ALS_GRID = [
    {"factors": f, "alpha": a, "regularization": r}
    for f in (32, 64)
    for a in (1.0, 8.0, 20.0)
    for r in (5.0, 20.0, 50.0, 100.0)
]


@dataclass
class EvaluationData:
    """Per-event rows with their signal weight and relevance, plus the catalogue."""

    name: str
    events: pd.DataFrame  # user_id, item_id, type, timestamp, value, weight, relevance
    items: pd.DataFrame
    raw_events: pd.DataFrame  # canonical event rows, for the production feed's store
    # The likes a synthetic world planted and its events do not show (user_id, item_id):
    # the ``planted`` protocol's test set. None for logged data.
    planted: pd.DataFrame | None = None


@dataclass
class EvaluationResult:
    report_dir: Path
    document: dict[str, Any] = field(default_factory=dict)


def load_store_data(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's own catalogue and events (e.g. the demo world, or production logs)."""
    from recsys.store import open_store
    from recsys.store.catalog import load_items
    from recsys.store.events import iter_events

    store = open_store(settings)
    with store.read() as conn:
        items = load_items(conn)
        chunks = list(iter_events(conn))
    store.dispose()
    events = (
        pd.concat(chunks, ignore_index=True)
        if chunks
        else pd.DataFrame(columns=[USER_ID, ITEM_ID, TYPE, TIMESTAMP, DWELL, VALUE])
    )
    return items, events


def prepare(
    name: str, items: pd.DataFrame, events: pd.DataFrame, settings: Settings
) -> EvaluationData:
    """Weigh every event as training would; a rating is relevant at >= rating_positive_at."""
    durations = (
        items.set_index(ITEM_ID)["duration_seconds"].reindex(events[ITEM_ID]).to_numpy(np.float64)
    )
    dwell = events.loc[events[TYPE] == "view", "dwell_seconds"].dropna()
    frame = events[[USER_ID, ITEM_ID, TYPE, TIMESTAMP, VALUE]].copy()
    frame[WEIGHT] = event_weights(
        events,
        settings.signals,
        item_durations=durations,
        reference_dwell=float(dwell.median()) if len(dwell) else 60.0,
        custom_weights=settings.custom_event_types,
        now=float(events[TIMESTAMP].max()),
    )
    is_rating = (frame[TYPE] == "rating").to_numpy()
    positive_rating = frame[VALUE].to_numpy(np.float64) >= settings.signals.rating_positive_at
    frame[RELEVANCE] = np.where(is_rating, positive_rating, frame[WEIGHT].to_numpy() > 0).astype(
        float
    )
    return EvaluationData(
        name=name, events=frame.reset_index(drop=True), items=items, raw_events=events
    )


def make_protocol_split(data: EvaluationData, protocol: str, seed: int) -> Split:
    if protocol == "temporal":
        # Each user's newest 20% of events (the peer figures' protocol).
        return last_fraction_per_user_split(data.events, 0.2)
    if protocol == "stratified":
        # Microsoft Recommenders' MovieLens benchmark: per-user random 75/25.
        return stratified_split(data.events, 0.75, seed=seed)
    if protocol == "cold_items":
        return cold_item_split(data.events, 0.2, seed=seed)
    if protocol == "planted":
        return planted_split(data)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def planted_split(data: EvaluationData) -> Split:
    """Every logged event trains; the test set is what the world's planted tastes say each
    user likes among the items they have no event on. Nothing is held out, so every model
    learns from all there is, and the truth is known rather than sampled from the logs."""
    if data.planted is None:
        raise ValueError(
            "the planted protocol needs a world with planted tastes: use --dataset demo"
        )
    test = (
        data.planted[[USER_ID, ITEM_ID]]
        .astype(str)
        .assign(
            **{RELEVANCE: 1.0, WEIGHT: 1.0, TIMESTAMP: float(data.events[TIMESTAMP].max()) + 1.0}
        )
    )
    return Split(data.events, test, "planted", {"n_planted_likes": len(test)})


def relevance_rule(protocol: str) -> float | None:
    """The threshold on the relevance column: stratified counts every test rating."""
    return None if protocol == "stratified" else 0.5


def matrix_for(train: pd.DataFrame, items: IdMap) -> InteractionData:
    weights = train.groupby([USER_ID, ITEM_ID], sort=False, as_index=False)[WEIGHT].sum()
    return InteractionData.from_weights(weights, items=items)


def top_lists(
    model: EmbeddingModel[Any] | PopularityModel,
    data: InteractionData,
    users: Sequence[str],
    k: int,
) -> dict[str, list[str]]:
    """Top-k item ids per known user, train items removed."""
    known = [u for u in users if u in data.users]
    rows = data.users.to_internal(known)
    top, _ = model.recommend(rows, k, filter_seen=data.matrix[rows])
    return {
        user: [data.items.external_ids[i] for i in row if i >= 0]
        for user, row in zip(known, top, strict=True)
    }


def tune_als(
    split: Split, items: IdMap, settings: Settings, k: int, protocol: str
) -> dict[str, Any]:
    """Pick ALS hyperparameters on a validation split carved out of train (never test)."""
    inner = validation_split(split)
    data = matrix_for(inner.train, items)
    users = inner.test[USER_ID].unique().tolist()
    best: tuple[float, dict[str, Any]] = (-1.0, {})
    for params in tqdm(ALS_GRID, desc="tune als", disable=not sys.stderr.isatty()):
        config = settings.als.model_copy(update=params)
        lists = top_lists(ALSModel(config).fit(data), data, users, k)
        score = evaluate_rankings(
            lists,
            inner.test,
            [k],
            remove_seen=False,
            relevance_column=RELEVANCE,
            relevance_threshold=relevance_rule(protocol),
        )["metrics"][f"ndcg@{k}"]
        log.info("tune als %s ndcg@%d=%.4f", params, k, score)
        if score > best[0]:
            best = (score, params)
    return {"params": best[1], "validation_ndcg": best[0], "grid": ALS_GRID}


# Served pages per row, per page size, per user.
Pages = dict[str, dict[int, dict[str, list[str]]]]


def served_feed_lists(
    data: EvaluationData,
    split: Split,
    settings: Settings,
    users: Sequence[str],
    k_values: Sequence[int],
    work_dir: Path,
) -> tuple[Pages, dict[str, float], dict[str, Any]]:
    """Pages from the production feed: import train, run the nightly job, call feed().

    Rows: ``feed`` (what the service serves with these settings) and, when the version has
    a learned ranker, the other ranker over the same version: ``ranked`` (the learned
    ranker) when the blend serves, ``blend`` when the ranker does, and the candidate lists
    in each ranker's order before the page step (``candidate_orders``). Each user gets one page
    of each size in ``k_values``, as a client asking for k items would: a page is not the
    head of a longer one (the category cap and the place kept for a new item depend on
    its size). Also returns the nightly run's ranker metrics.
    """
    from pipelines.ingest import import_frames
    from pipelines.train import train
    from recsys.serving import Recommender
    from recsys.serving.learned import LearnedRanker
    from recsys.serving.ranking import BlendRanker, Ranker

    timings: dict[str, float] = {}
    store, feed_settings = throwaway_store(settings, work_dir / "feed-home")
    train_rows = data.raw_events.iloc[split.train.index.to_numpy()]
    started = time.perf_counter()
    import_frames(store, feed_settings, data.items, train_rows)
    timings["import"] = time.perf_counter() - started
    started = time.perf_counter()
    run = train(store, feed_settings, force=True)
    timings["train"] = time.perf_counter() - started
    # Replays of the past: nothing is shown to anyone, so nothing is recorded.
    recommender = Recommender.open(store, feed_settings, record_impressions=False)
    rows: Pages = {}
    moments = user_moments(split)
    state = recommender.require_state()
    rankers: list[tuple[str, Ranker | None]] = [("feed", None)]
    if state.ranker is not None:
        # The other ranker over the same version, for comparison.
        served_learned = isinstance(recommender.ranker_for(state), LearnedRanker)
        rankers.append(("blend", BlendRanker()) if served_learned else ("ranked", LearnedRanker()))
    for row, ranker in rankers:
        recommender.ranker = ranker
        started = time.perf_counter()
        pages: dict[int, dict[str, list[str]]] = {k: {} for k in k_values}
        for user in tqdm(users, desc=row, disable=not sys.stderr.isatty()):
            for k in k_values:
                page = recommender.feed(user, limit=k, as_of=moments.get(user))
                pages[k][user] = [item.item_id for item in page.items]
        timings[row] = time.perf_counter() - started
        rows[row] = pages
    started = time.perf_counter()
    rows.update(candidate_orders(store, feed_settings, state, users, k_values, moments))
    timings["candidates"] = time.perf_counter() - started
    recommender.close()
    store.dispose()
    return rows, timings, dict(run.metrics.get("ranker", {}))


def protocol_settings(settings: Settings, protocol: str) -> Settings:
    """The settings the nightly job runs with under ``protocol``: it learns the task it is
    judged on. A random split asks for any of a user's items, not their next ones, so
    under ``stratified`` its gate and the ranker's labels hold back a random share of each
    user's train events too (train events only)."""
    if protocol == "stratified":
        return settings.model_copy(update={"gate_holdout": "random"})
    return settings


def throwaway_store(settings: Settings, home: Path) -> tuple[Store, Settings]:
    """An embedded store and index under ``home`` (whatever database or Qdrant the settings
    name), and the settings that point there: where an evaluation imports and trains."""
    from recsys.store import Store
    from recsys.store.engine import make_engine

    local = settings.model_copy(update={"home": home, "database_url": None, "qdrant_url": None})
    return Store(make_engine(local.sqlalchemy_url)), local


def user_moments(split: Split) -> dict[str, float]:
    """The moment each test user is asked at, their "now": under the temporal protocol the
    start of their held-out events; under the others (test events among the train ones)
    just after their latest train event. A dataset spans years, and a user of 2000 asked
    as of the newest event of 2018 would see item ages and activity of another era."""
    if split.protocol == "last_fraction_per_user":
        return split.test.groupby(USER_ID)[TIMESTAMP].min().to_dict()
    return (split.train.groupby(USER_ID)[TIMESTAMP].max() + 1.0).to_dict()


def candidate_orders(
    store: Store,
    settings: Settings,
    state: ServingState,
    users: Sequence[str],
    k_values: Sequence[int],
    moments: dict[str, float],
) -> Pages:
    """Rows ``ranked_candidates`` and ``blend_candidates``: each user's candidate list (the
    one the ranker's training scores, through ``user_features``) ordered by the learned
    ranker and by the hand blend, before the page step. Against the feed rows they show
    what the page step costs; against the ranker's own out-of-fold figures, what its
    labels reward that this protocol's relevance does not."""
    from recsys.rank_training import user_features

    ranker = state.ranker
    if ranker is None:
        return {}
    by_ranker: dict[int, dict[str, list[str]]] = {k: {} for k in k_values}
    by_blend: dict[int, dict[str, list[str]]] = {k: {} for k in k_values}
    for user in users:
        found = user_features(
            store, settings, state, user, moments.get(user, state.trained_at + 1.0)
        )
        if found is None:  # no source had a candidate: empty lists, as a page would be
            for k in k_values:
                by_ranker[k][user], by_blend[k][user] = [], []
            continue
        ids = np.asarray(found.ids, dtype=object)
        ranker_order = np.argsort(-ranker.score(found.features), kind="stable")
        blend_order = np.argsort(-found.blend_scores, kind="stable")
        for k in k_values:
            by_ranker[k][user] = ids[ranker_order[:k]].tolist()
            by_blend[k][user] = ids[blend_order[:k]].tolist()
    return {"ranked_candidates": by_ranker, "blend_candidates": by_blend}


def evaluate(
    data: EvaluationData,
    settings: Settings,
    *,
    protocol: str = "temporal",
    k_values: Sequence[int] = DEFAULT_K,
    seed: int = 42,
    tune: bool = False,
    validation: bool = False,
    include_feed: bool = True,
    out_dir: Path = Path("reports"),
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Run one protocol over every model and write ``out_dir/<timestamp>/``."""
    say = progress or (lambda message: log.info("%s", message))
    settings = protocol_settings(settings, protocol)
    k_max = max(k_values)
    split = make_protocol_split(data, protocol, seed)
    if protocol == "planted" and (validation or tune):
        raise ValueError("the planted protocol trains on every event: nothing to validate on")
    if validation:
        # The same protocol again inside the train part: the test part is never read.
        split = validation_split(split)
    say(
        f"{data.name}: {protocol} split, "
        f"{len(split.train):,} train / {len(split.test):,} test events"
    )
    catalogue = data.items.drop_duplicates(ITEM_ID)
    item_ids = IdMap(catalogue[ITEM_ID].astype(str))
    train_data = matrix_for(split.train, item_ids)
    catalogue = (
        catalogue.set_index(ITEM_ID)
        .reindex(train_data.items.external_ids)
        .rename_axis(ITEM_ID)
        .reset_index()
    )
    catalogue["tags"] = [t if isinstance(t, list) else [] for t in catalogue["tags"]]
    catalogue[["title", "text"]] = catalogue[["title", "text"]].fillna("")
    users = sorted(set(split.test[USER_ID]) & set(train_data.users.external_ids))
    params: dict[str, Any] = {
        "seed": seed,
        "validation": validation,
        "k_values": list(k_values),
        "als": settings.als.model_dump(),
        "hybrid": settings.hybrid.model_dump(),
        "content": settings.content.model_dump(),
        "feed": settings.feed.model_dump(),
    }
    if tune:
        tuned = tune_als(split, item_ids, settings, 10, protocol)
        settings = settings.model_copy(
            update={"als": settings.als.model_copy(update=tuned["params"])}
        )
        params["tuning"] = tuned
        params["als"] = settings.als.model_dump()
        say(f"tuned ALS on validation: {tuned['params']} (ndcg@10 {tuned['validation_ndcg']:.4f})")

    results: list[ModelResult] = []
    content_vectors: pd.DataFrame | None = None
    categories = catalogue.set_index(ITEM_ID)["category"]
    fitted: dict[str, EmbeddingModel[Any]] = {}
    lists_by_model: dict[str, dict[str, list[str]]] = {}
    served_pages: Pages = {}
    timings_by_model: dict[str, dict[str, float]] = {}

    started = time.perf_counter()
    lists_by_model["popularity"] = top_lists(
        PopularityModel().fit(train_data), train_data, users, k_max
    )
    timings_by_model["popularity"] = {"total": time.perf_counter() - started}
    for spec in registry.specs():
        name = spec.name
        say(f"fitting {name}")
        started = time.perf_counter()
        fitted[name] = spec.create(settings).fit(train_data, catalogue)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        lists_by_model[name] = top_lists(fitted[name], train_data, users, k_max)
        timings_by_model[name] = {"fit": fit_seconds, "recommend": time.perf_counter() - started}
    content_factors = fitted[registry.CONTENT_MODEL].item_factors
    if content_factors is not None:
        content_vectors = pd.DataFrame(content_factors, index=train_data.items.external_ids)

    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as work:
        if include_feed:
            say("training and serving the feed")
            served, feed_timings, ranker_metrics = served_feed_lists(
                data, split, settings, users, k_values, Path(work)
            )
            for row, pages in served.items():
                served_pages[row] = pages
                timings_by_model[row] = feed_timings
            params["ranker"] = ranker_metrics
            say(f"learned ranker: {ranker_metrics}")

    cold = list(split.cold_items) if split.cold_items is not None else None
    scoring = {
        "train": split.train,
        "relevance_column": RELEVANCE,
        "relevance_threshold": relevance_rule(protocol),
        "catalog": train_data.items.external_ids,
        "item_vectors": content_vectors,
        "item_categories": categories,
        "cold_items": cold,
    }
    for name in [*lists_by_model, *served_pages]:
        say(f"scoring {name}")
        evaluation = (
            evaluate_pages(served_pages[name], split.test, scoring)
            if name in served_pages
            else evaluate_rankings(lists_by_model[name], split.test, k_values, **scoring)
        )
        cold_start = None
        if cold is not None and name in fitted:
            cold_start = _cold_start(fitted[name], train_data, split, cold)
        results.append(
            ModelResult(
                name=name,
                evaluation=evaluation,
                timings=timings_by_model.get(name, {}),
                params=params.get(name, {}) if isinstance(params.get(name), dict) else {},
                cold_start=cold_start,
            )
        )
    report_dir = write_report(
        results,
        dataset=data.name,
        protocol=split,
        params=params,
        out_dir=out_dir,
    )
    from recsys.evaluation.report import load_metrics

    return EvaluationResult(
        report_dir=report_dir, document=load_metrics(report_dir / "metrics.json")
    )


def evaluate_pages(
    pages: dict[int, dict[str, list[str]]], test: pd.DataFrame, scoring: dict[str, Any]
) -> dict[str, Any]:
    """``evaluate_rankings`` of served pages: every @k figure (overall and per slice) from
    the pages of size k, everything else from the largest pages."""
    largest = max(pages)
    result = evaluate_rankings(pages[largest], test, [largest], **scoring)
    result["k_values"] = sorted(pages)
    for k in sorted(pages):
        if k == largest:
            continue
        part = evaluate_rankings(pages[k], test, [k], **scoring)
        result["metrics"].update(part["metrics"])
        for name, entry in part["slices"].items():
            result["slices"].setdefault(name, {"metrics": {}})["metrics"].update(entry["metrics"])
    return result


def _cold_start(
    model: EmbeddingModel[Any], data: InteractionData, split: Split, cold: list[str]
) -> dict[str, Any] | None:
    """AUC and recall over the held-out items, scored by the model's own vectors."""
    users = [u for u in split.test[USER_ID].unique() if u in data.users]
    # An item-to-item model has no vectors: it can only score items someone interacted with.
    user_factors = getattr(model, "user_factors", None)
    item_factors = getattr(model, "item_factors", None)
    if not users or user_factors is None or item_factors is None:
        return None
    columns = data.items.to_internal(cold, strict=False)
    keep = columns >= 0
    rows = data.users.to_internal(users)
    scores = user_factors[rows] @ item_factors[columns[keep]].T
    frame = pd.DataFrame(
        scores, index=pd.Index(users, name=USER_ID), columns=np.asarray(cold)[keep]
    )
    return evaluate_cold_start(
        frame,
        split.test,
        np.asarray(cold)[keep].tolist(),
        k_values=(10,),
        relevance_column=RELEVANCE,
        relevance_threshold=0.5,
    )
