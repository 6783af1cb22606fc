"""Load generators that cost the server little CPU, and what a service process tree uses.

The machines these benchmarks run on have few cores, and the load generator shares them
with the server. ``httpx`` spends about a millisecond of CPU per request, as much as a
feed page costs the server, so the rates it measured were partly its own. Here:

* ``wrk_closed_loop``: ``wrk`` (C, from the distribution's packages) with a Lua script that
  rotates over the given paths: ``connections`` clients, each sending its next request when
  the previous answer arrives;
* ``open_loop``: requests sent on a fixed schedule whatever the answers do (a slow answer
  does not slow the offered load down), over keep-alive connections written and parsed by
  hand with asyncio streams; latency counts from the scheduled send time, so queueing
  shows.

Both report the client's own CPU beside the server's.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the service's processes ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and every living descendant (a supervisor and its workers), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree.extend(children)
        frontier = children
    return tree


def tree_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each process of the tree (all threads)."""
    out = {}
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            out[member] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def cpu_by_process(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """CPU each process of the tree used between two snapshots (a process started in
    between counts whole)."""
    return {member: seconds - before.get(member, 0.0) for member, seconds in after.items()}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the tree used between two snapshots."""
    return sum(cpu_by_process(before, after).values())


def cpu_shares(before: dict[int, float], after: dict[int, float]) -> str:
    """Each busy process's share of the tree's CPU between two snapshots, largest first: an
    uneven split between workers means the kernel gave one of them most connections."""
    used = cpu_by_process(before, after)
    total = sum(used.values()) or 1.0
    busy = sorted((seconds for seconds in used.values() if seconds / total >= 0.02), reverse=True)
    return " / ".join(f"{100 * seconds / total:.0f} %" for seconds in busy)


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def worker_pids(pid: int) -> list[int]:
    """The serving processes under a ``recsys serve`` supervisor (or the process itself
    when it serves alone): multiprocessing's resource tracker is left out."""
    workers = []
    for member in process_tree(pid)[1:]:
        try:
            cmdline = Path(f"/proc/{member}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(member)
    return workers or [pid]


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- results ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds; empty for wrk rows
    summary_ms: dict[str, float] = field(default_factory=dict)  # p50/p95/p99 when no samples
    requests: int = 0
    errors: int = 0
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    def ms(self) -> dict[str, float]:
        if self.summary_ms:
            return self.summary_ms
        from benchmarks._machine import percentiles

        return {k: v * 1e3 for k, v in percentiles(self.latencies).items()}

    def server_ms_per_request(self) -> float:
        return 1e3 * self.server_cpu / self.requests if self.requests else float("nan")


# --- wrk ------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local paths = {%(paths)s}
local headers = {["Authorization"] = "Bearer %(key)s"}
local counter = 0
function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end
function init(args)
  i = offset or 0
end
function request()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], headers)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%f %%f %%f\\n", summary.requests,
    summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk_closed_loop(
    base_url: str,
    key: str,
    paths: Sequence[str],
    *,
    connections: int,
    seconds: float,
    server_pid: int,
    threads: int = 1,
    name: str = "",
) -> LoadResult:
    """``connections`` closed-loop clients for ``seconds`` through wrk."""
    quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % {"paths": quoted, "key": key})
    try:
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = tree_cpu(server_pid)
        done = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                script.name,
                base_url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        server_cpu = cpu_between(server_before, tree_cpu(server_pid))
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(script.name)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    requests, duration_us, status_errors, socket_errors, p50, p95, p99 = line.split()[1:]
    result = LoadResult(
        name or f"closed loop, {connections} connections (wrk)",
        summary_ms={"p50": float(p50) / 1e3, "p95": float(p95) / 1e3, "p99": float(p99) / 1e3},
        requests=int(requests) - int(status_errors),
        errors=int(status_errors) + int(socket_errors),
        wall=int(duration_us) / 1e6,
        client_cpu=(children_after.ru_utime - children_before.ru_utime)
        + (children_after.ru_stime - children_before.ru_stime),
        server_cpu=server_cpu,
    )
    result.notes.append(f"{result.errors} errors")
    return result


# --- an open loop over hand-written HTTP/1.1 ------------------------------------------------------


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        """Send one request, read the whole answer; return its status."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status


def _request_bytes(host: str, path: str, key: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()


def open_loop(
    base_url: str,
    key: str,
    paths: Sequence[str],
    *,
    rate: float,
    seconds: float,
    server_pid: int,
    max_connections: int = 512,
    name: str = "",
) -> LoadResult:
    """``rate`` requests a second for ``seconds``, evenly spaced, whatever the answers do."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [_request_bytes(url.netloc, p, key) for p in paths]
    total = max(1, int(rate * seconds))
    result = LoadResult(name or f"open loop at {rate:,.0f}/s", latencies=[0.0] * total)
    statuses: list[int] = [0] * total
    peak_connections = [0]

    async def run() -> None:
        idle: list[_Connection] = []
        opened = 0
        in_flight: set[asyncio.Task[None]] = set()

        async def connect() -> _Connection | None:
            nonlocal opened
            if opened >= max_connections:
                return None
            opened += 1
            peak_connections[0] = max(peak_connections[0], opened)
            try:
                return _Connection(*await asyncio.open_connection(host, port))
            except OSError:
                opened -= 1
                raise

        async def one(n: int, scheduled: float) -> None:
            nonlocal opened
            reused = bool(idle)
            connection = idle.pop() if idle else await connect()
            for attempt in range(2):
                if connection is None:
                    statuses[n] = -1
                    return
                try:
                    statuses[n] = await connection.exchange(requests[n % len(requests)])
                    result.latencies[n] = time.perf_counter() - scheduled
                    idle.append(connection)
                    return
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    connection.writer.close()
                    opened -= 1
                    # A keep-alive connection the server closed while it sat idle (as any
                    # HTTP client does, send once more on a new one); a new one failing is
                    # an error.
                    if not reused or attempt:
                        statuses[n] = -1
                        return
                    reused = False
                    connection = await connect()

        started = time.perf_counter()
        for n in range(total):
            scheduled = started + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(n, scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        result.wall = time.perf_counter() - started
        for connection in idle:
            connection.writer.close()

    client_before = time.process_time()
    server_before = tree_cpu(server_pid)
    asyncio.run(run())
    server_after = tree_cpu(server_pid)
    result.server_cpu = cpu_between(server_before, server_after)
    result.client_cpu = time.process_time() - client_before
    ok = [status == 200 for status in statuses]
    result.latencies = [t for t, good in zip(result.latencies, ok, strict=True) if good]
    result.requests = sum(ok)
    result.errors = total - result.requests
    result.notes.append(f"{result.errors} errors of {total} sent")
    result.notes.append(
        f"{peak_connections[0]} connection(s) at most; server CPU by process "
        f"{cpu_shares(server_before, server_after)}"
    )
    return result
