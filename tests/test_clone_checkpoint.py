"""The checkpoint contract on both backends (SqliteCheckpoint and PostgresCheckpoint on a real
server): claims, heartbeats, stale claims, albums, topics, several real processes."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

import migrate_db
from clone_streaming import (
    RANGE_SIZE,
    Checkpoint,
    PostgresCheckpoint,
    SqliteCheckpoint,
    range_lo,
)

SOURCE = "-1001"
TARGET = "-1002"


def opened(path: Path | str, session: str, source: str = SOURCE, target: str = TARGET,
           **options: float) -> Checkpoint:
    """A session's checkpoint bound to a chat pair, as the cloner opens it (a
    postgresql:// URL opens a PostgresCheckpoint)."""
    backend = PostgresCheckpoint if migrate_db.is_postgres_url(str(path)) else SqliteCheckpoint
    checkpoint = backend(str(path) if backend is PostgresCheckpoint else path, session,
                         **options)
    checkpoint.bind(source, target)
    return checkpoint


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the checkpoint lives: a SQLite file, or a new PostgreSQL database's URL."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return tmp_path / "shared" / "checkpoint.db"


def query(path: Path | str, sql: str) -> list[tuple]:
    """Rows of a query on the checkpoint, read directly with the backend's driver."""
    if migrate_db.is_postgres_url(str(path)):
        with psycopg.connect(str(path)) as conn:
            return conn.execute(sql).fetchall()
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def rows(path: Path | str) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in query(
        path, "SELECT msg_id, status, session, target_msg_id, random_id, error FROM messages")}


def test_claim_is_exclusive_and_idempotent_for_its_owner(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    b = opened(checkpoint_path, "b")
    assert a.claim([1, 2, 3]) == [1, 2, 3]
    assert b.claim([2, 3, 4]) == [4]
    assert a.claim([1, 2, 3]) == [1, 2, 3]          # already its own
    assert b.complete({1: 99}) == set()             # not b's claim: refused
    assert a.complete({1: 11}) == {1}
    assert a.complete({1: 12}) == set()             # never recorded twice
    assert a.fail([2], "too big") == {2}
    state = rows(checkpoint_path)
    assert state[1][:3] == ("done", "a", 11)
    assert state[2][0] == "failed" and state[2][4] == "too big"
    assert state[3][:2] == ("processing", "a")
    assert b.claim([1, 2]) == []                   # finished rows are never reclaimed


def test_random_id_is_stored_once_and_reused(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    a.claim([5, 6])
    first = a.random_ids([5, 6])
    assert set(first) == {5, 6} and first[5] != first[6]
    again = opened(checkpoint_path, "a")          # the same account after a restart
    assert again.claim([5, 6]) == [5, 6]
    assert again.random_ids([5, 6]) == first
    assert opened(checkpoint_path, "b").random_ids([5, 6]) == {}


def test_stale_claim_is_taken_over_and_the_late_owner_is_refused(
        checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a", claim_timeout=0.2)
    b = opened(checkpoint_path, "b", claim_timeout=0.2)
    a.claim([1])
    assert b.claim([1]) == []
    time.sleep(0.3)
    assert b.claim([1]) == [1]                     # a stopped heart-beating
    assert a.complete({1: 10}) == set()             # a's late completion is refused
    assert b.complete({1: 20}) == {1}
    assert rows(checkpoint_path)[1][:3] == ("done", "b", 20)


def test_each_history_range_is_leased_to_one_session(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a", claim_timeout=0.3)
    b = opened(checkpoint_path, "b", claim_timeout=0.3)
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    second = 1 + RANGE_SIZE
    assert range_lo(1) == range_lo(RANGE_SIZE) == 1 and range_lo(second) == second
    assert a.claim_range(1, since) == 1
    assert b.claim_range(1, since) == second               # a is reading the first
    assert a.claim_range(1, since) == 1                    # its own lease, again
    assert b.reading_ranges(second) == [(1, False)]
    # the range's units and the range recorded read in one transaction
    assert a.claim([1, 2, 3], grouped_ids={2: 7, 3: 7}, range_read=(1, True)) == [1, 2, 3]
    assert b.reading_ranges(second) == []
    # the second range was the newest (nothing after it): the end of this pass
    assert b.claim([second], range_read=(second, False)) == [second]
    assert a.claim_range(1, since) is None
    assert b.claim_range(second + 1, since) is None
    # a later pass reads the newest range again; a range with newer messages never
    assert a.claim_range(1, datetime.now(timezone.utc) + timedelta(seconds=1)) == second
    assert query(checkpoint_path, "SELECT lo, status, session FROM history_ranges "
                                  "ORDER BY lo") == [(1, "read", None),
                                                     (second, "reading", "a")]


def test_a_stopped_sessions_range_is_taken_over_and_released(
        checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a", claim_timeout=0.3)
    b = opened(checkpoint_path, "b", claim_timeout=0.3)
    since = datetime.now(timezone.utc)
    assert a.claim_range(1, since) == 1
    a.heartbeat()
    assert b.claim_range(1, since, single=True) is None    # a lives
    time.sleep(0.4)
    assert b.reading_ranges(1) == [(1, True)]             # stale: a stopped
    # below the resume point too: a range left reading is read before later ones
    assert b.claim_range(10 * RANGE_SIZE, since) == 1
    assert b.release_ranges() == 1
    assert a.claim_range(1, since, single=True) == 1       # free again


def test_heartbeat_keeps_a_long_claim(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a", claim_timeout=0.3)
    b = opened(checkpoint_path, "b", claim_timeout=0.3)
    a.claim([1])
    for _ in range(4):
        time.sleep(0.15)
        assert a.heartbeat() == 1
        assert b.claim([1]) == []
        assert b.release_stale() == 0


def test_release_stale_spares_claims_whose_send_may_have_happened(
        checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a", claim_timeout=0.1)
    a.claim([1, 2])
    a.random_ids([2])                               # 2's send may have reached Telegram
    time.sleep(0.15)
    b = opened(checkpoint_path, "b", claim_timeout=0.1)
    assert b.release_stale() == 1                           # only 1: pending again
    assert b.claim([1, 2]) == [1]
    assert a.claim([2]) == [2]                      # its owner resumes it
    time.sleep(1.1)                                         # ORPHAN_FACTOR x timeout
    assert b.claim([2]) == [2]
    assert b.random_ids([2]) != {}                  # b's own new random_id
    assert rows(checkpoint_path)[2][1] == "b"


def test_album_is_claimed_whole_or_not_at_all(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    b = opened(checkpoint_path, "b")
    album = {10: 77, 11: 77, 12: 77}
    assert a.claim([10], grouped_ids=album) == [10]
    assert b.claim([10, 11, 12], grouped_ids=album) == []  # a holds one member
    assert a.claim([10, 11, 12], grouped_ids=album) == [10, 11, 12]
    assert a.give_back([10, 11, 12]) == 3
    assert b.claim_next(1) == [10, 11, 12]          # claim_next takes whole albums


def test_resume_point_is_the_last_contiguous_finished_message(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    assert a.resume_point() == 0
    a.claim([1, 2, 3, 5])
    a.complete({1: 1})
    a.fail([2], "service message", status='skipped')
    a.complete({5: 5})
    assert a.resume_point() == 2                      # 3 still open
    a.fail([3], "refused")
    assert a.resume_point() == 5


def test_topic_is_created_by_one_session_only(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    b = opened(checkpoint_path, "b")
    existing, random_id = a.claim_topic(7, "News")
    assert existing is None and random_id
    assert b.claim_topic(7, "News") == (None, None)   # a is creating it
    assert a.claim_topic(7, "News") == (None, random_id)  # same random_id
    assert a.set_topic(7, 42) is True
    assert b.set_topic(7, 43) is False
    assert b.claim_topic(7, "News") == (42, None)
    assert a.topic_rows() == [(7, 42, "News")]


def _worker(path: str, name: str, ids: list[int], start, results) -> None:
    """A separate process: walks the same ids as everyone (whole albums in each claim, as
    the cloner passes them), claims, completes, then takes whatever is left."""
    checkpoint = opened(path, name)
    start.wait(60)      # every process has opened it: none has the ids to itself meanwhile
    done = []
    for first in range(0, len(ids), 10):
        batch = ids[first:first + 10]
        groups = {i: (i - 1) // 5 for i in batch if (i - 1) % 50 < 10}  # albums of 5
        for msg_id in checkpoint.claim(batch, grouped_ids=groups):
            if checkpoint.complete({msg_id: msg_id + 100000}) == {msg_id}:
                done.append(msg_id)
    while ids_left := checkpoint.claim_next(5):
        done += [i for i in ids_left if checkpoint.complete({i: i + 100000}) == {i}]
    results.put((name, done))


def test_four_processes_complete_every_message_exactly_once(checkpoint_path: Path | str) -> None:
    ids = list(range(1, 2001))
    opened(checkpoint_path, "setup").close()
    context = mp.get_context("spawn")
    processes = 4
    start, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_worker, args=(str(checkpoint_path), f"w{n}", ids,
                                                     start, results))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    done = dict(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    every = [i for ids_done in done.values() for i in ids_done]
    assert sorted(every) == ids                             # each exactly once
    assert sum(1 for d in done.values() if d) >= 2          # the work was really shared
    state = rows(checkpoint_path)
    assert all(state[i][0] == "done" and state[i][2] == i + 100000 for i in ids)
    albums: dict[int, set[str]] = {}
    for msg_id in ids:
        if (msg_id - 1) % 50 < 10:
            albums.setdefault((msg_id - 1) // 5, set()).add(state[msg_id][1])
    assert all(len(owners) == 1 for owners in albums.values())  # albums never split


def test_with_albums_adds_the_other_members(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    a.claim([1, 2, 3, 4], grouped_ids={2: 9, 3: 9, 4: 9})
    assert a.with_albums([3]) == [2, 3, 4]
    assert a.with_albums([1, 5]) == [1, 5]


def test_each_chat_pair_is_cloned_on_its_own(checkpoint_path: Path | str) -> None:
    first = opened(checkpoint_path, "a")                       # S1 -> T1
    assert first.claim([1, 2]) == [1, 2]
    assert first.complete({1: 11, 2: 12}) == {1, 2}
    second_target = opened(checkpoint_path, "a", target="-1003")   # S1 -> T3: all to do
    assert second_target.resume_point() == 0
    assert second_target.claim([1, 2]) == [1, 2]
    second_source = opened(checkpoint_path, "b", source="-1009")   # S2 -> T1
    assert second_source.claim([1, 2]) == [1, 2]
    assert second_source.target_ids() == {11, 12}             # the target's ids, any source
    pairs = query(checkpoint_path, "SELECT source_chat, target_chat, COUNT(*) FROM messages "
                                   "GROUP BY 1, 2 ORDER BY 1, 2")
    assert pairs == [(SOURCE, TARGET, 2), (SOURCE, "-1003", 2), ("-1009", TARGET, 2)]


def test_takeover_of_a_started_send_is_in_doubt_and_refused_requests_are_given_back(
        checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a", claim_timeout=0.05)
    a.claim([1, 2, 3])
    a.random_ids([1, 2])
    assert a.give_back([1, 2, 3]) == 1                       # 1 and 2 may have been sent
    assert a.give_back([2], unsent=True) == 1                # Telegram refused 2: not sent
    assert rows(checkpoint_path)[2][:4] == ("pending", None, None, None)
    time.sleep(0.6)                                          # past ORPHAN_FACTOR x timeout
    b = opened(checkpoint_path, "b", claim_timeout=0.05)
    assert b.claim([1, 2]) == [1, 2]
    doubt = b.in_doubt([1, 2])                               # a's send of 1 may be there
    assert set(doubt) == {1}
    sent_from, sent_until = doubt[1]
    assert sent_from < sent_until
    assert b.complete({1: 5}) == {1} and b.in_doubt([1]) == {}


def test_retry_failed_makes_failed_rows_pending(checkpoint_path: Path | str) -> None:
    a = opened(checkpoint_path, "a")
    a.claim([1, 2, 3])
    a.fail([1, 2], "CHAT_SEND_MEDIA_FORBIDDEN")
    a.fail([3], "service message", status="skipped")
    assert a.status_tables()["reasons"] == [("failed", "CHAT_SEND_MEDIA_FORBIDDEN", 2),
                                             ("skipped", "service message", 1)]
    assert a.retry_failed() == [(SOURCE, TARGET, 2)]
    assert {m: r[0] for m, r in rows(checkpoint_path).items()} == \
        {1: "pending", 2: "pending", 3: "skipped"}
    assert a.claim_next(5) == [1, 2]


def test_random_ids_are_committed_with_synchronous_full(tmp_path: Path) -> None:
    a = opened(tmp_path / "checkpoint.db", "a")
    a.claim([1])
    statements: list[str] = []
    a.conn.set_trace_callback(statements.append)
    a.random_ids([1])
    a.conn.set_trace_callback(None)
    full = statements.index("PRAGMA synchronous = FULL")
    assert statements.index("COMMIT", full) < statements.index("PRAGMA synchronous = NORMAL")
    assert a.conn.execute("PRAGMA synchronous").fetchone()[0] == 1     # NORMAL again


def test_checkpoints_of_earlier_versions_migrate_to_pairs(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.db"
    conn = sqlite3.connect(path)          # the layout before pairs: keyed by source and id
    conn.executescript(f"""
        CREATE TABLE messages (source_chat TEXT NOT NULL, msg_id INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', session TEXT, claimed_at TEXT,
            processed_at TEXT, target_chat TEXT, target_msg_id INTEGER, random_id INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, grouped_id INTEGER,
            PRIMARY KEY (source_chat, msg_id));
        CREATE INDEX idx_messages_source_status ON messages(source_chat, status, msg_id);
        INSERT INTO messages (source_chat, msg_id, status, session, target_chat, target_msg_id)
        VALUES ('{SOURCE}', 1, 'done', 'a', '{TARGET}', 11),
               ('{SOURCE}', 2, 'failed', 'a', NULL, NULL),
               ('{SOURCE}', 3, 'pending', NULL, NULL, NULL);
        PRAGMA user_version = 3;
    """)
    conn.close()
    moved = opened(path, "a")              # the first run's pair takes rows with no target
    assert moved.row(1).status == "done" and moved.row(2).status == "failed"
    assert moved.row(3).status == "pending" and moved.resume_point() == 2
    other = opened(path, "a", target="-1003")                # another target: nothing done
    assert other.resume_point() == 0 and other.claim([1, 2, 3]) == [1, 2, 3]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 6
    key = [r[1] for r in sorted(conn.execute("PRAGMA table_info(messages)"),
                                key=lambda r: r[5]) if r[5]]
    assert key == ["source_chat", "target_chat", "msg_id"]
    for query in ("SELECT status, COUNT(*) FROM messages GROUP BY status;",
                  "SELECT * FROM messages WHERE status='processing';",
                  "SELECT * FROM messages ORDER BY processed_at DESC LIMIT 10;"):
        conn.execute(query).fetchall()                       # the spec's queries still run
    conn.close()
