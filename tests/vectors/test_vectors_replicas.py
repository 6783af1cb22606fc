"""Replicas: several serving processes on one machine each open a private copy of a
published Edge version, which a shard allows one process at a time to open."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_vectors_versions import build, small_items

from recsys.vectors.edge import REPLICAS_DIR, EdgeStore

# Opens the live version, answers a search, then holds it open until told to stop.
CHILD = textwrap.dedent(
    """
    import json, sys
    from recsys.vectors.edge import EdgeStore
    root, replicas = sys.argv[1], sys.argv[2] == "1"
    try:
        index = EdgeStore(root, replicas=replicas).open_live()
    except Exception as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(0)
    print(json.dumps({"count": index.count()}), flush=True)
    sys.stdin.readline()
    index.close()
    """
)


def _open_in_processes(root: Path, replicas: bool, n: int = 2) -> list[dict[str, object]]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), "1" if replicas else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    try:
        # Each child answers while holding its index open: all n are open at once.
        answers = [json.loads(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
    finally:
        for child in children:
            child.communicate("stop\n", timeout=60)
    return answers


def test_two_processes_serve_one_version_through_replicas(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    build(store, "v1", small_items(1))
    store.activate("v1")
    n_items = len(small_items(1).ids)
    answers = _open_in_processes(tmp_path, replicas=True)
    assert answers == [{"count": n_items}, {"count": n_items}]
    # Each removed its replica when it closed it.
    assert list((tmp_path / REPLICAS_DIR).iterdir()) == []
    # Without replicas the second process cannot open the shards the first holds.
    plain = _open_in_processes(tmp_path, replicas=False)
    assert {"count": n_items} in plain
    assert any("already open" in str(a.get("error", "")) for a in plain)


def test_writes_go_to_the_replica_and_the_published_version_stays(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, replicas=True)
    items = small_items(1)
    build(store, "v1", items)
    store.activate("v1")
    index = store.open_live()
    replicas = list((tmp_path / REPLICAS_DIR).iterdir())
    assert len(replicas) == 1 and replicas[0].name.startswith("v1.")
    extra = small_items(9)
    new_ids = [f"new-{i}" for i in range(3)]
    index.upsert_items(new_ids, {k: v[:3] for k, v in extra.vectors.items()}, extra.payloads[:3])
    assert index.count() == len(items.ids) + 3
    index.close()
    assert not replicas[0].exists()
    with EdgeStore(tmp_path).open_live() as published:
        assert published.count() == len(items.ids)


def test_replicas_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, replicas=True)
    build(store, "v1", small_items(1))
    build(store, "v2", small_items(2))
    store.activate("v2")
    held = store.open_version("v1")
    (live_replica,) = (tmp_path / REPLICAS_DIR).iterdir()
    # What a killed process leaves: a copy nobody holds the lock of.
    dead = tmp_path / REPLICAS_DIR / "v2.999999.1"
    (dead / "items").mkdir(parents=True)
    (dead / "items" / "segment").write_bytes(b"x" * 1000)
    other = EdgeStore(tmp_path, keep=1)  # another process's view of the same directory
    removed = other.cleanup()
    assert f"{REPLICAS_DIR}/v2.999999.1" in removed
    assert not dead.exists() and live_replica.exists()
    # v1 is read through its replica, so it is still in use and spared.
    assert (tmp_path / "v1").exists()
    assert held.count() == len(small_items(1).ids)
    held.close()
    assert other.cleanup() == ["v1"]


def test_a_failed_copy_leaves_no_replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EdgeStore(tmp_path, replicas=True)
    build(store, "v1", small_items(1))
    store.activate("v1")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("recsys.vectors.edge.shutil.copytree", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.open_live()
    assert list((tmp_path / REPLICAS_DIR).iterdir()) == []
    monkeypatch.undo()
    with store.open_live() as index:
        assert index.count() == len(small_items(1).ids)
