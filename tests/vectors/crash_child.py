"""Build and activate one Edge version, killing this process with SIGKILL at a named stage.

Usage: crash_child.py ROOT VERSION SEED N_ITEMS KILL_AT

KILL_AT is a stage from ``recsys.vectors.STAGES``, optionally with a count (``upsert:3`` dies
at the third upsert batch), ``optimize`` (dies while the HNSW index is being built) or
``never`` (to be killed from outside). Every stage reached is appended to
``ROOT/../VERSION.progress`` before the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from vectors_testdata import make_items, make_users

from recsys.vectors import set_stage_hook
from recsys.vectors.edge import EdgeStore

DIMS = {"als": 32, "content": 8}
BATCH = 250
# How long after optimize() starts the killer strikes: far shorter than building the graph
# over 4000 items takes (0.9-2.3 s measured on a loaded 2-core machine), so a fast idle
# machine cannot finish first either; a shell needs a few ms just to start.
MID_OPTIMIZE_DELAY_S = 0.05


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    root, version, seed, n_items, kill_at = sys.argv[1:6]
    target, _, count = kill_at.partition(":")
    remaining = int(count or 1)
    progress = open(Path(root).parent / f"{version}.progress", "a", buffering=1)  # noqa: SIM115

    def hook(stage: str) -> None:
        nonlocal remaining
        progress.write(stage + "\n")
        if target == "optimize" and stage == "mark-complete":
            time.sleep(60)  # the optimizer beat the killer: wait for it rather than go on
        if stage != target:
            return
        remaining -= 1
        if remaining > 0:
            return
        if stage == "optimize":
            # Die in the middle of optimize(). It holds the GIL, so the killer must be
            # another process.
            subprocess.Popen(
                ["/bin/sh", "-c", f"sleep {MID_OPTIMIZE_DELAY_S}; kill -KILL {os.getpid()}"]
            )
        else:
            die()

    set_stage_hook(hook)
    # A tiny indexing threshold makes optimize() build a real HNSW graph, which takes a while.
    store = EdgeStore(root, indexing_threshold_kb=1 if target == "optimize" else None)
    items = make_items(int(n_items), int(seed), DIMS)
    users = make_users(50, int(seed), DIMS)
    with store.begin(version, DIMS) as build:
        build.upsert_items(items.ids, items.vectors, items.payloads, batch_size=BATCH)
        build.upsert_users(users.ids, users.vectors)
    store.activate(version)
    progress.write("done\n")


if __name__ == "__main__":
    main()
