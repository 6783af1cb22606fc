"""The real service in its own process, for the reliability tests (and the soak benchmark).

``start_service`` runs ``recsys.api.serve`` (one worker unless told) on a free loopback port
with the given environment, waits until ``/readyz`` answers 200 and returns a handle; the
server's output goes to a log file, never to a pipe that could fill up and stall it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from recsys.vectors.edge_files import copy_sparse

REPO = Path(__file__).resolve().parents[2]

# Distinctive strings, so a leak into a log is easy to find.
READ_KEY = "rk-reliability-3c1f0b7d9e2a4c6b8d0f"
WRITE_KEY = "wk-reliability-8a6e4c2b0d9f7e5c3a1b"
API_KEYS = f"{READ_KEY}:read,{WRITE_KEY}:write"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any RECSYS_ setting, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


@dataclass
class Service:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def start_service(
    home: Path,
    workdir: Path,
    *,
    database_url: str | None = None,
    api_keys: str = API_KEYS,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180.0,
    log_level: str = "warning",
    workers: int = 1,
) -> Service:
    """``recsys.api.serve`` on 127.0.0.1 over ``home`` (and ``database_url`` if given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {"RECSYS_HOME": str(home), "RECSYS_API_KEYS": api_keys, **(env or {})}
    if database_url:
        settings["RECSYS_DATABASE_URL"] = database_url
    log = workdir / f"service-{port}.log"
    code = (
        "from recsys.api import serve; "
        f"serve(host='127.0.0.1', port={port}, log_level={log_level!r}, workers={workers})"
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=workdir,  # no stray .env file
            env=clean_env(**settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = Service(f"http://127.0.0.1:{port}", process, log)
    wait_ready(service, ready_timeout)
    return service


def wait_ready(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{service.base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not service.alive() or time.monotonic() > deadline:
            stop_service(service)
            raise RuntimeError(f"the service did not become ready:\n{service.output()[-4000:]}")
        time.sleep(0.2)


def stop_service(service: Service, timeout: float = 30.0) -> None:
    if service.alive():
        service.process.send_signal(signal.SIGINT)
        try:
            service.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def child_pids(pid: int) -> list[int]:
    """The living (not zombie) processes whose parent is ``pid``, from ``/proc``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return sorted(children)


def worker_pids(supervisor_pid: int) -> list[int]:
    """A supervisor's worker processes (not multiprocessing's resource tracker), sorted."""
    pids = []
    for pid in child_pids(supervisor_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def copy_home(template: Path, home: Path) -> Path:
    shutil.copytree(template, home, copy_function=copy_sparse)
    return home
