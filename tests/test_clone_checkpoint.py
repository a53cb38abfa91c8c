"""SharedCheckpoint: claims, heartbeats, stale claims, albums, topics, several real processes."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import pytest

from clone_streaming import SharedCheckpoint

SOURCE = "-1001"
TARGET = "-1002"


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "shared" / "checkpoint.db"


def rows(path: Path) -> dict[int, tuple]:
    conn = sqlite3.connect(path)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT msg_id, status, session, target_msg_id, random_id, error FROM messages")}
    finally:
        conn.close()


def test_claim_is_exclusive_and_idempotent_for_its_owner(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a")
    b = SharedCheckpoint(checkpoint_path, "b")
    assert a.claim(SOURCE, [1, 2, 3]) == [1, 2, 3]
    assert b.claim(SOURCE, [2, 3, 4]) == [4]
    assert a.claim(SOURCE, [1, 2, 3]) == [1, 2, 3]          # already its own
    assert b.mark_done(SOURCE, 1, 99) is False             # not b's claim: refused
    assert a.mark_done(SOURCE, 1, 11, target_chat=TARGET) is True
    assert a.mark_done(SOURCE, 1, 12) is False             # never recorded twice
    assert a.mark_failed(SOURCE, 2, "too big") is True
    state = rows(checkpoint_path)
    assert state[1][:3] == ("done", "a", 11)
    assert state[2][0] == "failed" and state[2][4] == "too big"
    assert state[3][:2] == ("processing", "a")
    assert b.claim(SOURCE, [1, 2]) == []                   # finished rows are never reclaimed


def test_random_id_is_stored_once_and_reused(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a")
    a.claim(SOURCE, [5, 6])
    first = a.random_ids(SOURCE, [5, 6])
    assert set(first) == {5, 6} and first[5] != first[6]
    again = SharedCheckpoint(checkpoint_path, "a")          # the same account after a restart
    assert again.claim(SOURCE, [5, 6]) == [5, 6]
    assert again.random_ids(SOURCE, [5, 6]) == first
    assert SharedCheckpoint(checkpoint_path, "b").random_ids(SOURCE, [5, 6]) == {}


def test_stale_claim_is_taken_over_and_the_late_owner_is_refused(
        checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a", claim_timeout=0.2)
    b = SharedCheckpoint(checkpoint_path, "b", claim_timeout=0.2)
    a.claim(SOURCE, [1])
    assert b.claim(SOURCE, [1]) == []
    time.sleep(0.3)
    assert b.claim(SOURCE, [1]) == [1]                     # a stopped heart-beating
    assert a.mark_done(SOURCE, 1, 10) is False             # a's late completion is refused
    assert b.mark_done(SOURCE, 1, 20) is True
    assert rows(checkpoint_path)[1][:3] == ("done", "b", 20)


def test_heartbeat_keeps_a_long_claim(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a", claim_timeout=0.3)
    b = SharedCheckpoint(checkpoint_path, "b", claim_timeout=0.3)
    a.claim(SOURCE, [1])
    for _ in range(4):
        time.sleep(0.15)
        assert a.heartbeat() == 1
        assert b.claim(SOURCE, [1]) == []
        assert b.release_stale() == 0


def test_release_stale_spares_claims_whose_send_may_have_happened(
        checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a", claim_timeout=0.1)
    a.claim(SOURCE, [1, 2])
    a.random_ids(SOURCE, [2])                               # 2's send may have reached Telegram
    time.sleep(0.15)
    b = SharedCheckpoint(checkpoint_path, "b", claim_timeout=0.1)
    assert b.release_stale() == 1                           # only 1: pending again
    assert b.claim(SOURCE, [1, 2]) == [1]
    assert a.claim(SOURCE, [2]) == [2]                      # its owner resumes it
    time.sleep(1.1)                                         # ORPHAN_FACTOR x timeout
    assert b.claim(SOURCE, [2]) == [2]
    assert b.random_ids(SOURCE, [2]) != {}                  # b's own new random_id
    assert rows(checkpoint_path)[2][1] == "b"


def test_album_is_claimed_whole_or_not_at_all(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a")
    b = SharedCheckpoint(checkpoint_path, "b")
    album = {10: 77, 11: 77, 12: 77}
    assert a.claim(SOURCE, [10], grouped_ids=album) == [10]
    assert b.claim(SOURCE, [10, 11, 12], grouped_ids=album) == []  # a holds one member
    assert a.claim(SOURCE, [10, 11, 12], grouped_ids=album) == [10, 11, 12]
    assert a.release(SOURCE, [10, 11, 12]) == 3
    assert b.claim_next(SOURCE, 1) == [10, 11, 12]          # claim_next takes whole albums


def test_resume_point_is_the_last_contiguous_finished_message(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a")
    assert a.resume_point(SOURCE) == 0
    a.claim(SOURCE, [1, 2, 3, 5])
    a.mark_done(SOURCE, 1, 1)
    a.mark_skipped(SOURCE, 2, "service message")
    a.mark_done(SOURCE, 5, 5)
    assert a.resume_point(SOURCE) == 2                      # 3 still open
    a.mark_failed(SOURCE, 3, "refused")
    assert a.resume_point(SOURCE) == 5


def test_topic_is_created_by_one_session_only(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a")
    b = SharedCheckpoint(checkpoint_path, "b")
    existing, random_id = a.claim_topic(SOURCE, 7, TARGET, "News")
    assert existing is None and random_id
    assert b.claim_topic(SOURCE, 7, TARGET, "News") == (None, None)   # a is creating it
    assert a.claim_topic(SOURCE, 7, TARGET, "News") == (None, random_id)  # same random_id
    assert a.set_topic(SOURCE, 7, TARGET, 42) is True
    assert b.set_topic(SOURCE, 7, TARGET, 43) is False
    assert b.claim_topic(SOURCE, 7, TARGET, "News") == (42, None)
    assert a.topic_rows(SOURCE, TARGET) == [(7, 42, "News")]


def _worker(path: str, name: str, ids: list[int], start, results) -> None:
    """A separate process: walks the same ids as everyone (whole albums in each claim, as
    the cloner passes them), claims, completes, then takes whatever is left."""
    checkpoint = SharedCheckpoint(path, name)
    start.wait(30)
    done = []
    for first in range(0, len(ids), 10):
        batch = ids[first:first + 10]
        groups = {i: (i - 1) // 5 for i in batch if (i - 1) % 50 < 10}  # albums of 5
        for msg_id in checkpoint.claim(SOURCE, batch, grouped_ids=groups):
            if checkpoint.mark_done(SOURCE, msg_id, msg_id + 100000):
                done.append(msg_id)
    while ids_left := checkpoint.claim_next(SOURCE, 5):
        done += [i for i in ids_left if checkpoint.mark_done(SOURCE, i, i + 100000)]
    results.put((name, done))


def test_four_processes_complete_every_message_exactly_once(checkpoint_path: Path) -> None:
    ids = list(range(1, 2001))
    SharedCheckpoint(checkpoint_path, "setup").close()
    context = mp.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_worker, args=(str(checkpoint_path), f"w{n}",
                                                     ids, start, results)) for n in range(4)]
    for worker in workers:
        worker.start()
    start.set()
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


def test_with_albums_adds_the_other_members(checkpoint_path: Path) -> None:
    a = SharedCheckpoint(checkpoint_path, "a")
    a.claim(SOURCE, [1, 2, 3, 4], grouped_ids={2: 9, 3: 9, 4: 9})
    assert a.with_albums(SOURCE, [3]) == [2, 3, 4]
    assert a.with_albums(SOURCE, [1, 5]) == [1, 5]
