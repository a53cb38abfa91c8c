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

It also keeps what every script of the suite shares about running as a process (section
"process conventions"): the suite's version, the -v/-q/--version options, UTC log lines with
size-based rotation, SIGTERM/SIGHUP handling, files created 0600, metrics files, heartbeats.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import logging.handlers
import os
import re
import signal
import sqlite3
import stat
import sys
import time
import uuid
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

UTC = timezone.utc        # datetime.UTC is Python 3.11+

SCHEMA_PATH = Path(__file__).resolve().with_name("schema.sql")
DEFAULT_DB_DIR = Path(__file__).resolve().parent / "sessions" / "shared"
BUSY_TIMEOUT_SECONDS = 30.0
WAL_RETRY_SECONDS = 0.02
SQLITE_HEADER = b"SQLite format 3\x00"


# ----------------------------------------------------------------------------- shared helpers
# One owner for what every script writes the same way: stored times, files replaced whole,
# text tables.

def utc_text(moment: datetime | None = None) -> str:
    """A time as the suite stores it (default: now): fixed-width UTC ISO-8601 with
    microseconds, e.g. 2026-12-03T08:40:01.123456+00:00, so text order is time order."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def parse_utc(text: str) -> datetime:
    """A stored time back as an aware datetime: the suite's own text and earlier systems'
    `YYYY-MM-DD HH:MM:SS` (SQLite CURRENT_TIMESTAMP); a time without a zone is UTC.
    ValueError when it is not a time."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def file_stamp() -> str:
    """The current UTC time for a file name, e.g. 20261203T084001Z (backups)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_atomically(path: str | Path, data: str | bytes | Callable[[Path], None], *,
                     mode: int | None = None) -> None:
    """Replace the file at `path` whole with `data`, never leaving half a file: text (as
    UTF-8), bytes, or a function that fills the temporary file given its path (e.g. with
    SQLite's backup) and raises to keep the old file.

    A temporary file in the same folder is written and fsynced, renamed over `path`, and the
    folder fsynced: after a crash the file is the old one or the new one, and a failed write
    leaves the old one untouched. The file gets `mode` when given (from its creation, so a
    private file is never readable by others), else the mode of the file it replaces (a new
    file: as open() makes it, 0666 less the umask).
    """
    path = Path(path)
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(path.stat().st_mode)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if callable(data):
                data(temp)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
                handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def format_table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], *,
                 right: Container[int] = (), missing: str = "") -> str:
    """Rows as columns two spaces apart, each as wide as its widest cell (the header's too),
    the columns numbered in `right` aligned right; None shows as `missing`; no trailing
    spaces. Without a header: the rows only."""
    table = [list(header)] if header else []
    table += [[missing if value is None else str(value) for value in row] for row in rows]
    if not table:
        return ""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(line, widths, strict=True)))
                     .rstrip() for line in table)


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
# the suite's form of the same instant: what utc_text writes
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


def m004_checkpoint_per_pair(conn: sqlite3.Connection) -> str | None:
    """Checkpoint rows were keyed by (source_chat, msg_id), so a second target of the same
    source found everything "done". The table is rebuilt keyed by (source_chat,
    target_chat, msg_id), keeping every row; rows with no target_chat get '' and are filed
    under the configured pair by the cloner's first run (Checkpoint.bind)."""
    key = [row[1] for row in sorted(conn.execute("PRAGMA table_info(messages)"),
                                    key=lambda row: row[5]) if row[5]]
    if "target_chat" in key:
        return None
    ref = _reference_db(["checkpoint"])
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


# (kind, migration), in number order
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], str | None]]] = [
    ("checkpoint", m001_checkpoint_status),
    ("campaign", m002_campaign_per_run),
    ("dialer", m003_dialer_legacy_session),
    ("checkpoint", m004_checkpoint_per_pair),
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
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk, an I/O error): then a ROLLBACK
        # would only hide the real error behind "no transaction is active"
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def durable_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`transaction` whose COMMIT is on disk when the block ends (synchronous=FULL for it;
    the connection's NORMAL afterwards). For the commits that must survive a power loss
    because a side effect outside the database follows, e.g. the random_id of a send."""
    conn.execute("PRAGMA synchronous = FULL")
    try:
        with transaction(conn):
            yield conn
    finally:
        conn.execute("PRAGMA synchronous = NORMAL")


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
    if str(path) != ":memory:" and not path.exists():
        create_private(path)                # its -wal and -shm files take the same mode
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
                (utc_text(datetime.now(UTC) - timedelta(seconds=live_seconds)),)
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
# ----------------------------------------------------------------------------- process conventions
# What every script shares about running as a process. Kept here because every script
# imports this module anyway and it imports nothing heavy.

SUITE_VERSION = "1.1.0"                 # the whole suite's version: `--version` of every script
EXIT_OK, EXIT_INTERRUPTED = 0, 130      # the README's codes (the rest: telegram_session)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_MAX_BYTES = 10 * 1024 * 1024        # a log file rotates at this size (LOG_MAX_BYTES) ...
LOG_BACKUPS = 5                         # ... keeping this many old ones (LOG_BACKUPS)
# Set by run.sh and the systemd unit: the supervisor stores the process's output (run.log,
# the journal), so the script writes no log file of its own and each line is stored once.
LOG_CAPTURED_ENV = "SUITE_LOG_CAPTURED"
HEARTBEAT_SECONDS = 300.0               # an idle long-running loop says so this often
METRICS_SECONDS = 15.0                  # --metrics-file is rewritten this often
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
PRIVATE_MODE = 0o600                    # databases and logs hold phone numbers and chats
_TIMESTAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
# Telethon imports aiohttp, when it is installed, only to download web documents (the
# WebDocument photo of an invoice or an inline result), which no script here downloads.
# Telethon loaded without it keeps 0.3 s of start and 12 MB off every Telegram process;
# heatup and tgstat_fetcher import aiohttp themselves as usual, before or after.
TELETHON_UNUSED_OPTIONAL = ("aiohttp",)


def import_module(name: str) -> ModuleType:
    """importlib.import_module, except that the first import of Telethon leaves out the
    optional modules it would load for nothing (TELETHON_UNUSED_OPTIONAL)."""
    if name.partition(".")[0] != "telethon" or "telethon" in sys.modules:
        return importlib.import_module(name)
    left_out = [optional for optional in TELETHON_UNUSED_OPTIONAL
                if optional not in sys.modules]
    for optional in left_out:
        sys.modules[optional] = None    # its `import` raises ImportError: Telethon goes on
    try:
        return importlib.import_module(name)
    finally:
        for optional in left_out:       # importable again by whoever needs it
            del sys.modules[optional]


def lazy_import(name: str) -> ModuleType:
    """The module `name`, imported when one of its attributes is first used: Telethon,
    aiohttp, PyYAML and python-dotenv take 0.1-0.6 s to import, which `--help` and usage
    errors should not wait for. Names used at import time (a module-level tuple of Telethon
    errors) would load it at once: make those when first needed."""
    if name in sys.modules:
        return sys.modules[name]

    class LazyModule(ModuleType):
        def __getattr__(self, attr: str) -> Any:
            module = import_module(name)
            self.__dict__.update(module.__dict__)       # later lookups are plain
            return getattr(module, attr)

    return LazyModule(name)


def cli_options() -> argparse.ArgumentParser:
    """The parent parser every script's top-level parser takes: --version, -v, -q."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--version", action="version",
                        version=f"%(prog)s {SUITE_VERSION}")
    loud = parent.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    loud.add_argument("-q", "--quiet", action="store_true",
                      help="log only warnings and errors on the console")
    return parent


def create_private(path: str | Path) -> Path:
    """Create the file if missing, readable by its owner only (0600); an existing file
    keeps its content and loses any group/other bits. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE))
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_MODE)
    return path


class UTCFormatter(logging.Formatter):
    """Log times in UTC ISO-8601 with the zone, e.g. 2026-12-03T08:40:01.123Z."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file created 0600 (LOG_MAX_BYTES, LOG_BACKUPS from the environment)."""

    def __init__(self, path: str | Path) -> None:
        create_private(path)
        super().__init__(path, maxBytes=_env_int("LOG_MAX_BYTES", LOG_MAX_BYTES),
                         backupCount=_env_int("LOG_BACKUPS", LOG_BACKUPS), encoding="utf-8")

    def _open(self):  # noqa: ANN202 - the base class's hook: each new file is 0600 too
        create_private(self.baseFilename)
        return super()._open()


class _ConsoleHandler(logging.StreamHandler):
    """stderr; once the terminal or pipe is gone (SIGHUP, closed screen), lines only go to
    the log file instead of a 'Logging error' per line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        if isinstance(sys.exc_info()[1], OSError):
            self.setLevel(logging.CRITICAL + 1)
            return
        super().handleError(record)


class _Activity(logging.Filter):
    """Notes when the last line was logged, for Heartbeat."""
    last = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        _Activity.last = time.monotonic()
        return True


def _env_int(key: str, default: int) -> int:
    value = os.environ.get(key, "").strip()
    return int(value) if value.isdigit() else default


def setup_logging(verbose: bool = False, quiet: bool = False,
                  log_file: str | Path | None = None) -> Path | None:
    """Console logging (INFO; DEBUG with -v, WARNING with -q) with UTC times, and the
    script's log file (0600, rotated by size) unless a supervisor stores the output
    (SUITE_LOG_CAPTURED). Returns the log file written, if any."""
    console = _ConsoleHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handlers: list[logging.Handler] = [console]
    if log_file is not None and os.environ.get(LOG_CAPTURED_ENV):
        log_file = None
    if log_file is not None:
        handlers.append(PrivateRotatingFileHandler(log_file))
        handlers[-1].setLevel(logging.DEBUG if verbose else logging.INFO)
    formatter, activity = UTCFormatter(LOG_FORMAT), _Activity()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, (_ConsoleHandler,
                                                           PrivateRotatingFileHandler))]:
        root.removeHandler(old)             # a second call (tests) replaces ours only
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(activity)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("telethon").setLevel(logging.WARNING)
    return Path(log_file) if log_file is not None else None


class Heartbeat:
    """A long-running loop's 'still alive' line, logged when nothing else was for `every`
    seconds, so an idle process does not look hung."""

    def __init__(self, logger: logging.Logger, every: float = HEARTBEAT_SECONDS) -> None:
        self.logger = logger
        self.every = every

    def beat(self, state: str) -> None:
        """Log `heartbeat: <state>` if the process has been quiet long enough."""
        if time.monotonic() - _Activity.last >= self.every:
            self.logger.info("heartbeat: %s", state)
            _Activity.last = time.monotonic()

    async def run(self, state: Callable[[], str]) -> None:
        """Beat until cancelled, asking `state()` for the line's text."""
        import asyncio  # only the asyncio scripts need it

        while True:
            await asyncio.sleep(min(self.every, 30.0))
            self.beat(state())


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: the script stops the way Ctrl+C stops it, and exits 0."""


_stopping: list[int] = []


def _leave_hung_up_terminal() -> None:
    """After SIGHUP the terminal is gone: console output goes nowhere instead of failing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        if os.isatty(fd):
            os.dup2(devnull, fd)
    os.close(devnull)


def handle_stop_signals(handler: Callable[[int, Any], Any] | None = None) -> None:
    """SIGTERM and SIGHUP (kill, systemd, `screen -X quit`) stop like Ctrl+C: `handler`
    (a signal handler) is called, or Stopped is raised in the main thread. Only the first
    signal counts, so a supervisor forwarding what the process already got changes nothing.
    """
    def on_signal(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            _leave_hung_up_terminal()
        if _stopping and handler is None:
            return
        _stopping.append(signum)
        if handler is not None:
            handler(signum, frame)
        else:
            raise Stopped(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)


def run_main(main: Callable[[], int]) -> NoReturn:
    """The `if __name__ == "__main__"` of every script: exit with main()'s code; Ctrl+C
    130; SIGTERM/SIGHUP stop like Ctrl+C but exit 0; output into a closed pipe (`| head`)
    ends quietly."""
    if os.environ.get(LOG_CAPTURED_ENV) and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # run.sh starts the script in the background, where bash ignores Ctrl+C
        signal.signal(signal.SIGINT, signal.default_int_handler)
    handle_stop_signals()
    try:
        code = main()
    except SystemExit as exc:       # --help, --version, usage errors
        code = exc.code
    except Stopped as exc:
        logging.getLogger("suite").info("stopped by %s", exc)
        code = EXIT_OK
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except OSError as exc:          # into a closed pipe, or a terminal that hung up
        if exc.errno not in (errno.EPIPE, errno.EIO):
            raise
        code = EXIT_OK
    try:
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.EIO):
            raise
    finally:    # whatever is still buffered would fail again at exit: drop it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    sys.exit(code)


def append_log(path: str | Path, source: Any = None, echo: Any = None) -> int:
    """run.sh's log writer: each line of standard input goes to the terminal and to `path`
    (0600, rotated by size), stamped with the UTC time unless it starts with one. Ignores
    the stop signals and Ctrl+C: it ends when everything writing to it has ended, so the
    last lines of a stopping script are kept."""
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)
    source = source or sys.stdin.buffer
    echo = echo if echo is not None else sys.stdout.buffer
    handler = PrivateRotatingFileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for raw in source:
        line = raw.rstrip(b"\n")
        if not _TIMESTAMP.match(line):
            line = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ ").encode() + line
        text = line.decode("utf-8", "replace")
        handler.emit(logging.makeLogRecord({"msg": text, "args": None}))
        if echo is not None:
            try:
                echo.write(line + b"\n")
                echo.flush()
            except OSError:             # the terminal is gone (screen closed): file only
                echo = None
    handler.close()
    return EXIT_OK


def write_metrics(path: str | Path, metrics: Mapping[str, tuple[str, str, Any]]) -> None:
    """Write Prometheus text atomically (temp + rename) for node_exporter's textfile
    collector. `metrics`: name -> (type, help, value), value a number or a mapping from a
    label dict's items (a tuple of (label, value) pairs) to numbers."""
    lines = []
    for name, (kind, text, value) in metrics.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        samples = value.items() if isinstance(value, Mapping) else [((), value)]
        for labels, sample in samples:
            label_text = ",".join(f'{key}="{_escape_label(str(val))}"' for key, val in labels)
            number = int(sample) if float(sample).is_integer() else float(sample)
            lines.append(f"{name}{{{label_text}}} {number}" if label_text
                         else f"{name} {number}")
    write_atomically(path, "\n".join(lines) + "\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def suite_metrics(script: str, messages: Mapping[str, int], sends: int, waits: int,
                  wait_seconds: float, last_success: str | None) -> dict[str, tuple[str, str, Any]]:
    """The metrics every script with --metrics-file writes, labelled with the script:
    messages (or chats, numbers) by status, sends made by this process, rate-limit waits
    recorded, and the time of the last success (a stored UTC timestamp)."""
    label = (("script", script),)
    last = parse_utc(last_success).timestamp() if last_success else 0
    return {
        "suite_messages": ("gauge", "Work items by status.",
                           {(*label, ("status", status)): count
                            for status, count in sorted(messages.items())}),
        "suite_sends_total": ("counter", "Sends made by this process.", {label: sends}),
        "suite_waits_total": ("counter", "Rate-limit waits recorded (FloodWait, PeerFlood, "
                              "windows).", {label: waits}),
        "suite_wait_seconds_total": ("counter", "Seconds of those waits.",
                                     {label: wait_seconds}),
        "suite_last_success_timestamp_seconds": ("gauge", "Unix time of the last success "
                                                 "(0: none yet).", {label: last}),
        "suite_metrics_written_timestamp_seconds": ("gauge", "Unix time this file was written.",
                                                    {label: time.time()}),
    }


class MetricsFile:
    """--metrics-file / METRICS_FILE: `due()` says when the next write is due (every
    METRICS_SECONDS); `write()` rewrites the file; nothing at all without a path."""

    def __init__(self, path: str | Path | None, every: float = METRICS_SECONDS) -> None:
        self.path = Path(path) if path else None
        self.every = every
        self.written_at = 0.0

    def due(self) -> bool:
        return self.path is not None and time.monotonic() - self.written_at >= self.every

    def write(self, metrics: Mapping[str, tuple[str, str, Any]]) -> None:
        if self.path is None:
            return
        write_metrics(self.path, metrics)
        self.written_at = time.monotonic()


# ----------------------------------------------------------------------------- command line

def _make_private(path: Path) -> str | None:
    """Take group/other access away from a database (and its -wal, -shm); what changed."""
    mode = path.stat().st_mode & 0o777
    if not mode & 0o077:
        return None
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            name.chmod(PRIVATE_MODE)
    return f"mode {mode:03o} -> {PRIVATE_MODE:03o} (it holds personal data)"


def backup_database(conn: sqlite3.Connection, path: Path) -> Path:
    """A consistent copy of the database next to it, named with the time; returns its path."""
    target = path.with_name(f"{path.name}.bak-{file_stamp()}")

    def copy(partial: Path) -> None:
        with contextlib.closing(sqlite3.connect(str(partial))) as dest:
            conn.backup(dest)
    write_atomically(target, copy, mode=stat.S_IMODE(path.stat().st_mode))
    return target


def is_sqlite_file(path: str | Path) -> bool:
    """Whether the file starts with SQLite's header (an empty file does not)."""
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


class CorruptDatabase(sqlite3.DatabaseError):
    """SQLite's integrity check failed: the file must be restored, not migrated."""


def restore_advice(path: Path) -> str:
    """What to do with a damaged database: the newest backup, else SQLite's .recover."""
    backups = sorted(path.parent.glob(f"{path.name}.bak-*"))
    source = f"copy the newest backup over it ({backups[-1]})" if backups else \
        f"recover what is readable: sqlite3 {path} .recover | sqlite3 {path}.recovered " \
        "and use that file"
    return f"stop every script using it, move it aside, then {source}"


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """SQLite's quick_check; CorruptDatabase naming the first problem and the way back."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:    # the damage hides even the schema
        problems = [str(exc)]
    if problems != ["ok"]:
        first = re.sub(r"\*\*\* in database \w+ \*\*\*\s*", "", problems[0])
        raise CorruptDatabase(f"{path}: damaged ({' '.join(first.split())}); "
                              f"{restore_advice(path)}")


def suite_databases() -> list[Path]:
    """The databases migrate_db.py covers with no argument: sessions/shared/*.db, each
    account folder's own (a single-account cloner's checkpoint.db) and heatup's history
    (DATABASE_PATH, default sessions.db, relative to the suite's folder)."""
    suite = DEFAULT_DB_DIR.parent.parent
    found = sorted(DEFAULT_DB_DIR.glob("*.db")) + sorted(suite.glob("sessions/*/*.db"))
    history = suite / os.environ.get("DATABASE_PATH", "sessions.db")
    return list(dict.fromkeys(found + ([history] if history.is_file() else [])))


def migrate_file(path: Path, timeout: float = BUSY_TIMEOUT_SECONDS) -> str:
    """Migrate one existing database file; returns the report line. Raises on failure
    (CorruptDatabase when SQLite's integrity check fails). A database with tables of
    which none is the suite's (e.g. a simulator world.db) is skipped, untouched."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database file")
    # the mode bits too: root may write anywhere, but a file marked read-only is kept so
    if not path.stat().st_mode & 0o222 or not os.access(path, os.W_OK) \
            or not os.access(path.parent, os.W_OK):
        raise PermissionError(f"{path}: read-only (the file and its folder must be writable)")
    if path.stat().st_size and not is_sqlite_file(path):
        raise sqlite3.DatabaseError(f"{path}: not a SQLite database")
    try:
        conn = open_database(path, timeout)
    except sqlite3.OperationalError:
        raise                               # locked: reported as such
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabase(f"{path}: damaged ({exc}); {restore_advice(path)}") from None
    try:
        check_integrity(conn, path)
        tables = _tables(conn)
        if tables and not recognise_kinds(conn):
            return (f"{path}: skipped, not one of the suite's databases (its tables: "
                    f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''})")
        tightened = _make_private(path)
        if not pending_changes(conn):
            return f"{path}: up to date" + (f"; {tightened}" if tightened else "")
        backup = backup_database(conn, path) if tables else None
        changes = upgrade(conn) + ([tightened] if tightened else [])
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
        epilog="With no DB given: every *.db under sessions/shared/ and in the account "
               "folders, and heatup's history database (DATABASE_PATH, default sessions.db). "
               "Each is checked for damage first; a database that is not the suite's (e.g. a "
               "simulator world) is skipped. A second run reports 'up to date'.",
        parents=[cli_options()])
    parser.add_argument("--append-log", metavar="FILE", type=Path,
                        help="(run.sh's log writer) copy standard input to the terminal and "
                             "to FILE, each line stamped with the UTC time, FILE rotated")
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
    if args.append_log:
        return append_log(args.append_log)
    for url in args.db_url + ([args.copy[1]] if args.copy else []):
        if not is_postgres_url(url):
            parser.error(f"{redact_url(url)} is not a postgresql:// URL")
    if args.copy or args.db_url:
        return postgres_command(args)
    databases = args.databases or suite_databases()
    if not databases:
        print(f"no databases under {DEFAULT_DB_DIR.parent}; nothing to do")
        return 0
    failures = 0
    for path in databases:
        try:
            report = migrate_file(path, args.timeout)
            if not (args.quiet and report.endswith(": up to date")):
                print(report)
        except sqlite3.OperationalError as exc:
            reason = "locked by another process past the timeout" \
                if "locked" in str(exc) else str(exc)
            print(f"error: {path}: {reason}; nothing was changed", file=sys.stderr)
            failures += 1
        except CorruptDatabase as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
        except (OSError, sqlite3.DatabaseError) as exc:
            print(f"error: {exc}; nothing was changed", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    run_main(main)
