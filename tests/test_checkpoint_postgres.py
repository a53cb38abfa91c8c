"""The PostgreSQL checkpoint on a real server: schema and recorded migrations, --copy from a
SQLite checkpoint, the spec's monitoring queries in psql, the durable random_id commit, and
SHARED_DB_URL in the cloner's command line (the password never printed)."""
from __future__ import annotations

from pathlib import Path

import helpers
import pg_cluster
import psycopg
import pytest
from helpers import clean_env, python

import clone_streaming_shared
import migrate_db
from clone_streaming import PostgresCheckpoint, SqliteCheckpoint

ROOT = Path(__file__).resolve().parent.parent
SOURCE, TARGET = "-1001", "-1002"
# spec 002's monitoring queries, exactly as the spec prints them
SPEC_QUERIES = ("SELECT status, COUNT(*) FROM messages GROUP BY status;",
                "SELECT * FROM messages WHERE status='processing';",
                "SELECT * FROM messages ORDER BY processed_at DESC LIMIT 10;")


def password_of(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def sqlite_checkpoint(path: Path) -> None:
    """A SQLite checkpoint with every kind of row: done, failed, skipped, pending, a stale
    claim with a stored random_id, an album, and a created topic."""
    a = SqliteCheckpoint(path, "session1")
    a.bind(SOURCE, TARGET)
    a.claim([1, 2, 3, 4, 5, 6, 7], grouped_ids={5: 99, 6: 99})
    a.complete({1: 101, 5: 105, 6: 106})
    a.fail([2], "CHAT_SEND_MEDIA_FORBIDDEN")
    a.fail([3], "service message", status="skipped")
    a.give_back([4])
    a.random_ids([7])                               # 7: a send that may have happened
    existing, random_id = a.claim_topic(10, "News")
    assert existing is None and random_id
    a.set_topic(10, 210)
    with migrate_db.transaction(a.conn):            # 7's owner stopped long ago
        a.conn.execute("UPDATE messages SET claimed_at = '2026-01-01T00:00:00+00:00' "
                       "WHERE msg_id = 7")
    a.close()


def test_schema_is_applied_once_and_migrations_are_recorded(pg_url: str) -> None:
    conn = migrate_db.pg_connect(pg_url)
    try:
        assert not migrate_db.pg_pending_changes(conn)
        assert migrate_db.pg_upgrade(conn) == []                    # idempotent
        calls = []

        def m001(c) -> str:
            calls.append(1)
            c.execute("ALTER TABLE messages ADD COLUMN IF NOT EXISTS note text")
            return "messages: column note"
        later = [("add note", m001)]
        assert migrate_db.pg_pending_changes(conn, later)
        assert migrate_db.pg_upgrade(conn, later) == ["m001: messages: column note"]
        assert migrate_db.pg_upgrade(conn, later) == [] and calls == [1]   # once only
        assert conn.execute("SELECT version, name FROM schema_migrations").fetchall() == \
            [(1, "add note")]
    finally:
        conn.close()


def test_migrate_db_command_line_never_prints_the_password(
        pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate_db.main(["--db-url", pg_url]) == 0              # created by the call
    assert migrate_db.main(["--db-url", pg_url]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("up to date") and "created messages" in out
    assert password_of(pg_url) not in out and ":***@" in out
    wrong = pg_url.replace(password_of(pg_url), "not-the-password")
    assert migrate_db.main(["--db-url", wrong]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "not-the-password" not in err
    with pytest.raises(SystemExit) as usage:
        migrate_db.main(["--db-url", "mysql://u:secret@h/db"])
    assert usage.value.code == 2 and "secret" not in capsys.readouterr().err


def test_copy_moves_every_row_and_the_spec_queries_run_in_psql(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shared" / "checkpoint.db"
    sqlite_checkpoint(path)
    assert migrate_db.main(["--copy", str(path), pg_url]) == 0
    out = capsys.readouterr().out
    assert "copied 7 messages rows, 1 topic_map rows" in out and password_of(pg_url) not in out

    lite = migrate_db.open_database(path)
    columns = "source_chat, target_chat, msg_id, status, session, target_msg_id, " \
              "random_id, attempts, error, grouped_id, sent_at IS NOT NULL, doubt_seen IS NOT NULL"
    before = lite.execute(f"SELECT {columns} FROM messages ORDER BY msg_id").fetchall()
    topics = lite.execute("SELECT source_chat, source_topic, target_chat, target_topic, "
                          "title, session, random_id FROM topic_map").fetchall()
    lite.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT {columns} FROM messages ORDER BY msg_id").fetchall() \
            == before
        assert conn.execute("SELECT source_chat, source_topic, target_chat, target_topic, "
                            "title, session, random_id FROM topic_map").fetchall() == topics

    # the copy goes on where the SQLite one stopped: 7's stale send is in doubt
    b = PostgresCheckpoint(pg_url, "session2")
    b.bind(SOURCE, TARGET)
    assert b.resume_point() == 3 and b.claim([4, 7]) == [4, 7] and set(b.in_doubt([7])) == {7}
    assert b.claim_topic(10, "News") == (210, None)
    b.close()

    psql = pg_cluster.bin_dir() / "psql"
    done = [helpers.run([psql, pg_url, "-X", "-A", "-t", "-c", query])
            for query in SPEC_QUERIES]
    assert [d.returncode for d in done] == [0] * len(SPEC_QUERIES), [d.stderr for d in done]
    results = [d.stdout for d in done]
    assert sorted(results[0].split()) == sorted(
        ["done|3", "failed|1", "processing|2", "skipped|1"])
    assert sorted(line.split("|")[1] for line in results[1].splitlines()) == ["4", "7"]
    assert len(results[2].splitlines()) == 7


def test_copy_is_refused_while_a_cloner_holds_claims_or_into_a_used_database(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "checkpoint.db"
    sqlite_checkpoint(path)
    running = SqliteCheckpoint(path, "session3")
    running.bind(SOURCE, TARGET)
    running.claim([8])                              # a cloner working right now
    assert migrate_db.main(["--copy", str(path), pg_url]) == 1
    err = capsys.readouterr().err
    assert "1 cloner(s) hold 1 claim(s)" in err and "nothing was copied" in err
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
    running.give_back([8])
    running.close()
    assert migrate_db.main(["--copy", str(path), pg_url]) == 0
    assert migrate_db.main(["--copy", str(path), pg_url]) == 1     # rows there already
    assert "already has 8 rows" in capsys.readouterr().err      # 8: pending again


def test_password_from_pgpassword_and_random_ids_committed_durably(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = password_of(pg_url)
    monkeypatch.setenv("PGPASSWORD", password)
    a = PostgresCheckpoint(pg_url.replace(f":{password}@", "@"), "a")   # libpq's own way
    a.bind(SOURCE, TARGET)
    a.claim([1])
    trace = tmp_path / "libpq.trace"
    with open(trace, "w") as handle:
        a.conn.pgconn.trace(handle.fileno())
        a.random_ids([1])
        a.conn.pgconn.untrace()
    assert a.conn.execute("SHOW synchronous_commit").fetchone() == ("off",)   # the others
    a.close()
    sent = trace.read_text()
    durable = sent.index("SET LOCAL synchronous_commit = on")
    assert sent.index("UPDATE messages SET random_id", durable) < sent.index("COMMIT", durable)


def make_folder(tmp_path: Path, env: dict[str, str]) -> Path:
    folder = tmp_path / "sessions" / "session1"
    folder.mkdir(parents=True)
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in {
        "TG_API_ID": "1", "TG_API_HASH": "0" * 32, "SOURCE_CHAT": "@some_source",
        "TARGET_CHAT": "@some_target", **env}.items()), encoding="utf-8")
    (folder / ".env").chmod(0o600)
    return folder


def test_status_and_retry_failed_read_the_postgresql_checkpoint(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    sqlite_checkpoint(tmp_path / "checkpoint.db")
    assert migrate_db.main(["--copy", str(tmp_path / "checkpoint.db"), pg_url]) == 0
    folder = make_folder(tmp_path, {"SHARED_DB_URL": pg_url})
    capsys.readouterr()
    assert clone_streaming_shared.main(["--session-dir", str(folder), "--status"]) == 0
    out = capsys.readouterr().out
    # total, done, processing, pending, failed, skipped, last done id (then its time)
    assert [SOURCE, TARGET, "7", "3", "1", "1", "1", "1", "6"] in \
        [line.split()[:9] for line in out.splitlines()]
    assert "CHAT_SEND_MEDIA_FORBIDDEN" in out and password_of(pg_url) not in out
    assert clone_streaming_shared.main(["--session-dir", str(folder), "--retry-failed"]) == 0
    assert f"1 failed messages of {SOURCE} -> {TARGET} are pending again" in \
        capsys.readouterr().out


def test_bad_or_unreachable_url_is_one_line_without_the_password(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {
        "SHARED_DB_URL": f"postgresql://u:hunter2@127.0.0.1:{pg_cluster.free_port()}/db"})
    env = clean_env(PGCONNECT_TIMEOUT="5")
    done = helpers.run(python("clone_streaming_shared.py", "--status"), cwd=folder, env=env)
    assert done.returncode == 1 and done.stderr.startswith("error: checkpoint ")
    assert len(done.stderr.strip().splitlines()) == 1 and "hunter2" not in done.stderr
    done = helpers.run(python("clone_streaming_shared.py", "--status", "--db-url",
                              "mysql://u:hunter2@h/db"), cwd=folder, env=env)
    assert done.returncode == 2 and "hunter2" not in done.stderr
