"""migrate_db: connect(), transaction(), upgrades of earlier-system databases, the CLI."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import python
from legacy_schemas import LEGACY_CAMPAIGN_TABLES

import migrate_db

SCRIPT = Path(migrate_db.__file__)

# The spec documents' monitoring queries; they must run unchanged on every database.
SPEC_QUERIES = [
    "SELECT status, COUNT(*) FROM messages GROUP BY status;",
    "SELECT * FROM messages WHERE status='processing';",
    "SELECT * FROM messages ORDER BY processed_at DESC LIMIT 10;",
    "SELECT * FROM task_attempts WHERE run_id = 'your-session-id';",
    "SELECT session_id, phone_pattern, total_calls, modem_detections "
    "FROM sessions ORDER BY start_time DESC;",
    "SELECT phone_number, timestamp, message FROM dial_results "
    "WHERE session_id = 'a3f5c2d1' AND status = 'modem';",
    "SELECT session_id, backend_type, total_calls, "
    "(successful_calls * 100.0 / total_calls) as success_rate FROM sessions;",
    """SELECT s.session_id, s.phone_pattern, s.backend_type, s.total_calls, s.modem_detections,
              COUNT(DISTINCT d.phone_number) as unique_numbers
       FROM sessions s LEFT JOIN dial_results d ON s.session_id = d.session_id
       GROUP BY s.session_id;""",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return helpers.run(python(SCRIPT, *args))


PROFILE_UUID = "5b0c8f7e-2d1a-4c3b-9e8f-7a6b5c4d3e2f"


def make_legacy_campaign_db(path: Path) -> None:
    """A campaign database as the earlier system left it (its real layout, NOTES.md): no
    run_id, times as `YYYY-MM-DD HH:MM:SS`, accounts named by a UUID, templates in
    `messages`."""
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_CAMPAIGN_TABLES + f"""
        INSERT INTO profiles (profile_id, profile_name, created_at)
            VALUES ('{PROFILE_UUID}', 'acc1', '2025-01-01 09:00:00');
        INSERT INTO tasks (group_id, chat_username, status, total_cycles, completed_cycles,
                           next_available_at, assigned_profile_id)
            VALUES ('g', '@chat_a', 'completed', 2, 2, '2025-01-01 12:20:00', NULL),
                   ('g', '@chat_b', 'pending', 2, 0, NULL, NULL),
                   ('g', '@chat_c', 'blocked', 2, 1, NULL, NULL);
        UPDATE tasks SET is_blocked = 1, block_reason = 'ChatWriteForbidden'
            WHERE chat_username = '@chat_c';
        INSERT INTO task_attempts (task_id, profile_id, cycle_number, status, message_text,
                                   timestamp)
            VALUES (1, '{PROFILE_UUID}', 1, 'success', 'Hi', '2025-01-01 11:00:00'),
                   (1, '{PROFILE_UUID}', 2, 'success', 'Hi', '2025-01-01 12:00:00'),
                   (3, '{PROFILE_UUID}', 1, 'failed', 'Hi', '2025-01-01 12:10:00');
        INSERT INTO messages (group_id, text, is_active, usage_count, created_at)
            VALUES ('g', 'Hi', 1, 3, '2024-12-31 08:00:00'),
                   ('g', 'Old text', 0, 0, '2024-12-30 08:00:00'),
                   ('h', 'Hello h', 1, 0, '2024-12-31 08:00:00');
    """)
    conn.commit()
    conn.close()


def make_legacy_checkpoint(path: Path) -> None:
    """The earlier cloner's checkpoint: status NULL when unclaimed, claims never timed."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE messages (source_chat TEXT, msg_id INTEGER, status TEXT, session TEXT,
                               processed_at TEXT, target_msg_id INTEGER,
                               PRIMARY KEY (source_chat, msg_id));
        CREATE INDEX idx_status ON messages(source_chat, status);
        INSERT INTO messages VALUES ('-1001', 1, 'done', 'session1', '2025-01-01T00:00:00', 11),
                                    ('-1001', 2, 'processing', 'session2', NULL, NULL),
                                    ('-1001', 3, NULL, NULL, NULL, NULL);
    """)
    conn.commit()
    conn.close()


def make_legacy_dialer_db(path: Path) -> None:
    """The dialer before sessions: dial_results without session_id, no sessions table."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE dial_results (id INTEGER PRIMARY KEY AUTOINCREMENT,
            phone_number TEXT NOT NULL, status TEXT NOT NULL, timestamp TEXT NOT NULL,
            success BOOLEAN NOT NULL, message TEXT, carrier_detected BOOLEAN, tone_type TEXT);
        INSERT INTO dial_results (phone_number, status, timestamp, success, message,
                                  carrier_detected)
        VALUES ('555-234-5600', 'busy', '2025-11-16T14:30:00', 0, 'Busy signal', 0),
               ('555-234-5601', 'modem', '2025-11-16T14:30:01', 1, 'Modem detected', 1);
    """)
    conn.commit()
    conn.close()


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def indexes(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}


# ----------------------------------------------------------------------------- connect

def test_connect_creates_folders_and_applies_settings(db_path: Path):
    conn = migrate_db.connect(db_path)
    assert db_path.is_file()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrate_db.SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"messages", "topic_map", "accounts", "rate_limits", "profiles", "tasks",
            "task_attempts", "campaign_runs", "campaign_texts", "session_history",
            "sessions", "dial_results"} <= tables
    assert {"idx_attempts_run_id", "idx_attempts_task_run", "idx_session_id"} <= indexes(conn)
    conn.close()


@pytest.mark.parametrize("query", SPEC_QUERIES)
def test_spec_queries_run_on_fresh_database(db, query):
    db.execute(query).fetchall()


def test_next_pending_message_uses_an_index(db):
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT msg_id FROM messages "
        "WHERE source_chat = ? AND target_chat = ? AND status = 'pending' "
        "ORDER BY msg_id LIMIT 1", ("x", "y")
    ).fetchall()
    detail = " ".join(row[-1] for row in plan)
    assert "INDEX idx_messages_pair_status" in detail
    assert "TEMP B-TREE" not in detail


def test_sqlite3_shell_can_read_a_suite_database(db, db_path):
    db.execute("INSERT INTO messages (source_chat, msg_id) VALUES ('s', 1)")
    if shutil.which("sqlite3") is None:
        pytest.skip("sqlite3 shell not installed")
    shell = helpers.run(["sqlite3", db_path,
                         "SELECT status, COUNT(*) FROM messages GROUP BY status;"])
    assert shell.stdout.strip() == "pending|1"


# ----------------------------------------------------------------------------- transaction

def test_transaction_commits_and_rolls_back(db):
    with migrate_db.transaction(db):
        db.execute("INSERT INTO campaign_texts (text) VALUES ('kept')")
    with pytest.raises(RuntimeError), migrate_db.transaction(db):
        db.execute("INSERT INTO campaign_texts (text) VALUES ('dropped')")
        raise RuntimeError("boom")
    assert [r[0] for r in db.execute("SELECT text FROM campaign_texts")] == ["kept"]
    assert not db.in_transaction


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
import migrate_db
conn = migrate_db.connect({db!r})
print("begin", time.monotonic(), flush=True)
with migrate_db.transaction(conn):
    print("locked", time.monotonic(), flush=True)
    n = conn.execute("SELECT COUNT(*) FROM campaign_texts").fetchone()[0]
    {hold}
    conn.execute("INSERT INTO campaign_texts (text) VALUES (?)", (f"{{n}}",))
    print("commit", time.monotonic(), flush=True)
"""


def writer(db_path: Path, hold: str) -> subprocess.Popen:
    """A process writing one row under BEGIN IMMEDIATE; `hold` runs while it holds the lock."""
    code = WRITER.format(root=str(helpers.ROOT), db=str(db_path), hold=hold)
    return helpers.start([sys.executable, "-c", code], stdin=subprocess.PIPE)


def stamps(output: str) -> dict[str, float]:
    """{event: CLOCK_MONOTONIC time} of a writer's "event time" lines."""
    return {event: float(at) for event, at in (line.split() for line in output.splitlines())}


def test_second_writer_waits_instead_of_failing(db_path: Path):
    migrate_db.connect(db_path).close()
    first = writer(db_path, hold="sys.stdin.readline()")     # holds until told to go on
    assert [first.stdout.readline().split()[0] for _ in range(2)] == ["begin", "locked"]
    second = writer(db_path, hold="pass")
    began = float(second.stdout.readline().split()[1])
    first.stdin.write("go\n")                   # the second is asking for the lock by now
    first.stdin.flush()
    first_done, second_done = helpers.finish(first), helpers.finish(second)
    assert first_done.returncode == 0, first_done.stderr
    assert second_done.returncode == 0, second_done.stderr
    assert "database is locked" not in second_done.stderr
    # it really waited for the first writer: asked before the first committed, got the
    # lock after (CLOCK_MONOTONIC is one clock for every process)
    first_at, second_at = stamps(first_done.stdout), stamps(second_done.stdout)
    assert began < first_at["commit"] < second_at["locked"], (began, first_at, second_at)
    conn = migrate_db.connect(db_path)
    # read-then-write under BEGIN IMMEDIATE: the second saw the first's row
    assert sorted(r[0] for r in conn.execute("SELECT text FROM campaign_texts")) == ["0", "1"]
    conn.close()


# ----------------------------------------------------------------------------- migrations

def test_legacy_campaign_database_upgraded_in_place(tmp_path: Path):
    path = tmp_path / "campaign.db"
    make_legacy_campaign_db(path)
    conn = migrate_db.connect(path, kind="campaign")
    assert "run_id" in columns(conn, "task_attempts")
    assert {"idx_attempts_run_id", "idx_attempts_task_run"} <= indexes(conn)
    rows = conn.execute("SELECT task_id, profile_id, cycle_number, status, run_id, "
                        "attempted_at, timestamp FROM task_attempts ORDER BY id").fetchall()
    # earlier attempts keep their account's UUID and their own time column; attempted_at is
    # the same instant in the suite's format
    assert rows == [
        (1, PROFILE_UUID, 1, "success", None, "2025-01-01T11:00:00.000000+00:00",
         "2025-01-01 11:00:00"),
        (1, PROFILE_UUID, 2, "success", None, "2025-01-01T12:00:00.000000+00:00",
         "2025-01-01 12:00:00"),
        (3, PROFILE_UUID, 1, "failed", None, "2025-01-01T12:10:00.000000+00:00",
         "2025-01-01 12:10:00")]
    tasks = {chat: (status, due) for chat, status, due in conn.execute(
        "SELECT chat_username, status, next_available_at FROM tasks")}
    # per-run cycles: a used-up task is pending again, a blocked one stays blocked
    assert tasks == {"@chat_a": ("pending", "2025-01-01T12:20:00.000000+00:00"),
                     "@chat_b": ("pending", None), "@chat_c": ("blocked", None)}
    assert conn.execute("SELECT completed_cycles FROM tasks WHERE chat_username='@chat_a'"
                        ).fetchone()[0] == 2
    assert conn.execute("SELECT profile_id, created_at FROM profiles").fetchall() == \
        [(PROFILE_UUID, "2025-01-01T09:00:00.000000+00:00")]
    # the templates are the campaign's texts now, with their group; their table is untouched
    assert conn.execute("SELECT text, group_id, is_active, created_at FROM campaign_texts "
                        "ORDER BY id").fetchall() == [
        ("Hi", "g", 1, "2024-12-31T08:00:00.000000+00:00"),
        ("Old text", "g", 0, "2024-12-30T08:00:00.000000+00:00"),
        ("Hello h", "h", 1, "2024-12-31T08:00:00.000000+00:00")]
    assert columns(conn, "messages") == ["id", "group_id", "text", "is_active",
                                         "usage_count", "created_at"]
    # no part of the cloner's schema
    assert not {"topic_map"} & set(migrate_db._tables(conn))
    assert migrate_db.recognise_kinds(conn) == {"campaign"}
    # the earlier system's views still read
    assert conn.execute("SELECT profile_id, successful_sends, failed_sends FROM profile_stats"
                        ).fetchall() == [(PROFILE_UUID, 2, 1)]
    assert len(conn.execute("SELECT * FROM task_progress").fetchall()) == 3
    conn.execute(SPEC_QUERIES[3]).fetchall()  # the campaign's
    conn.close()


def test_a_database_gets_only_the_schema_of_its_kind(tmp_path: Path):
    conn = migrate_db.connect(tmp_path / "campaign.db", kind="campaign")
    assert migrate_db._tables(conn) == {"profiles", "tasks", "task_attempts", "campaign_runs",
                                        "campaign_run_profiles", "campaign_texts"}
    conn.close()
    # opened later without a kind, it is recognised as what it is and stays so
    conn = migrate_db.connect(tmp_path / "campaign.db")
    assert "messages" not in migrate_db._tables(conn)
    assert not migrate_db.pending_changes(conn)
    conn.close()
    checkpoint = migrate_db.connect(tmp_path / "checkpoint.db", kind="checkpoint")
    assert migrate_db._tables(checkpoint) == {"messages", "topic_map", "history_ranges"}
    checkpoint.close()
    with pytest.raises(ValueError, match="unknown database kind 'nope'"):
        migrate_db.connect(tmp_path / "x.db", kind="nope")


def test_every_kind_has_a_section_and_every_table_one_kind():
    sections = migrate_db.schema_sections()
    assert list(sections) == ["checkpoint", "accounts", "campaign", "heatup", "dialer"]
    owners: dict[str, str] = {}
    for kind in sections:
        ref = migrate_db._reference_db([kind])
        for table in migrate_db._tables(ref):
            assert table not in owners, f"{table} in {owners.get(table)} and {kind}"
            owners[table] = kind
        ref.close()


def test_migrations_are_numbered_by_name_and_recorded(tmp_path: Path):
    numbers = [migrate_db.migration_number(m) for _, m in migrate_db.MIGRATIONS]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[:3] == [1, 2, 3] and 10 in numbers
    assert numbers[-1] == migrate_db.SCHEMA_VERSION
    path = tmp_path / "campaign.db"
    make_legacy_campaign_db(path)
    first = migrate_db.open_database(path)
    changes = migrate_db.upgrade(first)
    assert any(change.startswith("m013: campaign_texts: 3") for change in changes)
    assert first.execute("PRAGMA user_version").fetchone()[0] == migrate_db.SCHEMA_VERSION
    assert migrate_db.upgrade(first) == []  # nothing runs twice
    first.close()


def test_legacy_checkpoint_upgraded(tmp_path: Path):
    path = tmp_path / "checkpoint.db"
    make_legacy_checkpoint(path)
    conn = migrate_db.connect(path)
    assert {"claimed_at", "random_id", "attempts", "error"} <= set(columns(conn, "messages"))
    rows = conn.execute("SELECT msg_id, status, session, target_msg_id FROM messages "
                        "ORDER BY msg_id").fetchall()
    assert rows == [(1, "done", "session1", 11), (2, "pending", None, None),
                    (3, "pending", None, None)]
    conn.close()


def test_legacy_dialer_database_gets_sessions(tmp_path: Path):
    path = tmp_path / "calls.db"
    make_legacy_dialer_db(path)
    conn = migrate_db.connect(path)
    assert conn.execute("SELECT DISTINCT session_id FROM dial_results").fetchall() == \
        [("legacy",)]
    assert conn.execute("SELECT total_calls, successful_calls, modem_detections, start_time "
                        "FROM sessions").fetchall() == [(2, 1, 1, "2025-11-16T14:30:00")]
    assert "idx_session_id" in indexes(conn)
    for query in SPEC_QUERIES[4:]:  # the dialer's
        conn.execute(query).fetchall()
    conn.close()


# ----------------------------------------------------------------------------- the CLI

def test_cli_migrates_then_reports_up_to_date(tmp_path: Path):
    path = tmp_path / "campaign.db"
    make_legacy_campaign_db(path)
    first = run_cli(str(path))
    assert first.returncode == 0, first.stderr
    assert "added column task_attempts.run_id" in first.stdout
    assert "created index idx_attempts_run_id" in first.stdout
    assert "created index idx_attempts_task_run" in first.stdout
    backups = list(tmp_path.glob("campaign.db.bak-*"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    assert "run_id" not in columns(old, "task_attempts")  # the backup is the old database
    assert old.execute("SELECT COUNT(*) FROM task_attempts").fetchone()[0] == 3
    old.close()
    second = run_cli(str(path))
    assert second.returncode == 0
    assert second.stdout.strip() == f"{path}: up to date"
    assert len(list(tmp_path.glob("campaign.db.bak-*"))) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM task_attempts").fetchone()[0] == 3
    conn.close()


def test_cli_refuses_a_file_that_is_not_a_database(tmp_path: Path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the rows you are looking for\n" * 10)
    before = path.read_bytes()
    result = run_cli(str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {path}: not a SQLite database; nothing was changed"
    assert "Traceback" not in result.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_cli_refuses_a_read_only_database(tmp_path: Path):
    path = tmp_path / "ro.db"
    make_legacy_campaign_db(path)
    path.chmod(0o444)
    try:
        before = path.read_bytes()
        result = run_cli(str(path))
        assert result.returncode == 1
        assert "read-only" in result.stderr and "nothing was changed" in result.stderr
        assert "Traceback" not in result.stderr
        assert path.read_bytes() == before
    finally:
        path.chmod(0o644)


def test_cli_reports_a_database_locked_past_the_timeout(tmp_path: Path):
    path = tmp_path / "busy.db"
    make_legacy_campaign_db(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run_cli("--timeout", "0.5", str(path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    assert "locked by another process" in result.stderr
    assert "Traceback" not in result.stderr
    conn = sqlite3.connect(path)
    assert "run_id" not in columns(conn, "task_attempts")
    conn.close()


def test_cli_missing_file_and_usage_errors(tmp_path: Path):
    missing = run_cli(str(tmp_path / "nope.db"))
    assert missing.returncode == 1
    assert "no such database file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    usage = run_cli("--timeout", "-1", str(tmp_path / "x.db"))
    assert usage.returncode == 2
    assert "--timeout" in usage.stderr.splitlines()[-1]


def test_cli_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "sessions/shared" in result.stdout


CREATOR = """
import sys
sys.path.insert(0, {root!r})
import migrate_db
from pathlib import Path
for i in range({count}):
    migrate_db.connect(Path({folder!r}) / f"new{{i}}.db").close()
"""


def test_processes_creating_the_same_new_databases_at_once(tmp_path: Path):
    root = str(Path(migrate_db.__file__).parent)
    code = CREATOR.format(root=root, count=150, folder=str(tmp_path))
    workers = [helpers.start([sys.executable, "-c", code]) for _ in range(6)]
    done = [helpers.finish(worker) for worker in workers]
    assert [d.returncode for d in done] == [0] * 6, [d.stderr for d in done]
    for i in range(150):
        conn = sqlite3.connect(tmp_path / f"new{i}.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == migrate_db.SCHEMA_VERSION
        conn.close()
