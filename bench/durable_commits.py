#!/usr/bin/env python3
"""Benchmark: what a durable commit costs (synchronous=FULL) against the suite's default
(synchronous=NORMAL, WAL), for the commits that guard a send: a campaign attempt row with
its random_id must be on disk before the message goes out, or a power loss repeats it.

Times N transactions shaped like campaign.claim_next's (an attempt row inserted, its task
updated) with `migrate_db.transaction` (NORMAL) and `migrate_db.durable_transaction`
(FULL: the WAL is fsynced at every COMMIT), then the real `campaign.claim_next`, which uses
the durable one. Put --dir on the disk the databases live on: a tmpfs makes fsync free.

    python bench/durable_commits.py [--commits 500] [--dir DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import campaign  # noqa: E402
import migrate_db  # noqa: E402

CHATS = 2000


def build(path: Path) -> tuple:
    """A campaign database with CHATS chats owed one send each in one run."""
    conn = migrate_db.connect(path, kind="campaign")
    now = datetime.now(timezone.utc)
    stamp = migrate_db.utc_text(now)
    with migrate_db.transaction(conn):
        conn.execute("INSERT INTO profiles (profile_name, folder, created_at) "
                     "VALUES ('bench', 'sessions/bench', ?)", (stamp,))
        conn.execute("INSERT INTO campaign_texts (text, created_at) VALUES ('hello', ?)",
                     (stamp,))
        conn.execute("INSERT INTO campaign_runs (run_id, started_at) VALUES ('run', ?)",
                     (stamp,))
        conn.executemany(
            "INSERT INTO tasks (chat_username, current_run_id, run_quota, next_available_at, "
            "created_at) VALUES (?, 'run', 1, ?, ?)",
            [(f"@chat{n}", stamp, stamp) for n in range(CHATS)])
    return conn, now


def time_commits(conn, begin, commits: int) -> list[float]:
    """Milliseconds per claim-shaped transaction opened with `begin`."""
    times = []
    for n in range(commits):
        started = time.perf_counter()
        with begin(conn):
            attempt = conn.execute(
                "INSERT INTO task_attempts (task_id, profile_id, run_id, status, random_id, "
                "attempted_at) VALUES (?, 1, 'run', 'sending', ?, '')",
                (n % CHATS + 1, n)).lastrowid
            conn.execute("UPDATE tasks SET open_attempt_id = ? WHERE id = ?",
                         (attempt, n % CHATS + 1))
        times.append((time.perf_counter() - started) * 1000)
    return times


def time_claims(conn, now, commits: int) -> list[float]:
    """Milliseconds per real campaign.claim_next (durable)."""
    times = []
    for _ in range(min(commits, CHATS)):
        started = time.perf_counter()
        claim = campaign.claim_next(conn, "run", 1, now)
        times.append((time.perf_counter() - started) * 1000)
        assert claim is not None
    return times


def line(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (f"{name:<44} median {statistics.median(times):7.3f} ms   p95 {p95:7.3f} ms   "
            f"{1000 / statistics.mean(times):8.0f} commits/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent,
                        help="where the test database goes (default: bench/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="durable-") as folder:
        conn, now = build(Path(folder) / "campaign.db")
        normal = time_commits(conn, migrate_db.transaction, args.commits)
        full = time_commits(conn, migrate_db.durable_transaction, args.commits)
        conn.execute("UPDATE tasks SET open_attempt_id = NULL")
        claims = time_claims(conn, now, args.commits)
        conn.close()
    print(f"{args.commits} commits each, database in {args.dir}")
    print(line("transaction (synchronous=NORMAL)", normal))
    print(line("durable_transaction (synchronous=FULL)", full))
    print(line("campaign.claim_next (durable)", claims))
    extra = statistics.median(full) - statistics.median(normal)
    print(f"a durable commit costs {extra:+.3f} ms more at the median "
          f"({statistics.median(full) / statistics.median(normal):.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
