"""How active each item has been as of a moment: positive events over the last 7, 30, 90 and
365 days and the time of the first one. The learned ranker's strongest features after the
models' ranks; counted as of the moment a feature describes, never after it (no leakage)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

DAY = 86_400.0
# Interaction counts over these windows before the moment a feature describes.
WINDOWS_DAYS = (7, 30, 90, 365)


class ItemActivity(Protocol):
    def describe(self, rows: np.ndarray, moment: float) -> np.ndarray:
        """Per catalogue row (-1: unknown): positive events in each of ``WINDOWS_DAYS``
        before ``moment``, then the time of the item's first one (NaN: none)."""


class ActivityLog:
    """Every positive event's (item code, time), for counts as of any moment (training)."""

    def __init__(self, codes: np.ndarray, times: np.ndarray, n_items: int) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        self.n_items = n_items
        self.origin = float(times.min()) if len(times) else 0.0
        # One sorted key per event: the item code times the span, plus the time since the
        # origin; exact in float64 for a million items over 30 years of seconds.
        self.span = (float(times.max()) - self.origin if len(times) else 0.0) + 2.0
        order = np.lexsort((times, codes))
        # Kept (sorted) for ``save``: times recovered from the keys would be off by a few
        # tenths of a second.
        self.codes, self.times = codes[order].astype(np.int32), times[order]
        self.keys = self.codes * self.span + (self.times - self.origin)
        self.first_seen = np.full(n_items, np.nan)
        seen, first = np.unique(self.codes, return_index=True)
        self.first_seen[seen] = self.times[first]

    def describe_codes(self, codes: np.ndarray, moment: float) -> np.ndarray:
        """``describe`` by item code (-1: unknown)."""
        known = codes >= 0
        out = np.zeros((len(codes), len(WINDOWS_DAYS) + 1))
        out[~known, -1] = np.nan
        if not known.any():
            return out
        base = codes[known] * self.span
        offset = moment - self.origin
        # Strictly before the moment: an event at the moment itself is not yet past.
        high = np.searchsorted(self.keys, base + np.clip(offset, 0.0, self.span - 1.0))
        for j, days in enumerate(WINDOWS_DAYS):
            lower = base + np.clip(offset - days * DAY, 0.0, self.span - 1.0)
            out[known, j] = high - np.searchsorted(self.keys, lower)
        first = self.first_seen[codes[known]]
        out[known, -1] = np.where(first < moment, first, np.nan)
        return out

    def save(self, path: Path) -> None:
        """The events as (item code, time), sorted."""
        np.savez(path, codes=self.codes, times=self.times, n_items=np.int64(self.n_items))

    @classmethod
    def load(cls, path: Path) -> ActivityLog:
        with np.load(path, allow_pickle=False) as saved:
            return cls(saved["codes"], saved["times"], int(saved["n_items"]))

    @classmethod
    def empty(cls) -> ActivityLog:
        return cls(np.zeros(0, np.int64), np.zeros(0), 0)


class ActivityByRow:
    """An ``ActivityLog`` read by catalogue row, with the rows described at one moment kept
    ready (a served page describes its candidates at the version's newest event; only a
    replay as of another moment searches the log)."""

    def __init__(self, log: ActivityLog, row_codes: np.ndarray, moment: float | None = None):
        self.log = log
        self.row_codes = np.asarray(row_codes, dtype=np.int64)
        self.moment = moment
        self.table = log.describe_codes(self.row_codes, moment) if moment is not None else None

    def describe(self, rows: np.ndarray, moment: float) -> np.ndarray:
        # Rows past the table are items added since the version loaded: no activity.
        inside = (rows >= 0) & (rows < len(self.row_codes))
        if self.table is not None and moment == self.moment:
            out = np.zeros((len(rows), self.table.shape[1]))
            out[:, -1] = np.nan
            out[inside] = self.table[rows[inside]]
            return out
        codes = np.where(inside, self.row_codes[np.where(inside, rows, 0)], -1)
        return self.log.describe_codes(codes, moment)
