"""Several serving processes on one port: a supervisor that gives each worker a listening
socket of its own (SO_REUSEPORT), restarts a worker that dies or hangs, and stops them all
on SIGINT or SIGTERM.

The supervisor keeps its own copy of every worker's socket for the life of the service and
hands the same socket to the worker that replaces a dead one. A socket closed with its
worker would reset every connection already queued on it: the kernel completes handshakes
for a dying process until its files are closed, which comes after its memory is torn down.
Kept open, those connections wait for the replacement instead of failing.

Why not one socket shared by every worker (uvicorn's own ``workers=N``): every idle worker
wakes for a new connection and the first to run takes it, together with whatever else is
queued. A burst of keep-alive connections (a load balancer's pool, 32 benchmark clients)
then lands on one worker for good: measured on 2 cores, a second worker added 4 % to the
feeds per second while one core idled. With a socket per worker the kernel spreads new
connections evenly across the workers' sockets.

The workers are uvicorn's own (``uvicorn.supervisors.multiprocess.Process``: a spawned
interpreter running ``uvicorn.Server`` on the sockets it is given, answering the
supervisor's health pings on a pipe); uvicorn is pinned, and this module relies on it.
"""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import threading
import time
from multiprocessing.connection import wait
from types import FrameType

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Process

# uvicorn's logger: its configuration prints it, in the format of the workers' lines.
log = logging.getLogger("uvicorn.error")

# How long a new worker may take to answer its first ping. A worker answers pings from a
# thread it starts once its interpreter is up and has imported uvicorn; before that (a few
# hundred milliseconds idle, seconds on a loaded host) it cannot. Held to the health-check
# timeout, a worker started on a busy host was killed before it could answer, and so was
# each replacement: 8 kills in a row within a 2 s timeout while two CPU-bound jobs ran on
# 2 cores.
WORKER_START_SECONDS = 60.0


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket bound to ``host:port`` that other sockets may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says TCP (proto 0 left Nagle on: 40 ms per answer on loopback).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class WorkerSupervisor:
    """Runs ``workers`` copies of the app in ``config`` on ``config.host:config.port``.

    Death and hangs are told apart. A worker that exits is seen at once, by its process
    sentinel, and replaced. A worker that lives but stops answering health pings for
    ``config.timeout_worker_healthcheck`` seconds is killed and replaced. Pings are sent and
    read without blocking: uvicorn's own ``Process.is_alive`` waits for the answer, and a
    worker that was killed but had not finished exiting when it was asked (a few hundred
    MiB to unmap) held the supervisor in that wait for the whole health-check timeout,
    while the connections queued on its socket waited for a replacement that was not
    being started.
    """

    def __init__(self, config: Config, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.config = config
        self.count = workers
        self.workers: list[Process] = []
        self.sockets: list[socket.socket] = []  # one per worker slot, kept across restarts
        # When each slot's outstanding ping was sent (None: no ping outstanding), and
        # whether its worker has answered one yet (see WORKER_START_SECONDS).
        self.ping_sent_at: list[float | None] = []
        self.answered: list[bool] = []
        self.should_exit = threading.Event()
        self.failed = False

    def _open_slot(self) -> socket.socket:
        sock = listening_socket(self.config.host, self.config.port, self.config.backlog)
        if self.config.port == 0:  # the first socket chose the port: the others share it
            self.config.port = int(sock.getsockname()[1])
        self.sockets.append(sock)
        return sock

    def _start_worker(self, sock: socket.socket) -> Process:
        process = Process(self.config, [sock])
        process.start()
        return process

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping every worker", signal.Signals(signum).name)
        self.should_exit.set()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM; then every worker finishes the requests it holds
        (uvicorn's graceful shutdown) and exits, and so does this."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for _ in range(self.count):
                self.workers.append(self._start_worker(self._open_slot()))
                self.ping_sent_at.append(None)
                self.answered.append(False)
            log.info(
                "serving on http://%s:%d with %d workers",
                self.config.host,
                self.config.port,
                self.count,
            )
            while not self.should_exit.is_set():
                # Wakes the moment a worker exits; the timeout paces the health pings.
                exited = wait([worker.process.sentinel for worker in self.workers], timeout=0.5)
                if self.should_exit.is_set():
                    break
                for position, worker in enumerate(self.workers):
                    if worker.process.sentinel in exited:
                        self._replace(position, hung=False)
                    elif self._unresponsive(position):
                        self._replace(position, hung=True)
                    if self.should_exit.is_set():
                        break
        finally:
            for worker in self.workers:
                worker.terminate()
            for worker in self.workers:
                worker.join()
            for sock in self.sockets:
                sock.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _unresponsive(self, position: int) -> bool:
        """Sends a ping when none is outstanding, reads the answer when it has come, and
        says whether the outstanding one is older than the health-check timeout (than
        ``WORKER_START_SECONDS``, if longer, before the worker's first answer)."""
        connection = self.workers[position].parent_conn
        sent_at = self.ping_sent_at[position]
        try:
            if sent_at is not None and connection.poll():
                connection.recv()  # the worker's "started" flag: an answer is all we need
                sent_at = None
                self.answered[position] = True
            if sent_at is None:
                connection.send(b"ping")
                sent_at = time.monotonic()
        except (OSError, EOFError, pickle.UnpicklingError):
            return True
        self.ping_sent_at[position] = sent_at
        timeout: float = self.config.timeout_worker_healthcheck
        if not self.answered[position]:
            timeout = max(timeout, WORKER_START_SECONDS)
        return time.monotonic() - sent_at > timeout

    def _replace(self, position: int, *, hung: bool) -> None:
        worker = self.workers[position]
        worker.kill()  # a hung worker must go; for one that exited this only closes pipes
        worker.join()
        if worker.exitcode == STARTUP_FAILURE:
            # It failed before serving (the app, the store or the index is broken):
            # every replacement would fail the same way.
            log.error("worker %s failed to start; stopping the service", worker.pid)
            self.failed = True
            self.should_exit.set()
            return
        log.warning(
            "worker %s %s (code %s); starting another",
            worker.pid,
            "stopped answering health checks and was killed" if hung else "exited",
            worker.exitcode,
        )
        self.workers[position] = self._start_worker(self.sockets[position])
        self.ping_sent_at[position] = None
        self.answered[position] = False
