#!/usr/bin/env python3
"""The suite's database lifecycle: open, upgrade and write to its SQLite files.

Every script opens its databases with `connect(path, kind=KIND)`: WAL journal,
synchronous=NORMAL, a busy timeout, foreign keys on, its part of `schema.sql` applied and
pending migrations run. Every write goes through `with transaction(conn):`, which is
`BEGIN IMMEDIATE` ... `COMMIT`, so a read-then-write never meets SQLITE_BUSY on a lock
upgrade.

Kinds of database. schema.sql is split into sections, one per kind (KINDS: checkpoint,
accounts, campaign, heatup, dialer); each starts with `-- kind: NAME  recognised by: ...`.
A database gets only the sections of its kinds, so e.g. a campaign database never receives
the cloner's tables or columns (the earlier campaign system had its own, different
`messages` table). Its kinds are the one its caller names plus those `recognise_kinds`
finds from its tables (a listed table, or a listed table having the listed column). A
database that names no kind and has none recognisable (a new file opened with
`connect(path)`) gets every section, as before kinds existed.

Upgrading an existing database happens in one `BEGIN IMMEDIATE` transaction, in this order:
missing tables of its kinds are created, columns the schema has and an older table lacks are
added (`add_missing_columns`), the numbered migrations of its kinds not yet applied run, and
finally its kinds' indexes are created. Nothing is dropped.

Migrations: MIGRATIONS lists (kind, function) in number order; a migration's number is in
its name (`m010_...` is 10) and numbers are allocated in ranges, so they may have gaps:
m001-m003 the first ones, m004-m009 cloner checkpoints (issue 12), m010-m019 earlier
campaign databases (issue 13), m020 onwards issue 15. `PRAGMA user_version` records the
number of the last migration applied (SCHEMA_VERSION, the highest number, once up to date);
a migration runs when its number is above it and the database is of its kind.

Run on its own it migrates the databases it is given (default: every *.db under
sessions/shared/), each by the kinds recognised in it, writing a backup copy next to any
database with data before changing it:

    python migrate_db.py [DB ...]
"""
from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

KIND_LINE = re.compile(r"--\s*kind:\s*(\w+)\s+recognised by:\s*(.+)$")


@dataclass(frozen=True)
class Section:
    """One kind's part of schema.sql: its statements and how a database of it is recognised
    (table names, or (table, column) pairs)."""

    kind: str
    recognised_by: tuple[tuple[str, str | None], ...]
    statements: tuple[str, ...]


def schema_sections(schema_text: str | None = None) -> dict[str, Section]:
    """The sections of schema.sql by kind, in file order; statements with comments stripped."""
    text = SCHEMA_PATH.read_text(encoding="utf-8") if schema_text is None else schema_text
    sections: dict[str, Section] = {}
    kind, marks, statements, current = None, (), [], ""

    def close() -> None:
        if kind is not None:
            sections[kind] = Section(kind, marks, tuple(statements))

    for line in text.splitlines():
        marker = KIND_LINE.match(line.strip())
        if marker:
            close()
            kind, statements = marker.group(1), []
            marks = tuple((name.partition(".")[0], name.partition(".")[2] or None)
                          for name in re.split(r"[\s,]+", marker.group(2).strip()) if name)
            continue
        if line.lstrip().startswith("--"):
            continue
        current += line + "\n"
        if sqlite3.complete_statement(current):
            if kind is None:
                raise ValueError(f"{SCHEMA_PATH.name}: statement before any '-- kind:' line: "
                                 f"{current.strip()[:60]}")
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"{SCHEMA_PATH.name}: unterminated statement: {current.strip()[:60]}")
    close()
    return sections


SECTIONS = schema_sections()
KINDS = tuple(SECTIONS)


def schema_statements(kinds: Iterable[str] | None = None) -> list[str]:
    """The statements of schema.sql for these kinds (default: every kind), in file order."""
    wanted = set(KINDS if kinds is None else kinds)
    return [statement for kind, section in SECTIONS.items() if kind in wanted
            for statement in section.statements]


def _is_table_statement(statement: str) -> bool:
    return re.match(r"CREATE\s+TABLE\b", statement, re.IGNORECASE) is not None


def _reference_db(kinds: Iterable[str]) -> sqlite3.Connection:
    """An in-memory database built from these kinds' sections: the shape it should have."""
    ref = sqlite3.connect(":memory:")
    for statement in schema_statements(kinds):
        ref.execute(statement)
    return ref


def recognise_kinds(conn: sqlite3.Connection) -> set[str]:
    """The kinds whose recognising tables (or table columns) the database has."""
    tables = _tables(conn)
    kinds = set()
    for kind, section in SECTIONS.items():
        for table, column in section.recognised_by:
            if table in tables and (column is None or column in _columns(conn, table)):
                kinds.add(kind)
                break
    return kinds


def database_kinds(conn: sqlite3.Connection, kind: str | None = None) -> set[str]:
    """The kinds a database is upgraded as: `kind` and those recognised in it; every kind
    when neither gives one (a new file opened without a kind)."""
    if kind is not None and kind not in SECTIONS:
        raise ValueError(f"unknown database kind {kind!r} (known: {', '.join(SECTIONS)})")
    kinds = recognise_kinds(conn) | ({kind} if kind else set())
    return kinds or set(SECTIONS)


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


# Earlier campaign system (schema "v2.0", NOTES.md): times are `YYYY-MM-DD HH:MM:SS` UTC text,
# profiles carry an external `profile_id` (a UUID), task_attempts keep their time in
# `timestamp`, and its `messages` table holds message templates. Its attempts keep naming
# their account by that UUID (its views join on it); campaign.py counts them by either id.
LEGACY_TIME_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
# the suite's form of the same instant: what campaign.to_text writes
LEGACY_TIME_AS_ISO = "replace({column}, ' ', 'T') || '.000000+00:00'"
CAMPAIGN_TIME_COLUMNS = {
    "tasks": ("last_attempt_at", "next_available_at", "claimed_at", "created_at", "updated_at"),
    "task_attempts": ("attempted_at",),
    "profiles": ("created_at", "updated_at", "last_message_time", "hour_reset_time"),
    "campaign_texts": ("created_at",),
}


def m010_campaign_profile_ids(conn: sqlite3.Connection) -> str | None:
    """Every profile has an external id: the earlier system's UUID is kept, profiles the
    suite added before it kept one get a new UUID4."""
    missing = [pid for (pid,) in conn.execute("SELECT id FROM profiles WHERE profile_id IS NULL")]
    for pid in missing:
        conn.execute("UPDATE profiles SET profile_id = ? WHERE id = ?", (str(uuid.uuid4()), pid))
    return f"profiles: {len(missing)} given a profile_id" if missing else None


def m011_campaign_attempt_times(conn: sqlite3.Connection) -> str | None:
    """Earlier attempts kept their time in `timestamp`: it becomes attempted_at (the column
    the hourly window reads). `timestamp` itself is left as the earlier system wrote it."""
    if "timestamp" not in _columns(conn, "task_attempts"):
        return None
    copied = conn.execute(
        "UPDATE task_attempts SET attempted_at = timestamp "
        "WHERE attempted_at IS NULL AND timestamp IS NOT NULL").rowcount
    return f"task_attempts: {copied} earlier attempt times copied to attempted_at" \
        if copied else None


def m012_campaign_times_iso(conn: sqlite3.Connection) -> str | None:
    """Earlier `YYYY-MM-DD HH:MM:SS` times become the suite's ISO-8601 UTC text, so they
    compare correctly with new ones (a chat delayed by hours stays delayed)."""
    changed = 0
    for table, names in CAMPAIGN_TIME_COLUMNS.items():
        have = _columns(conn, table)
        for column in (name for name in names if name in have):
            changed += conn.execute(
                f'UPDATE "{table}" SET "{column}" = '
                f'{LEGACY_TIME_AS_ISO.format(column=column)} '
                f'WHERE "{column}" GLOB ?', (LEGACY_TIME_GLOB,)).rowcount
    return f"{changed} earlier times rewritten as ISO-8601 UTC" if changed else None


def m013_campaign_templates(conn: sqlite3.Connection) -> str | None:
    """The earlier system's templates (`messages` with group_id, text) become campaign texts
    of their group, active or not as they were; the `messages` table is left as it was."""
    if not {"group_id", "text"} <= set(_columns(conn, "messages")):
        return None
    have = _columns(conn, "messages")
    active = "m.is_active" if "is_active" in have else "1"
    created = "m.created_at" if "created_at" in have else "NULL"
    copied = conn.execute(
        f"INSERT INTO campaign_texts (text, group_id, is_active, created_at) "
        f"SELECT m.text, m.group_id, COALESCE({active}, 1), "
        f"CASE WHEN {created} GLOB ? THEN {LEGACY_TIME_AS_ISO.format(column=created)} "
        f"ELSE {created} END FROM messages m WHERE m.text IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM campaign_texts c WHERE c.text = m.text AND c.group_id IS m.group_id) "
        f"ORDER BY m.id", (LEGACY_TIME_GLOB,)).rowcount
    return f"campaign_texts: {copied} earlier message templates copied with their group" \
        if copied else None


def migration_number(migration: Callable[[sqlite3.Connection], str | None]) -> int:
    """A migration's own number, from its name: m010_... is 10."""
    match = re.match(r"m(\d+)_", migration.__name__)
    if match is None:
        raise ValueError(f"migration {migration.__name__} is not named mNNN_...")
    return int(match.group(1))


# (kind, migration), in number order
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], str | None]]] = [
    ("checkpoint", m001_checkpoint_status),
    ("campaign", m002_campaign_per_run),
    ("dialer", m003_dialer_legacy_session),
    ("campaign", m010_campaign_profile_ids),
    ("campaign", m011_campaign_attempt_times),
    ("campaign", m012_campaign_times_iso),
    ("campaign", m013_campaign_templates),
]
SCHEMA_VERSION = max(migration_number(m) for _, m in MIGRATIONS)


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


def upgrade(conn: sqlite3.Connection, kinds: Iterable[str] | None = None) -> list[str]:
    """Bring `conn`'s database to its kinds' part of schema.sql and their last migration
    (kinds: default those `database_kinds` gives); returns what changed."""
    kinds = set(database_kinds(conn) if kinds is None else kinds)
    ref = _reference_db(kinds)
    statements = schema_statements(kinds)
    changes: list[str] = []
    with transaction(conn):
        tables_before, indexes_before = _tables(conn), _indexes(conn)
        for statement in statements:
            if _is_table_statement(statement):
                conn.execute(statement)
        changes += [f"created table {t}" for t in sorted(_tables(conn) - tables_before)]
        changes += add_missing_columns(conn, ref)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for kind, migration in MIGRATIONS:
            number = migration_number(migration)
            if number > version and kind in kinds:
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


def pending_changes(conn: sqlite3.Connection, kinds: Iterable[str] | None = None) -> bool:
    """Whether `upgrade` would change anything, without writing."""
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        return True
    ref = _reference_db(database_kinds(conn) if kinds is None else kinds)
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


def connect(path: str | Path, timeout: float = BUSY_TIMEOUT_SECONDS,
            kind: str | None = None) -> sqlite3.Connection:
    """Open a suite database: parent folders created, settings applied, the schema of its
    kinds (`kind`, and those recognised in it: see the module docstring) up to date."""
    conn = open_database(path, timeout)
    try:
        kinds = database_kinds(conn, kind)
        if pending_changes(conn, kinds):
            upgrade(conn, kinds)
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
