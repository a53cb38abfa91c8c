#!/usr/bin/env python3
"""Claim + complete throughput of the cloner's SqliteCheckpoint against litequeue and huey.

Each design gets the same work: N messages loaded into a fresh SQLite file, then P worker
processes (real OS processes, started together) each loop "claim the next message, mark it
complete" until nothing is left. Printed per design and process count: messages per second
(wall time from the start signal to the last worker's exit) and duplicates (completions
beyond one per message; must be 0).

SqliteCheckpoint uses the suite's settings (WAL, synchronous=NORMAL, BEGIN IMMEDIATE,
UPDATE ... RETURNING), one message per claim; "SqliteCheckpoint/10" claims 10 at a time
(the cloner claims a page's units ahead) and completes each on its own. litequeue: pop()
+ done() with its own WAL/NORMAL settings. huey: SqliteStorage.dequeue() (claim and delete
in one transaction) + put_data() as the completion record, with huey's default settings
(WAL, SQLite's default synchronous).

With --db-url postgresql://... (a server where the user may create databases) the same run
measures the PostgreSQL designs too, each in a new database of that server dropped after
it: PostgresCheckpoint (FOR UPDATE SKIP LOCKED, server-clock leases), PostgresCheckpoint/10,
and pgqueuer: Queries.dequeue() (FOR UPDATE SKIP LOCKED, status 'picked') + log_jobs()
'successful' as the completion, over psycopg's async driver.

    pip install -r bench/requirements-bench.txt     # litequeue, huey, pgqueuer: bench only
    python bench/checkpoint_bench.py [--messages 20000] [--processes 1,2,4,8]
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
from datetime import timedelta
from pathlib import Path

import psycopg

SUITE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SUITE_DIR))

from clone_streaming import PostgresCheckpoint, SqliteCheckpoint  # noqa: E402
from migrate_db import is_postgres_url, redact_url, transaction  # noqa: E402

DEFAULT_MESSAGES = 20_000
DEFAULT_PROCESSES = "1,2,4,8"
SOURCE = "-100777"
TARGET = "-100778"
START_TIMEOUT = 60.0
CLAIM_BATCH = 10
GOAL_HUEY = 1.5
GOAL_LITEQUEUE = 10.0


# ----------------------------------------------------------------------------- the designs
# Each design: load(path, n) in the parent, work(path, worker) in a child -> completed ids.

def checkpoint_load(path: Path, count: int) -> None:
    checkpoint = SqliteCheckpoint(path, "loader")
    with transaction(checkpoint.conn):
        checkpoint.conn.executemany(
            "INSERT INTO messages (source_chat, target_chat, msg_id) VALUES (?, ?, ?)",
            ((SOURCE, TARGET, i) for i in range(1, count + 1)))
    checkpoint.close()


def checkpoint_work(path: Path, worker: int, per_claim: int = 1) -> list[int]:
    checkpoint = SqliteCheckpoint(path, f"worker{worker}")
    checkpoint.bind(SOURCE, TARGET)
    completed = []
    while ids := checkpoint.claim_next(per_claim):
        completed += [i for i in ids if checkpoint.complete({i: i})]
    checkpoint.close()
    return completed


def checkpoint_work_batched(path: Path, worker: int) -> list[int]:
    """As the cloner claims a page: 10 messages per claim, each completed on its own."""
    return checkpoint_work(path, worker, CLAIM_BATCH)


def litequeue_load(path: Path, count: int) -> None:
    from litequeue import LiteQueue

    queue = LiteQueue(str(path))
    with queue.conn:
        for i in range(1, count + 1):
            queue.put(str(i))
    queue.conn.close()


def litequeue_work(path: Path, worker: int) -> list[int]:
    from litequeue import LiteQueue

    queue = LiteQueue(str(path), timeout=30)
    completed = []
    while (message := queue.pop()) is not None:
        queue.done(message.message_id)
        completed.append(int(message.data))
    queue.conn.close()
    return completed


def huey_load(path: Path, count: int) -> None:
    from huey.storage import SqliteStorage

    storage = SqliteStorage(name="bench", filename=str(path), timeout=30)
    for i in range(1, count + 1):
        storage.enqueue(str(i).encode())
    storage.close()


def huey_work(path: Path, worker: int) -> list[int]:
    from huey.storage import SqliteStorage

    storage = SqliteStorage(name="bench", filename=str(path), timeout=30)
    completed = []
    while (data := storage.dequeue()) is not None:
        storage.put_data(b"done:" + data, b"1")
        completed.append(int(data))
    storage.close()
    return completed


def pg_checkpoint_load(url: str, count: int) -> None:
    checkpoint = PostgresCheckpoint(url, "loader")
    with checkpoint.conn.cursor().copy(
            "COPY messages (source_chat, target_chat, msg_id) FROM STDIN") as copy:
        for i in range(1, count + 1):
            copy.write_row((SOURCE, TARGET, i))
    checkpoint.close()


def pg_checkpoint_work(url: str, worker: int, per_claim: int = 1) -> list[int]:
    checkpoint = PostgresCheckpoint(url, f"worker{worker}")
    checkpoint.bind(SOURCE, TARGET)
    completed = []
    while ids := checkpoint.claim_next(per_claim):
        completed += [i for i in ids if checkpoint.complete({i: i})]
    checkpoint.close()
    return completed


def pg_checkpoint_work_batched(url: str, worker: int) -> list[int]:
    return pg_checkpoint_work(url, worker, CLAIM_BATCH)


async def _pgqueuer(url: str):
    from pgqueuer.queries import Queries

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return conn, Queries.from_psycopg_connection(conn)


def pgqueuer_load(url: str, count: int) -> None:
    async def load() -> None:
        conn, queries = await _pgqueuer(url)
        await queries.install()
        for first in range(1, count + 1, 1000):
            batch = range(first, min(first + 1000, count + 1))
            await queries.enqueue(["bench"] * len(batch), [str(i).encode() for i in batch],
                                  [0] * len(batch))
        await conn.close()
    asyncio.run(load())


def pgqueuer_work(url: str, worker: int) -> list[int]:
    from pgqueuer.queries import EntrypointExecutionParameter

    async def work() -> list[int]:
        conn, queries = await _pgqueuer(url)
        entrypoints = {"bench": EntrypointExecutionParameter(concurrency_limit=0)}
        manager, completed = uuid.uuid4(), []
        while jobs := await queries.dequeue(1, entrypoints, manager, None,
                                            timedelta(seconds=30)):
            await queries.log_jobs([(job, "successful", None) for job in jobs])
            completed += [int(job.payload) for job in jobs]
        await conn.close()
        return completed
    return asyncio.run(work())


DESIGNS: dict[str, tuple[Callable[[Path, int], None], Callable[[Path, int], list[int]], str]] = {
    "SqliteCheckpoint": (checkpoint_load, checkpoint_work, ""),
    "SqliteCheckpoint/10": (checkpoint_load, checkpoint_work_batched, ""),
    "litequeue": (litequeue_load, litequeue_work, "litequeue"),
    "huey": (huey_load, huey_work, "huey"),
    "PostgresCheckpoint": (pg_checkpoint_load, pg_checkpoint_work, ""),
    "PostgresCheckpoint/10": (pg_checkpoint_load, pg_checkpoint_work_batched, ""),
    "pgqueuer": (pgqueuer_load, pgqueuer_work, "pgqueuer"),
}
ON_POSTGRES = {"PostgresCheckpoint", "PostgresCheckpoint/10", "pgqueuer"}


# ----------------------------------------------------------------------------- running

def _child(design: str, path: Path, worker: int, ready, results) -> None:
    work = DESIGNS[design][1]
    ready.wait(START_TIMEOUT)                  # every process imported, then all start
    try:
        results.put((work(path, worker), None))
    except (sqlite3.OperationalError, psycopg.OperationalError) as exc:
        results.put(([], str(exc)))                # e.g. starved past the busy timeout


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


def run_design(design: str, count: int, processes: int, folder: Path,
               db_url: str | None = None) -> tuple[float, int, int, list[str]]:
    """(messages per second, completions, duplicates, worker failures) for one design and
    process count."""
    if design in ON_POSTGRES:
        name = "bench_" + "".join(c if c.isalnum() else "_" for c in design.lower())
        with new_database(db_url, f"{name}_{processes}") as url:
            return _run(design, url, count, processes)
    return _run(design, folder / f"{design}-{processes}.db", count, processes)


def _run(design: str, path: Path | str, count: int,
         processes: int) -> tuple[float, int, int, list[str]]:
    load = DESIGNS[design][0]
    load(path, count)
    context = mp.get_context("spawn")
    ready, results = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=_child, args=(design, path, w, ready, results))
               for w in range(processes)]
    for worker in workers:
        worker.start()
    ready.wait(START_TIMEOUT)
    began = time.perf_counter()
    outcomes = [results.get() for _ in workers]
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    every = [i for ids, _ in outcomes for i in ids]
    failures = [error for _, error in outcomes if error]
    return len(every) / elapsed, len(every), len(every) - len(set(every)), failures


def installed(module: str) -> bool:
    """Whether a comparison library can be imported."""
    return not module or importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES,
                        help="messages per run (default: %(default)s)")
    parser.add_argument("--processes", default=DEFAULT_PROCESSES,
                        help="comma-separated process counts (default: %(default)s)")
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
    designs = [d for d, (_, _, module) in DESIGNS.items() if installed(module)
               and (args.db_url or d not in ON_POSTGRES)]
    for missing in DESIGNS.keys() - set(designs) - (set() if args.db_url else ON_POSTGRES):
        print(f"{missing} not installed (pip install -r bench/requirements-bench.txt); "
              "skipped", file=sys.stderr)
    if not args.db_url:
        print("PostgreSQL designs skipped (give --db-url postgresql://...)", file=sys.stderr)
    rates: dict[tuple[str, int], float] = {}
    duplicates_total = 0
    print(f"{args.messages} messages, claim + complete, processes: {args.processes}"
          + (f", PostgreSQL {redact_url(args.db_url)}" if args.db_url else ""))
    print(f"{'design':<20}{'procs':>6}{'msg/s':>10}{'completed':>11}{'duplicates':>12}")
    with tempfile.TemporaryDirectory(prefix="checkpoint-bench-") as folder:
        for processes in counts:
            for design in designs:
                rate, done, duplicates, failures = run_design(design, args.messages,
                                                              processes, Path(folder),
                                                              args.db_url)
                rates[design, processes] = rate
                duplicates_total += duplicates
                note = f"  {len(failures)} worker(s) failed: {failures[0]}" if failures else ""
                print(f"{design:<20}{processes:>6}{rate:>10,.0f}{done:>11}{duplicates:>12}"
                      f"{note}", flush=True)
    top = max(counts)
    for ours in ("SqliteCheckpoint", "SqliteCheckpoint/10"):
        for rival, goal in (("huey", GOAL_HUEY), ("litequeue", GOAL_LITEQUEUE)):
            if (ours, top) in rates and (rival, top) in rates:
                ratio = rates[ours, top] / rates[rival, top]
                verdict = "meets" if ratio >= goal else "MISSES"
                print(f"at {top} processes: {ours} {ratio:.1f}x {rival} "
                      f"({verdict} the goal of {goal:g}x)")
    for ours in ("PostgresCheckpoint", "PostgresCheckpoint/10"):
        if (ours, top) in rates and ("pgqueuer", top) in rates:
            print(f"at {top} processes: {ours} "
                  f"{rates[ours, top] / rates['pgqueuer', top]:.1f}x pgqueuer")
    print(f"duplicates in all runs: {duplicates_total}")
    return 0 if duplicates_total == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
