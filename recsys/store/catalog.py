"""Catalogue items: validation, bulk upsert and reads."""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import ARRAY, Connection, String, TextualSelect, bindparam, func, select, text

from recsys.events import parse_timestamps
from recsys.store.schema import MAX_ID_LENGTH, counters, events, items

ITEM_FIELDS = ("item_id", "title", "text", "tags", "category", "created_at", "duration_seconds")


@dataclass
class ValidatedItems:
    valid: pd.DataFrame
    rejects: pd.DataFrame  # columns: row, field, reason


def _tags(value: object) -> list[str]:
    """Tags arrive as a list (JSON Lines, Parquet, API) or '|'-separated text (CSV)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return [str(t) for t in parsed if str(t)]
        return [t.strip() for t in text.split("|") if t.strip()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(t) for t in value if t is not None and str(t)]
    return [str(value)]


_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


def _flag(value: object) -> bool | None:
    """True or False from a file's or a request's spelling of it; None if it is neither."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    return _FLAGS.get(str(value).strip().lower())


def validate_items(
    frame: pd.DataFrame, *, row_numbers: pd.Series | np.ndarray | None = None
) -> ValidatedItems:
    n = len(frame)
    rows = np.arange(n) if row_numbers is None else np.asarray(row_numbers)
    get = lambda name: frame[name] if name in frame else pd.Series(None, index=frame.index)  # noqa: E731
    ids = get("item_id").astype(object)
    ids = ids.where(ids.isna(), ids.astype(str))
    reason = pd.Series(None, index=frame.index, dtype=object)
    field = pd.Series(None, index=frame.index, dtype=object)

    def reject(mask: pd.Series, column: str, message: str) -> None:
        fresh = mask & reason.isna()
        reason[fresh] = message
        field[fresh] = column

    reject(ids.isna() | (ids.astype(str) == ""), "item_id", "missing item_id")
    reject(ids.astype(str).str.len() > MAX_ID_LENGTH, "item_id", "item_id too long")
    # No database stores NUL in text (PostgreSQL refuses it): say so per row.
    for name in ("item_id", "title", "text", "category"):
        values = get(name)
        has_nul = values.notna() & values.astype(str).str.contains("\x00", regex=False)
        reject(has_nul, name, f"{name} contains a NUL character")
    # The column is as wide as an id: PostgreSQL would refuse a longer one for the whole chunk.
    category_text = get("category").astype(str)
    reject(
        get("category").notna() & (category_text.str.len() > MAX_ID_LENGTH),
        "category",
        f"category longer than {MAX_ID_LENGTH}",
    )
    created_raw = get("created_at")
    created_missing = created_raw.isna() | (created_raw.astype(str).str.strip() == "")
    created = parse_timestamps(created_raw.where(~created_missing))
    reject(created.isna() & ~created_missing, "created_at", "unparsable created_at")
    duration_raw = get("duration_seconds")
    duration_missing = duration_raw.isna() | (duration_raw.astype(str).str.strip() == "")
    duration = pd.to_numeric(duration_raw.where(~duration_missing), errors="coerce").astype(float)
    reject(
        duration.isna() & ~duration_missing, "duration_seconds", "duration_seconds is not a number"
    )
    reject(duration < 0, "duration_seconds", "negative duration_seconds")
    reject(np.isinf(duration), "duration_seconds", "duration_seconds must be finite")
    retired = get("retired").map(_flag)
    reject(retired.isna() & get("retired").notna(), "retired", "retired must be true or false")

    ok = reason.isna()
    text_of = lambda name: get(name).astype(object).where(get(name).notna(), "").astype(str)  # noqa: E731
    category = get("category").astype(object)
    present = category.notna() & (category.astype(str) != "")
    # Absent categories are None, never NaN: payloads and JSON have no NaN.
    category = category.astype(str).astype(object).where(present, None)
    valid = pd.DataFrame(
        {
            "item_id": ids[ok],
            "title": text_of("title")[ok],
            "text": text_of("text")[ok],
            "tags": [_tags(v) for v in get("tags")[ok]],
            "category": category[ok],
            "created_at": created[ok],
            "duration_seconds": duration[ok],
            "retired": retired[ok].fillna(False).astype(bool),
        }
    ).drop_duplicates("item_id", keep="last")
    rejects = pd.DataFrame(
        {
            "row": rows[~ok.to_numpy()],
            "field": field[~ok].to_numpy(),
            "reason": reason[~ok].to_numpy(),
        }
    )
    return ValidatedItems(valid=valid.reset_index(drop=True), rejects=rejects)


def upsert_items(
    conn: Connection, valid: pd.DataFrame, *, now: float | None = None
) -> tuple[int, int]:
    """Insert new items and update existing ones. Returns (inserted, updated)."""
    if valid.empty:
        return 0, 0
    # First, so that the transaction holds the counter (and, on SQLite, the write lock)
    # before it reads anything.
    revision = next_item_revision(conn)
    updated_at = time.time() if now is None else now
    ids = valid["item_id"].tolist()
    existing = 0
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        existing += int(
            conn.execute(
                select(func.count()).select_from(items).where(items.c.item_id.in_(chunk))
            ).scalar_one()
        )
    clean = valid.astype(object).where(valid.notna(), None)
    rows = [
        {
            **{name: row.get(name) for name in ITEM_FIELDS},
            "attributes": {},
            "updated_at": updated_at,
            "revision": revision,
            # Sent again without the flag, a retired item is back in circulation.
            "retired_at": updated_at if row.get("retired") else None,
        }
        for row in clean.sort_values("item_id").to_dict("records")
    ]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(items)
    stmt = stmt.on_conflict_do_update(
        index_elements=[items.c.item_id],
        set_={
            name: stmt.excluded[name]
            for name in (*ITEM_FIELDS[1:], "updated_at", "retired_at", "revision")
        },
    )
    conn.execute(stmt, rows)
    return len(rows) - existing, existing


def next_item_revision(conn: Connection) -> int:
    """The revision of the items this transaction writes: the next number of the "items"
    counter. The counter's row stays locked until the transaction ends (SQLite takes its
    write lock), so revisions become visible in order, never one before a lower one."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    first = dialect_insert(counters).values(name="items", value=1)
    take = first.on_conflict_do_update(
        index_elements=[counters.c.name], set_={"value": counters.c.value + 1}
    ).returning(counters.c.value)
    return int(conn.execute(take).scalar_one())


def item_revision(conn: Connection) -> int:
    """The newest committed catalogue revision (0 before the first item write)."""
    value = conn.execute(select(counters.c.value).where(counters.c.name == "items")).scalar()
    return int(value) if value is not None else 0


def load_items(
    conn: Connection,
    item_ids: Collection[str] | None = None,
    *,
    updated_since: float | None = None,
    after_revision: int | None = None,
) -> pd.DataFrame:
    """The catalogue (or the given items, or those written since a time or after a
    revision) as a DataFrame with the canonical item columns, plus ``retired`` and the
    ``revision`` each row was last written in."""
    query = select(
        *[items.c[name] for name in ITEM_FIELDS],
        items.c.retired_at.is_not(None),
        items.c.revision,
    )
    if item_ids is not None:
        query = query.where(items.c.item_id.in_(list(item_ids)))
    if updated_since is not None:
        query = query.where(items.c.updated_at >= updated_since)
    if after_revision is not None:
        query = query.where(items.c.revision > after_revision)
    frame = pd.DataFrame.from_records(
        [tuple(row) for row in conn.execute(query)],
        columns=[*ITEM_FIELDS, "retired", "revision"],
    )
    frame["revision"] = frame["revision"].fillna(0).astype(np.int64)
    frame["retired"] = frame["retired"].astype(bool)
    for column in ("created_at", "duration_seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    frame["tags"] = [list(t) if t else [] for t in frame["tags"]]
    # pandas reads a column of text and NULLs as text and NaN; an absent category is None
    # (payloads and JSON have no NaN).
    frame["category"] = frame["category"].astype(object).where(frame["category"].notna(), None)
    return frame


def count_items(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(items)).scalar_one())


def items_with_any_tag(dialect: str, tags: Collection[str]) -> TextualSelect:
    """A subquery of the ids of items holding any of ``tags``, for ``column.in_(...)``.

    Tags are a JSON array per item, which each database searches its own way.
    """
    wanted = sorted(set(tags))
    if dialect == "postgresql":
        statement = text("SELECT item_id FROM items WHERE CAST(tags AS jsonb) ?| :tags")
        statement = statement.bindparams(bindparam("tags", value=wanted, type_=ARRAY(String)))
    else:
        statement = text(
            "SELECT DISTINCT items.item_id FROM items, json_each(items.tags) AS tag "
            "WHERE tag.value IN :tags"
        ).bindparams(bindparam("tags", value=wanted, expanding=True))
    return statement.columns(item_id=String)


def retire_items(conn: Connection, item_ids: Collection[str], *, now: float | None = None) -> int:
    """Take items out of circulation; return how many were in it. An item known only from
    events gets a catalogue row, retired, so the next training leaves it out too."""
    wanted = list(dict.fromkeys(item_ids))
    if not wanted:
        return 0
    revision = next_item_revision(conn)
    stamp = time.time() if now is None else now
    known = {
        row[0]: row[1]
        for row in conn.execute(
            select(items.c.item_id, items.c.retired_at).where(items.c.item_id.in_(wanted))
        )
    }
    missing = [item_id for item_id in wanted if item_id not in known]
    if missing:
        conn.execute(
            items.insert(),
            [
                {
                    "item_id": item_id,
                    "title": "",
                    "text": "",
                    "tags": [],
                    "attributes": {},
                    "updated_at": stamp,
                    "retired_at": stamp,
                    "revision": revision,
                }
                for item_id in missing
            ],
        )
    active = [item_id for item_id, retired_at in known.items() if retired_at is None]
    if active:
        conn.execute(
            items.update()
            .where(items.c.item_id.in_(active))
            .values(retired_at=stamp, updated_at=stamp, revision=revision)
        )
    return len(active) + len(missing)


def known_items(conn: Connection, item_ids: Collection[str]) -> set[str]:
    """The ids among ``item_ids`` that the catalogue or any event knows."""
    wanted = list(dict.fromkeys(item_ids))
    if not wanted:
        return set()
    in_catalogue = select(items.c.item_id).where(items.c.item_id.in_(wanted))
    in_events = select(events.c.item_id).where(events.c.item_id.in_(wanted)).distinct()
    return {row[0] for row in conn.execute(in_catalogue.union(in_events))}
