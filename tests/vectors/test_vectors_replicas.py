"""Replicas: several serving processes on one machine each open a private copy of a
published Edge version, which a shard allows one process at a time to open."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_vectors_versions import build, small_items

from recsys.vectors.edge import REPLICAS_DIR, EdgeStore
from recsys.vectors.edge_files import copy_sparse

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


def _allocated(path: Path) -> int:
    """Bytes the file system holds for ``path`` (or every file under it)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def _apparent(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_a_sparse_copy_keeps_every_byte_and_writes_only_the_data(tmp_path: Path) -> None:
    source = tmp_path / "segment.dat"
    size = 8 << 20
    head, middle, tail = b"qdrant-header" * 100, bytes(range(256)) * 64, b"end"
    with open(source, "wb") as f:
        f.truncate(size)  # an 8 MiB file of holes...
        f.write(head)  # ...data at the start,
        f.seek(3 << 20)
        f.write(bytes(1 << 20))  # a written megabyte of zeros (a dense copy's leftovers),
        f.seek(5 << 20)
        f.write(middle)  # data in the middle,
        f.seek(size - len(tail))
        f.write(tail)  # and the last bytes.
    source.chmod(0o640)
    copy = tmp_path / "copy.dat"
    copy_sparse(source, copy)
    assert copy.read_bytes() == source.read_bytes()
    assert copy.stat().st_size == size
    assert copy.stat().st_mode == source.stat().st_mode
    assert copy.stat().st_mtime == pytest.approx(source.stat().st_mtime, abs=1e-3)
    # The written zeros became a hole: the copy holds less than the source does.
    assert _allocated(copy) < _allocated(source)
    assert _allocated(copy) <= 4 * (64 << 10)


def test_a_dense_file_and_an_empty_one_are_copied_whole(tmp_path: Path) -> None:
    dense = tmp_path / "dense.bin"
    dense.write_bytes(np.random.default_rng(3).bytes(300_001))  # not a multiple of a block
    empty = tmp_path / "empty.bin"
    empty.touch()
    for source in (dense, empty):
        copy = tmp_path / f"copy-{source.name}"
        copy_sparse(source, copy)
        assert copy.read_bytes() == source.read_bytes()


def test_a_replica_takes_the_data_not_the_preallocated_length(tmp_path: Path) -> None:
    # Qdrant Edge preallocates its WAL and mmap chunks as sparse files; a replica for every
    # serving process must not turn them into hundreds of megabytes each.
    store = EdgeStore(tmp_path, replicas=True)
    build(store, "v1", small_items(1))
    store.activate("v1")
    published = tmp_path / "v1"
    with store.open_live() as index:
        assert index.count() == len(small_items(1).ids)
        (replica,) = (tmp_path / REPLICAS_DIR).iterdir()
        # Opening the shard may rewrite a small file or two; the length is the same.
        assert _apparent(replica) == pytest.approx(_apparent(published), rel=0.01)
        assert _apparent(published) > 20 * _allocated(published)  # the premise
        assert _allocated(replica) <= 2 * _allocated(published)
