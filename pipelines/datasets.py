"""Adapters from public datasets to the canonical item and event frames.

Every reader returns ``(items, events)``: two DataFrames with exactly the columns of
``recsys.columns.ITEM_COLUMNS`` and ``recsys.columns.EVENT_COLUMNS``, in that order.

Canonical dtypes (shared with the demo world):

* ids, ``title``, ``text`` and ``type`` are text (pandas ``str``);
* ``tags`` holds a Python ``list[str]`` per row (lower-cased, deduplicated, in a stable order);
* ``category`` is ``str`` or ``None`` (an ``object`` column, so a missing category is ``None``);
* ``created_at``, ``timestamp``, ``dwell_seconds``, ``value``, ``duration_seconds`` are float64
  (NaN when unknown);
* ``event_id`` is ``None`` on every row: the ingester derives a deterministic id from
  (user, item, type, timestamp), so a re-import of the same files is idempotent.

Supported layouts:

* MovieLens "latest" (e.g. ``ml-latest-small``): ``movies.csv``, ``ratings.csv`` and optional
  ``tags.csv``.
* MovieLens 100k (``ml-100k``): ``u.item``, ``u.data`` and optional ``u.genre``.
* HetRec 2011 Last.fm (``hetrec2011-lastfm-2k``): ``user_artists.dat``, ``artists.dat`` and
  optional ``user_taggedartists.dat`` / ``user_taggedartists-timestamps.dat`` with ``tags.dat``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.columns import (
    DWELL,
    EVENT_COLUMNS,
    EVENT_ID,
    ITEM_COLUMNS,
    ITEM_ID,
    TIMESTAMP,
    TYPE,
    USER_ID,
    VALUE,
)

__all__ = [
    "LASTFM_TIMESTAMP",
    "ML100K_GENRES",
    "events_frame",
    "items_frame",
    "read_lastfm",
    "read_movielens",
]

# The Last.fm HetRec file has no time at all. Every play gets this one instant (the dataset's
# release, May 2011) so that derived event ids are stable across imports; do not use this
# dataset for time-based splits.
LASTFM_TIMESTAMP = datetime(2011, 5, 1, tzinfo=UTC).timestamp()

# Genre order of the 19 flags in ``u.item`` when ``u.genre`` is absent.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# Genre values that mean "no genre" in the two MovieLens layouts.
_NO_GENRE = frozenset({"(no genres listed)", "unknown"})

_ML_LATEST = "MovieLens 'latest' layout: movies.csv, ratings.csv (and optional tags.csv)"
_ML_100K = "MovieLens 100k layout: u.item, u.data (and optional u.genre)"
_LASTFM = (
    "HetRec 2011 Last.fm layout: user_artists.dat, artists.dat "
    "(and optional tags.dat with user_taggedartists.dat)"
)


# --- canonical frames -------------------------------------------------------------------


def _text(values: Iterable[object] | np.ndarray, index: pd.Index | None = None) -> pd.Series:
    return pd.Series(values, dtype="str", index=index)


def items_frame(
    item_id: Sequence[str] | np.ndarray,
    title: Sequence[str] | np.ndarray,
    text: Sequence[str] | np.ndarray,
    tags: Sequence[list[str]],
    category: Sequence[str | None],
    created_at: Sequence[float] | np.ndarray | None = None,
    duration_seconds: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """An items frame with the canonical columns, order and dtypes."""
    n = len(item_id)
    nan = np.full(n, np.nan)
    tag_column = np.empty(n, dtype=object)
    tag_column[:] = [list(t) for t in tags]
    category_column = np.empty(n, dtype=object)
    category_column[:] = list(category)
    frame = pd.DataFrame(
        {
            "item_id": _text(item_id),
            "title": _text(title),
            "text": _text(text),
            "tags": pd.Series(tag_column, dtype=object),
            "category": pd.Series(category_column, dtype=object),
            "created_at": np.asarray(nan if created_at is None else created_at, np.float64),
            "duration_seconds": np.asarray(
                nan if duration_seconds is None else duration_seconds, np.float64
            ),
        }
    )
    return frame[list(ITEM_COLUMNS)]


def events_frame(
    user_id: Sequence[str] | np.ndarray,
    item_id: Sequence[str] | np.ndarray,
    type_: Sequence[str] | np.ndarray | str,
    timestamp: Sequence[float] | np.ndarray | float,
    *,
    dwell_seconds: Sequence[float] | np.ndarray | None = None,
    value: Sequence[float] | np.ndarray | None = None,
    index: pd.Index | None = None,
) -> pd.DataFrame:
    """An events frame with the canonical columns, order and dtypes (``event_id`` is None)."""
    n = len(user_id)
    index = pd.RangeIndex(n) if index is None else index
    types = np.full(n, type_, dtype=object) if isinstance(type_, str) else type_
    stamps = np.broadcast_to(np.asarray(timestamp, np.float64), (n,))
    frame = pd.DataFrame(
        {
            EVENT_ID: pd.Series(np.full(n, None, dtype=object), index=index, dtype=object),
            USER_ID: _text(user_id, index),
            ITEM_ID: _text(item_id, index),
            TYPE: _text(types, index),
            TIMESTAMP: pd.Series(np.array(stamps, np.float64), index=index),
            DWELL: pd.Series(
                np.full(n, np.nan) if dwell_seconds is None else np.asarray(dwell_seconds, float),
                index=index,
            ),
            VALUE: pd.Series(
                np.full(n, np.nan) if value is None else np.asarray(value, np.float64),
                index=index,
            ),
        },
        index=index,
    )
    return frame[list(EVENT_COLUMNS)]


# --- helpers ----------------------------------------------------------------------------


def _require(directory: Path, names: Sequence[str], layout: str) -> None:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory; expected the {layout}")
    for name in names:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing file; expected the {layout}")


def _clean_tag(tag: object) -> str:
    return " ".join(str(tag).split()).lower()


def _unique(values: Iterable[str]) -> list[str]:
    """Values in first-seen order without duplicates or empties."""
    return [v for v in dict.fromkeys(values) if v]


def _ranked_tags(item_ids: pd.Series, tags: pd.Series) -> dict[str, list[str]]:
    """Per item: its cleaned tags, most often applied first (ties: first applied first)."""
    frame = pd.DataFrame(
        {"item": item_ids.astype(str).to_numpy(), "tag": [_clean_tag(t) for t in tags]}
    )
    frame = frame[frame["tag"] != ""]
    frame["order"] = np.arange(len(frame))
    ranked = (
        frame.groupby(["item", "tag"], sort=False)
        .agg(count=("order", "size"), first=("order", "min"))
        .reset_index()
        .sort_values(["item", "count", "first"], ascending=[True, False, True], kind="stable")
    )
    return {str(item): list(group["tag"]) for item, group in ranked.groupby("item", sort=False)}


def _describe(title: str, genres: Sequence[str], tags: Sequence[str]) -> str:
    parts = [title]
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    return ". ".join(parts)


def _decode_lines(path: Path) -> list[str]:
    """Lines of a text file, decoded line by line: UTF-8, else Latin-1 (never fails)."""
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("latin-1"))
    return lines


def _read_tab_table(path: Path, columns: int) -> list[list[str]]:
    """Rows of a tab-separated file with a header; short rows are padded, blank rows skipped."""
    rows = []
    for line in _decode_lines(path)[1:]:
        if not line.strip():
            continue
        fields = line.split("\t")
        fields += [""] * (columns - len(fields))
        rows.append([f.strip() for f in fields[:columns]])
    return rows


# --- MovieLens --------------------------------------------------------------------------


def read_movielens(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items and ``rating`` events from a MovieLens directory (latest or 100k layout).

    Items: ``item_id`` is the movie id as text; ``title`` the title as published (with its
    year); ``tags`` the genres followed by the users' free-text tags, lower-cased and
    deduplicated (user tags ordered by how often they were applied); ``category`` the first
    genre, or None when the movie has no genre; ``text`` the title, genres and tags as one
    string. MovieLens has no catalogue dates or durations, so ``created_at`` and
    ``duration_seconds`` are NaN.

    Events: one ``rating`` per rating row, ``value`` = stars, ``timestamp`` = the rating's
    unix time, in file order.
    """
    directory = Path(directory)
    if (directory / "movies.csv").is_file() or (directory / "ratings.csv").is_file():
        return _read_movielens_latest(directory)
    if (directory / "u.item").is_file() or (directory / "u.data").is_file():
        return _read_movielens_100k(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: no such directory; expected the {_ML_LATEST}, or the {_ML_100K}"
        )
    raise FileNotFoundError(
        f"{directory / 'movies.csv'}: missing file (and no {directory / 'u.item'}); "
        f"expected the {_ML_LATEST}, or the {_ML_100K}"
    )


def _movie_items(
    ids: Sequence[str], titles: Sequence[str], genres: Sequence[list[str]], user_tags: dict
) -> pd.DataFrame:
    tags, categories, texts = [], [], []
    for movie, title, movie_genres in zip(ids, titles, genres, strict=True):
        extra = user_tags.get(movie, [])
        tags.append(_unique([_clean_tag(g) for g in movie_genres] + extra))
        categories.append(_clean_tag(movie_genres[0]) if movie_genres else None)
        texts.append(_describe(title, movie_genres, extra))
    return items_frame(ids, titles, texts, tags, categories)


def _read_movielens_latest(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require(directory, ("movies.csv", "ratings.csv"), _ML_LATEST)
    movies = pd.read_csv(
        directory / "movies.csv", dtype=str, keep_default_na=False, encoding="utf-8"
    )
    ids = movies["movieId"].str.strip().tolist()
    genres = [
        [g.strip() for g in raw.split("|") if g.strip() and g.strip() not in _NO_GENRE]
        for raw in movies["genres"]
    ]
    user_tags: dict[str, list[str]] = {}
    if (directory / "tags.csv").is_file():
        tagged = pd.read_csv(
            directory / "tags.csv", dtype=str, keep_default_na=False, encoding="utf-8"
        )
        user_tags = _ranked_tags(tagged["movieId"].str.strip(), tagged["tag"])
    items = _movie_items(ids, movies["title"].str.strip().tolist(), genres, user_tags)

    ratings = pd.read_csv(
        directory / "ratings.csv",
        dtype={"userId": str, "movieId": str, "rating": np.float64, "timestamp": np.float64},
        encoding="utf-8",
    )
    events = events_frame(
        ratings["userId"].to_numpy(object),
        ratings["movieId"].to_numpy(object),
        "rating",
        ratings["timestamp"].to_numpy(np.float64),
        value=ratings["rating"].to_numpy(np.float64),
    )
    return items, events


def _read_movielens_100k(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require(directory, ("u.item", "u.data"), _ML_100K)
    genre_names: list[str] = list(ML100K_GENRES)
    if (directory / "u.genre").is_file():
        listed: dict[int, str] = {}
        for line in (directory / "u.genre").read_text(encoding="latin-1").splitlines():
            name, _, position = line.strip().rpartition("|")
            if name and position.strip().isdigit():
                listed[int(position)] = name.strip()
        if listed:
            genre_names = [listed.get(i, f"genre {i}") for i in range(max(listed) + 1)]

    ids, titles, genres = [], [], []
    for line in (directory / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        # movie id | title | release date | video release date | IMDb URL | genre flags
        flags = fields[5:]
        ids.append(fields[0].strip())
        titles.append(fields[1].strip() if len(fields) > 1 else "")
        genres.append(
            [
                name
                for name, flag in zip(genre_names, flags, strict=False)
                if flag.strip() == "1" and name not in _NO_GENRE
            ]
        )
    items = _movie_items(ids, titles, genres, {})

    ratings = pd.read_csv(
        directory / "u.data",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "timestamp"],
        dtype={"user": str, "item": str, "rating": np.float64, "timestamp": np.float64},
        quoting=csv.QUOTE_NONE,
    )
    events = events_frame(
        ratings["user"].str.strip().to_numpy(object),
        ratings["item"].str.strip().to_numpy(object),
        "rating",
        ratings["timestamp"].to_numpy(np.float64),
        value=ratings["rating"].to_numpy(np.float64),
    )
    return items, events


# --- Last.fm ----------------------------------------------------------------------------


def read_lastfm(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items and ``play`` events from the HetRec 2011 Last.fm directory.

    Events: one ``play`` per (user, artist) row of ``user_artists.dat`` with ``value`` = the
    listening count. The file has no times, so every event has ``timestamp`` =
    ``LASTFM_TIMESTAMP`` (2011-05-01 UTC).

    Items: one per artist of ``artists.dat`` (``title`` = the artist's name; text files are
    decoded line by line as UTF-8, falling back to Latin-1). Artists played but missing from
    ``artists.dat`` are added with their id as title. When the per-artist tag assignments
    (``user_taggedartists.dat`` or ``user_taggedartists-timestamps.dat``, plus ``tags.dat``)
    are present, ``tags`` lists the artist's tags, most applied first, and ``category`` is
    the most applied one; otherwise items have no tags and no category.
    """
    directory = Path(directory)
    _require(directory, ("user_artists.dat", "artists.dat"), _LASTFM)

    plays = pd.read_csv(
        directory / "user_artists.dat",
        sep="\t",
        dtype={"userID": str, "artistID": str, "weight": np.float64},
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
        encoding_errors="replace",
    )
    plays.columns = [c.strip() for c in plays.columns]
    user_ids = plays["userID"].str.strip()
    artist_ids = plays["artistID"].str.strip()
    events = events_frame(
        user_ids.to_numpy(object),
        artist_ids.to_numpy(object),
        "play",
        LASTFM_TIMESTAMP,
        value=plays["weight"].to_numpy(np.float64),
    )

    names: dict[str, str] = {}
    for fields in _read_tab_table(directory / "artists.dat", 2):
        if fields[0]:
            names.setdefault(fields[0], fields[1])
    for artist in pd.unique(artist_ids):
        names.setdefault(str(artist), str(artist))

    artist_tags = _lastfm_tags(directory)
    ids = list(names)
    titles = [names[a] for a in ids]
    tags = [artist_tags.get(a, []) for a in ids]
    categories = [t[0] if t else None for t in tags]
    texts = [_describe(title, [], t) for title, t in zip(titles, tags, strict=True)]
    return items_frame(ids, titles, texts, tags, categories), events


def _lastfm_tags(directory: Path) -> dict[str, list[str]]:
    """Per artist id: tag values, most applied first; empty when assignments are absent."""
    assignments = None
    for name in ("user_taggedartists.dat", "user_taggedartists-timestamps.dat"):
        if (directory / name).is_file():
            assignments = directory / name
            break
    if assignments is None or not (directory / "tags.dat").is_file():
        return {}
    tag_values = {
        fields[0]: fields[1] for fields in _read_tab_table(directory / "tags.dat", 2) if fields[0]
    }
    rows = _read_tab_table(assignments, 3)
    artists = pd.Series([r[1] for r in rows], dtype=object)
    values = pd.Series([tag_values.get(r[2], "") for r in rows], dtype=object)
    return _ranked_tags(artists, values)
