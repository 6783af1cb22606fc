"""Batch import of items and events from CSV, JSON Lines and Parquet files.

Files are read in chunks so memory stays flat on any file size. Without ``strict``, each
chunk commits on its own (a crash loses nothing already imported, and a re-run skips it as
duplicates); with ``strict``, the whole file is one transaction that rolls back on the first
bad row.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Connection
from tqdm import tqdm

from recsys.columns import EVENT_ID, FEED_ID, ITEM_ID, USER_ID
from recsys.config import Settings
from recsys.events import ValidatedEvents, validate_events
from recsys.store import Store
from recsys.store.catalog import ValidatedItems, upsert_items, validate_items
from recsys.store.events import InsertResult, insert_events

Kind = Literal["items", "events"]
FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class ImportError_(RuntimeError):
    """A file that cannot be imported at all (unknown format, unreadable)."""


class StrictImportFailed(RuntimeError):
    """A strict import met a bad row; nothing from the file was stored."""


@dataclass
class ImportSummary:
    kind: str
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    rejected: int = 0
    rows: int = 0
    seconds: float = 0.0
    rejects_path: Path | None = None
    strict_failed: bool = False
    reject_samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.duplicates

    @property
    def ok(self) -> bool:
        return not self.strict_failed and self.accepted > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "rejects_file": str(self.rejects_path) if self.rejects_path else None,
            "strict_failed": self.strict_failed,
        }


@dataclass
class Chunk:
    frame: pd.DataFrame
    row_numbers: np.ndarray  # 1-based line numbers (CSV counts the header as line 1)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    bytes_read: int = 0


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in FORMATS:
        raise ImportError_(f"{path}: unknown file type; use .csv, .jsonl (.ndjson) or .parquet")
    return FORMATS[suffixes[-1]]


def read_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Yield the file as chunks with their source line numbers."""
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "csv":
        yield from _csv_chunks(path, chunk_rows)
    elif fmt == "jsonl":
        yield from _jsonl_chunks(path, chunk_rows)
    else:
        yield from _parquet_chunks(path, chunk_rows)


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """CSV (or TSV) rows as text, each with the file line it starts on.

    Two readers. pandas' C parser is about four times faster than Python's csv module, but
    it numbers records rather than lines, drops a too-wide row (or, on the first row,
    shifts every column by one), and fails the whole file on a byte that is not UTF-8. So it
    reads while every record is one plain line of at most the header's width, and a chunk
    with anything else (a quoted line break, a blank or empty row, a surplus field, a
    parser warning, bad bytes) is read again, with the rest of the file, by the csv module,
    which reports each record where it starts and rejects a bad one alone.
    """
    gzipped = path.suffix.lower() == ".gz"
    base = path.with_suffix("") if gzipped else path
    delimiter = "\t" if base.suffix.lower() == ".tsv" else ","
    header, header_records, header_lines = _csv_header(path, gzipped, delimiter)
    done = 0
    # The fast reader skips one physical line for the header: anything else before the
    # first record (blank lines, a header with a quoted line break) goes the exact way.
    if header_records == 1 and header_lines == 1:
        try:
            for chunk in _csv_fast(path, gzipped, delimiter, header, chunk_rows):
                yield chunk
                done += len(chunk.frame)
            return
        except _NeedsExactReader:
            pass
    # Every record the fast reader gave was one line.
    yield from _csv_exact(
        path, gzipped, delimiter, header, header_records + done, header_lines + done, chunk_rows
    )


class _NeedsExactReader(Exception):
    """A chunk the fast reader cannot number or split exactly."""


def _csv_text(path: Path, gzipped: bool) -> io.TextIOWrapper:
    binary: Any = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115
    # utf-8-sig drops a byte order mark; undecodable bytes become lone surrogates, which
    # reject their row instead of stopping the file.
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _csv_header(path: Path, gzipped: bool, delimiter: str) -> tuple[list[str], int, int]:
    """The header's names, and the records and lines (counted by line feeds) up to and
    including it."""
    records = lines = 0
    header: list[str] | None = None
    with _csv_text(path, gzipped) as text:
        for row in csv.reader(text, delimiter=delimiter):
            records += 1
            lines += _lines_of(row)
            if row:
                header = row
                break
    if header is None:
        raise ImportError_(f"{path}: the file is empty; expected a header line")
    if not _is_utf8("".join(header)):
        raise ImportError_(f"{path}: the header line is not valid UTF-8")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ImportError_(f"{path}: the header names {duplicated} more than once")
    return header, records, lines


def _lines_of(row: list[str]) -> int:
    """The lines a csv record takes, counted as line feeds are (a carriage return alone is
    not counted as a line break, as ``wc -l`` does not count it)."""
    return 1 + sum(field.count("\n") for field in row)


def _csv_fast(
    path: Path,
    gzipped: bool,
    delimiter: str,
    header: list[str],
    chunk_rows: int,
) -> Iterator[Chunk]:
    width = len(header)
    with open(path, "rb") as handle:
        with _parser_trouble_needs_the_exact_reader():
            reader = pd.read_csv(
                handle,
                sep=delimiter,
                header=None,
                skiprows=1,
                # One column more than the header: a surplus field shows instead of shifting.
                names=list(range(width + 1)),
                # Everything as text: ids like "007" stay literal, and "NA" is a valid id.
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                index_col=False,
                skip_blank_lines=False,
                on_bad_lines="warn",
                chunksize=chunk_rows,
                compression="gzip" if gzipped else None,
                encoding="utf-8-sig",
            )
        line, position = 2, 0
        while (frame := _next_plain_chunk(reader, width)) is not None:
            now = handle.tell()
            rows = frame[list(range(width))]
            rows.columns = header
            yield Chunk(rows, np.arange(line, line + len(frame)), [], now - position)
            line, position = line + len(frame), now


def _next_plain_chunk(reader: Any, width: int) -> pd.DataFrame | None:
    """The parser's next chunk (None at the end of the file), or _NeedsExactReader if the
    parser had trouble or read a record that is not plain."""
    with _parser_trouble_needs_the_exact_reader():
        frame = next(reader, None)
    if frame is not None and not _plain_records(frame, width):
        raise _NeedsExactReader
    return frame


@contextmanager
def _parser_trouble_needs_the_exact_reader() -> Iterator[None]:
    """_NeedsExactReader when pandas' parser, inside this block, warns (it skipped a row) or
    fails (bytes that are not UTF-8, a quote never closed). Warnings are caught around the
    parsing alone: the caller's own, made while the reader waits at a yield, are theirs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except (UnicodeDecodeError, pd.errors.ParserError):
            raise _NeedsExactReader from None
    if caught:
        raise _NeedsExactReader


def _plain_records(frame: pd.DataFrame, width: int) -> bool:
    """Whether every record of ``frame`` is one line holding at most ``width`` fields, not
    all of them empty."""
    if frame[width].notna().any() or frame.isna().all(axis=1).any():
        return False
    return not any(
        frame[column].str.contains(breaker, regex=False).any()
        for column in range(width)
        for breaker in ("\n", "\r")
    )


def _csv_exact(
    path: Path,
    gzipped: bool,
    delimiter: str,
    header: list[str],
    skip_records: int,
    line: int,
    chunk_rows: int,
) -> Iterator[Chunk]:
    """The csv module's reader, after the first ``skip_records`` records (the header and the
    records already read), which end on line ``line``."""
    with _csv_text(path, gzipped) as text:
        raw: Any = text.buffer
        reader = csv.reader(text, delimiter=delimiter)
        for _ in itertools.islice(reader, skip_records):
            pass
        position = raw.tell()
        while rows := list(itertools.islice(reader, chunk_rows)):
            spans = np.fromiter(map(_lines_of, rows), np.int64, len(rows))
            starts = line + 1 + np.concatenate(([0], np.cumsum(spans)[:-1]))
            line += int(spans.sum())
            frame, lines, malformed = _csv_rows(rows, header, starts)
            now = raw.tell()
            yield Chunk(frame, lines, malformed, now - position)
            position = now


def _csv_rows(
    rows: list[list[str]], header: list[str], starts: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[int, str]]]:
    """A chunk of csv module rows (each starting on its line of ``starts``) as a text
    frame, their lines, and the rows that cannot be one (wrong width, not UTF-8)."""
    width = len(header)
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    malformed: list[tuple[int, str]] = []
    keep = lengths > 0  # a blank line is no record
    for i in np.flatnonzero(lengths > width):
        if any(rows[i][width:]):
            malformed.append((int(starts[i]), f"more fields than the header's {width}"))
            keep[i] = False
        else:
            rows[i] = rows[i][:width]  # a trailing delimiter
    for i in np.flatnonzero(keep & (lengths < width)):
        rows[i] = rows[i] + [""] * (width - len(rows[i]))  # a short row lacks its last fields
    for i in np.flatnonzero(keep):
        if not _is_utf8("".join(rows[i])):
            malformed.append((int(starts[i]), "the line is not valid UTF-8"))
            keep[i] = False
    kept = [rows[i] for i in np.flatnonzero(keep)]
    columns = list(zip(*kept, strict=True)) if kept else [()] * width
    data = {}
    for name, values in zip(header, columns, strict=True):
        array = np.array(values, dtype=object)
        array[array == ""] = None  # only an empty field is missing
        data[name] = array
    return pd.DataFrame(data, columns=header), starts[keep], sorted(malformed)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        records: list[dict[str, Any]] = []
        lines: list[int] = []
        malformed: list[tuple[int, str]] = []
        size = 0
        for number, raw in enumerate(handle, start=1):
            size += len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                malformed.append(
                    (number, f"invalid JSON: {exc.msg if hasattr(exc, 'msg') else exc}")
                )
                continue
            if not isinstance(record, dict):
                malformed.append((number, "a line must be a JSON object"))
                continue
            # JSON may escape a lone UTF-16 surrogate (\ud800), which is no text any store
            # (or Arrow) can hold; the cheap byte test keeps the full check off the hot path.
            if b"\\ud" in raw.lower() and _has_lone_surrogate(record):
                malformed.append((number, "text holds a lone UTF-16 surrogate (invalid Unicode)"))
                continue
            records.append(record)
            lines.append(number)
            if len(records) >= chunk_rows:
                yield Chunk(_records_frame(records), np.asarray(lines), malformed, size)
                records, lines, malformed, size = [], [], [], 0
        if records or malformed:
            yield Chunk(_records_frame(records), np.asarray(lines, dtype=np.int64), malformed, size)


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return not _is_utf8(value)
    if isinstance(value, dict):
        return any(map(_has_lone_surrogate, value.keys())) or any(
            map(_has_lone_surrogate, value.values())
        )
    if isinstance(value, list):
        return any(map(_has_lone_surrogate, value))
    return False


ID_COLUMNS = frozenset((EVENT_ID, USER_ID, ITEM_ID, FEED_ID))


def _records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    # An explicit index keeps one row per record: from_records makes no rows at all of
    # records without keys ("{}"), and those rows must be rejected, not lost. Id columns
    # keep each value as parsed: an inferred dtype turns integer ids into floats as soon as
    # one record lacks the field (5 -> "5.0", and ids past 2**53 merge). Other columns get
    # their inferred dtype, so an all-number column validates as numbers, not objects.
    frame = pd.DataFrame(records, index=pd.RangeIndex(len(records)), dtype=object)
    for column in frame.columns:
        if column not in ID_COLUMNS:
            frame[column] = frame[column].infer_objects()
        elif pd.api.types.infer_dtype(frame[column], skipna=True) == "string":
            frame[column] = frame[column].astype("str")  # text only: pandas' fast strings
    return frame


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    first = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        # Integer columns with nulls stay integers (as objects) instead of becoming floats.
        frame = batch.to_pandas(integer_object_nulls=True)
        yield Chunk(frame, np.arange(first, first + len(frame)), bytes_read=len(frame))
        first += len(frame)


class RejectsWriter:
    """Appends rejected rows (line, field, reason, original values) to a CSV file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._writer: Any = None

    def write(self, rejects: pd.DataFrame, source: pd.DataFrame | None, rows: np.ndarray) -> None:
        if rejects.empty:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["line", "field", "reason", "original"])
        position = {int(line): i for i, line in enumerate(rows)}
        for line, column, reason in rejects[["row", "field", "reason"]].itertuples(index=False):
            original = ""
            if source is not None and int(line) in position:
                record = source.iloc[position[int(line)]].to_dict()
                original = json.dumps(
                    {k: v for k, v in record.items() if not _is_missing(v)}, default=str
                )
            self._writer.writerow([line, column or "", reason, original])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _progress(total: int | None, unit: str, desc: str) -> tqdm:
    return tqdm(
        total=total,
        unit=unit,
        unit_scale=True,
        desc=desc,
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
    )


def default_rejects_path(settings: Settings, source: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return settings.home / "rejects" / f"{source.name}.{stamp}.rejects.csv"


def import_file(
    store: Store,
    settings: Settings,
    kind: Kind,
    path: Path,
    *,
    strict: bool = False,
    rejects_path: Path | None = None,
    chunk_rows: int | None = None,
) -> ImportSummary:
    """Import one file of items or events; see the module docstring for the guarantees."""
    chunk_rows = chunk_rows or settings.import_chunk_rows
    rejects_path = rejects_path or default_rejects_path(settings, path)
    fmt = detect_format(path)
    total = None
    unit = "B"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        total, unit = pq.ParquetFile(path).metadata.num_rows, "rows"
    elif path.is_file():
        total = path.stat().st_size
    chunks = read_chunks(path, chunk_rows)
    return import_chunks(
        store,
        settings,
        kind,
        chunks,
        strict=strict,
        rejects_path=rejects_path,
        progress=_progress(total, unit, f"import {kind}"),
    )


def import_chunks(
    store: Store,
    settings: Settings,
    kind: Kind,
    chunks: Iterable[Chunk],
    *,
    strict: bool = False,
    rejects_path: Path | None = None,
    progress: tqdm | None = None,
) -> ImportSummary:
    summary = ImportSummary(kind=kind)
    writer = RejectsWriter(rejects_path) if rejects_path else None
    started = time.perf_counter()
    if progress is None:  # a tqdm without a total has no truth value
        progress = _progress(None, "rows", f"import {kind}")
    # Strict: one transaction for the whole file. Otherwise one per chunk.
    outer: AbstractContextManager[Connection | None] = (
        store.transaction() if strict else nullcontext(None)
    )
    # Outside strict mode a chunk is stored on a second thread while the next one is read
    # and validated: the database works (and the driver waits) without the GIL, so the two
    # overlap. At most one chunk is in flight, so memory stays that of two chunks, and a
    # failed write surfaces before the chunk after it is handed over.
    background = None if strict else ThreadPoolExecutor(1, thread_name_prefix="recsys-import")
    in_flight: Future[None] | None = None
    try:
        with outer as strict_conn:
            for chunk in chunks:
                summary.rows += len(chunk.frame) + len(chunk.malformed)
                valid, rejects = _validate(settings, kind, chunk)
                if background is None:
                    _store(store, kind, valid, summary, strict_conn)
                else:
                    if in_flight is not None:
                        in_flight.result()
                    in_flight = background.submit(_store, store, kind, valid, summary, None)
                if writer is not None:
                    writer.write(rejects, chunk.frame, chunk.row_numbers)
                summary.rejected += len(rejects)
                if len(summary.reject_samples) < 20:
                    summary.reject_samples.extend(
                        rejects.head(20 - len(summary.reject_samples)).to_dict("records")
                    )
                progress.update(chunk.bytes_read or len(chunk.frame))
                if strict and len(rejects):
                    raise StrictImportFailed(
                        f"line {rejects.iloc[0]['row']}: {rejects.iloc[0]['reason']}"
                    )
            if in_flight is not None:
                in_flight.result()
    except StrictImportFailed:
        summary.strict_failed = True
        summary.inserted = summary.updated = summary.duplicates = 0
    finally:
        if background is not None:
            background.shutdown(wait=True)
        progress.close()
        if writer is not None:
            writer.close()
            if writer.path.exists():
                summary.rejects_path = writer.path
    summary.seconds = time.perf_counter() - started
    return summary


def _validate(
    settings: Settings, kind: Kind, chunk: Chunk
) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """The chunk's canonical valid rows (None when it has none) and its rejects."""
    malformed = pd.DataFrame(
        [(line, "", reason) for line, reason in chunk.malformed], columns=["row", "field", "reason"]
    )
    if len(chunk.frame) == 0:
        return None, malformed
    if kind == "events":
        checked: ValidatedEvents | ValidatedItems = validate_events(
            chunk.frame, event_types=settings.event_types, row_numbers=chunk.row_numbers
        )
    else:
        checked = validate_items(chunk.frame, row_numbers=chunk.row_numbers)
    rejects = (
        pd.concat([malformed, checked.rejects], ignore_index=True)
        if len(malformed)
        else checked.rejects
    )
    return checked.valid, rejects


def _store(
    store: Store,
    kind: Kind,
    valid: pd.DataFrame | None,
    summary: ImportSummary,
    conn: Connection | None,
) -> None:
    """Write valid rows in ``conn``, or in a transaction of their own, and count them."""
    if valid is None:
        return
    context: AbstractContextManager[Connection] = (
        nullcontext(conn) if conn is not None else store.transaction()
    )
    with context as active:
        if kind == "events":
            result: InsertResult = insert_events(active, valid)
            summary.inserted += result.inserted
            summary.duplicates += result.duplicates
        else:
            inserted, updated = upsert_items(active, valid)
            summary.inserted += inserted
            summary.updated += updated


def frame_chunks(frames: Iterable[pd.DataFrame]) -> Iterator[Chunk]:
    """Wrap in-memory frames (dataset adapters, the demo world) as import chunks."""
    first = 1
    for frame in frames:
        frame = frame.reset_index(drop=True)
        yield Chunk(frame, np.arange(first, first + len(frame)), bytes_read=len(frame))
        first += len(frame)


def import_frames(
    store: Store,
    settings: Settings,
    items: pd.DataFrame,
    events: pd.DataFrame | Iterable[pd.DataFrame],
    *,
    chunk_rows: int | None = None,
) -> tuple[ImportSummary, ImportSummary]:
    """Import an in-memory catalogue and event frames (dataset adapters, the demo world)."""
    chunk_rows = chunk_rows or settings.import_chunk_rows
    item_summary = import_chunks(
        store, settings, "items", frame_chunks(_split(items, chunk_rows)), rejects_path=None
    )
    frames = _split(events, chunk_rows) if isinstance(events, pd.DataFrame) else events
    event_summary = import_chunks(
        store,
        settings,
        "events",
        frame_chunks(frames),
        rejects_path=default_rejects_path(settings, Path("events")),
    )
    return item_summary, event_summary


def _split(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows]
