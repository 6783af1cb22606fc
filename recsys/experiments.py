"""Online experiments end to end: start one (validated against the published versions),
stop it, and report what each variant's users did with what they were shown.

An action is a positive event (by the signal weights: a like, a long view, a play, a high
rating) that carries the feed_id of one of the variant's feed pages. Rates are per
impression; their intervals and the p-value count users, not impressions, as the unit
(``recsys.evaluation.online``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from recsys import release
from recsys.columns import DWELL, TYPE, USER_ID
from recsys.config import Settings
from recsys.evaluation.online import RatioEstimate, p_value_against_control, ratio_estimate
from recsys.serving.experiments import (
    Experiment,
    InvalidExperiment,
    experiment_from_row,
    parse_experiment,
)
from recsys.signals import event_weights
from recsys.store import Store
from recsys.store.experiments import (
    ExperimentConflict,
    create_experiment,
    get_experiment,
    list_experiments,
    stop_experiment,
)
from recsys.store.impressions import experiment_events, experiment_exposure
from recsys.vectors import VectorStore

__all__ = [
    "ExperimentConflict",
    "InvalidExperiment",
    "experiment_report",
    "list_experiments",
    "start_experiment",
    "stop",
]


def start_experiment(
    store: Store,
    settings: Settings,
    vectors: VectorStore,
    name: object,
    variants: object,
) -> Experiment:
    """Validate and start an experiment. Raises InvalidExperiment (a bad definition or a
    pinned version that is not complete and kept) or ExperimentConflict (the name is
    taken, or another experiment runs)."""
    experiment = parse_experiment(name, variants, settings.feed)
    pinned = experiment.pinned_versions()
    if pinned:
        complete = {info.version for info in vectors.list_versions()}
        for version in sorted(pinned):
            if version not in complete or not release.has_artifacts(
                settings.artifacts_dir, version
            ):
                raise InvalidExperiment(f"model_version {version!r}: {release.NO_SUCH_VERSION}")
    with store.transaction() as conn:
        create_experiment(conn, experiment.name, [v.as_dict() for v in experiment.variants])
        row = get_experiment(conn, experiment.name)
    assert row is not None
    return experiment_from_row(row)


def stop(store: Store, name: str) -> bool | None:
    """True if it was running, False if it had stopped already, None if unknown."""
    with store.transaction() as conn:
        return stop_experiment(conn, name)


def experiment_report(store: Store, settings: Settings, name: str) -> dict[str, Any] | None:
    """Each variant's users, impressions, actions, action rate (with its 95 % interval),
    skip rate and dwell per impression, and the p-value of the action rates; None when
    there is no such experiment."""
    with store.read() as conn:
        row = get_experiment(conn, name)
        if row is None:
            return None
        exposure = experiment_exposure(conn, name)
        acted = experiment_events(conn, name)
    experiment = experiment_from_row(row)
    per_user = _per_user_outcomes(exposure, acted, settings)
    variants: list[dict[str, Any]] = []
    estimates: list[RatioEstimate] = []
    for variant in experiment.variants:
        rows = per_user[per_user["variant"] == variant.name]
        impressions = rows["impressions"].to_numpy(np.float64)
        actions = ratio_estimate(rows["actions"].to_numpy(np.float64), impressions)
        estimates.append(actions)
        interval = actions.interval
        variants.append(
            {
                **variant.as_dict(),
                "users": int((impressions > 0).sum()),
                "impressions": int(impressions.sum()),
                "actions": int(rows["actions"].sum()),
                "action_rate": _number(actions.rate),
                "action_rate_ci": [_number(interval[0]), _number(interval[1])]
                if interval
                else None,
                "skips": int(rows["skips"].sum()),
                "skip_rate": _number(
                    ratio_estimate(rows["skips"].to_numpy(np.float64), impressions).rate
                ),
                "dwell_per_impression": _number(
                    ratio_estimate(rows["dwell"].to_numpy(np.float64), impressions).rate
                ),
            }
        )
    return {
        "name": experiment.name,
        "status": experiment.status,
        "started_at": experiment.started_at,
        "stopped_at": experiment.stopped_at,
        "variants": variants,
        "p_value": _number(p_value_against_control(estimates)),
    }


def _per_user_outcomes(
    exposure: pd.DataFrame, acted: pd.DataFrame, settings: Settings
) -> pd.DataFrame:
    """One row per (variant, user): impressions, actions, skips and seconds of dwell."""
    keys = ["variant", USER_ID]
    if acted.empty:
        outcomes = pd.DataFrame(columns=[*keys, "actions", "skips", "dwell"])
    else:
        views = acted[TYPE] == "view"
        dwell = acted[DWELL].to_numpy(np.float64)
        view_dwell = dwell[views.to_numpy() & np.isfinite(dwell)]
        # Views of items without a length are measured against the median attributed view,
        # as training measures them against the catalogue's.
        reference = float(np.median(view_dwell)) if len(view_dwell) else 1.0
        weights = event_weights(
            acted,
            # A report counts what happened in the experiment: no decay by age.
            settings.signals.model_copy(update={"half_life_days": 0.0}),
            item_durations=acted["duration_seconds"].to_numpy(np.float64),
            reference_dwell=reference,
            custom_weights=settings.custom_event_types,
        )
        outcomes = (
            acted.assign(
                actions=weights > 0,
                skips=acted[TYPE] == "skip",
                dwell=np.where(views & np.isfinite(dwell), dwell, 0.0),
            )
            .groupby(keys, as_index=False)[["actions", "skips", "dwell"]]
            .sum()
        )
    merged = exposure.merge(outcomes, on=keys, how="outer")
    for column in ("impressions", "actions", "skips", "dwell"):
        merged[column] = pd.to_numeric(merged[column]).fillna(0.0)
    return merged


def _number(value: float) -> float | None:
    """JSON has no NaN: an unknown statistic is null."""
    return float(value) if math.isfinite(value) else None
