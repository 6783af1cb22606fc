"""Event import throughput: the full ``recsys import events`` pipeline against the bare driver.

Generates a realistic events CSV, then for each store measures, each in its own child
process (so peak RSS is the importing process's own high-water mark):

* pipeline import   ``import_file(...)`` of the CSV into an empty store
* pipeline re-import the same file again (every row a duplicate)
* bare import       the same canonical rows through the driver alone: sqlite3 ``executemany``
                    of prepared tuples, or psycopg ``COPY`` straight into ``events``
* bare re-import    the same rows again: the same ``executemany`` (SQLite), or ``COPY`` into
                    a temp table then ``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL)

Bare timings cover only the driver calls and commits; preparing the tuples is not timed,
and bare paths do not maintain the ``users`` table. A quarter-size import shows whether
memory stays flat as the file grows. ``--profile`` adds a per-phase breakdown of one
pipeline import per store (timing wrappers, no profiler overhead) and a cProfile listing.

    python benchmarks/bench_import.py                      # 1M events, SQLite + PostgreSQL
    python benchmarks/bench_import.py --quick              # 100k events, one run
    python benchmarks/bench_import.py --stores sqlite --repeat 1 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe_machine, load_average

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GOAL_EVENTS_PER_SECOND = 50_000
EVENT_COLUMNS = ("event_id", "user_id", "item_id", "type", "timestamp", "dwell_seconds", "value")
INSERT_COLUMNS = (*EVENT_COLUMNS, "ingested_at")
QUOTED_COLUMNS = ", ".join(f'"{c}"' for c in INSERT_COLUMNS)


# --- data ------------------------------------------------------------------------------


def generate_events(
    n: int, *, users: int, items: int, invalid_rate: float, seed: int
) -> Any:  # -> pd.DataFrame
    """An interaction log shaped like a real one, built with vectorized numpy.

    Heavy-tailed user activity (lognormal) and item popularity (Zipf, s=0.9), a mix of
    event types with their payloads, integer unix timestamps over 90 days in time order,
    and a small share of the mistakes real exports contain.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    user_weight = rng.lognormal(0.0, 1.0, users)
    user_idx = rng.choice(users, size=n, p=user_weight / user_weight.sum())
    item_weight = 1.0 / np.arange(1, items + 1) ** 0.9
    item_idx = rng.permutation(items)[rng.choice(items, size=n, p=item_weight / item_weight.sum())]

    kinds = np.array(["view", "skip", "like", "play", "rating"], dtype=object)
    kind_idx = rng.choice(len(kinds), size=n, p=[0.50, 0.25, 0.10, 0.10, 0.05])
    event_type = kinds[kind_idx]

    start = 1_735_689_600  # 2025-01-01T00:00:00Z
    timestamp = np.sort(start + rng.integers(0, 90 * 86_400, size=n))

    dwell = np.full(n, np.nan)
    view = kind_idx == 0
    dwell[view] = np.round(rng.lognormal(3.0, 1.0, int(view.sum())), 1)
    skip_dwell = (kind_idx == 1) & (rng.random(n) < 0.5)
    dwell[skip_dwell] = np.round(rng.uniform(0.2, 5.0, int(skip_dwell.sum())), 1)

    value = np.full(n, np.nan)
    play = kind_idx == 3
    value[play] = rng.geometric(0.4, int(play.sum()))
    rating = kind_idx == 4
    value[rating] = rng.integers(1, 6, int(rating.sum()))

    # Format each distinct id once; rows pick theirs by fancy indexing.
    user_labels = np.array([f"u{i:07d}" for i in range(users)], dtype=object)
    item_labels = np.array([f"i{i:06d}" for i in range(items)], dtype=object)
    frame = pd.DataFrame(
        {
            "user_id": user_labels[user_idx],
            "item_id": item_labels[item_idx],
            "type": event_type,
            "timestamp": timestamp.astype(np.int64),
            "dwell_seconds": dwell,
            "value": pd.array(value, dtype="Float64").astype("Int64"),
        }
    )
    bad = np.flatnonzero(rng.random(n) < invalid_rate)
    if len(bad):
        # Missing user, an event type nobody configured, and millisecond timestamps.
        frame["timestamp"] = frame["timestamp"].astype(object)
        which = rng.integers(0, 3, len(bad))
        frame.loc[bad[which == 0], "user_id"] = None
        frame.loc[bad[which == 1], "type"] = "click"
        frame.loc[bad[which == 2], "timestamp"] = frame.loc[bad[which == 2], "timestamp"] * 1000
    return frame


def write_canonical(csv_path: Path, out: Path, chunk_rows: int) -> int:
    """The rows the pipeline would store, in canonical form, for the bare baseline."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.ingest import read_chunks
    from recsys.config import BUILTIN_EVENT_TYPES
    from recsys.events import validate_events

    schema = pa.schema(
        [(c, pa.string()) for c in EVENT_COLUMNS[:4]]
        + [(c, pa.float64()) for c in EVENT_COLUMNS[4:]]
    )
    total = 0
    with pq.ParquetWriter(out, schema) as writer:
        for chunk in read_chunks(csv_path, chunk_rows):
            valid = validate_events(chunk.frame, event_types=BUILTIN_EVENT_TYPES).valid
            table = pa.Table.from_pandas(valid[list(EVENT_COLUMNS)], preserve_index=False)
            writer.write_table(table.cast(schema))
            total += len(valid)
    return total


# --- stores ----------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_pg_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextlib.contextmanager
def fresh_store(kind: str, workdir: Path, postgres_url: str) -> Iterator[str]:
    """A migrated, empty store; yields its SQLAlchemy URL and removes it afterwards."""
    from recsys.store import Store
    from recsys.store.engine import make_engine

    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="store-", dir=workdir))
        url = f"sqlite:///{folder / 'recsys.db'}"
        try:
            _migrate(Store(make_engine(url, pooled=False)))
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return

    import psycopg

    schema = f"bench_import_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    try:
        _migrate(Store(make_engine(url, pooled=False)))
        yield url
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _migrate(store: Any) -> None:
    store.ensure_schema()
    store.dispose()


def postgres_problem(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
            conn.execute("select 1")
        return None
    except Exception as exc:  # any driver or network error means "not here"
        return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


def postgres_settings(url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        version = conn.execute("show server_version").fetchone()
        shown = []
        for name in ("synchronous_commit", "fsync", "shared_buffers", "max_wal_size"):
            row = conn.execute(f"show {name}").fetchone()
            shown.append(f"{name}={row[0] if row else '?'}")
    return f"PostgreSQL {version[0] if version else '?'} ({', '.join(shown)})"


# --- child processes -------------------------------------------------------------------


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    """Resident memory now (Linux); elsewhere the high-water mark so far."""
    return _proc_status("VmRSS") or _max_rss_bytes()


def _max_rss_bytes() -> int:
    """This process's RSS high-water mark.

    VmHWM first: on Linux ``ru_maxrss`` survives ``exec`` and would report the parent's
    high-water mark for a freshly started child.
    """
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backend_cpu_seconds(pid: int) -> float | None:
    """CPU time of a PostgreSQL backend, when the server runs on this machine."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerCpu:
    """CPU seconds spent by the PostgreSQL backends serving this process (local server only)."""

    def __init__(self) -> None:
        self.baseline: dict[int, float] = {}
        self.running = False
        self.unknown = False

    def see(self, pid: int) -> None:
        if pid in self.baseline:
            return
        # Connections opened before start() are measured from start().
        cpu = _backend_cpu_seconds(pid) if self.running else 0.0
        if cpu is None:
            self.unknown = True
        else:
            self.baseline[pid] = cpu

    def start(self) -> None:
        self.running = True
        for pid in self.baseline:
            cpu = _backend_cpu_seconds(pid)
            if cpu is None:
                self.unknown = True
            else:
                self.baseline[pid] = cpu

    def seconds(self) -> float | None:
        if self.unknown or not self.baseline:
            return None
        total = 0.0
        for pid, before in self.baseline.items():
            now = _backend_cpu_seconds(pid)
            if now is None:
                return None
            total += now - before
        return total


def worker_pipeline(job: dict[str, Any]) -> dict[str, Any]:
    from sqlalchemy import event

    from pipelines.ingest import import_file
    from recsys.config import Settings
    from recsys.store import Store
    from recsys.store.engine import make_engine

    settings = Settings(home=Path(job["home"]), _env_file=None)  # type: ignore[call-arg]
    store = Store(make_engine(job["url"]))
    server = ServerCpu()
    if store.dialect == "postgresql":

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            server.see(dbapi_connection.info.backend_pid)

        event.listen(store.engine, "connect", on_connect)
    store.ensure_schema()  # a no-op check once migrated; kept out of the timing
    rss_start = _rss_bytes()
    server.start()
    cpu_start = _cpu_seconds()
    started = time.perf_counter()
    summary = import_file(store, settings, "events", Path(job["csv"]), chunk_rows=job["chunk_rows"])
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_start
    server_cpu = server.seconds()
    store.dispose()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "server_cpu": server_cpu,
        "rows": summary.rows,
        "inserted": summary.inserted,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "rss_start": rss_start,
        "rss_peak": _max_rss_bytes(),
    }


def _tuples(frame: Any, ingested_at: float) -> list[tuple[Any, ...]]:
    import itertools

    def floats(name: str) -> list[float | None]:
        return [None if math.isnan(v) else v for v in frame[name].to_numpy("float64").tolist()]

    return list(
        zip(
            frame["event_id"].tolist(),
            frame["user_id"].tolist(),
            frame["item_id"].tolist(),
            frame["type"].tolist(),
            frame["timestamp"].to_numpy("float64").tolist(),
            floats("dwell_seconds"),
            floats("value"),
            itertools.repeat(ingested_at, len(frame)),
            strict=False,
        )
    )


def worker_bare(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(job["canonical"]).iter_batches(batch_size=job["chunk_rows"])
    ingested_at = time.time()
    url: str = job["url"]
    rss_start = _rss_bytes()
    timed = cpu = 0.0
    rows = inserted = 0
    server_cpu: float | None = None

    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        # The same pragmas recsys sets on every SQLite connection.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        marks = ", ".join("?" for _ in INSERT_COLUMNS)
        sql = (
            f"INSERT INTO events ({QUOTED_COLUMNS}) VALUES ({marks}) "
            "ON CONFLICT (event_id) DO NOTHING"
        )
        for batch in batches:
            prepared = _tuples(batch.to_pandas(), ingested_at)
            started, cpu_start = time.perf_counter(), _cpu_seconds()
            cursor = conn.executemany(sql, prepared)
            conn.commit()
            timed += time.perf_counter() - started
            cpu += _cpu_seconds() - cpu_start
            rows += len(prepared)
            inserted += cursor.rowcount
        conn.close()
    else:
        import psycopg

        server = ServerCpu()
        with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cursor:
            server.see(conn.info.backend_pid)
            server.start()
            if job["reimport"]:
                cursor.execute(
                    "CREATE TEMP TABLE events_load "
                    "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                conn.commit()
            target = "events_load" if job["reimport"] else "events"
            for batch in batches:
                prepared = _tuples(batch.to_pandas(), ingested_at)
                started, cpu_start = time.perf_counter(), _cpu_seconds()
                with cursor.copy(f"COPY {target} ({QUOTED_COLUMNS}) FROM STDIN") as copy:
                    for row in prepared:
                        copy.write_row(row)
                if job["reimport"]:
                    cursor.execute(
                        f"INSERT INTO events ({QUOTED_COLUMNS}) SELECT {QUOTED_COLUMNS} "
                        "FROM events_load ORDER BY event_id ON CONFLICT (event_id) DO NOTHING"
                    )
                    inserted += cursor.rowcount
                else:
                    inserted += len(prepared)
                conn.commit()
                timed += time.perf_counter() - started
                cpu += _cpu_seconds() - cpu_start
                rows += len(prepared)
            server_cpu = server.seconds()
    return {
        "seconds": timed,
        "cpu": cpu,
        "server_cpu": server_cpu,
        "rows": rows,
        "inserted": inserted,
        "duplicates": rows - inserted,
        "rejected": 0,
        "rss_start": rss_start,
        "rss_peak": _max_rss_bytes(),
    }


class PhaseTimer:
    """Inclusive wall time of named functions, by wrapping them in place."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - started)

        setattr(owner, attribute, timed)

    def wrap_iterator(self, owner: Any, attribute: str, name: str) -> None:
        original: Callable[..., Iterator[Any]] = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            iterator = original(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    self._add(name, time.perf_counter() - started)
                    return
                self._add(name, time.perf_counter() - started)
                yield item

        setattr(owner, attribute, timed)

    def wrap_context(self, owner: Any, attribute: str, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, attribute)

        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            started = time.perf_counter()
            try:
                with original(*args, **kwargs) as value:
                    yield value
            finally:
                self._add(name, time.perf_counter() - started)

        setattr(owner, attribute, timed)


def _statement_timer(phases: PhaseTimer) -> None:
    """Split psycopg cursor.execute time by statement."""
    import psycopg

    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else str(query)
        words = " ".join(text.split()[:3])
        label = "INSERT..SELECT ON CONFLICT" if words.startswith("INSERT INTO events") else None
        started = time.perf_counter()
        try:
            return original(self, query, *args, **kwargs)
        finally:
            phases._add(f"pg: {label or words}", time.perf_counter() - started)

    original_many = psycopg.Cursor.executemany

    def executemany(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else str(query)
        words = " ".join(text.split()[:3])
        started = time.perf_counter()
        try:
            return original_many(self, query, *args, **kwargs)
        finally:
            phases._add(f"pg: {words}", time.perf_counter() - started)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]


# Phases in print order: (label, depth). Times are inclusive: a child is part of its parent.
PHASES = (
    ("read CSV chunks (pd.read_csv)", 0),
    ("validate_events", 0),
    ("derive_event_ids (blake2b per row)", 1),
    ("transaction (begin + body + commit)", 0),
    ("insert_events", 1),
    ("_executemany_insert", 2),
    ("_rows (frame -> tuples)", 3),
    ("_copy_insert_postgres", 2),
    ("DataFrame.to_csv", 3),
    ("COPY events_load", 3),
    ("pg: INSERT..SELECT ON CONFLICT", 3),
    ("_upsert_users", 2),
    ("pg: INSERT INTO users", 3),
    ("RejectsWriter.write", 0),
)


def worker_profile(job: dict[str, Any]) -> dict[str, Any]:
    import cProfile
    import io
    import pstats

    import pandas as pd
    import psycopg

    import pipelines.ingest as ingest
    import recsys.events as events_mod
    import recsys.store.events as store_events
    from recsys.store import Store

    phases = PhaseTimer()
    phases.wrap_iterator(ingest, "read_chunks", "read CSV chunks (pd.read_csv)")
    phases.wrap(ingest, "validate_events", "validate_events")
    phases.wrap(events_mod, "derive_event_ids", "derive_event_ids (blake2b per row)")
    phases.wrap(ingest, "insert_events", "insert_events")
    phases.wrap(store_events, "_executemany_insert", "_executemany_insert")
    phases.wrap(store_events, "_rows", "_rows (frame -> tuples)")
    phases.wrap(store_events, "_copy_insert_postgres", "_copy_insert_postgres")
    phases.wrap(store_events, "_upsert_users", "_upsert_users")
    phases.wrap(pd.DataFrame, "to_csv", "DataFrame.to_csv")
    phases.wrap_context(psycopg.Cursor, "copy", "COPY events_load")
    phases.wrap_context(Store, "transaction", "transaction (begin + body + commit)")
    phases.wrap(ingest.RejectsWriter, "write", "RejectsWriter.write")
    _statement_timer(phases)

    result = worker_pipeline(job)
    report = {"phases": dict(phases.seconds), "calls": dict(phases.calls), **result}

    if job.get("cprofile"):
        # A second import, under cProfile, into a fresh store: where the Python time goes.
        profiler = cProfile.Profile()
        profiler.enable()
        worker_pipeline({**job, "url": job["url_cprofile"]})
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(18)
        report["cprofile"] = _trim_pstats(out.getvalue())
    return report


def _trim_pstats(text: str) -> str:
    keep = []
    started = False
    for line in text.splitlines():
        if "ncalls" in line:
            started = True
        if started and line.strip():
            keep.append(line.replace(str(Path.cwd()) + os.sep, ""))
    return "\n".join(keep)


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{job['mode']} worker failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- reporting -------------------------------------------------------------------------


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else math.inf


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [_rate(r["rows"], r["seconds"]) for r in runs]
    return {
        "rows": runs[0]["rows"],
        "inserted": runs[0]["inserted"],
        "duplicates": runs[0]["duplicates"],
        "rejected": runs[0]["rejected"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "server_cpu": _median_or_none([r.get("server_cpu") for r in runs]),
        "rate": statistics.median(rates),
        "rates": rates,
        "rss_start": statistics.median(r["rss_start"] for r in runs),
        "rss_peak": statistics.median(r["rss_peak"] for r in runs),
    }


def _seconds_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = (
        f"{'store':<9}{'measurement':<26}{'events/s':>10}{'wall s':>8}{'cpu s':>7}{'srv s':>7}"
        f"{'stored':>10}"
        f"{'dups':>10}{'rej':>6}  {'RSS start->peak MiB':<20}{'runs (events/s)'}"
    )
    print(header)
    print("-" * len(header))
    for store, measures in results.items():
        for name, s in measures.items():
            if name.startswith("_"):
                continue
            runs = ", ".join(f"{r:,.0f}" for r in s["rates"])
            rss = f"{_mib(s['rss_start'])} -> {_mib(s['rss_peak'])}"
            print(
                f"{store:<9}{name:<26}{s['rate']:>10,.0f}{s['seconds']:>8.2f}{s['cpu']:>7.2f}"
                f"{_seconds_or_dash(s['server_cpu']):>7}"
                f"{s['inserted']:>10,}{s['duplicates']:>10,}{s['rejected']:>6,}  "
                f"{rss:<20}{runs}"
            )
        for pipeline, bare in (
            ("pipeline import", "bare import"),
            ("pipeline re-import", "bare re-import"),
        ):
            if pipeline in measures and bare in measures:
                ratio = measures[pipeline]["rate"] / measures[bare]["rate"]
                print(f"{'':<9}{f'  {pipeline} / bare':<26}{ratio:>10.2f}x")
        print()


def print_phases(store: str, report: dict[str, Any]) -> None:
    total = report["seconds"]
    phases: dict[str, float] = report["phases"]
    print(
        f"[{store}] one pipeline import: {report['rows']:,} rows in {total:.2f} s "
        f"({_rate(report['rows'], total):,.0f} events/s, {report['cpu']:.2f} s CPU in the "
        "importing process); inclusive wall time per phase:"
    )

    def line(name: str, seconds: float, calls: int | None = None) -> None:
        share = 100 * seconds / total if total else 0.0
        count = f"  ({calls} calls)" if calls is not None else ""
        print(f"    {name:<44}{seconds:>8.2f} s {share:>5.1f}%{count}")

    for label, depth in PHASES:
        if label in phases:
            line("  " * depth + label, phases[label], report["calls"].get(label, 0))
        if label == "pg: INSERT INTO users" and "insert_events" in phases:
            children = ("_executemany_insert", "_copy_insert_postgres", "_upsert_users")
            rest = phases["insert_events"] - sum(phases.get(c, 0.0) for c in children)
            line("    (insert_events: dedupe, assign, rest)", rest)
        if label == "pg: INSERT INTO users" and "transaction (begin + body + commit)" in phases:
            rest = phases["transaction (begin + body + commit)"] - phases.get("insert_events", 0)
            line("  (begin, commit, schema check)", rest)
    top = [label for label, depth in PHASES if depth == 0]
    line("(loop, progress, bookkeeping)", total - sum(phases.get(label, 0.0) for label in top))
    if report.get("cprofile"):
        print(f"\n[{store}] cProfile of a second import (top functions by own time):")
        print(report["cprofile"])
    print()


# --- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=None, help="rows in the file (1000000)")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument(
        "--invalid-rate", type=float, default=0.001, help="share of bad rows (0.001)"
    )
    parser.add_argument("--stores", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "RECSYS_BENCH_POSTGRES_URL",
            os.environ.get("RECSYS_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        ),
        help="server to benchmark; a fresh schema is created and dropped",
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (3)")
    parser.add_argument(
        "--chunk-rows", type=int, default=None, help="rows per chunk (the setting's default)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="where files and stores go")
    parser.add_argument(
        "--no-flat-check", action="store_true", help="skip the quarter-size memory comparison"
    )
    parser.add_argument(
        "--profile", action="store_true", help="add a per-phase breakdown and a cProfile listing"
    )
    parser.add_argument("--quick", action="store_true", help="100k events, one run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 100_000 if args.quick else 1_000_000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.postgres_url = sqlalchemy_pg_url(args.postgres_url)
    return args


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "pipeline": worker_pipeline,
    "bare": worker_bare,
    "profile": worker_profile,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["mode"]](job)))
        return 0

    import numpy as np
    import pandas as pd
    import psycopg
    import sqlalchemy

    from recsys.config import Settings

    chunk_rows = args.chunk_rows or Settings(_env_file=None).import_chunk_rows  # type: ignore[call-arg]
    aliases = {"pg": "postgres", "postgresql": "postgres", "sqlite3": "sqlite"}
    stores = [aliases.get(s.strip(), s.strip()) for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - {"sqlite", "postgres"}
    if unknown:
        print(f"unknown store(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    print("== event import benchmark ==")
    print(describe_machine())
    print(
        f"libs     : numpy {np.__version__}, pandas {pd.__version__}, "
        f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
        f"sqlite {__import__('sqlite3').sqlite_version}"
    )
    if "postgres" in stores:
        problem = postgres_problem(args.postgres_url)
        if problem:
            print(f"postgres : skipped, not reachable ({problem})")
            stores.remove("postgres")
        else:
            print(f"postgres : {postgres_settings(args.postgres_url)}")

    workdir = Path(tempfile.mkdtemp(prefix="recsys-bench-import-", dir=args.workdir))
    try:
        return _run(args, stores, workdir, chunk_rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, stores: list[str], workdir: Path, chunk_rows: int) -> int:
    started = time.perf_counter()
    frame = generate_events(
        args.events,
        users=args.users,
        items=args.items,
        invalid_rate=args.invalid_rate,
        seed=args.seed,
    )
    csv_path = workdir / "events.csv"
    frame.to_csv(csv_path, index=False)
    quarter_path = workdir / "events-quarter.csv"
    frame.head(args.events // 4).to_csv(quarter_path, index=False)
    distinct_users = frame["user_id"].nunique()
    distinct_items = frame["item_id"].nunique()
    type_mix = frame["type"].value_counts(normalize=True)
    del frame
    canonical = workdir / "canonical.parquet"
    valid_rows = write_canonical(csv_path, canonical, chunk_rows)
    size = csv_path.stat().st_size
    mix = ", ".join(f"{k} {v:.0%}" for k, v in type_mix.items() if v >= 0.005)
    print(
        f"data     : {args.events:,} events ({size / 2**20:,.1f} MiB CSV), "
        f"{distinct_users:,} users, {distinct_items:,} items; {mix}; "
        f"{args.events - valid_rows:,} invalid rows"
    )
    print(
        f"run      : chunk_rows={chunk_rows:,}, median of {args.repeat} run(s), "
        f"each measurement in its own process (data prepared in "
        f"{time.perf_counter() - started:.1f} s)"
    )
    print(
        "notes    : events/s = file rows / wall s; bare = driver calls + commits only "
        "(tuples prepared untimed, no users upsert);\n"
        "           bare import on PostgreSQL is COPY straight into events, bare re-import "
        "is COPY into a temp table + INSERT ON CONFLICT;\n"
        "           RSS is the importing process (start = after imports, before the import)"
    )
    print()

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for store in stores:
        runs: dict[str, list[dict[str, Any]]] = {}
        base = {"home": str(workdir / "home"), "chunk_rows": chunk_rows}
        for _ in range(args.repeat):
            with fresh_store(store, workdir, args.postgres_url) as url:
                job = {**base, "mode": "pipeline", "url": url, "csv": str(csv_path)}
                runs.setdefault("pipeline import", []).append(run_child(job))
                runs.setdefault("pipeline re-import", []).append(run_child(job))
            with fresh_store(store, workdir, args.postgres_url) as url:
                job = {**base, "mode": "bare", "url": url, "canonical": str(canonical)}
                runs.setdefault("bare import", []).append(run_child({**job, "reimport": False}))
                runs.setdefault("bare re-import", []).append(run_child({**job, "reimport": True}))
            if not args.no_flat_check:
                with fresh_store(store, workdir, args.postgres_url) as url:
                    job = {**base, "mode": "pipeline", "url": url, "csv": str(quarter_path)}
                    runs.setdefault("pipeline import 1/4 file", []).append(run_child(job))
            print(f"  ... {store}: run done ({time.perf_counter() - started:.0f} s)", flush=True)
        results[store] = {name: summarize(r) for name, r in runs.items()}
    print()
    if results:
        print_table(results)
        _verdict(results)
    print(f"load avg : {load_average()} (1/5/15 min, after the timed runs)")
    print()

    if args.profile:
        for store in stores:
            with (
                fresh_store(store, workdir, args.postgres_url) as url,
                fresh_store(store, workdir, args.postgres_url) as url_cprofile,
            ):
                report = run_child(
                    {
                        "mode": "profile",
                        "home": str(workdir / "home"),
                        "chunk_rows": chunk_rows,
                        "url": url,
                        "url_cprofile": url_cprofile,
                        "csv": str(csv_path),
                        "cprofile": True,
                    }
                )
            print_phases(store, report)
    return 0


def _verdict(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    for store, measures in results.items():
        full = measures["pipeline import"]
        rate = full["rate"]
        met = "meets" if rate >= GOAL_EVENTS_PER_SECOND else "misses"
        line = (
            f"{store}: pipeline import {rate:,.0f} events/s {met} the "
            f"{GOAL_EVENTS_PER_SECOND:,}/s goal"
        )
        quarter = measures.get("pipeline import 1/4 file")
        if quarter:
            line += (
                f"; peak RSS {_mib(quarter['rss_peak'])} MiB importing 1/4 of the file, "
                f"{_mib(full['rss_peak'])} MiB importing all of it"
            )
        print(line)
    print()


if __name__ == "__main__":
    sys.exit(main())
