"""Hostile input: property tests over the importers and the event validator.

Whatever the rows of a file (any JSON value in any column, unknown columns, lines that are
not JSON at all, any text in a CSV cell):

* the import never raises;
* every row is either accepted (inserted or a duplicate) or rejected with a line number and
  a reason, and ``inserted + duplicates + rejected`` is the number of rows;
* the store then holds exactly the inserted events, and a second import of the same file
  inserts nothing, counts every accepted row as a duplicate and rejects the same rows;
* accepted ids are stored literally.

Ids full of SQL, path separators, 512 characters or any Unicode are stored and read back
unchanged, through the store and through the HTTP service.

Text no database stores (NUL, and lone UTF-16 surrogates, which JSON can still spell as
``"\\ud800"``) is rejected row by row; text a naive PostgreSQL COPY garbles (a bare carriage
return, the text ``\\N``) is stored as sent: ``test_hard_text_is_rejected_or_stored_as_sent``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from pipelines.ingest import import_file
from recsys.config import Settings
from recsys.events import MAX_TIMESTAMP, MIN_TIMESTAMP, validate_events
from recsys.store import Store
from recsys.store.engine import make_engine
from recsys.store.events import count_events, user_events
from recsys.store.schema import MAX_ID_LENGTH
from recsys.store.schema import events as events_table
from recsys.store.schema import users as users_table
from tests.conftest import require_postgres
from tests.reliability.service import (
    READ_KEY,
    WRITE_KEY,
    Service,
    bearer,
    copy_home,
    start_service,
    stop_service,
)

EVENT_TYPES = frozenset({"like", "dislike", "skip", "view", "rating", "play"})
ID_FIELDS = ("event_id", "user_id", "item_id")
HOSTILE_IDS = [
    "'; DROP TABLE events; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "%s %d %(x)s ? :name $1",
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "/",
    "a/b/c",
    "C:\\temp\\x",
    "..",
    ".",
    "~",
    "a?b#c&d=e",
    "%2F%41%00",
    "<script>alert(1)</script>",
    "\\N",
    "NULL",
    "null",
    "NaN",
    "None",
    "007",
    "1e5",
    " spaced ",
    "\t",
    "line\nbreak",
    "cr\rhere",
    "\u2028\u2029",
    "e\u0301",
    "\u00e9",
    "\ufeffbom",
    "\u200b",
    "\u202eevil",
    "💥🙂👩‍👩‍👧",
    "日本語のテキスト",
    "שלום",
    "x" * MAX_ID_LENGTH,
    "é" * MAX_ID_LENGTH,
    "😀" * MAX_ID_LENGTH,
]

# Ids every database can store: anything UTF-8 spells except NUL.
storable_char = st.characters(codec="utf-8", exclude_characters="\x00")
# Cell text: NUL included (no database stores it, so such rows must be rejected, not lost).
safe_text = st.text(st.characters(codec="utf-8"), max_size=30)
hostile_id = st.one_of(
    st.sampled_from(HOSTILE_IDS),
    st.text(storable_char, min_size=1, max_size=40),
    st.text(storable_char, min_size=MAX_ID_LENGTH - 2, max_size=MAX_ID_LENGTH),
)
# Any JSON value, of the kinds a column of an exported log might hold.
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    safe_text,
)
json_value = st.one_of(
    json_scalar,
    st.lists(json_scalar, max_size=3),
    st.dictionaries(safe_text, json_scalar, max_size=2),
)
type_value = st.one_of(
    st.sampled_from(sorted(EVENT_TYPES)),
    st.sampled_from(["LIKE", " view ", "Rating", "share", "", "like\n"]),
    json_value,
)
timestamp_value = st.one_of(
    st.floats(min_value=-1e10, max_value=1e10, allow_nan=False),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from(
        ["2024-06-10T06:13:20Z", "2024-06-10", "1718000000", "1718000000.5", "yesterday", ""]
    ),
    json_value,
)
number_value = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["12.5", "-1", "abc", "", "1e3"]),
    json_value,
)
FIELDS = {
    "event_id": st.one_of(hostile_id, json_value),
    "user_id": st.one_of(hostile_id, hostile_id, json_value),
    "item_id": st.one_of(hostile_id, hostile_id, json_value),
    "type": type_value,
    "timestamp": timestamp_value,
    "dwell_seconds": number_value,
    "value": number_value,
}


@st.composite
def event_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row of an event file: each column may be missing or hold anything."""
    row = {}
    for name, values in FIELDS.items():
        # The columns that decide validity are usually there, so valid rows are common.
        present = (
            draw(st.booleans())
            if name in ("event_id", "dwell_seconds", "value")
            else (draw(st.integers(0, 9)) > 0)
        )
        if present:
            row[name] = draw(values)
    row.update(draw(st.dictionaries(st.sampled_from(["extra", "USER_ID", "x"]), json_value)))
    return row


jsonl_lines = st.lists(
    st.one_of(
        event_rows().map(json.dumps),
        event_rows().map(json.dumps),
        event_rows().map(json.dumps),
        st.sampled_from(["{not json", "[1, 2]", '"text"', "42", "null", '{"a": ']),
    ),
    min_size=1,
    max_size=25,
)


def fresh(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(delete(events_table))
        conn.execute(delete(users_table))


def rejects_of(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def check_import(
    store: Store, settings: Settings, path: Path, rows: int, lines: set[int] | None = None
) -> set[int]:
    """Import ``path`` twice and check the accounting; return the rejected line numbers,
    which must be among ``lines`` (where the rows start) when given."""
    rejects = path.with_name(path.name + ".rejects.csv")
    rejects.unlink(missing_ok=True)
    first = import_file(store, settings, "events", path, rejects_path=rejects)
    assert first.rows == rows
    assert first.inserted + first.duplicates + first.rejected == rows
    rejected = rejects_of(rejects)
    assert len(rejected) == first.rejected
    rejected_lines = [int(r["line"]) for r in rejected]
    assert len(set(rejected_lines)) == len(rejected_lines), "a row was rejected twice"
    assert all(r["reason"].strip() for r in rejected), "a reject without a reason"
    with store.read() as conn:
        assert count_events(conn) == first.inserted

    rejects.unlink(missing_ok=True)
    second = import_file(store, settings, "events", path, rejects_path=rejects)
    assert second.rows == rows
    assert second.inserted == 0
    assert second.duplicates == first.inserted + first.duplicates
    assert second.rejected == first.rejected
    assert sorted(int(r["line"]) for r in rejects_of(rejects)) == sorted(rejected_lines)
    with store.read() as conn:
        assert count_events(conn) == first.inserted
    if lines is not None:
        assert set(rejected_lines) <= lines, "a reject names a line no row starts on"
    return set(rejected_lines)


def stored_pairs(store: Store) -> set[tuple[str, str]]:
    with store.read() as conn:
        return {
            (u, i) for u, i in conn.execute(select(events_table.c.user_id, events_table.c.item_id))
        }


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(lines=jsonl_lines)
def test_any_jsonl_file_is_accounted_for_row_by_row(
    store: Store, settings: Settings, tmp_path: Path, lines: list[str]
) -> None:
    fresh(store)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rejected = check_import(
        store, settings, path, rows=len(lines), lines=set(range(1, len(lines) + 1))
    )
    # Accepted rows whose ids are text are stored with exactly those ids. (A row with an
    # event_id may be the duplicate of another row with other ids, so only rows without.)
    pairs = stored_pairs(store)
    for line in set(range(1, len(lines) + 1)) - rejected:
        row = json.loads(lines[line - 1])
        assert isinstance(row, dict)
        user, item = row.get("user_id"), row.get("item_id")
        if isinstance(user, str) and isinstance(item, str) and "event_id" not in row:
            assert (user, item) in pairs


csv_cell = st.one_of(hostile_id, safe_text, st.sampled_from(["", "like", "view", "1718000000"]))


@PROPERTY
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "user_id": csv_cell,
                "item_id": csv_cell,
                "type": st.one_of(st.sampled_from(sorted(EVENT_TYPES)), csv_cell),
                "timestamp": st.one_of(
                    st.sampled_from(["1718000000", "2024-06-10T06:13:20Z", "1e9"]), csv_cell
                ),
                "dwell_seconds": st.one_of(st.sampled_from(["", "12.5", "-3"]), csv_cell),
            }
        ),
        min_size=1,
        max_size=25,
    )
)
def test_any_csv_file_is_accounted_for_row_by_row(
    store: Store, settings: Settings, tmp_path: Path, rows: list[dict[str, str]]
) -> None:
    fresh(store)
    path = tmp_path / "events.csv"
    # Rejects name the file line a row starts on, and a quoted id may hold line breaks:
    # note where each row starts as it is written.
    starts: dict[int, dict[str, str]] = {}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        line = 2
        for row in rows:
            text = io.StringIO()
            csv.DictWriter(text, fieldnames=list(rows[0])).writerow(row)
            handle.write(text.getvalue())
            starts[line] = row
            line += text.getvalue().count("\n")
    rejected = check_import(store, settings, path, rows=len(rows), lines=set(starts))
    pairs = stored_pairs(store)
    for line, row in starts.items():
        if line not in rejected:
            assert (row["user_id"], row["item_id"]) in pairs


@settings(max_examples=100, deadline=None, database=None)
@given(records=st.lists(event_rows(), min_size=1, max_size=30))
def test_validation_accepts_or_rejects_every_row_with_a_reason(
    records: list[dict[str, Any]],
) -> None:
    frame = pd.DataFrame.from_records(records)
    numbers = np.arange(100, 100 + len(frame))
    checked = validate_events(frame, event_types=EVENT_TYPES, row_numbers=numbers)
    valid, rejects = checked.valid, checked.rejects
    assert len(valid) + len(rejects) == len(frame)
    assert rejects["row"].is_unique and set(rejects["row"]) <= set(numbers)
    assert all(isinstance(r, str) and r for r in rejects["reason"])
    assert all(isinstance(f, str) and f for f in rejects["field"])
    for _, event in valid.iterrows():
        for name in ("event_id", "user_id", "item_id"):
            assert isinstance(event[name], str) and 0 < len(event[name]) <= MAX_ID_LENGTH
        assert event["type"] in EVENT_TYPES
        assert MIN_TIMESTAMP <= event["timestamp"] <= MAX_TIMESTAMP
        for name in ("dwell_seconds", "value"):
            assert event[name] is None or math.isnan(event[name]) or math.isfinite(event[name])
    # Ids are deterministic: the same rows always get the same ids.
    again = validate_events(frame, event_types=EVENT_TYPES, row_numbers=numbers)
    assert again.valid["event_id"].tolist() == valid["event_id"].tolist()


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(user=hostile_id, item=hostile_id, event_id=hostile_id)
def test_hostile_ids_are_stored_literally(
    store: Store, settings: Settings, tmp_path: Path, user: str, item: str, event_id: str
) -> None:
    fresh(store)
    path = tmp_path / "hostile.jsonl"
    record = {"event_id": event_id, "user_id": user, "item_id": item, "type": "like"}
    path.write_text(json.dumps({**record, "timestamp": 1_718_000_000}) + "\n", encoding="utf-8")
    summary = import_file(store, settings, "events", path, rejects_path=tmp_path / "r.csv")
    assert (summary.inserted, summary.rejected) == (1, 0), summary.reject_samples
    with store.read() as conn:
        history = user_events(conn, user)
    assert history[["event_id", "user_id", "item_id"]].to_dict("records") == [
        {"event_id": event_id, "user_id": user, "item_id": item}
    ]


def test_empty_objects_are_rejected(store: Store, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("{}\n{}\n", encoding="utf-8")
    summary = import_file(store, settings, "events", path, rejects_path=tmp_path / "r.csv")
    assert (summary.rows, summary.rejected) == (2, 2)


# --- text at the edge of what a store can hold ---------------------------------------------

# Ids no database can store: each row holding one is rejected with a reason.
UNSTORABLE = {"nul": "a\x00b", "surrogate": "a\ud800b"}
# Valid ids that a naive PostgreSQL COPY garbles (a bare CR ends a line, \N reads as NULL):
# stored as sent.
AWKWARD = {"carriage-return": "a\rb", "backslash-n": "\\N", "tab": "a\tb", "quote": 'a"b'}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("text", [*UNSTORABLE, *AWKWARD])
def test_hard_text_is_rejected_or_stored_as_sent(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings, text: str, backend: str
) -> None:
    if backend == "postgresql":
        require_postgres()
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(make_engine(url))
    hard = {**UNSTORABLE, **AWKWARD}[text]
    try:
        rows = [
            {"user_id": hard, "item_id": "i", "type": "like", "timestamp": 1},
            {"event_id": hard, "user_id": "u1", "item_id": hard, "type": "like", "timestamp": 1},
            {"user_id": "u", "item_id": "i", "type": "like", "timestamp": 2},
        ]
        path = tmp_path / "events.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        rejects = tmp_path / "r.csv"
        summary = import_file(store, settings, "events", path, rejects_path=rejects)
        with store.read() as conn:
            assert len(user_events(conn, "u")) == 1
            if text in UNSTORABLE:
                assert (summary.inserted, summary.rejected) == (1, 2)
                assert user_events(conn, "u1").empty
                reasons = pd.read_csv(rejects)["reason"].tolist()
                assert len(reasons) == 2
                assert all(("NUL" in r) or ("surrogate" in r) for r in reasons), reasons
            else:
                assert (summary.inserted, summary.rejected) == (3, 0)
                stored = user_events(conn, "u1")
                assert stored[["event_id", "item_id"]].values.tolist() == [[hard, hard]]
                assert user_events(conn, hard)["item_id"].tolist() == ["i"]
    finally:
        store.dispose()


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(
    world_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Store]]:
    root = tmp_path_factory.mktemp("hostile-http")
    home = copy_home(world_template, root / "home")
    service = start_service(home, root / "run")
    store = Store(make_engine(Settings(home=home, _env_file=None).sqlalchemy_url))  # type: ignore[call-arg]
    yield service, store
    stop_service(service)
    store.dispose()


def segment(raw: str) -> str:
    """An id as one path segment, every reserved character (and dots) percent-encoded."""
    return quote(raw, safe="").replace(".", "%2E")


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(user=hostile_id, item=hostile_id, event_id=hostile_id)
def test_hostile_ids_round_trip_over_http(
    service: tuple[Service, Store], user: str, item: str, event_id: str
) -> None:
    server, store = service
    write, read = bearer(WRITE_KEY), bearer(READ_KEY)
    with httpx.Client(base_url=server.base, timeout=60) as http:
        put = http.put(
            f"/v1/items/{segment(item)}",
            json={"title": "hostile", "text": "an item with a hostile id", "tags": [user[:50]]},
            headers=write,
        )
        assert put.status_code == 200, put.text
        similar = http.get(f"/v1/items/{segment(item)}/similar", headers=read)
        assert similar.status_code == 200, similar.text
        assert similar.json()["item_id"] == item

        event = {"event_id": event_id, "user_id": user, "item_id": item, "type": "like"}
        posted = http.post("/v1/events", json={"events": [event]}, headers=write)
        assert posted.status_code == 200, posted.text
        accepted = posted.json()["accepted"]
        assert accepted + posted.json()["duplicates"] == 1

        feed = http.get(f"/v1/users/{segment(user)}/feed", headers=read)
        assert feed.status_code == 200, feed.text
        body = feed.json()
        assert body["user_id"] == user and not body["degraded"]
        # The liked item is consumed: it does not come back. (When an earlier example
        # sent this event_id, the like stored was that example's, and this user liked
        # nothing: the new item may rightly be in their feed.)
        if accepted:
            assert item not in [i["item_id"] for i in body["items"]]
    with store.read() as conn:
        row = conn.execute(
            select(events_table.c.user_id, events_table.c.item_id).where(
                events_table.c.event_id == event_id
            )
        ).one()
    if accepted:  # else an earlier example sent this event_id, with its own ids
        assert tuple(row) == (user, item)
