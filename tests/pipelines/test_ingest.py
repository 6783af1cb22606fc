"""File import: formats, chunking, bad rows, rejects file, strict mode and exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from pipelines.ingest import ImportError_, import_file, read_chunks
from recsys.config import Settings
from recsys.store import Store
from recsys.store.catalog import load_items
from recsys.store.events import count_events, iter_events
from recsys.store.schema import events

GOOD = [
    {"user_id": "u1", "item_id": "i1", "type": "like", "timestamp": "2024-03-01T10:00:00Z"},
    {
        "user_id": "u1",
        "item_id": "i2",
        "type": "view",
        "timestamp": 1709287200,
        "dwell_seconds": 42,
    },
    {"user_id": "u2", "item_id": "i1", "type": "rating", "timestamp": 1709287300, "value": 4.5},
    {"user_id": "u3", "item_id": "i3", "type": "play", "timestamp": 1709287400, "value": 12},
    {"user_id": "u3", "item_id": "i1", "type": "skip", "timestamp": 1709287500},
]
BAD = [
    (
        {"user_id": "u4", "item_id": "i1", "type": "teleport", "timestamp": 1709287600},
        "unknown event type",
    ),
    ({"user_id": "", "item_id": "i1", "type": "like", "timestamp": 1709287600}, "missing user_id"),
    (
        {
            "user_id": "u5",
            "item_id": "i1",
            "type": "view",
            "timestamp": 1709287600,
            "dwell_seconds": -1,
        },
        "negative dwell_seconds",
    ),
    (
        {"user_id": "u6", "item_id": "i1", "type": "like", "timestamp": "last tuesday"},
        "unparsable timestamp (ISO 8601 or unix seconds)",
    ),
    (
        {"user_id": "u7", "item_id": "i1", "type": "view", "timestamp": 1709287600},
        "view without dwell_seconds",
    ),
]
FIELDS = ["event_id", "user_id", "item_id", "type", "timestamp", "dwell_seconds", "value"]


def write(path: Path, records: list[dict]) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for record in records:
                writer.writerow(record)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        frame = pd.DataFrame.from_records(records, columns=FIELDS).astype(
            {"timestamp": str, "user_id": str, "item_id": str, "type": str}
        )
        frame.to_parquet(path)
    return path


def mixed() -> list[dict]:
    # Bad rows interleaved with good ones: line numbers must point at the right rows.
    out: list[dict] = []
    for good, (bad, _) in zip(GOOD, BAD, strict=True):
        out += [good, bad]
    return out


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_keeps_good_rows_and_rejects_bad_ones(
    tmp_path: Path, store: Store, settings: Settings, suffix: str
) -> None:
    path = write(tmp_path / f"events{suffix}", mixed())
    rejects = tmp_path / "rejects.csv"
    summary = import_file(store, settings, "events", path, rejects_path=rejects, chunk_rows=3)
    assert (summary.inserted, summary.duplicates, summary.rejected) == (5, 0, 5)
    written = pd.read_csv(rejects)
    first_line = 2 if suffix == ".csv" else 1
    assert written["line"].tolist() == [first_line + 2 * i + 1 for i in range(5)]
    assert written["reason"].tolist() == [reason for _, reason in BAD]
    assert json.loads(written["original"].iloc[0])["type"] == "teleport"
    with store.read() as conn:
        stored = pd.concat(list(iter_events(conn)), ignore_index=True)
    assert sorted(stored["user_id"]) == ["u1", "u1", "u2", "u3", "u3"]
    assert stored.loc[stored["type"] == "play", "value"].tolist() == [12.0]


def test_reimport_is_idempotent(tmp_path: Path, store: Store, settings: Settings) -> None:
    path = write(tmp_path / "events.csv", GOOD)
    first = import_file(store, settings, "events", path, chunk_rows=2)
    second = import_file(store, settings, "events", path, chunk_rows=4)
    assert (first.inserted, second.inserted, second.duplicates) == (5, 0, 5)
    with store.read() as conn:
        assert count_events(conn) == 5


def test_strict_rolls_back_the_whole_file_across_chunks(
    tmp_path: Path, store: Store, settings: Settings
) -> None:
    # The bad row sits in the last chunk, after earlier chunks were written.
    path = write(tmp_path / "events.jsonl", [*GOOD, BAD[0][0]])
    summary = import_file(store, settings, "events", path, strict=True, chunk_rows=2)
    assert summary.strict_failed and summary.inserted == 0 and summary.rejected == 1
    with store.read() as conn:
        assert count_events(conn) == 0


def test_malformed_json_line_is_a_reject_not_a_crash(
    tmp_path: Path, store: Store, settings: Settings
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n{not json\n[1, 2]\n" + json.dumps(GOOD[1]) + "\n")
    summary = import_file(store, settings, "events", path, rejects_path=tmp_path / "r.csv")
    assert (summary.inserted, summary.rejected) == (2, 2)
    lines = pd.read_csv(tmp_path / "r.csv")["line"].tolist()
    assert lines == [2, 3]


def test_items_import_parses_tags_and_upserts(
    tmp_path: Path, store: Store, settings: Settings
) -> None:
    csv_path = tmp_path / "items.csv"
    csv_path.write_text(
        "item_id,title,text,tags,category,created_at,duration_seconds\n"
        "a,Pasta night,Five sauces,cooking|italian,cooking,2024-01-01T00:00:00Z,300\n"
        "b,Derby recap,,football,sport,1704067200,\n"
        ",No id,,,,,\n"
        "c,Bad length,,,,,-5\n"
    )
    summary = import_file(store, settings, "items", csv_path)
    assert (summary.inserted, summary.updated, summary.rejected) == (2, 0, 2)
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        json.dumps({"item_id": "a", "title": "Pasta night II", "tags": ["cooking"]}) + "\n"
    )
    again = import_file(store, settings, "items", jsonl)
    assert (again.inserted, again.updated) == (0, 1)
    with store.read() as conn:
        items = load_items(conn).set_index("item_id")
    assert items.loc["a", "title"] == "Pasta night II"
    assert items.loc["a", "tags"] == ["cooking"]
    assert items.loc["b", "tags"] == ["football"]
    assert items.loc["b", "created_at"] == 1704067200.0


def test_cli_exit_codes_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys import config
    from recsys.cli import app

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    config.get_settings.cache_clear()
    runner = CliRunner()
    good = write(tmp_path / "good.csv", [*GOOD, BAD[0][0]])
    result = runner.invoke(app, ["import", "events", str(good)])
    assert result.exit_code == 0, result.output
    assert "inserted=5" in result.output and "rejected=1" in result.output
    strict = runner.invoke(app, ["import", "events", str(good), "--strict"])
    assert strict.exit_code == 1
    only_bad = write(tmp_path / "bad.csv", [b for b, _ in BAD])
    assert runner.invoke(app, ["import", "events", str(only_bad)]).exit_code == 1
    unknown = tmp_path / "events.xml"
    unknown.write_text("<x/>")
    result = runner.invoke(app, ["import", "events", str(unknown)])
    assert result.exit_code == 1 and "unknown file type" in result.output
    missing = runner.invoke(app, ["import", "events", str(tmp_path / "nowhere.jsonl")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    assert missing.exception is None or isinstance(missing.exception, SystemExit)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["import", "events", str(empty)])
    assert result.exit_code == 1 and "the file is empty" in result.output
    config.get_settings.cache_clear()


def test_movielens_import_end_to_end_is_idempotent(store: Store, settings: Settings) -> None:
    from pipelines.datasets import read_movielens
    from pipelines.ingest import import_frames
    from tests.conftest import require_datasets

    if store.dialect == "postgresql":
        pytest.skip("the SQLite run covers the adapter; parity is tested separately")
    items, events = read_movielens(require_datasets("ml-latest-small"))
    item_summary, event_summary = import_frames(store, settings, items, events)
    assert (item_summary.inserted, event_summary.inserted) == (9_742, 100_836)
    again = import_frames(store, settings, items, events)[1]
    assert (again.inserted, again.duplicates) == (0, 100_836)
    with store.read() as conn:
        assert count_events(conn) == 100_836


def test_a_failed_write_stops_the_import_and_keeps_the_chunks_before_it(
    store: Store, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks are written on a second thread while the next is validated: a write that fails
    # must still stop the import, with every earlier chunk stored and nothing after it.
    import pipelines.ingest as ingest

    records = [
        {"user_id": f"u{n}", "item_id": f"i{n % 7}", "type": "like", "timestamp": 1_700_000_000 + n}
        for n in range(10)
    ]
    path = write(tmp_path / "events.jsonl", records)
    real_insert = ingest.insert_events
    calls: list[int] = []

    def third_write_fails(conn, frame):  # type: ignore[no-untyped-def]
        calls.append(len(frame))
        if len(calls) == 3:
            raise ConnectionError("the store went away")
        return real_insert(conn, frame)

    monkeypatch.setattr(ingest, "insert_events", third_write_fails)
    with pytest.raises(ConnectionError, match="went away"):
        import_file(store, settings, "events", path, chunk_rows=2)
    assert calls == [2, 2, 2]
    with store.read() as conn:
        assert count_events(conn) == 4


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_integer_ids_stay_integers_when_some_rows_lack_them(
    tmp_path: Path, store: Store, settings: Settings, suffix: str
) -> None:
    # Regression: one record without an id made pandas read the whole column as floats, so
    # the event id 5 became "5.0" (another id than in a chunk without gaps: stored twice on
    # re-import) and user ids past 2**53 merged into one.
    big = 12_345_678_901_234_567
    records = [
        {"event_id": 5, "user_id": big, "item_id": 7, "type": "like", "timestamp": 1709287200},
        {"event_id": 6, "user_id": big + 1, "item_id": 7, "type": "like", "timestamp": 1709287201},
        {"user_id": 3, "item_id": 8, "type": "like", "timestamp": 1709287202},
        {"event_id": 9, "item_id": 8, "type": "like", "timestamp": 1709287203},  # no user
    ]
    path = tmp_path / f"events{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [r.get(name) for r in records] for name in FIELDS[:5]}
        pq.write_table(pa.table(columns), path)
    summary = import_file(store, settings, "events", path)
    assert (summary.inserted, summary.rejected) == (3, 1)
    with store.read() as conn:
        stored = pd.DataFrame(conn.execute(select(events.c.event_id, events.c.user_id)).all())
    assert sorted(stored["user_id"]) == sorted([str(big), str(big + 1), "3"])
    assert {"5", "6"} <= set(stored["event_id"])
    again = import_file(store, settings, "events", path)
    assert (again.inserted, again.duplicates) == (0, 3)


def test_csv_rows_of_the_wrong_width_are_rejects_and_the_rest_lines_up(
    tmp_path: Path, store: Store, settings: Settings
) -> None:
    # Regressions: an extra field in the first row shifted every column of the file by one
    # (pandas took the first column as an index); a later one failed the whole import; and
    # blank lines or quoted newlines made later reject line numbers too low.
    path = tmp_path / "events.csv"
    path.write_bytes(
        "\ufeffuser_id,item_id,type,timestamp\r\n"  # line 1, with a byte order mark
        "u1,i1,like,1709287200,surplus\r\n"  # 2: one field too many
        "u2,i2,like,1709287201,\r\n"  # 3: a trailing delimiter only
        "\r\n"  # 4: blank
        'u3,"i\n3",like,1709287202\r\n'  # 5-6: a quoted newline in the item id
        "u4,,like,1709287203\r\n"  # 7: no item
        "u5,i5,like\r\n"  # 8: a short row, missing its timestamp
        "u6,i6,like,1709287205,x,y\r\n"  # 9: two fields too many
        "u7,i7,like,1709287206\r\n".encode()  # 10
    )
    rejects = tmp_path / "rejects.csv"
    summary = import_file(store, settings, "events", path, rejects_path=rejects, chunk_rows=2)
    assert (summary.inserted, summary.rejected) == (3, 4)
    written = pd.read_csv(rejects, dtype=str)
    assert dict(zip(written["line"].astype(int), written["reason"], strict=True)) == {
        2: "more fields than the header's 4",
        7: "missing item_id",
        8: "missing timestamp",
        9: "more fields than the header's 4",
    }
    with store.read() as conn:
        stored = pd.concat(list(iter_events(conn)), ignore_index=True)
    assert sorted(zip(stored["user_id"], stored["item_id"], strict=True)) == [
        ("u2", "i2"),
        ("u3", "i\n3"),
        ("u7", "i7"),
    ]
    # A too-wide last line is reported too, though no good row follows it.
    tail = tmp_path / "tail.csv"
    tail.write_text("user_id,item_id,type,timestamp\nu8,i8,like,1709287207\nu9,i9,like,1,x,y\n")
    summary = import_file(store, settings, "events", tail, rejects_path=rejects)
    assert (summary.inserted, summary.rejected) == (1, 1)
    assert pd.read_csv(rejects)["line"].tolist() == [3]
    # A row with bytes that are not UTF-8 is rejected alone; a header with them stops the
    # file with a message, not a traceback.
    broken = tmp_path / "broken.csv"
    broken.write_bytes(
        b"user_id,item_id,type,timestamp\nb1,\xff\xfe,like,1709287300\nb2,i2,like,1709287301\n"
    )
    summary = import_file(store, settings, "events", broken, rejects_path=rejects)
    assert (summary.inserted, summary.rejected) == (1, 1)
    assert pd.read_csv(rejects)["reason"].tolist() == ["the line is not valid UTF-8"]
    broken.write_bytes(b"user_\xffid,item_id,type,timestamp\nu1,i1,like,1709287200\n")
    with pytest.raises(ImportError_, match="header line is not valid UTF-8"):
        import_file(store, settings, "events", broken)
    # Blank lines before the header, and a row of empty fields (rejected, not skipped).
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("\n\nuser_id,item_id,type,timestamp\n,,,\nu3,i3,like,1709287202\n")
    summary = import_file(store, settings, "events", spaced, rejects_path=rejects)
    assert (summary.inserted, summary.rejected) == (1, 1)
    assert pd.read_csv(rejects)[["line", "reason"]].values.tolist() == [[4, "missing user_id"]]
    # A wide first row, then quoted breaks around wide rows: each reject on its own line.
    wide = tmp_path / "wide.csv"
    wide.write_text(
        'a,b\n1,2,,X\n3,4\n"x\ny",2,Z\n5,6\n1,2,"p\nq"\n7,8\n'.replace("a,b", "user_id,item_id")
    )
    lines = [line for r in read_chunks(wide, 2) for line in r.row_numbers.tolist()]
    malformed = [m for r in read_chunks(wide, 2) for m in r.malformed]
    assert lines == [3, 6, 9]
    assert [line for line, _ in malformed] == [2, 4, 7]
    # A quote never closed, after a chunk already read: the parser's error hands over to
    # the csv module, which reads the rest as that one value instead of failing the file.
    open_quote = tmp_path / "open-quote.csv"
    open_quote.write_bytes(b'user_id,item_id\nu1,i1\nu2,"i2\nu3,i3\n')
    chunks = list(read_chunks(open_quote, 1))
    assert [c.row_numbers.tolist() for c in chunks] == [[2], [3]]
    assert chunks[1].frame.values.tolist() == [["u2", "i2\nu3,i3\n"]]


def test_gzipped_tsv_is_read_with_tabs(tmp_path: Path, store: Store, settings: Settings) -> None:
    import gzip

    path = tmp_path / "events.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("user_id\titem_id\ttype\ttimestamp\n")
        handle.write("u1\ti,1\tlike\t1709287200\nu2\ti2\tlike\t1709287201\n")
    summary = import_file(store, settings, "events", path)
    assert (summary.inserted, summary.rejected) == (2, 0)
    with store.read() as conn:
        stored = pd.concat(list(iter_events(conn)), ignore_index=True)
    assert sorted(stored["item_id"]) == ["i,1", "i2"]
