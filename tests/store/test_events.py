"""Event semantics and the bulk write path, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from recsys.config import Settings
from recsys.events import derive_event_ids, validate_events
from recsys.store import Store
from recsys.store.events import (
    HISTORY_COLUMNS,
    count_events,
    insert_events,
    iter_events,
    user_event_columns,
    user_events,
)
from recsys.store.schema import users

TYPES = Settings(_env_file=None).event_types  # type: ignore[call-arg]


def _events(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    types = rng.choice(["like", "skip", "view", "rating", "play"], size=n)
    return pd.DataFrame(
        {
            "user_id": [f"user-{u}" for u in rng.integers(0, 50, n)],
            "item_id": [f"item-{i}" for i in rng.integers(0, 200, n)],
            "type": types,
            "timestamp": 1_700_000_000 + np.arange(n, dtype=float) * 17.25,
            "dwell_seconds": np.where(types == "view", rng.uniform(0, 600, n), np.nan),
            "value": np.where(types == "rating", rng.integers(1, 6, n), np.nan),
        }
    )


def test_bad_rows_each_rejected_with_reason() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u", None, "u", "u", "u", "u", "u"],
            "item_id": ["i", "i", "i", "", "i", "i", "i", "i"],
            "type": ["like", "teleport", "like", "like", "view", "view", "like", "rating"],
            "timestamp": ["1700000000", "1700000000", "1", "1", "1", "1", "not a time", "1"],
            "dwell_seconds": [None, None, None, None, "-2", None, None, None],
            "value": [None] * 8,
        }
    )
    checked = validate_events(frame, event_types=TYPES, row_numbers=np.arange(2, 10))
    assert checked.valid["user_id"].tolist() == ["u"]
    reasons = dict(zip(checked.rejects["row"], checked.rejects["reason"], strict=True))
    assert reasons == {
        3: "unknown event type",
        4: "missing user_id",
        5: "missing item_id",
        6: "negative dwell_seconds",
        7: "view without dwell_seconds",
        8: "unparsable timestamp (ISO 8601 or unix seconds)",
        9: "rating without value",
    }


def test_timestamps_accept_iso_and_unix_seconds_and_catch_milliseconds() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "item_id": ["i"] * 4,
            "type": ["like"] * 4,
            "timestamp": [
                "2023-11-14T22:13:20Z",
                "1700000000",
                "2023-11-14T23:13:20+01:00",
                "1700000000000",
            ],
        }
    )
    checked = validate_events(frame, event_types=TYPES)
    assert checked.valid["timestamp"].tolist() == [1_700_000_000.0] * 3
    assert checked.rejects["reason"].str.contains("out of range").tolist() == [True]


def test_custom_types_come_from_configuration() -> None:
    frame = pd.DataFrame(
        {"user_id": ["u"], "item_id": ["i"], "type": ["share"], "timestamp": [1_700_000_000]}
    )
    assert validate_events(frame, event_types=TYPES).valid.empty
    custom = Settings(custom_event_types="share:3", _env_file=None).event_types  # type: ignore[call-arg]
    assert validate_events(frame, event_types=custom).valid["type"].tolist() == ["share"]


def test_custom_types_cannot_redefine_builtins() -> None:
    with pytest.raises(ValueError, match="built-ins"):
        Settings(custom_event_types={"like": 2.0}, _env_file=None)  # type: ignore[call-arg]


def test_derived_ids_are_deterministic_and_distinguish_fields() -> None:
    base = dict(u=["u"], i=["i"], t=["like"], ts=[1.5])
    first = derive_event_ids(*(pd.Series(v) for v in base.values()))
    again = derive_event_ids(*(pd.Series(v) for v in base.values()))
    other = derive_event_ids(
        pd.Series(["u"]), pd.Series(["i"]), pd.Series(["like"]), pd.Series([1.500001])
    )
    assert first.tolist() == again.tolist()
    assert first.iloc[0] != other.iloc[0]
    assert len(first.iloc[0]) == 32


def test_ingesting_twice_stores_once(store: Store) -> None:
    checked = validate_events(_events(2_000), event_types=TYPES)
    with store.transaction() as conn:
        first = insert_events(conn, checked.valid)
    with store.transaction() as conn:
        second = insert_events(conn, checked.valid)
    assert first.inserted == len(checked.valid)
    assert (second.inserted, second.duplicates) == (0, len(checked.valid))
    with store.read() as conn:
        assert count_events(conn) == len(checked.valid)


def test_duplicates_within_one_batch_count_once(store: Store) -> None:
    checked = validate_events(_events(100), event_types=TYPES)
    doubled = pd.concat([checked.valid, checked.valid.head(30)], ignore_index=True)
    with store.transaction() as conn:
        result = insert_events(conn, doubled)
    assert (result.inserted, result.duplicates) == (100, 30)


def test_users_created_on_first_sight_with_earliest_time(store: Store) -> None:
    later = validate_events(
        pd.DataFrame({"user_id": ["new"], "item_id": ["i"], "type": ["like"], "timestamp": [2e9]}),
        event_types=TYPES,
    )
    earlier = validate_events(
        pd.DataFrame({"user_id": ["new"], "item_id": ["j"], "type": ["skip"], "timestamp": [1e9]}),
        event_types=TYPES,
    )
    for batch in (later, earlier):
        with store.transaction() as conn:
            insert_events(conn, batch.valid)
    with store.read() as conn:
        rows = conn.execute(select(users.c.user_id, users.c.first_seen)).all()
    assert [(r[0], r[1]) for r in rows] == [("new", 1e9)]


def test_reads_round_trip_every_field_literally(store: Store) -> None:
    hostile = ["'; DROP TABLE events; --", "../../etc/passwd", "ünïcødé ✓ 用户", "x" * 512]
    frame = pd.DataFrame(
        {
            "user_id": hostile,
            "item_id": list(reversed(hostile)),
            "type": ["view", "rating", "play", "like"],
            "timestamp": [1_700_000_000.123456, 1.0, 2.0, 3.0],
            "dwell_seconds": [12.5, None, None, None],
            "value": [None, 4.5, 7, None],
        }
    )
    checked = validate_events(frame, event_types=TYPES)
    assert checked.rejects.empty
    with store.transaction() as conn:
        insert_events(conn, checked.valid)
    with store.read() as conn:
        read = pd.concat(list(iter_events(conn, chunk_rows=3)), ignore_index=True)
        mine = user_events(conn, hostile[0])
    got = read.sort_values("user_id").reset_index(drop=True)
    # Reads give the event columns; the attribution (feed_id) is read by reports only.
    want = checked.valid.drop(columns="feed_id").sort_values("user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert mine["item_id"].tolist() == [hostile[3]]
    assert mine["timestamp"].iloc[0] == pytest.approx(1_700_000_000.123456, abs=1e-6)


def test_sqlite_and_postgres_store_the_same_rows(tmp_path, postgres_url: str) -> None:
    from recsys.store.engine import make_engine

    frames = []
    checked = validate_events(_events(3_000, seed=7), event_types=TYPES)
    for url in (f"sqlite:///{tmp_path / 'parity.db'}", postgres_url):
        store = Store(make_engine(url))
        with store.transaction() as conn:
            insert_events(conn, checked.valid)
        with store.read() as conn:
            frame = pd.concat(list(iter_events(conn)), ignore_index=True)
        frames.append(frame.sort_values("event_id").reset_index(drop=True))
        store.dispose()
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_sqlite_bulk_read_keeps_nulls_and_types_whatever_the_first_rows_hold(tmp_path) -> None:
    """A column that starts with NULLs (or whole numbers) and later holds fractions reads
    back exactly (an Arrow reader that inferred types from the first rows once did not)."""
    import sqlite3

    from recsys.store.engine import make_engine

    n = 5_000
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i % 37}" for i in range(n)],
            "item_id": [f"i{i % 101}" for i in range(n)],
            "type": ["rating"] * n,
            "timestamp": 1_700_000_000.0 + np.arange(n),
            # NULL for the first 4,000 rows, then fractions; whole numbers, then fractions.
            "dwell_seconds": [None] * 4_000 + [12.75] * 1_000,
            "value": [4.0] * 4_500 + [3.5] * 500,
        }
    )
    checked = validate_events(frame, event_types=TYPES)
    store = Store(make_engine(f"sqlite:///{tmp_path / 'late.db'}"))
    with store.transaction() as conn:
        insert_events(conn, checked.valid)
    since, until = 1_700_000_000.0 + 100, 1_700_000_000.0 + 4_900
    with store.read() as conn:
        read = pd.concat(
            list(iter_events(conn, chunk_rows=700, since=since, until=until)), ignore_index=True
        )
    store.dispose()
    with sqlite3.connect(tmp_path / "late.db") as reference:
        want = pd.read_sql_query(
            "SELECT event_id, user_id, item_id, type, timestamp, dwell_seconds, value "
            "FROM events WHERE timestamp >= ? AND timestamp < ?",
            reference,
            params=(since, until),
        )
    assert len(read) == 4_800
    got = read.sort_values("timestamp").reset_index(drop=True)
    want = want.sort_values("timestamp").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got["dwell_seconds"].isna().sum() == 3_900
    assert got["value"].iloc[-1] == 3.5


def test_a_bulk_read_while_the_process_writes_the_same_file_uses_one_sqlite(tmp_path) -> None:
    """A serving process trains while its impression writer writes: the bulk read must go
    through the same SQLite library as the writer (a second copy in the process does not
    see the first one's locks, and one reset the WAL index under the other: SIGBUS)."""
    import sys
    import threading

    from recsys.store.engine import make_engine

    store = Store(make_engine(f"sqlite:///{tmp_path / 'busy.db'}"))
    store.ensure_schema()

    def batch(start: int, n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": [f"u{i % 50}" for i in range(start, start + n)],
                "item_id": [f"i{i % 300}" for i in range(start, start + n)],
                "type": ["view"] * n,
                "timestamp": 1_700_000_000.0 + np.arange(start, start + n),
                "dwell_seconds": [30.0] * n,
            }
        )

    with store.transaction() as conn:
        insert_events(conn, validate_events(batch(0, 20_000), event_types=TYPES).valid)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        start = 20_000
        while not stop.is_set():
            with store.transaction() as conn:
                insert_events(conn, validate_events(batch(start, 200), event_types=TYPES).valid)
            written.append(200)
            start += 200

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = []
        for _ in range(5):
            with store.read() as conn:
                reads.append(sum(len(chunk) for chunk in iter_events(conn, chunk_rows=3_000)))
    finally:
        stop.set()
        thread.join()
    store.dispose()
    # Each read is one snapshot: at least the first 20,000, never more than was written.
    assert all(20_000 <= n <= 20_000 + sum(written) for n in reads)
    assert reads == sorted(reads) and written
    assert "adbc_driver_sqlite" not in sys.modules


def test_read_ahead_hands_over_items_errors_and_stops_with_its_caller() -> None:
    import threading

    from recsys.store.events import _prefetched

    def reader_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "recsys-event-reader"]

    assert list(_prefetched(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in _prefetched(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = _prefetched(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the caller stops early: the reading thread must end too
    assert not reader_threads()
    assert len(produced) <= 5  # it read at most a few items ahead, not the whole stream


def test_event_time_range_is_the_oldest_and_newest_event(store: Store) -> None:
    from recsys.store.events import event_time_range

    with store.read() as conn:
        assert event_time_range(conn) == (None, None)
    checked = validate_events(
        _events(500, seed=3).sample(frac=1.0, random_state=5), event_types=TYPES
    )
    with store.transaction() as conn:
        insert_events(conn, checked.valid)
    with store.read() as conn:
        oldest, newest = event_time_range(conn)
    assert oldest == pytest.approx(checked.valid["timestamp"].min())
    assert newest == pytest.approx(checked.valid["timestamp"].max())
    assert oldest < newest


def test_dates_out_of_pandas_range_are_rejected_not_a_crash() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "item_id": ["i"] * 4,
            "type": ["like"] * 4,
            "timestamp": ["9999-12-31T23:59:59", "0001-01-01", "now", "2024-03-01T10:00:00Z"],
        }
    )
    checked = validate_events(frame, event_types=TYPES)
    assert checked.valid["user_id"].tolist() == ["d"]
    assert checked.rejects["reason"].tolist() == [
        "timestamp out of range (expected unix seconds between 1970 and 2100)",
        "timestamp out of range (expected unix seconds between 1970 and 2100)",
        "unparsable timestamp (ISO 8601 or unix seconds)",
    ]


def test_booleans_and_huge_numbers_are_rejected() -> None:
    # As JSON Lines gives them: object columns mixing numbers and booleans.
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", "e"],
            "item_id": ["i"] * 5,
            "type": ["like", "rating", "rating", "view", "rating"],
            "timestamp": [True, 1.7e9, 1.7e9, 1.7e9, 1.7e9],
            "value": [None, True, 1e308, None, 4.5],
            "dwell_seconds": [None, None, None, 2e9, None],
        },
        dtype=object,
    )
    checked = validate_events(frame, event_types=TYPES)
    assert checked.valid["user_id"].tolist() == ["e"]
    assert checked.rejects[["row", "field"]].values.tolist() == [
        [0, "timestamp"],
        [1, "value"],
        [2, "value"],
        [3, "dwell_seconds"],
    ]


def test_float_id_columns_keep_integer_ids() -> None:
    frame = pd.DataFrame(
        {
            "user_id": [5.0, 7.0, np.nan],
            "item_id": [1.5, 2.0, 3.0],
            "type": ["like"] * 3,
            "timestamp": [1.7e9] * 3,
        }
    )
    checked = validate_events(frame, event_types=TYPES)
    assert checked.valid["user_id"].tolist() == ["5", "7"]
    assert checked.valid["item_id"].tolist() == ["1.5", "2"]
    assert checked.rejects["reason"].tolist() == ["missing user_id"]


def test_separators_inside_ids_cannot_make_two_events_one() -> None:
    users, items = pd.Series(["a\x1fb", "a"]), pd.Series(["c", "b\x1fc"])
    ids = derive_event_ids(users, items, pd.Series(["like"] * 2), pd.Series([1.5, 1.5]))
    assert ids.iloc[0] != ids.iloc[1]
    # Ids without the separator keep the id they always had.
    plain = derive_event_ids(
        pd.Series(["u"]), pd.Series(["i"]), pd.Series(["like"]), pd.Series([1.5])
    )
    assert (
        plain.iloc[0] == hashlib.blake2b(b"u\x1fi\x1flike\x1f1500000", digest_size=16).hexdigest()
    )


def test_an_idempotency_key_names_events_without_id_or_timestamp() -> None:
    frame = pd.DataFrame(
        {
            "event_id": [None, None, "mine"],
            "user_id": ["u", "u", "u"],
            "item_id": ["i", "i", "j"],
            "type": ["play", "play", "like"],
            "timestamp": [None, None, None],
        }
    )

    def ids(key: str | None, now: float) -> list[str]:
        checked = validate_events(
            frame, event_types=TYPES, default_timestamp=now, idempotency_key=key
        )
        return checked.valid["event_id"].tolist()

    first = ids("batch-1", 1.7e9)
    # A resend, a moment later: the same ids.
    assert ids("batch-1", 1.7e9 + 3) == first
    # Two plays in one batch stay two events; the given id is kept.
    assert len(set(first[:2])) == 2 and first[2] == "mine"
    # Another batch is other events, and without a key every send is new.
    assert set(ids("batch-2", 1.7e9 + 3)[:2]).isdisjoint(first)
    assert ids(None, 1.7e9)[:2] != ids(None, 1.7e9 + 3)[:2]


def test_custom_type_names_are_matched_as_events_are() -> None:
    custom = Settings(custom_event_types="Share:3", _env_file=None)  # type: ignore[call-arg]
    assert "share" in custom.event_types
    frame = pd.DataFrame(
        {"user_id": ["u"], "item_id": ["i"], "type": [" SHARE"], "timestamp": [1_700_000_000]}
    )
    assert validate_events(frame, event_types=custom.event_types).valid["type"].tolist() == [
        "share"
    ]
    with pytest.raises(ValueError, match="longer than 64"):
        Settings(custom_event_types={"x" * 65: 1.0}, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="given twice"):
        Settings(custom_event_types={"Share": 1.0, "share": 2.0}, _env_file=None)  # type: ignore[call-arg]


def test_a_users_history_reads_the_asked_columns_newest_first(store: Store) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "other"],
            "item_id": ["old", "new", "mid", "x"],
            "type": ["like", "view", "rating", "like"],
            "timestamp": [1.0e9, 1.2e9, 1.1e9, 1.3e9],
            "dwell_seconds": [None, 30.0, None, None],
            "value": [None, None, 4.0, None],
        }
    )
    with store.transaction() as conn:
        insert_events(conn, validate_events(frame, event_types=TYPES).valid)
    with store.read() as conn:
        history = user_event_columns(conn, "u", limit=2, columns=HISTORY_COLUMNS)
        assert list(history) == list(HISTORY_COLUMNS)
        assert history["item_id"].tolist() == ["new", "mid"]
        assert history["dwell_seconds"][0] == 30.0 and history["value"][1] == 4.0
        assert user_event_columns(conn, "nobody", columns=HISTORY_COLUMNS)["type"].size == 0
        with pytest.raises(ValueError, match="not event columns"):
            user_event_columns(conn, "u", columns=("item_id", "1; drop table events"))
