"""Range claims over the simulated Telegram: accounts read disjoint ranges of the history
(one request each), albums across a range's edge stay whole, and a reply whose message
another account holds is set aside while the account goes on."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from helpers import wait_until
from test_clone_streaming import (
    RUN_TIMEOUT,
    checkpoint_rows,
    content,
    start,
    tiny_png,
    two_account_world,
)

from clone_streaming import RANGE_SIZE, SqliteCheckpoint, source_reply_id


def post_until(world, source: int, next_id: int) -> None:
    """Plain posts until the source's next message gets id `next_id`."""
    while world.post(source, "filler") < next_id - 1:
        pass


def test_two_accounts_read_each_range_once_and_keep_edge_albums_whole(
        tmp_path: Path) -> None:
    world, source = two_account_world(tmp_path, "edge")
    albums = []
    for edge in (RANGE_SIZE, 2 * RANGE_SIZE):        # albums across both range edges
        post_until(world, source, edge - 1)
        albums.append(world.post_album(source, [tiny_png(n) for n in range(4)],
                                       captions=[f"album at {edge}", "", "", ""]))
    post_until(world, source, 3 * RANGE_SIZE - 5)
    assert [albums[0][0], albums[0][-1]] == [RANGE_SIZE - 1, RANGE_SIZE + 2]
    folders = [world.make_session_folder(
        tmp_path / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@edge_source", "TARGET_CHAT": "@edge_target",
            "COPY_MODE": "copy"}) for name in ("session1", "session2")]
    world.reset_counters()
    processes = [start(folder, "--once") for folder in folders]
    for process in processes:
        _, err = process.communicate(timeout=RUN_TIMEOUT)
        assert process.returncode == 0, err
    sources = content(world, "@edge_source")
    target = {m.id: m for m in content(world, "@edge_target")}
    assert len(target) == len(sources)                       # nothing lost, nothing twice
    rows = checkpoint_rows(tmp_path / "sessions" / "shared" / "checkpoint.db")
    for album in albums:
        copies = [target[rows[i][2]] for i in album]
        assert len({c.grouped_id for c in copies}) == 1 and copies[0].grouped_id
        assert len({rows[i][1] for i in album}) == 1         # one account sent it
    # three ranges, each read once, plus the newest range read again by the account
    # that did not read it this pass (at most once each)
    history = sum(world.counters(name).get("GetHistoryRequest", 0)
                  for name in ("session1", "session2"))
    assert 3 <= history <= 3 + 2


def test_a_reply_whose_message_another_account_holds_does_not_stall_the_account(
        tmp_path: Path) -> None:
    world, source = two_account_world(tmp_path, "defer")
    ids = [world.post(source, f"post {n}") for n in range(4)]
    reply = world.post(source, "the reply", reply_to=ids[1])
    later = [world.post(source, f"later {n}") for n in range(4)]
    folder = world.make_session_folder(
        tmp_path / "sessions" / "session1", "session1", extra_env={
            "SOURCE_CHAT": "@defer_source", "TARGET_CHAT": "@defer_target",
            "COPY_MODE": "copy"})
    db = tmp_path / "sessions" / "shared" / "checkpoint.db"
    other = SqliteCheckpoint(db, "session2")                 # a live account holds ids[1]
    other.bind(str(world.peer_id(source)), str(world.peer_id("@defer_target")))
    assert other.claim([ids[1]]) == [ids[1]]
    process = start(folder, "--once")
    wait_until(lambda: process.poll() is not None
               or len(content(world, "@defer_target")) >= len(ids) - 1 + len(later),
               what="session1 to clone all but the held message and its reply")
    time.sleep(0.5)
    # everything but the held message and its reply went out; the reply waits
    assert [m.message for m in content(world, "@defer_target")] == \
        [f"post {n}" for n in (0, 2, 3)] + [f"later {n}" for n in range(4)]
    assert process.poll() is None
    posted = world.post("@defer_target", "post 1", by="session2")   # the other account's send
    assert other.complete({ids[1]: posted}) == {ids[1]}
    _, err = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, err
    copies = content(world, "@defer_target")
    assert copies[-1].message == "the reply" and source_reply_id(copies[-1]) == posted
    assert checkpoint_rows(db)[reply][:2] == ("done", "session1")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM messages "
                            "WHERE status IN ('pending', 'processing')").fetchone()[0] == 0
    finally:
        conn.close()
    other.close()
