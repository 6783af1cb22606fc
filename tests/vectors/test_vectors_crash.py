"""kill -9 a builder at every stage: the previous version keeps serving, leftovers go away."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vectors_testdata import Items, brute_recommend, brute_search, make_items, make_users

import recsys
from recsys.vectors import ItemFilter, VectorStore
from recsys.vectors.edge import EdgeStore

CHILD = Path(__file__).with_name("crash_child.py")
DIMS = {"als": 32, "content": 8}  # as in crash_child.py
N_ITEMS = 2000

# Where each child dies, and whether its version is complete (but not live) afterwards.
STAGE_KILLS = {
    "upsert:3": False,  # mid-upsert
    "optimize": False,  # mid-optimize
    "rename": False,  # data flushed and marker written, directory not yet renamed
    "committed": True,  # renamed: complete, pointer untouched
    "switch": True,  # pointer temp file written, not yet renamed over CURRENT
}
# Versions killed at a stage are never queried, so they can be small, except that the
# optimizer must still be running when its killer strikes.
STAGE_KILL_ITEMS = {"optimize": 4000}
STAGE_KILL_DEFAULT_ITEMS = 1000


def version_name(kill_at: str) -> str:
    return "crash-" + kill_at.replace(":", "-")


def seed_of(version: str) -> int:
    return sum(map(ord, version))


def spawn(root: Path, version: str, kill_at: str, n_items: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    package_root = str(Path(recsys.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    args = [str(root), version, str(seed_of(version)), str(n_items), kill_at]
    return subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stderr=subprocess.PIPE)


def build_in_process(store: VectorStore, version: str) -> Items:
    items = make_items(N_ITEMS, seed_of(version), DIMS)
    users = make_users(50, seed_of(version), DIMS)
    with store.begin(version, DIMS) as build:
        build.upsert_items(items.ids, items.vectors, items.payloads, batch_size=1000)
        build.upsert_users(users.ids, users.vectors)
    return items


def answers(store: VectorStore) -> list[list[str]]:
    """A few queries through the live version: ids in order."""
    filters = ItemFilter(categories=["cat-1", "cat-2", "cat-3"], tags=["tag-0", "tag-5"])
    with store.open_live() as index:
        query = index.get_user_vector("user-0001", "als")
        assert query is not None
        return [
            [h.item_id for h in index.search("als", query, 10, exact=True)],
            [h.item_id for h in index.search("als", query, 10, filters, exact=True)],
            [h.item_id for h in index.recommend("content", ["item-00007"], ["item-00100"], 10)],
        ]


def expected_answers(version: str) -> list[list[str]]:
    items = make_items(N_ITEMS, seed_of(version), DIMS)
    query = make_users(50, seed_of(version), DIMS).vectors["als"][1]
    filters = ItemFilter(categories=["cat-1", "cat-2", "cat-3"], tags=["tag-0", "tag-5"])
    return [
        [i for i, _ in brute_search(items, "als", query, 10)],
        [i for i, _ in brute_search(items, "als", query, 10, filters)],
        [i for i, _ in brute_recommend(items, "content", ["item-00007"], ["item-00100"], 10)],
    ]


def progress(root: Path, version: str) -> list[str]:
    path = root.parent / f"{version}.progress"
    return path.read_text().split() if path.exists() else []


@pytest.mark.slow
def test_kill_9_at_every_stage_leaves_the_live_version_serving(tmp_path: Path) -> None:
    root = tmp_path / "vectors"
    store = EdgeStore(root, keep=1)
    build_in_process(store, "v1")
    store.activate("v1")
    before = answers(store)
    assert before == expected_answers("v1")

    # Builders of new versions, each killed at its own stage, all at once.
    children = {
        kill_at: spawn(
            root,
            version_name(kill_at),
            kill_at,
            STAGE_KILL_ITEMS.get(kill_at, STAGE_KILL_DEFAULT_ITEMS),
        )
        for kill_at in STAGE_KILLS
    }
    for kill_at, child in children.items():
        _, stderr = child.communicate(timeout=180)
        assert child.returncode == -signal.SIGKILL, (kill_at, stderr.decode()[-2000:])
        stages = progress(root, version_name(kill_at))
        stage, _, count = kill_at.partition(":")
        assert stages[-1] == stage, (kill_at, stages)  # died where it was told to
        assert stages.count(stage) == int(count or 1), (kill_at, stages)

    assert store.live_version() == "v1"
    assert answers(store) == before
    complete = {v.version for v in store.list_versions()}
    assert complete == {"v1"} | {version_name(k) for k, done in STAGE_KILLS.items() if done}
    leftovers = [p.name for p in root.iterdir() if p.name.endswith((".partial", ".tmp"))]
    # The half-built versions, unless a sibling's begin() came after their builder died and
    # removed them already (begin() clears the leftovers of dead builders), and the pointer
    # temp file of the builder killed while switching, which dies last.
    unfinished = {version_name(k) + ".partial" for k, done in STAGE_KILLS.items() if not done}
    partials = {name for name in leftovers if name.endswith(".partial")}
    assert partials <= unfinished, leftovers
    assert len([name for name in leftovers if name.startswith("CURRENT.")]) == 1, leftovers
    assert len(leftovers) == len(partials) + 1, leftovers

    # One more builder, killed from outside at a random moment of its build-and-activate.
    seed = int(os.environ.get("RECSYS_TEST_KILL_SEED", time.time_ns() % 10**6))
    delay = random.Random(seed).uniform(0.3, 2.5)
    child = spawn(root, "crash-random", "never", N_ITEMS)
    time.sleep(delay)
    child.kill()
    _, stderr = child.communicate(timeout=180)
    context = f"RECSYS_TEST_KILL_SEED={seed} delay={delay:.2f}s {progress(root, 'crash-random')}"
    assert child.returncode in (0, -signal.SIGKILL), (context, stderr.decode()[-2000:])
    live = store.live_version()
    assert live in ("v1", "crash-random"), context
    assert answers(store) == expected_answers(live), context

    # The next build and switch succeed; beginning it removed the leftovers.
    build_in_process(store, "v2")
    assert not [p for p in root.iterdir() if p.name.endswith((".partial", ".tmp", ".deleting"))]
    store.activate("v2")
    assert answers(store) == expected_answers("v2")
    # Cleanup keeps the newest version (keep=1) and removes the rest.
    store.cleanup()
    assert sorted(p.name for p in root.iterdir()) == [".store.lock", "CURRENT", "v2"]
    assert [v.version for v in store.list_versions()] == ["v2"]
