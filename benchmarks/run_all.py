"""Run every ``benchmarks/bench_*.py`` script in turn, each in its own process.

    python benchmarks/run_all.py            # full sizes (what ``make bench`` runs)
    python benchmarks/run_all.py --quick    # smaller sizes, for a smoke run
    python benchmarks/run_all.py import     # only scripts whose name contains "import"

Each script gets ``--quick`` when it is given here and may honour it with smaller sizes.
The exit status is non-zero when any script fails; the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(names: list[str]) -> list[Path]:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(n in s.stem for n in names)]
    return scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmarks/bench_*.py script.")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("names", nargs="*", help="run only scripts whose name contains these")
    args = parser.parse_args(argv)

    scripts = discover(args.names)
    if not scripts:
        print("no benchmark scripts matched", file=sys.stderr)
        return 2
    failed: list[str] = []
    started = time.perf_counter()
    for script in scripts:
        command = [sys.executable, str(script)]
        if args.quick:
            command.append("--quick")
        rule = "=" * 100
        print(f"{rule}\n{script.name}{' --quick' if args.quick else ''}\n{rule}", flush=True)
        began = time.perf_counter()
        status = subprocess.run(command, check=False).returncode
        took = time.perf_counter() - began
        verdict = "ok" if status == 0 else f"FAILED (exit {status})"
        print(f"-- {script.name}: {verdict} in {took:.0f} s\n", flush=True)
        if status != 0:
            failed.append(script.name)
    total = time.perf_counter() - started
    print(f"{len(scripts) - len(failed)}/{len(scripts)} benchmark(s) ok in {total:.0f} s")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
