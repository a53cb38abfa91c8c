#!/usr/bin/env python3
"""Benchmark of vibedialer: simulated dials per second and peak memory of the real CLI.

Runs `vibedialer.py dial 555 --no-interactive` (a 3-digit prefix: 7,920,000 numbers) as a
child process for every storage (sqlite, csv), order (sequential, random) and dial count
(10,000 and 100,000 by default), and prints a table: wall time, CPU time, dials per second
(with and without the interpreter's start-up, measured by a 1-dial run, and per CPU second
of the child, which other load on the machine does not change) and the child's peak
resident memory (ru_maxrss from os.wait4, so each figure is that child's own).

Goals (issue 8): at least 20,000 dials/s to sqlite; peak memory under 80 MB and the same for
10,000 and 100,000 dials.

    python bench/dialer_bench.py [--counts 10000 100000] [--pattern 555]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "vibedialer.py"
RATE_GOAL = 20_000          # dials per second to sqlite
MEMORY_GOAL_MB = 80.0
MEMORY_SAME_TOLERANCE_MB = 5.0


def run_child(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, cpu seconds, peak MB) of one child run; exits on its failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(argv)} failed: {proc.stderr.read().decode().strip()}")
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def dial_argv(pattern: str, storage: str, output: Path, count: int, randomized: bool) -> list:
    """The dial command line for one measurement."""
    argv = [sys.executable, str(SCRIPT), "dial", pattern, "--storage", storage,
            "--output", str(output), "--limit", str(count), "--no-interactive", "--yes",
            "--seed", "1"]
    return argv + (["--random"] if randomized else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000],
                        metavar="N", help="dials per run (default: 10000 100000)")
    parser.add_argument("--pattern", default="555",
                        help="pattern to dial (default: %(default)s, 7.92 million numbers)")
    args = parser.parse_args()
    if any(count < 1 for count in args.counts):
        parser.error("--counts must be positive")

    print(f"vibedialer benchmark: pattern {args.pattern}, simulation backend, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = (f"{'storage':<8} {'order':<10} {'dials':>8} {'wall s':>8} {'cpu s':>7} "
              f"{'dials/s':>9} {'excl. startup':>14} {'per cpu-s':>10} {'peak MB':>8}")
    print(header)
    print("-" * len(header))
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for storage in ("sqlite", "csv"):
            suffix = "db" if storage == "sqlite" else "csv"
            startup, _, _ = run_child(dial_argv(args.pattern, storage,
                                                Path(folder) / f"warm.{suffix}", 1, False))
            for randomized in (False, True):
                for count in args.counts:
                    output = Path(folder) / f"{storage}-{randomized}-{count}.{suffix}"
                    wall, cpu, peak = run_child(dial_argv(args.pattern, storage, output, count,
                                                          randomized))
                    order = "random" if randomized else "sequential"
                    net = max(wall - startup, 1e-9)
                    results[storage, order, count] = (count / wall, peak)
                    print(f"{storage:<8} {order:<10} {count:>8,} {wall:>8.2f} {cpu:>7.2f} "
                          f"{count / wall:>9,.0f} {count / net:>14,.0f} {count / cpu:>10,.0f} "
                          f"{peak:>8.1f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(wall figures drop when other processes share the CPUs; 'per cpu-s' does not)")
    print()
    largest = max(args.counts)
    sqlite_rates = [rate for (storage, _, count), (rate, _) in results.items()
                    if storage == "sqlite" and count == largest]
    peaks = [peak for _, peak in results.values()]
    print(f"goal >= {RATE_GOAL:,} dials/s to sqlite over {largest:,} dials (wall, start-up "
          f"included): slowest {min(sqlite_rates):,.0f} -> "
          f"{'met' if min(sqlite_rates) >= RATE_GOAL else 'MISSED'}")
    print(f"goal peak < {MEMORY_GOAL_MB:.0f} MB: highest {max(peaks):.1f} MB -> "
          f"{'met' if max(peaks) < MEMORY_GOAL_MB else 'MISSED'}")
    spread = max(peaks) - min(peaks)
    print(f"goal same memory for every dial count: spread {spread:.1f} MB -> "
          f"{'met' if spread <= MEMORY_SAME_TOLERANCE_MB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
