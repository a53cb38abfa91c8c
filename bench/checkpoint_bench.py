#!/usr/bin/env python3
"""Claim + complete throughput of the cloner's checkpoint against a raw loop, huey and litequeue.

Each design gets the same work: N messages loaded into a fresh SQLite file, then P worker
processes (real OS processes, started together) each loop "claim the next message, mark it
complete" until nothing is left. Printed per durability, design and process count:
messages per second (wall time from the start signal to the last worker's exit),
completions, duplicates (beyond one per message; must be 0) and failed workers (a worker
that stopped on an error, e.g. starved past its busy timeout: counted as a failure).

The cloner reads the history in ranges of RANGE_SIZE ids (clone_streaming.Checkpoint): per
range it leases the range (claim_range, after resume_point), reads it (one history request;
here a SELECT of the range's ids stands for it), claims its messages and records the range
read in one transaction, lends all but SHARE_UNITS of them to idle workers (give_back) and
takes them back SHARE_UNITS at a time, then per send stores the random_ids
(synchronous=FULL) and completes; with no range left it takes lent messages (claim_next).
In forward mode a send is the whole range (up to 100 ids a request), in copy mode one
message. Those are the "cloner path" designs.

Two durability levels, every design at the same one:
- NORMAL (WAL, synchronous=NORMAL: a commit survives a crash of the process, not of the
  machine): "raw UPDATE..RETURNING" is the floor, a bare sqlite3 loop on the checkpoint's
  table (BEGIN IMMEDIATE; UPDATE ... RETURNING the next pending id; a second transaction
  marks it done); "raw, per range" the same with a range of ids per transaction;
  "checkpoint" is SqliteCheckpoint.claim_next(1) + complete() (a message at a time; the
  cloner no longer claims this way); "range claims" the cloner's range path without the
  random_id commit; huey's SqliteStorage dequeue() + put_data() with synchronous=NORMAL;
  litequeue pop() + done().
- FULL (fsynced where it matters): "cloner path, forward" and "cloner path, copy" are what
  the cloner really does (above), the random_id commits fsynced; "raw UPDATE..RETURNING",
  "raw, per range" and huey with synchronous=FULL (every commit fsynced).
Also printed: what fsyncing the random_id commit (synchronous=FULL) costs per send.

Goals (printed with the verdicts): at 8 processes the checkpoint's range path at least 2x
huey at both levels (NORMAL: range claims; FULL: the cloner path in copy mode, its slower
one), no collapse from 4 to 8 processes, and the range path within 2x of the raw loop of
the same shape (per range) in the same run.

PostgreSQL (with --db-url postgresql://..., a server where the user may create databases;
each run gets a new database, dropped after it): "PG checkpoint" is PostgresCheckpoint's
claim_next(1) + complete() (FOR UPDATE SKIP LOCKED; synchronous_commit off, as SQLite's
NORMAL) and "PG checkpoint, cloner path" adds random_ids() (synchronous_commit on) as the
cloner does; "pgqueuer" is Queries.dequeue() (FOR UPDATE SKIP LOCKED) + log_jobs()
'successful' over psycopg's async driver, with synchronous_commit off (NORMAL) or on (FULL).

    pip install -r bench/requirements-bench.txt     # litequeue, huey, pgqueuer: bench only
    python bench/checkpoint_bench.py [--messages 10000] [--processes 1,2,4,8]
                                     [--db-url postgresql://user@host:5432/postgres]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import psycopg

SUITE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SUITE_DIR))

from clone_streaming import (  # noqa: E402
    RANGE_SIZE,
    SHARE_UNITS,
    Checkpoint,
    PostgresCheckpoint,
    SqliteCheckpoint,
)
from migrate_db import is_postgres_url, redact_url, transaction  # noqa: E402

DEFAULT_MESSAGES = 10_000
DEFAULT_PROCESSES = "1,2,4,8"
SOURCE = "-100777"
TARGET = "-100778"
START_TIMEOUT = 60.0
BUSY_TIMEOUT = 30.0
GOAL_HUEY = 2.0            # the checkpoint at least this many times huey
GOAL_RAW = 2.0             # claim + complete within this factor of the raw loop
GOAL_SCALING = 0.8         # 8 processes at least this share of 4 processes' rate


# ----------------------------------------------------------------------------- the designs
# Each design: load(path, n) in the parent, work(path, worker) in a child -> completed ids.

def checkpoint_load(path: Path, count: int) -> None:
    checkpoint = SqliteCheckpoint(path, "loader")
    with transaction(checkpoint.conn):
        checkpoint.conn.executemany(
            "INSERT INTO messages (source_chat, target_chat, msg_id) VALUES (?, ?, ?)",
            ((SOURCE, TARGET, i) for i in range(1, count + 1)))
    checkpoint.close()


def claim_and_complete_all(checkpoint: Checkpoint) -> list[int]:
    """claim_next + complete, the interface's own methods, a message at a time, until
    nothing is left; closes the checkpoint."""
    checkpoint.bind(SOURCE, TARGET)
    completed = []
    while ids := checkpoint.claim_next(1):
        completed += checkpoint.complete({i: i for i in ids})
    checkpoint.close()
    return completed


def checkpoint_work(path: Path, worker: int) -> list[int]:
    """claim_next + complete on the SQLite checkpoint (NORMAL)."""
    return claim_and_complete_all(SqliteCheckpoint(path, f"worker{worker}"))


def read_range(checkpoint: Checkpoint, lo: int) -> tuple[list[int], bool]:
    """Stands for the history request of a range: the ids in it, whether newer ones follow."""
    hi = lo + RANGE_SIZE - 1
    if isinstance(checkpoint, SqliteCheckpoint):
        rows = checkpoint.conn.execute(
            "SELECT msg_id FROM messages WHERE source_chat = ? AND target_chat = ? "
            "AND msg_id >= ? ORDER BY msg_id LIMIT ?", (SOURCE, TARGET, lo, RANGE_SIZE + 1))
    else:
        rows = checkpoint.conn.execute(
            "SELECT msg_id FROM messages WHERE source_chat = %s AND target_chat = %s "
            "AND msg_id >= %s ORDER BY msg_id LIMIT %s", (SOURCE, TARGET, lo, RANGE_SIZE + 1))
    ids = [i for (i,) in rows]
    return [i for i in ids if i <= hi], any(i > hi for i in ids)


def range_path(checkpoint: Checkpoint, per_message: bool | None) -> list[int]:
    """The cloner's path (see the docstring): per range claim_range, the read, claim with
    the range recorded read, the messages past the first SHARE_UNITS given back and taken
    back SHARE_UNITS at a time; then per send (what was taken of the range, or each
    message: `per_message`) random_ids (FULL) and complete; `per_message` None: no
    random_ids (NORMAL only). With no range left, claim_next(SHARE_UNITS) takes what other
    workers lent."""
    checkpoint.bind(SOURCE, TARGET)
    since, completed = datetime.now(timezone.utc), []

    def send_all(held: list[int]) -> None:
        nonlocal completed
        for send in ([[i] for i in held] if per_message else [held] if held else []):
            if per_message is not None:
                checkpoint.random_ids(send)
            completed += checkpoint.complete({i: i for i in send})

    while (lo := checkpoint.claim_range(checkpoint.resume_point() + 1, since)) is not None:
        ids, more = read_range(checkpoint, lo)
        held = checkpoint.claim(ids, range_read=(lo, more))
        if lent := held[SHARE_UNITS:]:
            checkpoint.give_back(lent)
        taken = held[:SHARE_UNITS]
        for start in range(SHARE_UNITS, len(ids), SHARE_UNITS):
            taken += checkpoint.claim(ids[start:start + SHARE_UNITS])
        send_all(taken)
    while held := checkpoint.claim_next(SHARE_UNITS):
        send_all(held)
    checkpoint.close()
    return completed


def _ranges_normal(path: Path, worker: int) -> list[int]:
    return range_path(SqliteCheckpoint(path, f"worker{worker}"), None)


def _cloner_forward(path: Path, worker: int) -> list[int]:
    return range_path(SqliteCheckpoint(path, f"worker{worker}"), False)


def _cloner_copy(path: Path, worker: int) -> list[int]:
    return range_path(SqliteCheckpoint(path, f"worker{worker}"), True)


def raw_range_work(path: Path, worker: int, synchronous: str) -> list[int]:
    """The floor of the range path: per range one BEGIN IMMEDIATE claiming its pending
    ids, one marking them done."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    me, completed = f"worker{worker}", []
    while True:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            """UPDATE messages SET status = 'processing', session = ?
               WHERE source_chat = ? AND target_chat = ? AND status = 'pending'
                 AND msg_id BETWEEN (SELECT MIN(msg_id) FROM messages WHERE source_chat = ?
                     AND target_chat = ? AND status = 'pending') AND
                     (SELECT MIN(msg_id) FROM messages WHERE source_chat = ?
                     AND target_chat = ? AND status = 'pending') + ? - 1
               RETURNING msg_id""",
            (me, SOURCE, TARGET, SOURCE, TARGET, SOURCE, TARGET, RANGE_SIZE)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            break
        conn.execute("BEGIN IMMEDIATE")
        done = conn.execute(
            "UPDATE messages SET status = 'done', target_msg_id = msg_id "
            "WHERE source_chat = ? AND target_chat = ? AND session = ? AND msg_id IN "
            "(SELECT value FROM json_each(?)) RETURNING msg_id",
            (SOURCE, TARGET, me, f"[{','.join(str(i) for (i,) in rows)}]")).fetchall()
        conn.execute("COMMIT")
        completed += [i for (i,) in done]
    conn.close()
    return completed


def raw_work(path: Path, worker: int, synchronous: str) -> list[int]:
    """The floor: a bare loop of two BEGIN IMMEDIATE transactions per message."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    me, completed = f"worker{worker}", []
    while True:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            """UPDATE messages SET status = 'processing', session = ?
               WHERE source_chat = ? AND target_chat = ? AND msg_id = (
                   SELECT msg_id FROM messages WHERE source_chat = ? AND target_chat = ?
                     AND status = 'pending' ORDER BY msg_id LIMIT 1)
               RETURNING msg_id""", (me, SOURCE, TARGET, SOURCE, TARGET)).fetchone()
        conn.execute("COMMIT")
        if row is None:
            break
        conn.execute("BEGIN IMMEDIATE")
        done = conn.execute(
            "UPDATE messages SET status = 'done', target_msg_id = msg_id "
            "WHERE source_chat = ? AND target_chat = ? AND msg_id = ? AND session = ? "
            "RETURNING msg_id", (SOURCE, TARGET, row[0], me)).fetchone()
        conn.execute("COMMIT")
        completed += [done[0]] if done else []
    conn.close()
    return completed


def litequeue_load(path: Path, count: int) -> None:
    from litequeue import LiteQueue

    queue = LiteQueue(str(path))
    with queue.conn:
        for i in range(1, count + 1):
            queue.put(str(i))
    queue.conn.close()


def litequeue_work(path: Path, worker: int) -> list[int]:
    from litequeue import LiteQueue

    queue = LiteQueue(str(path), timeout=BUSY_TIMEOUT)
    completed = []
    while (message := queue.pop()) is not None:
        queue.done(message.message_id)
        completed.append(int(message.data))
    queue.conn.close()
    return completed


def huey_load(path: Path, count: int) -> None:
    from huey.storage import SqliteStorage

    storage = SqliteStorage(name="bench", filename=str(path), timeout=BUSY_TIMEOUT)
    for i in range(1, count + 1):
        storage.enqueue(str(i).encode())
    storage.close()


def huey_work(path: Path, worker: int, synchronous: str) -> list[int]:
    from huey.storage import SqliteStorage

    storage = SqliteStorage(name="bench", filename=str(path), timeout=BUSY_TIMEOUT)
    storage.conn.execute(f"PRAGMA synchronous = {synchronous}")   # huey's fsync: 0 or 2 only
    completed = []
    while (data := storage.dequeue()) is not None:
        storage.put_data(b"done:" + data, b"1")
        completed.append(int(data))
    storage.close()
    return completed


def _huey_normal(path: Path, worker: int) -> list[int]:
    return huey_work(path, worker, "NORMAL")


def _huey_full(path: Path, worker: int) -> list[int]:
    return huey_work(path, worker, "FULL")


# ----------------------------------------------------------------------------- PostgreSQL
# The same work on a PostgreSQL server: `path` is then a database URL (see run_design).

def pg_checkpoint_load(url: str, count: int) -> None:
    checkpoint = PostgresCheckpoint(url, "loader")
    with checkpoint.conn.cursor().copy(
            "COPY messages (source_chat, target_chat, msg_id) FROM STDIN") as copy:
        for i in range(1, count + 1):
            copy.write_row((SOURCE, TARGET, i))
    checkpoint.close()


def pg_checkpoint_work(url: str, worker: int) -> list[int]:
    """claim_next + complete on the PostgreSQL checkpoint."""
    return claim_and_complete_all(PostgresCheckpoint(url, f"worker{worker}"))


def _pg_cloner_path(url: str, worker: int) -> list[int]:
    return range_path(PostgresCheckpoint(url, f"worker{worker}"), True)


def pgqueuer_load(url: str, count: int) -> None:
    from pgqueuer.queries import Queries

    async def load() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        queries = Queries.from_psycopg_connection(conn)
        await queries.install()
        for first in range(1, count + 1, 1000):
            batch = range(first, min(first + 1000, count + 1))
            await queries.enqueue(["bench"] * len(batch), [str(i).encode() for i in batch],
                                  [0] * len(batch))
        await conn.close()
    asyncio.run(load())


def pgqueuer_work(url: str, worker: int, synchronous_commit: str) -> list[int]:
    from pgqueuer.queries import EntrypointExecutionParameter, Queries

    async def work() -> list[int]:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await conn.execute(f"SET synchronous_commit = {synchronous_commit}")
        queries = Queries.from_psycopg_connection(conn)
        entrypoints = {"bench": EntrypointExecutionParameter(concurrency_limit=0)}
        manager, completed = uuid.uuid4(), []
        while jobs := await queries.dequeue(1, entrypoints, manager, None,
                                            timedelta(seconds=30)):
            await queries.log_jobs([(job, "successful", None) for job in jobs])
            completed += [int(job.payload) for job in jobs]
        await conn.close()
        return completed
    return asyncio.run(work())


def _pgqueuer_normal(url: str, worker: int) -> list[int]:
    return pgqueuer_work(url, worker, "off")


def _pgqueuer_full(url: str, worker: int) -> list[int]:
    return pgqueuer_work(url, worker, "on")


@contextlib.contextmanager
def new_database(server_url: str, name: str) -> Iterator[str]:
    """A new database on the server of `server_url` (its URL), dropped afterwards."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ON_POSTGRES = {"PG checkpoint", "PG cloner path, copy", "pgqueuer"}


Design = tuple[Callable[[Path, int], None], Callable[[Path, int], list[int]], str]
DESIGNS: dict[str, dict[str, Design]] = {
    "NORMAL": {
        "raw UPDATE..RETURNING": (checkpoint_load, partial(raw_work, synchronous="NORMAL"), ""),
        "raw, per range": (checkpoint_load, partial(raw_range_work, synchronous="NORMAL"), ""),
        "checkpoint": (checkpoint_load, checkpoint_work, ""),
        "range claims": (checkpoint_load, _ranges_normal, ""),
        "huey": (huey_load, _huey_normal, "huey"),
        "litequeue": (litequeue_load, litequeue_work, "litequeue"),
        "PG checkpoint": (pg_checkpoint_load, pg_checkpoint_work, ""),
        "pgqueuer": (pgqueuer_load, _pgqueuer_normal, "pgqueuer"),
    },
    "FULL": {
        "raw UPDATE..RETURNING": (checkpoint_load, partial(raw_work, synchronous="FULL"), ""),
        "raw, per range": (checkpoint_load, partial(raw_range_work, synchronous="FULL"), ""),
        "cloner path, forward": (checkpoint_load, _cloner_forward, ""),
        "cloner path, copy": (checkpoint_load, _cloner_copy, ""),
        "huey": (huey_load, _huey_full, "huey"),
        "PG cloner path, copy": (pg_checkpoint_load, _pg_cloner_path, ""),
        "pgqueuer": (pgqueuer_load, _pgqueuer_full, "pgqueuer"),
    },
}


# ----------------------------------------------------------------------------- running

def _child(level: str, design: str, path: Path, worker: int, ready, results) -> None:
    work = DESIGNS[level][design][1]
    ready.wait(START_TIMEOUT)                  # every process imported, then all start
    try:
        results.put((work(path, worker), None))
    except (sqlite3.Error, psycopg.Error) as exc:   # e.g. starved past the busy timeout
        results.put(([], f"{type(exc).__name__}: {exc}"))


def run_design(level: str, design: str, count: int, processes: int,
               folder: Path, db_url: str | None = None) -> tuple[float, int, int, list[str]]:
    """(messages per second, completions, duplicates, worker failures) for one design and
    process count."""
    name = f"{level}-{design.replace(' ', '_').replace(',', '')}-{processes}"
    if design in ON_POSTGRES:
        with new_database(db_url, "bench_" + name.lower().replace("-", "_")) as url:
            return _run(level, design, url, count, processes)
    return _run(level, design, folder / f"{name}.db", count, processes)


def _run(level: str, design: str, path: Path | str, count: int,
         processes: int) -> tuple[float, int, int, list[str]]:
    load = DESIGNS[level][design][0]
    load(path, count)
    context = mp.get_context("spawn")
    ready, results = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=_child, args=(level, design, path, w, ready, results))
               for w in range(processes)]
    for worker in workers:
        worker.start()
    ready.wait(START_TIMEOUT)
    began = time.perf_counter()
    outcomes = [results.get() for _ in workers]
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    failures = [error for _, error in outcomes if error]
    failures += [f"exit code {w.exitcode}" for w in workers if w.exitcode]
    every = [i for ids, _ in outcomes for i in ids]
    return len(every) / elapsed, len(every), len(every) - len(set(every)), failures


class NormalCheckpoint(SqliteCheckpoint):
    """The checkpoint with its random_id commits at NORMAL, to price synchronous=FULL."""

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        with transaction(self.conn):
            yield


def random_id_commit_ms(folder: Path, count: int = 2000) -> tuple[float, float]:
    """Milliseconds per random_ids() commit of one message, (FULL as shipped, NORMAL)."""
    results = []
    for kind in (SqliteCheckpoint, NormalCheckpoint):
        checkpoint = kind(folder / f"{kind.__name__}.db", "one")
        checkpoint.bind(SOURCE, TARGET)
        checkpoint.claim(range(1, count + 1))
        began = time.perf_counter()
        for msg_id in range(1, count + 1):
            checkpoint.random_ids([msg_id])
        results.append((time.perf_counter() - began) * 1000 / count)
        checkpoint.close()
    return results[0], results[1]


def installed(module: str) -> bool:
    """Whether a comparison library can be imported."""
    return not module or importlib.util.find_spec(module) is not None


def verdicts(rates: dict[tuple[str, str, int], float], top: int) -> list[tuple[str, bool]]:
    """The goals, each as (line, met)."""
    lines = []
    for level, ours in (("NORMAL", "range claims"), ("FULL", "cloner path, copy"),
                        ("FULL", "cloner path, forward")):
        rival = rates.get((level, "huey", top))
        if rival and (level, ours, top) in rates:
            ratio = rates[level, ours, top] / rival
            lines.append((f"{level}, {top} processes: {ours} {ratio:.1f}x huey "
                          f"(goal >= {GOAL_HUEY:g}x)", ratio >= GOAL_HUEY))
        if (level, ours, 4) in rates and (level, ours, 8) in rates:
            share = rates[level, ours, 8] / rates[level, ours, 4]
            lines.append((f"{level}: {ours} at 8 processes = {share:.2f} of 4 processes "
                          f"(goal >= {GOAL_SCALING:g}, no collapse)", share >= GOAL_SCALING))
    for level, raw_design, ours in (("NORMAL", "raw, per range", "range claims"),
                                    ("NORMAL", "raw UPDATE..RETURNING", "checkpoint"),
                                    ("FULL", "raw, per range", "cloner path, forward")):
        raw = rates.get((level, raw_design, top))
        if raw and (level, ours, top) in rates:
            factor = raw / rates[level, ours, top]
            lines.append((f"{level}, {top} processes: {raw_design} is {factor:.2f}x {ours} "
                          f"(goal <= {GOAL_RAW:g}x)", factor <= GOAL_RAW))
    return lines


def postgres_ratios(rates: dict[tuple[str, str, int], float], counts: list[int]) -> list[str]:
    """The PostgreSQL checkpoint against pgqueuer at each process count (no goal set)."""
    lines = []
    for level, ours in (("NORMAL", "PG checkpoint"), ("FULL", "PG cloner path, copy")):
        for n in counts:
            if (level, ours, n) in rates and (level, "pgqueuer", n) in rates:
                ratio = rates[level, ours, n] / rates[level, "pgqueuer", n]
                lines.append(f"{level}, {n} processes: {ours} {ratio:.1f}x pgqueuer")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES,
                        help="messages per run (default: %(default)s)")
    parser.add_argument("--processes", default=DEFAULT_PROCESSES,
                        help="comma-separated process counts (default: %(default)s)")
    parser.add_argument("--levels", default="NORMAL,FULL",
                        help="durability levels to run (default: %(default)s)")
    parser.add_argument("--db-url", metavar="URL",
                        help="also measure the PostgreSQL designs on this server "
                             "(postgresql://user@host:5432/postgres; the user creates and "
                             "drops one database per run)")
    args = parser.parse_args(argv)
    try:
        counts = [int(p) for p in args.processes.split(",")]
    except ValueError:
        parser.error(f"--processes {args.processes!r}: give numbers separated by commas, "
                     "e.g. 1,2,4,8")
    if args.messages < 1 or min(counts) < 1:
        parser.error("--messages and --processes must be positive")
    if args.db_url and not is_postgres_url(args.db_url):
        parser.error(f"--db-url {redact_url(args.db_url)}: give a postgresql:// URL")
    levels = [level.strip().upper() for level in args.levels.split(",")]
    if not set(levels) <= set(DESIGNS):
        parser.error(f"--levels: choose from {', '.join(DESIGNS)}")
    for missing in {m for level in levels for _, _, m in DESIGNS[level].values()
                    if not installed(m)}:
        print(f"{missing} not installed (pip install -r bench/requirements-bench.txt); "
              "skipped", file=sys.stderr)
    rates: dict[tuple[str, str, int], float] = {}
    duplicates_total, failed_total = 0, 0
    if not args.db_url:
        print("PostgreSQL designs skipped (give --db-url postgresql://...)", file=sys.stderr)
    print(f"{args.messages} messages, claim + complete, processes: {args.processes}"
          + (f", PostgreSQL {redact_url(args.db_url)}" if args.db_url else ""))
    print(f"{'durability':<11}{'design':<25}{'procs':>6}{'msg/s':>10}{'completed':>11}"
          f"{'duplicates':>12}{'failed':>8}")
    with tempfile.TemporaryDirectory(prefix="checkpoint-bench-") as folder:
        for level in levels:
            for processes in counts:
                for design, (_, _, module) in DESIGNS[level].items():
                    if not installed(module) or (design in ON_POSTGRES and not args.db_url):
                        continue
                    rate, done, duplicates, failures = run_design(
                        level, design, args.messages, processes, Path(folder), args.db_url)
                    rates[level, design, processes] = rate
                    duplicates_total += duplicates
                    failed_total += len(failures)
                    note = f"  {failures[0]}" if failures else ""
                    print(f"{level:<11}{design:<25}{processes:>6}{rate:>10,.0f}{done:>11}"
                          f"{duplicates:>12}{len(failures):>8}{note}", flush=True)
        full, normal = random_id_commit_ms(Path(folder))
    print(f"random_id commit (one process): {full:.2f} ms with synchronous=FULL, "
          f"{normal:.2f} ms at NORMAL: durability costs {full - normal:.2f} ms per send")
    for line, met in verdicts(rates, max(counts)):
        print(f"{'meets' if met else 'MISSES'}: {line}")
    for line in postgres_ratios(rates, counts):
        print(line)
    print(f"duplicates in all runs: {duplicates_total}; failed workers: {failed_total}")
    return 0 if duplicates_total == 0 and failed_total == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
