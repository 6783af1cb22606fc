"""/v1/experiments: start, stop, list and report A/B experiments (one running at a time)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from recsys.api.auth import require_read, require_write
from recsys.api.routing import READ_ERRORS, error_responses, recommender_of, v1
from recsys.api.schemas import ExperimentIn, ExperimentOut, ExperimentReportOut, VariantOut
from recsys.config import Settings
from recsys.experiments import (
    ExperimentConflict,
    InvalidExperiment,
    experiment_report,
    list_experiments,
    start_experiment,
    stop,
)
from recsys.serving import Recommender
from recsys.serving.experiments import experiment_from_row
from recsys.store.experiments import get_experiment

log = logging.getLogger("recsys.api")

ExperimentName = Annotated[str, Path(min_length=1, max_length=64)]
NO_SUCH_EXPERIMENT = "no experiment by this name"


def _follow(recommender: Recommender) -> None:
    """This process applies the change before answering; the others within a second."""
    try:
        recommender.sync_experiment()
    except Exception:
        log.exception("could not apply the experiment change in this process")


def _out(row: dict[str, Any]) -> ExperimentOut:
    experiment = experiment_from_row(row)
    return ExperimentOut(
        name=experiment.name,
        status=experiment.status,  # type: ignore[arg-type]
        started_at=experiment.started_at,
        stopped_at=experiment.stopped_at,
        variants=[VariantOut(**v.as_dict()) for v in experiment.variants],
    )


@v1.post(
    "/v1/experiments",
    status_code=201,
    response_model=ExperimentOut,
    responses=error_responses(400, 401, 403, 409, 413, 422, 503),
    dependencies=[Depends(require_write)],
    tags=["experiments"],
    summary="Start an A/B experiment",
)
def post_experiment(request: Request, body: ExperimentIn) -> ExperimentOut:
    """Splits users between the variants by a hash of (experiment, user): stable across
    requests, workers and restarts. Shares must add up to 1; one experiment runs at a
    time. Every worker serves it within about a second; each feed answer then names its
    `variant`."""
    recommender = recommender_of(request)
    settings: Settings = request.app.state.settings
    variants = [v.model_dump(exclude_none=True) for v in body.variants]
    try:
        start_experiment(recommender.store, settings, recommender.vectors, body.name, variants)
    except InvalidExperiment as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": str(exc)}]
        ) from None
    except ExperimentConflict as exc:
        raise HTTPException(409, str(exc)) from None
    _follow(recommender)
    with recommender.store.read() as conn:
        row = get_experiment(conn, body.name)
    assert row is not None
    return _out(row)


@v1.post(
    "/v1/experiments/{name}/stop",
    response_model=ExperimentOut,
    responses=error_responses(401, 403, 404, 422, 503),
    dependencies=[Depends(require_write)],
    tags=["experiments"],
    summary="Stop an experiment",
)
def post_stop(request: Request, name: ExperimentName) -> ExperimentOut:
    """Every user gets the service as configured again; the experiment's impressions and
    report stay. Stopping a stopped experiment changes nothing."""
    recommender = recommender_of(request)
    if stop(recommender.store, name) is None:
        raise HTTPException(404, NO_SUCH_EXPERIMENT)
    _follow(recommender)
    with recommender.store.read() as conn:
        row = get_experiment(conn, name)
    assert row is not None
    return _out(row)


@v1.get(
    "/v1/experiments",
    response_model=list[ExperimentOut],
    responses=READ_ERRORS,
    dependencies=[Depends(require_read)],
    tags=["experiments"],
    summary="Every experiment, newest first",
)
def get_experiments(request: Request) -> list[ExperimentOut]:
    recommender = recommender_of(request)
    with recommender.store.read() as conn:
        rows = list_experiments(conn)
    return [_out(row) for row in rows]


@v1.get(
    "/v1/experiments/{name}",
    response_model=ExperimentReportOut,
    responses={**READ_ERRORS, **error_responses(404)},
    dependencies=[Depends(require_read)],
    tags=["experiments"],
    summary="An experiment's online metrics",
)
def get_experiment_report(request: Request, name: ExperimentName) -> ExperimentReportOut:
    """Per variant: users, impressions, actions (positive events sent back with one of the
    variant's feed_ids), the action rate with its 95 % interval, skip rate and dwell per
    impression; and the p-value of the action rates, with users as the unit."""
    recommender = recommender_of(request)
    settings: Settings = request.app.state.settings
    report = experiment_report(recommender.store, settings, name)
    if report is None:
        raise HTTPException(404, NO_SUCH_EXPERIMENT)
    return ExperimentReportOut.model_validate(report)
