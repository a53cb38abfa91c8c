#!/usr/bin/env python3
"""The suite's database lifecycle: open, upgrade and write to its SQLite files.

Every script opens its databases with `connect(path)`: WAL journal, synchronous=NORMAL, a
busy timeout, foreign keys on, `schema.sql` applied and pending migrations run. Every write
goes through `with transaction(conn):`, which is `BEGIN IMMEDIATE` ... `COMMIT`, so a
read-then-write never meets SQLITE_BUSY on a lock upgrade.

Upgrading an existing database happens in one `BEGIN IMMEDIATE` transaction, in this order:
missing tables are created, columns the schema has and an older table lacks are added
(`add_missing_columns`), the numbered migrations in MIGRATIONS not yet recorded in
`PRAGMA user_version` run, and finally the schema's indexes are created. Nothing is dropped.

Run on its own it migrates the databases it is given (default: every *.db under
sessions/shared/), writing a backup copy next to any database with data before changing it:

    python migrate_db.py [DB ...]
"""
from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().with_name("schema.sql")
DEFAULT_DB_DIR = Path(__file__).resolve().parent / "sessions" / "shared"
BUSY_TIMEOUT_SECONDS = 30.0
WAL_RETRY_SECONDS = 0.02
SQLITE_HEADER = b"SQLite format 3\x00"


def utcnow() -> str:
    """The current time as the suite stores it: UTC ISO-8601 text."""
    return datetime.now(UTC).isoformat()


# ----------------------------------------------------------------------------- schema parsing

def schema_statements(schema_text: str | None = None) -> list[str]:
    """The statements of schema.sql, in file order, comments stripped."""
    text = SCHEMA_PATH.read_text(encoding="utf-8") if schema_text is None else schema_text
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements, current = [], ""
    for line in lines:
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"{SCHEMA_PATH.name}: unterminated statement: {current.strip()[:60]}")
    return statements


def _is_table_statement(statement: str) -> bool:
    return re.match(r"CREATE\s+TABLE\b", statement, re.IGNORECASE) is not None


def _reference_db() -> sqlite3.Connection:
    """An in-memory database built from schema.sql: the shape every database should have."""
    ref = sqlite3.connect(":memory:")
    for statement in schema_statements():
        ref.execute(statement)
    return ref


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return {name for (name,) in rows}


def _indexes(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"
    )
    return {name for (name,) in rows}


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple]:
    return {row[1]: row for row in conn.execute(f'PRAGMA table_info("{table}")')}


def add_missing_columns(conn: sqlite3.Connection, ref: sqlite3.Connection) -> list[str]:
    """Add to each existing table the columns schema.sql gives it and it lacks.

    A column is added with its declared type and constant default; NOT NULL is kept only
    where a default makes it legal for ALTER TABLE. Rows already there get the default (or
    NULL), which is how the spec wants old rows to look (e.g. task_attempts.run_id NULL).
    """
    changes = []
    for table in sorted(_tables(ref) & _tables(conn)):
        have = _columns(conn, table)
        for name, (_, _, col_type, notnull, default, _) in _columns(ref, table).items():
            if name in have:
                continue
            clause = f'"{name}" {col_type}'
            if default is not None and "(" not in str(default):
                clause += f" DEFAULT {default}"
                if notnull:
                    clause += " NOT NULL"
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN {clause}')
            changes.append(f"added column {table}.{name}")
    return changes


# ----------------------------------------------------------------------------- migrations
# Numbered data migrations, applied in order and recorded in PRAGMA user_version. Each is
# idempotent and runs inside the upgrade's transaction; it returns what it changed, if
# anything, for the report. Columns and tables come from schema.sql before these run.

def m001_checkpoint_status(conn: sqlite3.Connection) -> str | None:
    """Earlier cloner checkpoints left unclaimed rows with status NULL, and claims with no
    timestamp that nothing ever released: both become pending again."""
    unclaimed = conn.execute(
        "UPDATE messages SET status = 'pending' WHERE status IS NULL"
    ).rowcount
    stuck = conn.execute(
        "UPDATE messages SET status = 'pending', session = NULL "
        "WHERE status = 'processing' AND claimed_at IS NULL"
    ).rowcount
    if unclaimed or stuck:
        return (f"messages: {unclaimed} unclaimed rows set to pending, "
                f"{stuck} claims without a timestamp released")
    return None


def m002_campaign_per_run(conn: sqlite3.Connection) -> str | None:
    """Earlier campaigns marked a task `completed` for good once its cycles were used up, and
    left `in_progress` behind after a crash. Cycles are per run now: both become pending.
    Old attempt rows keep run_id NULL and never count against a run."""
    changed = conn.execute(
        "UPDATE tasks SET status = 'pending', assigned_profile_id = NULL "
        "WHERE status IN ('completed', 'in_progress') AND is_blocked = 0"
    ).rowcount
    return f"tasks: {changed} completed/in-progress tasks made pending for per-run cycles" \
        if changed else None


def m003_dialer_legacy_session(conn: sqlite3.Connection) -> str | None:
    """Earlier dialer databases had no sessions: their results are grouped into one session
    named `legacy`, with its statistics computed from the rows."""
    count = conn.execute(
        "SELECT COUNT(*) FROM dial_results WHERE session_id IS NULL"
    ).fetchone()[0]
    if not count:
        return None
    conn.execute("UPDATE dial_results SET session_id = 'legacy' WHERE session_id IS NULL")
    conn.execute(
        """INSERT OR IGNORE INTO sessions (session_id, start_time, end_time, storage_type,
               total_calls, successful_calls, modem_detections, randomized)
           SELECT 'legacy', MIN(timestamp), MAX(timestamp), 'sqlite', COUNT(*),
                  SUM(success = 1), SUM(status = 'modem' OR carrier_detected = 1), 0
           FROM dial_results WHERE session_id = 'legacy'"""
    )
    return f"dial_results: {count} rows without a session grouped into session 'legacy'"


def m004_checkpoint_per_pair(conn: sqlite3.Connection) -> str | None:
    """Checkpoint rows were keyed by (source_chat, msg_id), so a second target of the same
    source found everything "done". The table is rebuilt keyed by (source_chat,
    target_chat, msg_id), keeping every row; rows with no target_chat get '' and are filed
    under the configured pair by the cloner's first run (Checkpoint.bind)."""
    key = [row[1] for row in sorted(conn.execute("PRAGMA table_info(messages)"),
                                    key=lambda row: row[5]) if row[5]]
    if "target_chat" in key:
        return None
    ref = _reference_db()
    try:
        create = ref.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                             "AND name = 'messages'").fetchone()[0]
        names = list(_columns(ref, "messages"))
    finally:
        ref.close()
    conn.execute(re.sub(r"\bmessages\b", "messages_m004", create, count=1))
    have = _columns(conn, "messages")
    values = ", ".join("COALESCE(target_chat, '')" if name == "target_chat" else
                       f'"{name}"' if name in have else "NULL" for name in names)
    quoted = ", ".join(f'"{name}"' for name in names)
    moved = conn.execute(f"INSERT INTO messages_m004 ({quoted}) SELECT {values} "
                         "FROM messages").rowcount
    conn.execute("DROP TABLE messages")
    conn.execute("ALTER TABLE messages_m004 RENAME TO messages")
    return f"messages: {moved} rows re-keyed by (source_chat, target_chat, msg_id)"


MIGRATIONS: list[Callable[[sqlite3.Connection], str | None]] = [
    m001_checkpoint_status,
    m002_campaign_per_run,
    m003_dialer_legacy_session,
    m004_checkpoint_per_pair,
]
SCHEMA_VERSION = len(MIGRATIONS)


# ----------------------------------------------------------------------------- connections

@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`; rolled back if the block raises.

    The write lock is taken at BEGIN, waiting up to the busy timeout for another writer,
    so reads inside the block stay valid until COMMIT.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def upgrade(conn: sqlite3.Connection) -> list[str]:
    """Bring `conn`'s database to schema.sql and the last migration; returns what changed."""
    ref = _reference_db()
    statements = schema_statements()
    changes: list[str] = []
    with transaction(conn):
        tables_before, indexes_before = _tables(conn), _indexes(conn)
        for statement in statements:
            if _is_table_statement(statement):
                conn.execute(statement)
        changes += [f"created table {t}" for t in sorted(_tables(conn) - tables_before)]
        changes += add_missing_columns(conn, ref)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS, start=1):
            if number > version:
                report = migration(conn)
                if report:
                    changes.append(f"m{number:03d}: {report}")
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for statement in statements:
            if not _is_table_statement(statement):
                conn.execute(statement)
        changes += [f"created index {i}" for i in sorted(_indexes(conn) - indexes_before)]
    ref.close()
    return changes


def pending_changes(conn: sqlite3.Connection) -> bool:
    """Whether `upgrade` would change anything, without writing."""
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        return True
    ref = _reference_db()
    try:
        if not _tables(ref) <= _tables(conn) or not _indexes(ref) <= _indexes(conn):
            return True
        return any(set(_columns(ref, t)) - set(_columns(conn, t)) for t in _tables(ref))
    finally:
        ref.close()


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL, waiting for other processes doing the same to a new file.

    Changing the journal mode does not go through the busy handler: when several processes
    create one database at once, the losers get "database is locked" immediately.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_RETRY_SECONDS)


def open_database(path: str | Path, timeout: float = BUSY_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """Open with the suite's settings (WAL, NORMAL sync, busy timeout, foreign keys), no upgrade."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _enable_wal(conn, timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def connect(path: str | Path, timeout: float = BUSY_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """Open a suite database: parent folders created, settings applied, schema up to date."""
    conn = open_database(path, timeout)
    try:
        if pending_changes(conn):
            upgrade(conn)
    except BaseException:
        conn.close()
        raise
    return conn


# ----------------------------------------------------------------------------- command line

def backup_database(conn: sqlite3.Connection, path: Path) -> Path:
    """A consistent copy of the database next to it, named with the time; returns its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.bak-{stamp}")
    partial = target.with_name(target.name + ".part")
    dest = sqlite3.connect(str(partial))
    try:
        conn.backup(dest)
    finally:
        dest.close()
    partial.replace(target)
    return target


def is_sqlite_file(path: str | Path) -> bool:
    """Whether the file starts with SQLite's header (an empty file does not)."""
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def migrate_file(path: Path, timeout: float = BUSY_TIMEOUT_SECONDS) -> str:
    """Migrate one existing database file; returns the report line. Raises on failure."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database file")
    # the mode bits too: root may write anywhere, but a file marked read-only is kept so
    if not path.stat().st_mode & 0o222 or not os.access(path, os.W_OK) \
            or not os.access(path.parent, os.W_OK):
        raise PermissionError(f"{path}: read-only (the file and its folder must be writable)")
    if path.stat().st_size and not is_sqlite_file(path):
        raise sqlite3.DatabaseError(f"{path}: not a SQLite database")
    conn = open_database(path, timeout)
    try:
        if not pending_changes(conn):
            return f"{path}: up to date"
        has_data = bool(_tables(conn))
        backup = backup_database(conn, path) if has_data else None
        changes = upgrade(conn)
    finally:
        conn.close()
    lines = [f"{path}: {len(changes)} change(s)"] + [f"  {change}" for change in changes]
    if backup:
        lines.append(f"  backup before migrating: {backup}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Create or upgrade the suite's SQLite databases in place, keeping every row.",
        epilog="With no DB given, every *.db under sessions/shared/ is migrated. "
               "A second run reports 'up to date'.")
    parser.add_argument("databases", nargs="*", metavar="DB", type=Path,
                        help="database files to migrate")
    parser.add_argument("--timeout", type=float, default=BUSY_TIMEOUT_SECONDS,
                        help="seconds to wait for a database locked by another process "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    databases = args.databases or sorted(DEFAULT_DB_DIR.glob("*.db"))
    if not databases:
        print(f"no databases under {DEFAULT_DB_DIR}; nothing to do")
        return 0
    failures = 0
    for path in databases:
        try:
            print(migrate_file(path, args.timeout))
        except sqlite3.OperationalError as exc:
            reason = "locked by another process past the timeout" \
                if "locked" in str(exc) else str(exc)
            print(f"error: {path}: {reason}; nothing was changed", file=sys.stderr)
            failures += 1
        except (OSError, sqlite3.DatabaseError) as exc:
            print(f"error: {exc}; nothing was changed", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
