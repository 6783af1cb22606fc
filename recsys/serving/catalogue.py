"""The catalogue snapshot a serving state holds: every item at once, for the parts that need
all of them (popularity and freshness rankings, titles for reasons, content vectors for
diversity), grown copy-on-write as items arrive."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID
from recsys.serving.types import FeedFilters
from recsys.vectors.base import Hit


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass
class Catalogue:
    ids: list[str]
    index: dict[str, int]
    titles: list[str]
    categories: np.ndarray  # object array, None allowed
    tags: list[list[str]]
    created_at: np.ndarray
    durations: np.ndarray
    popularity: np.ndarray  # positive users per item at training time
    trending: np.ndarray  # time-decayed recent positive events
    content: np.ndarray  # unit content vectors (rows align with ids)
    retired: np.ndarray  # out of circulation: never proposed, never similar
    # Per model that folds users in: its item column per catalogue row, -1 when unknown.
    model_rows: dict[str, np.ndarray] = field(default_factory=dict)

    # Rows ranked by a fixed score: (what the ranking depends on, ranked rows, scores).
    rankings: dict[str, tuple[Any, np.ndarray, np.ndarray]] = field(default_factory=dict)
    # (the ids it was made for, every known creation time in order), for ``released``.
    dated: tuple[list[str], np.ndarray] | None = None
    # The arrays above as views of these buffers, which have room to grow: the next
    # catalogue appends into them instead of copying 100k rows (see extend_catalogue).
    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    @functools.cached_property
    def popularity_total(self) -> float:
        """Positive (user, item) pairs at training time: what popularity is a share of."""
        return float(self.popularity.sum())

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        return np.fromiter(map(self.index.get, item_ids, itertools.repeat(-1)), dtype=np.int64)

    def ranking(
        self, name: str, score: Callable[[], np.ndarray], depends_on: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a finite ``score``, best first (ties by row), and every row's score;
        ranked once per catalogue size (new items are the only change between two
        trainings) and value of ``depends_on``."""
        key = (len(self.ids), depends_on)
        cached = self.rankings.get(name)
        if cached is None or cached[0] != key:
            values = score()
            order = np.argsort(-values, kind="stable")
            cached = (key, order[np.isfinite(values[order])], values)
            self.rankings[name] = cached
        return cached[1], cached[2]

    def released(self, now: float) -> int:
        """How many items are dated ``now`` or earlier: it changes when a dated item's
        time comes, so a ranking of released items depends on it."""
        if self.dated is None or len(self.dated[0]) != len(self.ids):
            self.dated = (self.ids, np.sort(self.created_at[np.isfinite(self.created_at)]))
        return int(np.searchsorted(self.dated[1], now, side="right"))

    def top(
        self,
        name: str,
        score: Callable[[], np.ndarray],
        n: int,
        exclude: set[str],
        filters: FeedFilters | None,
        depends_on: Any = None,
    ) -> list[Hit]:
        """The ``n`` best items by ``score`` that are not excluded and pass the filters."""
        if filters and (filters.categories or filters.tags):
            mask = self.admissible(np.arange(len(self.ids)), exclude, filters)
            return self._top_masked(score(), n, mask)
        # Without payload filters the top n is a walk down a ranking made once, skipping
        # the excluded rows: a few hundred steps instead of masks over the whole catalogue.
        excluded = set(self.rows(exclude).tolist()) if exclude else set()
        retired = self.retired
        order, values = self.ranking(name, score, depends_on)
        picked: list[int] = []
        # Past the excluded and the retired rows, the top n are within this many.
        reach = n + len(excluded) + int(np.count_nonzero(retired))
        for row in order[:reach].tolist():
            if row not in excluded and not retired[row]:
                picked.append(row)
                if len(picked) == n:
                    break
        return [Hit(item_id=self.ids[r], score=float(values[r]), payload={}) for r in picked]

    def admissible(
        self, rows: np.ndarray, exclude: set[str], filters: FeedFilters | None
    ) -> np.ndarray:
        """Which of ``rows`` may be proposed: in circulation, not excluded, and passing the
        filters (any of the categories, any of the tags)."""
        mask = ~self.retired[rows]
        if exclude:
            excluded = self.rows(exclude)
            blocked = np.zeros(len(self.ids), dtype=bool)
            blocked[excluded[excluded >= 0]] = True
            mask &= ~blocked[rows]
        if filters and filters.categories:
            mask &= np.isin(self.categories[rows], filters.categories)
        if filters and filters.tags:
            wanted = set(filters.tags)
            mask &= np.fromiter(
                (bool(wanted & set(self.tags[r])) for r in rows.tolist()),
                dtype=bool,
                count=len(rows),
            )
        return mask

    def _top_masked(self, score: np.ndarray, n: int, mask: np.ndarray) -> list[Hit]:
        masked = np.where(mask, score, -np.inf)
        n = min(n, int(mask.sum()))
        if n <= 0:
            return []
        top = np.argpartition(-masked, n - 1)[:n]
        top = top[np.argsort(-masked[top], kind="stable")]
        top = top[np.isfinite(masked[top])]
        return [Hit(item_id=self.ids[r], score=float(masked[r]), payload={}) for r in top]


def build_catalogue(
    items: pd.DataFrame,
    content_model: Any,
    fold_in_models: Mapping[str, Any],
    popularity_by_model_row: np.ndarray | None,
) -> Catalogue:
    """The snapshot of a version: the stored items plus the items only its events know,
    with content vectors from the version's content model (encoded where it has none)."""
    assert content_model.items is not None and content_model.item_factors is not None
    # Items seen only in events still belong in the snapshot.
    known = pd.Index(items[ITEM_ID])
    extra = [i for i in content_model.items.external_ids if i not in known]
    if extra:
        items = pd.concat(
            [
                items,
                pd.DataFrame({ITEM_ID: extra, "title": "", "text": "", "tags": [[]] * len(extra)}),
            ],
            ignore_index=True,
        )
    ids = items[ITEM_ID].astype(str).tolist()
    content_rows = content_model.items.to_internal(ids, strict=False)
    content = np.zeros((len(ids), content_model.item_factors.shape[1]), dtype=np.float32)
    have = content_rows >= 0
    content[have] = content_model.item_factors[content_rows[have]]
    missing = ~have
    if missing.any():
        content[missing] = content_model.encode(items[missing])
    popularity = np.zeros(len(ids))
    if popularity_by_model_row is not None:
        popularity[have] = popularity_by_model_row[content_rows[have]]
    return Catalogue(
        ids=ids,
        index={item_id: row for row, item_id in enumerate(ids)},
        titles=items["title"].fillna("").astype(str).tolist(),
        # These may be read-only views of the frame (pandas' copy-on-write): an item
        # upsert writes into buffers of its own, never into them (extend_catalogue).
        categories=items["category"].to_numpy(dtype=object)
        if "category" in items
        else np.full(len(ids), None),
        tags=[list(t) if isinstance(t, list) else [] for t in items["tags"]],
        created_at=_numbers(items, "created_at"),
        durations=_numbers(items, "duration_seconds"),
        popularity=popularity,
        trending=np.zeros(len(ids)),
        content=unit(content).astype(np.float32),
        # Rows only the model knows (added above) have no flag: in circulation.
        retired=items["retired"].eq(True).to_numpy(),
        model_rows={
            name: model.items.to_internal(ids, strict=False)
            for name, model in fold_in_models.items()
        },
    )


def _numbers(items: pd.DataFrame, column: str) -> np.ndarray:
    if column not in items:
        return np.full(len(items), np.nan)
    return pd.to_numeric(items[column], errors="coerce").to_numpy(np.float64)


def trending_scores(
    catalogue: Catalogue,
    newest: float | None,
    item_ids: list[str],
    timestamps: np.ndarray,
    half_life_days: float = 3.0,
) -> np.ndarray:
    """Time-decayed count of recent positive events per catalogue row."""
    trending = np.zeros(len(catalogue.ids))
    if newest is None or not item_ids:
        return trending
    weight = np.power(0.5, (newest - timestamps) / (half_life_days * 86_400))
    sums = pd.Series(weight).groupby(np.asarray(item_ids, dtype=object)).sum()
    row = catalogue.rows(sums.index)
    keep = row >= 0
    trending[row[keep]] = sums.to_numpy()[keep]
    return trending


def extend_catalogue(
    catalogue: Catalogue,
    items: pd.DataFrame,
    content: np.ndarray,
    fold_in_models: Mapping[str, Any],
) -> Catalogue:
    """A new catalogue holding ``items`` (new ones appended, known ones updated).

    Copy on write: requests read the catalogue without a lock, so one must never see its
    lists and arrays mid-change (of different lengths). Rows only ever append, so a row
    number taken from an older catalogue stays valid in every later one. The lists and
    the id index are copied (a few ms at 100k items); the arrays grow inside buffers
    with spare rows that older catalogues' views do not reach, so an upsert does not
    copy every content vector (at 384 dimensions that was 47 ms and 300 MiB each). A
    known item's row is updated in place, which older catalogues see too: it is the
    same item, newer.
    """
    records = items.to_dict("records")
    new_ids = [str(r[ITEM_ID]) for r in records if str(r[ITEM_ID]) not in catalogue.index]
    new_ids = list(dict.fromkeys(new_ids))
    n_old, n_new = len(catalogue.ids), len(new_ids)
    ids = [*catalogue.ids, *new_ids]
    index = dict(catalogue.index)
    index.update({item_id: n_old + k for k, item_id in enumerate(new_ids)})
    titles, tags = [*catalogue.titles, *[""] * n_new], [*catalogue.tags, *[[]] * n_new]

    buffers = dict(catalogue.buffers)

    def grown(name: str, array: np.ndarray, fill: Any) -> np.ndarray:
        buffer = buffers.get(name)
        if buffer is None or array.base is not buffer or len(buffer) < n_old + n_new:
            # An eighth more room: the next thousands of new items append in place.
            capacity = n_old + n_new + max(1024, (n_old + n_new) // 8)
            buffer = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
            buffer[:n_old] = array
            buffers[name] = buffer
        buffer[n_old : n_old + n_new] = fill
        return buffer[: n_old + n_new]

    categories = grown("categories", catalogue.categories, None)
    created_at = grown("created_at", catalogue.created_at, np.nan)
    durations = grown("durations", catalogue.durations, np.nan)
    vectors = grown("content", catalogue.content, 0.0)
    retired = grown("retired", catalogue.retired, False)
    model_rows = {}
    for name, rows in catalogue.model_rows.items():
        model_rows[name] = grown(f"rows:{name}", rows, -1)
        model = fold_in_models.get(name)
        if model is not None and model.items is not None and n_new:
            model_rows[name][n_old:] = model.items.to_internal(new_ids, strict=False)
    for position, record in enumerate(records):
        row = index[str(record[ITEM_ID])]
        created = record.get("created_at")
        duration = record.get("duration_seconds")
        titles[row] = str(record.get("title") or "")
        tags[row] = list(record.get("tags") or [])
        categories[row] = record.get("category")
        created_at[row] = float(created) if created is not None else np.nan
        durations[row] = float(duration) if duration is not None else np.nan
        vectors[row] = content[position]
        retired[row] = bool(record.get("retired") or False)
    return Catalogue(
        ids=ids,
        index=index,
        titles=titles,
        categories=categories,
        tags=tags,
        created_at=created_at,
        durations=durations,
        popularity=grown("popularity", catalogue.popularity, 0.0),
        trending=grown("trending", catalogue.trending, 0.0),
        content=vectors,
        retired=retired,
        model_rows=model_rows,
        buffers=buffers,
    )
