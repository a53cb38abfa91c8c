#!/usr/bin/env python3
"""Benchmark: how long a campaign worker takes to pick its next chat in a big database.

Builds campaign databases with 1,000 / 10,000 / 100,000 chats and 10 attempt rows per chat
(1,000,000 at the largest, spread over three accounts and several earlier runs, the last
hour's sends included), starts a run in which half the chats are already done, then times
what a worker does before each send: the hourly-window check (`next_free_slot`), the look
for an interrupted send of its own (`claim_open_attempt`) and the atomic claim with its
attempt row (`claim_next`, one BEGIN IMMEDIATE transaction). Goal: median claim under 2 ms
at 100,000 chats.

    python bench/campaign_pick.py [--sizes 1000 10000 100000] [--picks 300]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import campaign  # noqa: E402
import migrate_db  # noqa: E402
from migrate_db import transaction  # noqa: E402

ATTEMPTS_PER_TASK = 10
ACCOUNTS = 3
GOAL_MS = 2.0


def build(path: Path, tasks: int, now) -> tuple:
    """A campaign database with `tasks` chats and 10 attempt rows each; returns the
    connection, the run and the worker's profile."""
    conn = migrate_db.connect(path, kind="campaign")
    rng = random.Random(7)
    stamp = migrate_db.utc_text(now)
    with transaction(conn):
        conn.executemany("INSERT INTO profiles (profile_name, folder, created_at) VALUES "
                         "(?, ?, ?)", [(f"acc{i}", f"/nowhere/acc{i}", stamp)
                                       for i in range(1, ACCOUNTS + 1)])
        conn.executemany(
            "INSERT INTO tasks (group_id, chat_username, next_available_at, created_at) "
            "VALUES ('default', ?, '', ?)", ((f"@chat{i:06d}", stamp) for i in range(tasks)))
        conn.execute("INSERT INTO campaign_texts (text, created_at) VALUES ('Hello', ?)",
                     (stamp,))
        runs = [f"old-run-{i}" for i in range(5)]

        def attempts():
            for task_id in range(1, tasks + 1):
                for k in range(ATTEMPTS_PER_TASK):
                    age = timedelta(minutes=rng.uniform(61, 60 * 24 * 30))
                    yield (task_id, rng.randint(1, ACCOUNTS), runs[k % len(runs)], k + 1,
                           "success" if rng.random() < 0.9 else "failed", rng.getrandbits(62),
                           migrate_db.utc_text(now - age))
        conn.executemany(
            "INSERT INTO task_attempts (task_id, profile_id, run_id, cycle_number, status, "
            "random_id, attempted_at) VALUES (?, ?, ?, ?, ?, ?, ?)", attempts())
        for minutes in range(1, 30):  # the last hour: 29 sends, one slot left
            conn.execute("INSERT INTO task_attempts (task_id, profile_id, run_id, status, "
                         "attempted_at) VALUES (1, 1, 'old-run-4', 'success', ?)",
                         (migrate_db.utc_text(now - timedelta(minutes=minutes)),))
    conn.execute("ANALYZE")
    config = campaign.Config(max_cycles=1)
    profiles = campaign.list_profiles(conn)
    run = campaign.create_run(conn, config, None, profiles, now)
    with transaction(conn):  # half the chats already got their send in this run
        conn.execute("UPDATE tasks SET run_sent = run_quota, next_available_at = ? "
                     "WHERE id % 2 = 0", (stamp,))
    return conn, run, profiles[0]


def measure(tasks: int, picks: int) -> tuple[float, float, float, int]:
    """(median claim ms, p95 claim ms, median whole pick ms, attempt rows) at this size."""
    now = campaign.Clock().now()
    with tempfile.TemporaryDirectory() as tmp:
        conn, run, profile = build(Path(tmp) / "campaign.db", tasks, now)
        rows = conn.execute("SELECT COUNT(*) FROM task_attempts").fetchone()[0]
        claims, whole = [], []
        for _ in range(picks):
            began = time.perf_counter()
            campaign.next_free_slot(conn, profile.id, 30, now)
            campaign.claim_open_attempt(conn, profile.id, now)
            started_claim = time.perf_counter()
            claim = campaign.claim_next(conn, run.run_id, profile.id, now)
            ended = time.perf_counter()
            assert claim is not None
            claims.append((ended - started_claim) * 1000)
            whole.append((ended - began) * 1000)
            campaign.record_success(conn, claim, 1, now, now + timedelta(minutes=20))
        conn.close()
    claims.sort()
    return (statistics.median(claims), claims[int(len(claims) * 0.95) - 1],
            statistics.median(whole), rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--picks", type=int, default=300)
    args = parser.parse_args()
    if args.picks < 1 or min(args.sizes) < args.picks * 2:
        parser.error("--picks must be >= 1 and every size at least twice --picks")
    print(f"{'chats':>8} {'attempt rows':>13} {'claim median':>13} {'claim p95':>10} "
          f"{'whole pick median':>18}")
    medians = {}
    for size in args.sizes:
        median, p95, whole, rows = measure(size, args.picks)
        medians[size] = median
        print(f"{size:>8} {rows:>13,} {median:>10.3f} ms {p95:>7.3f} ms {whole:>15.3f} ms",
              flush=True)
    smallest, largest = min(medians), max(medians)
    growth = medians[largest] / medians[smallest]
    print(f"growth from {smallest:,} to {largest:,} chats: x{growth:.2f} (median claim)")
    met = medians[largest] < GOAL_MS
    print(f"goal: median claim under {GOAL_MS} ms at {largest:,} chats: "
          f"{'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
