"""kill -9 the nightly job, again and again, while the service keeps serving feeds.

A real service (uvicorn in its own process) serves a trained world; a thread asks it for
feeds in a loop for the whole module. Meanwhile training runs, each in a process of its own
(forked from a warm fork server, ``train_child.py --fork``, so that a run costs its training
and not its imports), are SIGKILLed: at named points drawn by a seeded random choice (while
reading, gating, fitting, saving, and at the stages of building and switching the vector
version) and at random times. Throughout:

* every feed answer is a 200 with items and not degraded;
* the live version is always complete (vectors and artifacts), and the service only ever
  serves versions that were live: a killed run never goes live half-written; a run killed
  before the switch leaves the previous version live, one killed after it leaves its own
  complete version live;
* the next, unkilled run succeeds, removes what the killed ones left behind and is picked
  up by the running service without a restart (hot swap).

Then the admin endpoint rolls the live model back and forward again, over HTTP. At the end:
a run killed after its switch is recorded as published (its version went live), and the
service goes back to the version it served just before when that one is activated again.

``RECSYS_TEST_CRASH_SEED`` and ``RECSYS_TEST_CRASH_TRIALS`` change the draw.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from recsys.config import Settings
from recsys.store import Store
from recsys.store.engine import make_engine
from recsys.store.runs import PUBLISHED, RUNNING, get_run, list_runs
from recsys.vectors.edge import EdgeStore
from tests.reliability.service import (
    READ_KEY,
    WRITE_KEY,
    Service,
    bearer,
    clean_env,
    copy_home,
    start_service,
    stop_service,
)

CHILD = Path(__file__).with_name("train_child.py")
SEED = int(os.environ.get("RECSYS_TEST_CRASH_SEED", "20240613"))
TRIALS = max(10, int(os.environ.get("RECSYS_TEST_CRASH_TRIALS", "10")))
TRAIN_POINTS = ["read", "gate", "fit", "save"]
PUBLISH_POINTS = [
    "begin",
    "upsert",
    "optimize",
    "mark-complete",
    "rename",
    "committed",
    "switch",
    "switched",
    "cleanup",
]
# Kills at these points come after the live pointer moved: the run's version is live.
AFTER_SWITCH = {"switched", "cleanup"}
# Smaller hybrid and content models keep each run short; ALS, which the quality gate
# compares with the live run's, keeps its defaults.
TRAIN_ENV = {
    "RECSYS_HYBRID__NO_COMPONENTS": "16",
    "RECSYS_HYBRID__EPOCHS": "3",
    "RECSYS_CONTENT__DIM": "16",
}
USERS = [f"demo-user-{n:04d}" for n in range(1, 21)] + ["crash-test-newcomer"]


def draw_trials(rng: random.Random, n: int) -> list[str]:
    """Kill points for ``n`` trials: a quarter in training proper, half in publishing, the
    rest at random times (``random``), shuffled."""
    n_train = max(2, n // 4)
    n_random = max(3, n // 4)
    n_publish = n - n_train - n_random
    points = [rng.choice(TRAIN_POINTS) for _ in range(n_train)]
    points += rng.sample(PUBLISH_POINTS, min(n_publish, len(PUBLISH_POINTS)))
    points += [rng.choice(PUBLISH_POINTS) for _ in range(n_publish - len(PUBLISH_POINTS))]
    rng.shuffle(points)
    return points + ["random"] * n_random


@dataclass
class Observation:
    at: float
    status: int
    version: str | None = None
    degraded: bool | None = None
    items: int = 0
    error: str = ""


@dataclass
class FeedWatcher:
    """Asks the service for feeds in a loop, on its own thread, and records every answer."""

    base: str
    seen: list[Observation] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="feed-watcher", daemon=True)
        self.thread.start()

    def run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.base, timeout=60, headers=bearer(READ_KEY)) as http:
            while not self.stop.is_set():
                user = USERS[n % len(USERS)]
                n += 1
                at = time.monotonic()
                try:
                    response = http.get(f"/v1/users/{user}/feed", params={"limit": 10})
                except httpx.HTTPError as exc:
                    self.seen.append(Observation(at, 0, error=f"{type(exc).__name__}: {exc}"))
                    continue
                if response.status_code != 200:
                    self.seen.append(Observation(at, response.status_code, error=response.text))
                    continue
                body = response.json()
                self.seen.append(
                    Observation(
                        at, 200, body["model_version"], body["degraded"], len(body["items"])
                    )
                )
                self.stop.wait(0.05)

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=120)

    def failures(self) -> list[Observation]:
        return [o for o in self.seen if o.status != 200 or o.degraded or o.items == 0]

    def current_version(self, timeout: float = 30.0, *, want: str | None = None) -> str | None:
        """The version of the next answers; with ``want``, wait until it is that one."""
        deadline = time.monotonic() + timeout
        mark = len(self.seen)
        while time.monotonic() < deadline:
            fresh = [o for o in self.seen[mark:] if o.status == 200]
            if fresh and (want is None or fresh[-1].version == want):
                return fresh[-1].version
            time.sleep(0.1)
        fresh = [o for o in self.seen[mark:] if o.status == 200]
        return fresh[-1].version if fresh else None


@dataclass
class Run:
    point: str
    code: int  # the exit status, or minus the signal that killed it
    version: str | None  # printed by a run that published
    seconds: float


class Trainer:
    """``train_child.py --fork``: a fresh training process per run, started warm."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.errors = workdir / "trainer.log"
        with open(self.errors, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD), "--fork"],
                env=env,
                cwd=workdir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="trainer-output", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _line(self, timeout: float) -> str:
        line = self.lines.get(timeout=max(timeout, 0.001))
        if line is None:
            raise RuntimeError(f"the trainer died:\n{self.log()}")
        return line

    def log(self) -> str:
        return self.errors.read_text(errors="replace")[-4000:]

    def run(self, point: str, kill_after: float | None = None, timeout: float = 600) -> Run:
        """One run to its end; with ``kill_after``, SIGKILLed after that many seconds
        unless it ended first."""
        assert self.process.stdin is not None
        started = time.monotonic()
        self.process.stdin.write(f"{point}\n")
        self.process.stdin.flush()
        pid = int(self._line(timeout).removeprefix("pid "))
        version: str | None = None
        killed = kill_after is None
        while True:
            now = time.monotonic()
            wait = started + timeout - now
            if not killed and kill_after is not None:
                wait = min(wait, started + kill_after - now)
            try:
                line = self._line(wait)
            except queue.Empty:
                if killed:
                    raise
                os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still the run's
                killed = True
                continue
            if line.startswith("version "):
                version = line.removeprefix("version ")
            elif line.startswith(f"exit {pid} "):
                code = int(line.rsplit(" ", 1)[1])
                return Run(point, code, version, time.monotonic() - started)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class CrashWorld:
    home: Path
    settings: Settings
    store: Store
    vectors: EdgeStore
    service: Service
    watcher: FeedWatcher
    trainer: Trainer
    # Runs killed after their version went live, and what the registry said of them after
    # the next run: it should say published.
    live_but_killed: list[str] = field(default_factory=list)
    recorded_as: dict[str, str | None] = field(default_factory=dict)

    def record_killed_runs(self) -> None:
        with self.store.read() as conn:
            for version in self.live_but_killed:
                run = get_run(conn, version)
                self.recorded_as[version] = run.status if run else None

    def live(self) -> str | None:
        return self.vectors.live_version()

    def complete(self) -> set[str]:
        """Versions whose vectors and artifacts are both complete."""
        return {
            v.version
            for v in self.vectors.list_versions()
            if (self.settings.artifacts_dir / v.version / "manifest.json").is_file()
        }

    def run_version(self) -> str | None:
        """The version of the newest run in the registry."""
        with self.store.read() as conn:
            runs = list_runs(conn, limit=1)
        return runs[0].version if runs else None


@pytest.fixture(scope="module")
def crash_world(
    world_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CrashWorld]:
    root = tmp_path_factory.mktemp("crash")
    home = copy_home(world_template, root / "home")
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    store = Store(make_engine(settings.sqlalchemy_url))
    service = start_service(home, root / "run", env=TRAIN_ENV)
    watcher = FeedWatcher(service.base)
    watcher.start()
    trainer = Trainer(clean_env(RECSYS_HOME=str(home), **TRAIN_ENV), root)
    world = CrashWorld(
        home, settings, store, EdgeStore(settings.vectors_dir), service, watcher, trainer
    )
    try:
        yield world
    finally:
        trainer.close()
        watcher.finish()
        stop_service(service)
        store.dispose()


@pytest.mark.slow
def test_kill_9_at_random_points_never_disturbs_serving(crash_world: CrashWorld) -> None:
    world = crash_world
    rng = random.Random(SEED)
    points = draw_trials(rng, TRIALS)
    first_live = world.live()
    assert first_live in world.complete()
    lives = {first_live}  # every version the pointer ever named
    publish_times: list[float] = []  # how long runs killed while publishing lived
    log: list[str] = []
    kills = 0

    def trial(point: str, kill_after: float | None = None) -> Run:
        """One run, killed at ``point`` (or after ``kill_after`` seconds), then checked."""
        before = world.live()
        before_run = world.run_version()
        run = world.trainer.run("none" if point == "random" else point, kill_after)
        newest = world.run_version()
        version = newest if newest != before_run else None
        after = world.live()
        what = f"trial {len(log)} ({point}, exit {run.code}, {run.seconds:.1f} s)"
        log.append(f"{what}: live {before} -> {after}")
        if point == "random" and run.code == 0:
            # It finished before its time came: a normal, complete run.
            assert after == run.version == version, what
        else:
            assert run.code == -signal.SIGKILL, f"{what}:\n{world.trainer.log()}"
        # The live version is complete, and it is the previous one unless the run was
        # killed after its own version had gone live.
        assert after in world.complete(), what
        if point in AFTER_SWITCH:
            assert version is not None and after == version, what
        elif point != "random":
            assert after == before, what
        else:
            assert after in (before, version), what
        if run.code != 0 and version is not None and after == version:
            world.live_but_killed.append(version)
        lives.add(after)
        # The service follows the pointer and keeps serving.
        assert world.watcher.current_version(want=after) == after, what
        assert world.service.alive(), world.service.output()[-3000:]
        assert not world.watcher.failures(), (what, world.watcher.failures()[:3])
        return run

    for point in points:
        if point != "random":
            run = trial(point)
            if point in PUBLISH_POINTS:
                publish_times.append(run.seconds)
            kills += 1
            continue
        # A random time within a whole run; one that finished first is a complete run, and
        # the next try aims shorter.
        whole = statistics.median(publish_times) if publish_times else 5.0
        for _ in range(4):
            run = trial(point, kill_after=rng.uniform(0.05, 0.9) * whole)
            if run.code != 0:
                kills += 1
                break
            whole = min(whole, run.seconds)
    assert kills >= TRIALS, log

    # The next run, not killed, succeeds and cleans up after the killed ones.
    run = world.trainer.run("none")
    assert run.code == 0 and run.version, world.trainer.log()
    version = run.version
    assert world.live() == version
    lives.add(version)
    with world.store.read() as conn:
        runs = list_runs(conn, limit=100)
        latest = get_run(conn, version)
    assert latest is not None and latest.status == PUBLISHED
    assert not [r.version for r in runs if r.status == RUNNING]
    world.record_killed_runs()
    leftovers = [
        p.name
        for directory in (world.settings.vectors_dir, world.settings.artifacts_dir)
        for p in directory.iterdir()
        if p.name.endswith((".partial", ".deleting", ".tmp"))
    ]
    assert not leftovers
    # Picked up without a restart.
    assert world.watcher.current_version(want=version) == version

    seen = list(world.watcher.seen)
    assert not world.watcher.failures(), world.watcher.failures()[:5]
    served = Counter(o.version for o in seen)
    # Only ever versions that were live, complete ones; never a killed run's partial one.
    assert set(served) <= lives, (served, lives, log)
    assert len(seen) >= 50, "the feed loop barely ran"
    print("\n".join([*log, f"feeds served: {len(seen)}, by version: {dict(served)}"]))


def assert_activated(response: httpx.Response, version: str, previous: str) -> None:
    """The admin endpoint switched to ``version`` from ``previous`` and serves it already."""
    assert response.status_code == 200, response.text
    assert response.json() == {
        "live_version": version,
        "previous_version": previous,
        "model_version": version,
    }


def served_before(world: CrashWorld) -> str | None:
    """The version the service served before its current one (None if it never swapped)."""
    versions = [o.version for o in world.watcher.seen if o.status == 200]
    changes = [v for n, v in enumerate(versions) if n == 0 or v != versions[n - 1]]
    return changes[-2] if len(changes) > 1 else None


def activate(http: httpx.Client, version: str, **headers: str) -> httpx.Response:
    return http.post(f"/v1/models/{version}/activate", headers=headers)


@pytest.mark.slow
def test_activate_rolls_the_live_model_back_and_forward(crash_world: CrashWorld) -> None:
    world = crash_world
    # Three complete versions: the live one, one to roll back to and one to go forward
    # through. The version served just before the live one is still held open by the
    # service, so it is not the first step back (see the next test).
    for _ in range(3):
        if len(world.complete()) >= 3 and world.complete() - {world.live(), served_before(world)}:
            break
        run = world.trainer.run("none")
        assert run.code == 0, world.trainer.log()
        assert world.watcher.current_version(want=run.version) == run.version
    live, previous, complete = world.live(), served_before(world), world.complete()
    assert live is not None and len(complete) >= 3 and complete - {live, previous}, complete
    back = max(complete - {live, previous})
    between = previous if previous in complete else min(complete - {live, back})
    write = bearer(WRITE_KEY)["Authorization"]
    with httpx.Client(base_url=world.service.base, timeout=60) as http:
        assert activate(http, back).status_code == 401
        refused = activate(http, back, Authorization=bearer(READ_KEY)["Authorization"])
        assert refused.status_code == 403 and refused.json()["detail"]
        assert world.live() == live

        assert_activated(activate(http, back, Authorization=write), back, previous=live)
        assert world.live() == back
        # Served by this process at once, feeds included.
        feed = http.get("/v1/users/demo-user-0003/feed", headers=bearer(READ_KEY)).json()
        assert feed["model_version"] == back and feed["items"] and not feed["degraded"]
        with world.store.read() as conn:
            run = get_run(conn, back)
        assert run is not None and run.status == PUBLISHED

        # Forward again, by way of another complete version.
        for version, previous in ((between, back), (live, between)):
            assert_activated(activate(http, version, Authorization=write), version, previous)
            assert world.live() == version
            assert world.watcher.current_version(want=version) == version

        # Activating the live version changes nothing.
        same = activate(http, live, Authorization=write)
        assert same.status_code == 200 and same.json()["previous_version"] == live

        for unknown in ("20990101T000000Z-ffffff", "%2E%2E", "CURRENT", f"{live}.partial"):
            missing = activate(http, unknown, Authorization=write)
            assert missing.status_code == 404, (unknown, missing.text)
            assert missing.headers["content-type"] == "application/json"
            assert missing.json()["detail"]
        assert world.live() == live
    assert not world.watcher.failures(), world.watcher.failures()[:3]


@pytest.mark.slow
def test_a_run_killed_after_going_live_is_recorded_as_published(
    crash_world: CrashWorld,
) -> None:
    world = crash_world
    if not world.recorded_as:
        before = world.run_version()
        run = world.trainer.run("switched")
        assert run.code == -signal.SIGKILL, world.trainer.log()
        version = world.run_version()
        assert version != before and world.live() == version
        world.live_but_killed.append(version)
        assert world.trainer.run("none").code == 0, world.trainer.log()
        world.record_killed_runs()
    assert world.recorded_as == dict.fromkeys(world.recorded_as, PUBLISHED)


@pytest.mark.slow
def test_rolling_back_to_the_version_served_just_before_is_served(
    crash_world: CrashWorld,
) -> None:
    world = crash_world
    previous = served_before(world)
    if previous is None or previous not in world.complete():
        run = world.trainer.run("none")
        assert run.code == 0, world.trainer.log()
        assert world.watcher.current_version(want=run.version) == run.version
        previous = served_before(world)
    assert previous is not None and previous != world.live()
    with httpx.Client(base_url=world.service.base, timeout=60) as http:
        rolled = activate(http, previous, **bearer(WRITE_KEY))
    assert rolled.status_code == 200, rolled.text
    assert world.live() == previous
    assert rolled.json()["model_version"] == previous
