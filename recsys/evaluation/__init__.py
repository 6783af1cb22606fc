"""Offline evaluation: split protocols, ranking metrics and HTML/JSON reports.

``recsys.evaluation.report`` (which imports matplotlib) is not imported here, so the
metrics stay cheap to import for the nightly quality gate.
"""

from __future__ import annotations

from recsys.evaluation.metrics import (
    evaluate_cold_start,
    evaluate_rankings,
    per_user_metrics,
    rankings_frame,
)
from recsys.evaluation.splits import (
    PROTOCOLS,
    Split,
    cold_item_split,
    global_temporal_split,
    keep_known,
    last_fraction_per_user_split,
    last_n_per_user_split,
    leave_last_one_out,
    make_split,
    stratified_split,
    validation_split,
)

__all__ = [
    "PROTOCOLS",
    "Split",
    "cold_item_split",
    "evaluate_cold_start",
    "evaluate_rankings",
    "global_temporal_split",
    "keep_known",
    "last_fraction_per_user_split",
    "last_n_per_user_split",
    "leave_last_one_out",
    "make_split",
    "per_user_metrics",
    "rankings_frame",
    "stratified_split",
    "validation_split",
]
