#!/usr/bin/env python3
"""Backfill throughput with 1, 2 and 4 accounts under the simulator's default rate limits.

For each account count a fresh simulated world gets the same history (N messages, albums,
media, replies), every account may read the source and post into the target, and one
`clone_streaming_shared.py --once` process per account runs at once on one shared
checkpoint. Printed per account count: wall time and messages per second, the history
requests all accounts made together, and the CPU time of the cloner processes per message
(user + system, from the operating system's accounting of the finished children). The
simulator's default token buckets apply (docs/SIMULATOR.md): each account sends about one
message a second after a burst, so accounts are what makes a backfill faster.

Goals: throughput at least 1.8x from 1 to 2 accounts and 3.2x from 1 to 4; history
requests and CPU per message at most 1.2x the one-account figure as accounts are added.

Each process's start (imports, connecting, resolving the chats) costs the same however many
messages it clones, so the CPU per message of N accounts carries N starts. To show the work
per message apart from that, each account then runs `--once` a second time on the finished
checkpoint (it finds nothing to clone: start, connect, one range read, exit); that run's
CPU is printed as "start CPU" per process and subtracted, once per account, in the last
column ("CPU ms/msg less starts"). The history requests counted are those of the backfill
only. With --parallel the account counts run at once, each in its own process with its
own simulated world (they mostly sleep on the rate limits).

    python bench/clone_scaling.py [--messages 5000] [--accounts 1,2,4] [--mode forward]
                                  [--parallel]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SUITE_DIR))
sys.path.insert(0, str(SUITE_DIR / "bench"))

from clone_requests import build_history  # noqa: E402

import migrate_db  # noqa: E402
from telegram_sim import World  # noqa: E402

DEFAULT_MESSAGES = 5000
DEFAULT_ACCOUNTS = "1,2,4"
RUN_TIMEOUT = 6 * 3600
GOAL_SPEEDUP = {2: 1.8, 4: 3.2}
GOAL_FLAT = 1.2


def cpu_of_children() -> float:
    """User + system seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(count: int, accounts: int, mode: str) -> dict:
    """One backfill with `accounts` accounts: seconds, history requests, CPU seconds."""
    names = [f"acct{n}" for n in range(1, accounts + 1)]
    with tempfile.TemporaryDirectory(prefix="clone-scaling-") as folder:
        root = Path(folder)
        world = World.create(root / "world.db")
        for name in names:
            world.add_account(name)
        source = world.create_channel("Source", username="scale_source", owner=names[0],
                                      members=names[1:])
        world.create_channel("Target", username="scale_target", owner=names[0],
                             admins=names[1:])
        build_history(world, source, count, album_share=0.1, media_share=0.2,
                      reply_share=0.1, seed=3)
        folders = [world.make_session_folder(root / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@scale_source", "TARGET_CHAT": "@scale_target",
            "COPY_MODE": mode, "PROGRESS_EVERY": "100000"}) for name in names]
        for database in ("checkpoint.db", "accounts.db"):
            migrate_db.connect(root / "sessions" / "shared" / database).close()
        world.reset_counters()
        cpu_before, began = cpu_of_children(), time.perf_counter()
        processes = [subprocess.Popen(
            [sys.executable, str(SUITE_DIR / "clone_streaming_shared.py"), "--once"],
            cwd=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for f in folders]
        failures = []
        for name, process in zip(names, processes, strict=True):
            _, err = process.communicate(timeout=RUN_TIMEOUT)
            if process.returncode != 0:
                failures.append(f"{name} exited {process.returncode}: {err[-300:]}")
        seconds = time.perf_counter() - began
        cpu = cpu_of_children() - cpu_before
        counters = world.counters()
        start_before = cpu_of_children()
        for f in folders:           # nothing left to clone: what one process's start costs
            subprocess.run([sys.executable, str(SUITE_DIR / "clone_streaming_shared.py"),
                            "--once"], cwd=f, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=RUN_TIMEOUT, check=False)
        start_cpu = (cpu_of_children() - start_before) / len(folders)
        cloned = world.conn.execute(
            "SELECT COUNT(*) FROM messages WHERE channel_id = ? AND is_service = 0",
            (world.chat_id("@scale_target"),)).fetchone()[0]
        world.close()
    return {"accounts": accounts, "seconds": seconds, "cloned": cloned,
            "history": counters.get("GetHistoryRequest", 0), "cpu": cpu,
            "start_cpu": start_cpu, "failures": failures}


def work_per_message(run: dict) -> float:
    """CPU seconds per cloned message less each account's process start."""
    return (run["cpu"] - run["start_cpu"] * run["accounts"]) / max(run["cloned"], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES,
                        help="messages in the history (default: %(default)s)")
    parser.add_argument("--accounts", default=DEFAULT_ACCOUNTS,
                        help="comma-separated account counts (default: %(default)s)")
    parser.add_argument("--mode", choices=("forward", "copy", "auto"), default="forward",
                        help="COPY_MODE of the cloners (default: %(default)s)")
    parser.add_argument("--parallel", action="store_true",
                        help="run the account counts at the same time")
    args = parser.parse_args(argv)
    try:
        counts = [int(n) for n in args.accounts.split(",")]
    except ValueError:
        parser.error(f"--accounts {args.accounts!r}: give numbers separated by commas")
    if args.messages < 10 or min(counts) < 1:
        parser.error("--messages must be at least 10 and --accounts positive")
    print(f"backfill of {args.messages} messages, COPY_MODE={args.mode}, "
          "the simulator's default rate limits")
    print(f"{'accounts':>8}{'seconds':>10}{'msg/s':>9}{'cloned':>8}{'history req':>13}"
          f"{'CPU ms/msg':>12}{'start CPU s':>13}{'CPU ms/msg less starts':>24}")
    if args.parallel:
        with concurrent.futures.ProcessPoolExecutor(len(counts)) as pool:
            futures = [pool.submit(measure, args.messages, n, args.mode) for n in counts]
            results = iter([f.result() for f in futures])
    else:
        results = (measure(args.messages, n, args.mode) for n in counts)
    runs, ok = [], True
    for accounts, run in zip(counts, results, strict=True):
        runs.append(run)
        rate = run["cloned"] / run["seconds"]
        print(f"{accounts:>8}{run['seconds']:>10.1f}{rate:>9.2f}{run['cloned']:>8}"
              f"{run['history']:>13}{run['cpu'] * 1000 / max(run['cloned'], 1):>12.2f}"
              f"{run['start_cpu']:>13.2f}{work_per_message(run) * 1000:>24.2f}", flush=True)
        for failure in run["failures"]:
            print(f"  failed: {failure}")
        ok &= not run["failures"] and run["cloned"] == runs[0]["cloned"]
    base = next((r for r in runs if r["accounts"] == 1), None)
    if base is not None:
        base_rate = base["cloned"] / base["seconds"]
        for run in runs:
            if run is base:
                continue
            speedup = run["cloned"] / run["seconds"] / base_rate
            goal = GOAL_SPEEDUP.get(run["accounts"])
            history = run["history"] / max(base["history"], 1)
            cpu = (run["cpu"] / max(run["cloned"], 1)) / max(base["cpu"] / max(base["cloned"],
                                                                                1), 1e-9)
            work = work_per_message(run) / max(work_per_message(base), 1e-9)
            verdict = "" if goal is None else \
                f" ({'meets' if speedup >= goal else 'MISSES'} >= {goal:g}x)"
            print(f"{run['accounts']} accounts: {speedup:.2f}x the throughput{verdict}; "
                  f"history requests {history:.2f}x, CPU per message {cpu:.2f}x "
                  f"({work:.2f}x less the process starts) (goal <= {GOAL_FLAT:g}x each)")
            ok &= (goal is None or speedup >= goal) and history <= GOAL_FLAT \
                and cpu <= GOAL_FLAT
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
