"""The nightly job in a process of its own that SIGKILLs itself at a named point.

    python train_child.py POINT     # one run
    python train_child.py --fork    # a fork server: one run per POINT line on stdin

Settings come from the environment (``RECSYS_HOME`` ...). POINT is one of

* ``read``: after the first chunk of events was read, with the cursor still open;
* ``gate``: as the quality gate starts;
* ``fit``: between fits (ALS fitted, LightFM about to start);
* ``save``: halfway through writing the artifacts (ALS saved, the rest not);
* a publish stage of ``recsys.vectors.versions.STAGES`` (``begin``, ``upsert``, ...,
  ``switch``, ``switched``): at that point of building and switching the vector version;
* ``cleanup``: after the switch, before old versions are removed and the run is recorded;
* ``none``: no kill (the test may still kill the process from outside, at a random time).

On success the version published is printed on stdout.

The fork server imports the libraries once and forks a fresh process for every run, so a
run costs its training and not a second or more of imports. For each POINT read it writes
``pid <PID>`` when the run starts (the caller may SIGKILL that process itself), the run
writes ``version <VERSION>`` if it publishes, and the server writes ``exit <PID> <CODE>``
when it ends: the exit status, or minus the number of the signal that killed it.
Nothing of the training (no thread pool, no database connection, no shard) exists in the
server when it forks: only imported modules.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TRAIN_POINTS = ("read", "gate", "fit", "save", "cleanup")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    from pipelines import train as job
    from recsys.vectors import versions

    if point == "read":
        real_iter = job.iter_events

        def iter_events(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for chunk in real_iter(*args, **kwargs):
                yield chunk
                die()

        job.iter_events = iter_events  # type: ignore[assignment]
    elif point in ("gate", "fit", "cleanup"):
        target = {"gate": "gate", "fit": "hybrid", "cleanup": "cleanup"}[point]
        real_stage = job.Stages.stage

        @contextmanager
        def stage(self: Any, name: str) -> Iterator[None]:
            if name == target:
                die()
            with real_stage(self, name):
                yield

        job.Stages.stage = stage  # type: ignore[method-assign]
    elif point == "save":
        from recsys.models.hybrid import HybridModel

        def save(self: Any, directory: Any) -> Any:
            die()

        HybridModel.save = save  # type: ignore[method-assign]
    elif point in versions.STAGES:

        def hook(name: str) -> None:
            if name == point:
                die()

        versions.set_stage_hook(hook)
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")


def run(point: str) -> str:
    arm(point)
    from pipelines.train import train
    from recsys.config import Settings
    from recsys.store import open_store

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return train(open_store(settings), settings).version


def preload() -> None:
    """Import what a run imports lazily, so that forked runs start warm."""
    import alembic.command
    import alembic.runtime.migration
    import alembic.script
    import implicit.als
    import implicit.bpr
    import implicit.gpu
    import lightfm
    import qdrant_edge
    import sklearn.decomposition
    import sklearn.feature_extraction.text

    import pipelines.train
    import recsys.store.runs
    import recsys.vectors.edge

    del alembic, implicit, lightfm, qdrant_edge, sklearn, pipelines, recsys


def fork_server() -> None:
    preload()
    for line in sys.stdin:
        point = line.strip()
        if not point:
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                print(f"version {run(point)}", flush=True)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--fork":
        fork_server()
    else:
        print(run(sys.argv[1]), flush=True)
