"""``WorkerSupervisor`` on a minimal app: a worker that exits is replaced at once, not after
the health-check timeout; a worker that hangs is killed and replaced after it.

The service's own kill test (``test_workers.py``) covers the real app; these isolate the
supervision so that each path is checked on its own, in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.service import REPO, clean_env, free_port, worker_pids
from tests.reliability.supervised_app import START_DELAY_ENV

pytestmark = pytest.mark.slow


class Supervised:
    def __init__(
        self, workers: int, healthcheck_seconds: int, log: Path, start_delay: float = 0.0
    ) -> None:
        self.port = free_port()
        self.log = log
        env = clean_env(**({START_DELAY_ENV: str(start_delay)} if start_delay else {}))
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.supervised_app", str(self.port),
                 str(workers), str(healthcheck_seconds)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            self.workers = self.wait_for_workers(workers, previous=set(), within=60)
        except BaseException:
            # Not yet handed to the fixture that stops it: a service that never came up
            # (restarting its workers in a loop, say) must not outlive the test.
            self.stop()
            raise

    def worker_pids(self) -> set[int]:
        return set(worker_pids(self.process.pid))

    def answering(self) -> set[int]:
        """The pids that answer a burst of fresh connections."""
        pids = set()
        for _ in range(40):
            response = httpx.get(f"http://127.0.0.1:{self.port}/", timeout=10)
            pids.add(int(response.text))
        return pids

    def wait_for_workers(self, count: int, previous: set[int], within: float) -> set[int]:
        """Waits until ``count`` workers run and at least one is not in ``previous``
        (when given) and every one answers; returns their pids."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            pids = self.worker_pids()
            if len(pids) == count and (not previous or pids - previous):
                try:
                    if self.answering() == pids:
                        return pids
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        log = self.log.read_text()
        raise AssertionError(f"no {count} answering workers within {within} s: {log}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        for pid in self.worker_pids():  # a stopped worker cannot take SIGTERM
            os.kill(pid, signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[list[Supervised]]:
    started: list[Supervised] = []
    yield started
    for service in started:
        if service.process.poll() is None:
            service.stop()


def test_an_exited_worker_is_replaced_while_another_is_not_answering_its_ping(
    supervised: list[Supervised], tmp_path: Path
) -> None:
    # uvicorn's own health check blocks on each worker's answer in turn. With one worker
    # stopped, a supervisor built on it would sit in that wait for the whole timeout (far
    # above the deadline below) and leave the dead worker's socket without a process.
    service = Supervised(workers=2, healthcheck_seconds=120, log=tmp_path / "log")
    supervised.append(service)
    stalled, victim = sorted(service.workers)
    os.kill(stalled, signal.SIGSTOP)
    time.sleep(1.5)  # a ping to the stalled worker is outstanding now
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not service.worker_pids() - service.workers and time.monotonic() < deadline:
        time.sleep(0.1)
    replacement = service.worker_pids() - service.workers
    assert len(replacement) == 1, service.log.read_text()
    assert "exited (code -9); starting another" in service.log.read_text()
    # The stalled worker resumes and answers its ping in time: it is kept.
    os.kill(stalled, signal.SIGCONT)
    resumed = service.wait_for_workers(2, previous=service.workers, within=30)
    assert resumed == {stalled} | replacement


def test_a_hung_worker_is_killed_and_replaced_after_the_health_check_timeout(
    supervised: list[Supervised], tmp_path: Path
) -> None:
    service = Supervised(workers=2, healthcheck_seconds=2, log=tmp_path / "log")
    supervised.append(service)
    victim, survivor = sorted(service.workers)
    os.kill(victim, signal.SIGSTOP)  # alive, but answers nothing: not even its pings
    after = service.wait_for_workers(2, previous=service.workers, within=60)
    assert victim not in after and survivor in after
    assert not Path(f"/proc/{victim}").exists()  # killed and reaped, not left stopped
    assert "stopped answering health checks and was killed" in service.log.read_text()


def test_a_busy_worker_that_still_answers_pings_is_left_alone(
    supervised: list[Supervised], tmp_path: Path
) -> None:
    service = Supervised(workers=2, healthcheck_seconds=2, log=tmp_path / "log")
    supervised.append(service)
    time.sleep(6)  # three health-check timeouts of ordinary pings
    assert service.worker_pids() == service.workers == service.answering()
    assert "starting another" not in service.log.read_text()


def test_a_worker_slow_to_start_is_given_time_for_its_first_answer(
    supervised: list[Supervised], tmp_path: Path
) -> None:
    # Each worker needs 4 s before it can answer a ping, twice the health-check timeout (a
    # loaded host): held to the timeout from its start, every worker would be killed and
    # replaced in a loop, and none would ever serve.
    service = Supervised(workers=2, healthcheck_seconds=2, log=tmp_path / "log", start_delay=4)
    supervised.append(service)
    assert len(service.workers) == 2
    time.sleep(5)  # past the timeout again, now that they answer: kept
    assert service.worker_pids() == service.workers == service.answering()
    assert "starting another" not in service.log.read_text()
