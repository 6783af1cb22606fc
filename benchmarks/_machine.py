"""Shared helpers for the benchmark scripts: what machine ran them, and latency percentiles.

Every benchmark prints ``describe_machine()`` first, so a number is never read without the
hardware it came from.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Iterable


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        brand = _command_output(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown CPU"


def _command_output(command: list[str]) -> str | None:
    """A command's trimmed standard output, or None when it is missing or fails."""
    import subprocess

    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def gpu_description() -> str:
    """The NVIDIA GPUs nvidia-smi sees (name, memory), or 'none visible'."""
    found = _command_output(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
    )
    return found.replace("\n", "; ") if found else "none visible"


def _cpu_counts() -> str:
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    if usable and usable != logical:
        return f"{usable} usable of {logical} logical"
    return f"{logical} logical"


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every timing."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def package_version(package: str) -> str:
    """The installed version of a distribution, or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def describe_machine() -> str:
    """A few lines: platform, Python, CPU model and count, RAM, current load."""
    ram = _ram_bytes()
    ram_text = f"{ram / 2**30:.1f} GiB" if ram else "unknown"
    lines = [
        f"platform : {platform.platform()}",
        f"python   : {platform.python_implementation()} {platform.python_version()}",
        f"cpu      : {_cpu_model()} ({_cpu_counts()} cores)",
        f"ram      : {ram_text}",
        f"load avg : {load_average()} (1/5/15 min, at start)",
    ]
    return "\n".join(lines)


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """p50, p95 and p99 of the values (NaN for an empty input)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan}
    return {
        "p50": _quantile(ordered, 0.50),
        "p95": _quantile(ordered, 0.95),
        "p99": _quantile(ordered, 0.99),
    }


if __name__ == "__main__":
    print(describe_machine())
