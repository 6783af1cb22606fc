"""The files of the Edge backend's directory layout: their names, locks and atomic writes."""

from __future__ import annotations

import fcntl
import json
import os
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
