"""The files of the Edge backend's directory layout: their names, locks and atomic writes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

SCHEMA_FILE: Final = "schema.json"
MARKER_FILE: Final = "VERSION.json"
LOCK_FILE: Final = ".lock"
POINTER_FILE: Final = "CURRENT"
STORE_LOCK_FILE: Final = ".store.lock"
PARTIAL_SUFFIX: Final = ".partial"
TRASH_SUFFIX: Final = ".deleting"


def lock(path: Path, *, exclusive: bool) -> int:
    """Open ``path`` (created if missing) and flock it, waiting if needed; return the fd.

    The lock lives as long as the descriptor and dies with the process, so a killed builder
    never leaves a stale lock behind.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock(path: Path) -> int | None:
    """Like ``lock(exclusive=True)`` but None at once if someone holds the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_json(path: Path, data: Any) -> None:
    """Write a file atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) byte ranges of ``fd`` that hold data; a file system that cannot tell
    holes from data gives one range, the whole file."""
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        yield (0, size)
        return
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, seek_data)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from offset to the end
                return
            if offset == 0 and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield (0, size)
                return
            raise
        end = min(os.lseek(fd, start, seek_hole), size)
        yield (start, end)
        offset = end


def copy_sparse(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy one file keeping it sparse, then its times and mode (a ``copytree`` copy
    function): the source's holes, and any block of zeros, become holes in the copy.

    Qdrant Edge sizes its segment files, WAL and mmap chunks up front as sparse files: a
    small version holds about 3 MB of data in about 430 MB of file length. A plain copy
    writes every zero, so each serving process's replica would take the full length on disk
    and a second or more of writing; this one writes the data only. Zero blocks are found
    too, so a version that was copied densely (a backup restored with a plain copy) is
    replicated sparse all the same.
    """
    with open(src, "rb") as source, open(dst, "wb") as target:
        size = os.fstat(source.fileno()).st_size
        target.truncate(size)  # all hole until written
        for start, end in data_extents(source.fileno(), size):
            _copy_nonzero(source.fileno(), target.fileno(), start, end)
    shutil.copystat(src, dst)


# Small enough that the data Qdrant writes at the start of a preallocated file stays a
# few blocks in the copy, large enough that reading 430 MB of file length is ~7k reads.
_COPY_BLOCK: Final = 1 << 16
_ZERO_BLOCK: Final = bytes(_COPY_BLOCK)


def _copy_nonzero(source: int, target: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        block = os.pread(source, min(end - offset, _COPY_BLOCK), offset)
        if not block:  # the file shrank while we copied: keep what it has
            return
        if block != _ZERO_BLOCK[: len(block)]:
            view = memoryview(block)
            while view:
                written = os.pwrite(target, view, offset)
                view, offset = view[written:], offset + written
        else:
            offset += len(block)
