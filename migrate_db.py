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
from typing import Any

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


# ----------------------------------------------------------------------------- PostgreSQL
# The shared clone checkpoint may live in PostgreSQL instead (SHARED_DB_URL, issue 17):
# schema_pg.sql applied, then the numbered PG_MIGRATIONS not yet recorded in its table
# schema_migrations, in one transaction under an advisory lock (several cloners may start at
# once). psycopg is imported only here, so the SQLite-only scripts never need it.

PG_SCHEMA_PATH = Path(__file__).resolve().with_name("schema_pg.sql")
PG_URL_SCHEMES = ("postgresql://", "postgres://")
PG_CONNECT_TIMEOUT = 15                # seconds to reach the server
PG_UPGRADE_LOCK = 0x5EED_C10E          # pg_advisory_xact_lock key of pg_upgrade
PG_COPIED_TABLES = ("messages", "topic_map")
COPY_LIVE_SECONDS = 300.0              # the cloner's default CLAIM_TIMEOUT
# Numbered changes to a PostgreSQL checkpoint made by an earlier schema_pg.sql, oldest first:
# (name, function of the connection returning a report line or None). None so far.
PG_MIGRATIONS: list[tuple[str, Callable[[Any], str | None]]] = []


class CopyRefused(ValueError):
    """--copy would lose or mix rows (a cloner running, rows already there): the reason."""


def is_postgres_url(text: str) -> bool:
    """Whether a setting names a PostgreSQL database (postgresql://...) rather than a file."""
    return str(text).strip().lower().startswith(PG_URL_SCHEMES)


def redact_url(text: str) -> str:
    """The text with every password in it (user:PASSWORD@ of a URL, password=... of a
    connection string) replaced by ***, for messages and logs."""
    text = re.sub(r"(://[^:/@\s]*:)\S*@", r"\1***@", str(text))
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|[^&\s]+)", r"\1***", text)


def error_line(exc: BaseException) -> str:
    """An exception as one line of text, passwords redacted (libpq's messages span lines)."""
    return redact_url(" ".join(str(exc).split()) or type(exc).__name__)


def pg_schema_statements() -> list[str]:
    """The statements of schema_pg.sql, in file order, comments stripped."""
    lines = [line for line in PG_SCHEMA_PATH.read_text(encoding="utf-8").splitlines()
             if not line.lstrip().startswith("--")]
    return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
            if s.strip()]


def _pg_schema_names() -> list[str]:
    return [m.group(1) for s in pg_schema_statements()
            if (m := re.match(r"CREATE\s+(?:TABLE|INDEX)\s+IF\s+NOT\s+EXISTS\s+(\w+)", s))]


def pg_pending_changes(conn: Any, migrations: list | None = None) -> bool:
    """Whether `pg_upgrade` would change anything (a table, index or migration missing)."""
    migrations = PG_MIGRATIONS if migrations is None else migrations
    missing = conn.execute("SELECT COUNT(*) FROM unnest(%s::text[]) AS name "
                           "WHERE to_regclass(name) IS NULL", (_pg_schema_names(),)).fetchone()
    if missing[0]:
        return True
    applied = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0]
    return applied < len(migrations)


def pg_upgrade(conn: Any, migrations: list | None = None) -> list[str]:
    """Bring a PostgreSQL database to schema_pg.sql and the last migration, in one
    transaction; returns what changed. Concurrent callers wait for each other."""
    migrations = PG_MIGRATIONS if migrations is None else migrations
    names = _pg_schema_names()
    changes: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_UPGRADE_LOCK,))
        before = {n for (n,) in conn.execute(
            "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
            (names,))}
        for statement in pg_schema_statements():
            conn.execute(statement)
        changes += [f"created {name}" for name in names if name not in before]
        applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        for number, (name, migration) in enumerate(migrations, start=1):
            if number in applied:
                continue
            report = migration(conn)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (number, name))
            changes.append(f"m{number:03d}: {report or name}")
    return changes


def pg_connect(url: str) -> Any:
    """A psycopg connection (autocommit: every write in its own `with conn.transaction()`)
    to the database of `url`, schema up to date. The password may come from the URL,
    PGPASSWORD or ~/.pgpass, as libpq allows."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT,
                           application_name=Path(sys.argv[0]).name[:60] or "migrate_db")
    try:
        if pg_pending_changes(conn):
            pg_upgrade(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate_postgres(url: str) -> str:
    """Migrate one PostgreSQL database; returns the report line (the URL without password)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT) as conn:
        if not pg_pending_changes(conn):
            return f"{redact_url(url)}: up to date"
        changes = pg_upgrade(conn)
    return "\n".join([f"{redact_url(url)}: {len(changes)} change(s)"]
                     + [f"  {change}" for change in changes])


def copy_to_postgres(path: Path, url: str, *, live_seconds: float) -> str:
    """Copy every row of a SQLite checkpoint's `messages` and `topic_map` into an empty
    PostgreSQL checkpoint, in one transaction on each side; returns the report line.

    Refused (CopyRefused) while a cloner holds claims (a 'processing' row heart-beaten in
    the last `live_seconds`) or when the PostgreSQL tables already have rows. The SQLite file
    stays write-locked during the copy, so no cloner changes it half-way.
    """
    if not path.is_file() or (path.stat().st_size and not is_sqlite_file(path)):
        raise CopyRefused(f"{path}: not a SQLite checkpoint file")
    source = open_database(path)
    target = pg_connect(url)
    try:
        with transaction(source), target.transaction():
            live = source.execute(
                "SELECT COUNT(*), COUNT(DISTINCT session) FROM messages "
                "WHERE status = 'processing' AND claimed_at >= ?",
                (datetime.fromtimestamp(time.time() - live_seconds, UTC).isoformat(),)
            ).fetchone()
            if live[0]:
                raise CopyRefused(
                    f"{path}: {live[1]} cloner(s) hold {live[0]} claim(s); stop every "
                    "clone_streaming_shared.py (or wait for their claims to go stale) and "
                    "copy again")
            target.execute("SET LOCAL TIME ZONE 'UTC'")
            counts = []
            for table in PG_COPIED_TABLES:
                have = target.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                if have:
                    raise CopyRefused(f"{redact_url(url)}: table {table} already has {have} "
                                      "rows; copy into an empty database")
                pg_columns = [name for (name,) in target.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s "
                    "ORDER BY ordinal_position", (table,))]
                columns = [c for c in pg_columns if c in _columns(source, table)]
                quoted = ", ".join(f'"{c}"' for c in columns)
                rows = source.execute(f"SELECT {quoted} FROM {table}")
                with target.cursor().copy(
                        f"COPY {table} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                copied = target.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                counts.append(f"{copied} {table} rows")
    finally:
        target.close()
        source.close()
    return f"{path} -> {redact_url(url)}: copied {', '.join(counts)}"


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


def postgres_command(args: argparse.Namespace) -> int:
    """--copy or --db-url: one report line per database, one error line on failure."""
    import psycopg

    try:
        if args.copy:
            print(copy_to_postgres(Path(args.copy[0]), args.copy[1],
                                   live_seconds=args.claim_timeout))
        for url in args.db_url:
            print(migrate_postgres(url))
    except CopyRefused as exc:
        print(f"error: {exc}; nothing was copied", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error, psycopg.Error) as exc:
        print(f"error: {error_line(exc)}; nothing was changed", file=sys.stderr)
        return 1
    return 0


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
    postgres = parser.add_argument_group(
        "PostgreSQL (the shared clone checkpoint on several VPSes)")
    postgres.add_argument("--db-url", metavar="URL", action="append", default=[],
                          help="also create or upgrade this PostgreSQL checkpoint "
                               "(postgresql://user@host:5432/db; password from the URL, "
                               "PGPASSWORD or ~/.pgpass)")
    postgres.add_argument("--copy", nargs=2, metavar=("CHECKPOINT_DB", "URL"),
                          help="copy every row of a SQLite checkpoint into an empty "
                               "PostgreSQL one and exit (refused while a cloner holds claims)")
    postgres.add_argument("--claim-timeout", type=float, default=COPY_LIVE_SECONDS,
                          help="with --copy: a claim heart-beaten within this many seconds "
                               "belongs to a running cloner (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    for url in args.db_url + ([args.copy[1]] if args.copy else []):
        if not is_postgres_url(url):
            parser.error(f"{redact_url(url)} is not a postgresql:// URL")
    if args.copy or args.db_url:
        return postgres_command(args)
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
