"""Four accounts clone 2,000 messages into one target while workers are killed with SIGKILL,
two of them at the end for good right after a send (their claims are taken over, the sends
found in the target): 0 duplicates, 0 lost."""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from helpers import wait_until
from telethon import types

from clone_streaming import source_reply_id, source_topic_of
from telegram_sim import World

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from clone_requests import build_history  # noqa: E402
from sigkill_clones import kill_at_random  # noqa: E402

ACCOUNTS = [f"session{n}" for n in range(1, 5)]
MESSAGES = 2000
TOPICS = 5
MIN_KILLS = 3
KILLED_FOR_GOOD = 2              # accounts killed right after a send and never restarted
RUN_LIMIT = 240                  # seconds for the whole run, kills included


def held_by(tmp_path: Path, account: str) -> int:
    """How many messages an account holds (claimed, not finished) in the checkpoint."""
    conn = sqlite3.connect(tmp_path / "sessions" / "shared" / "checkpoint.db", timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM messages WHERE status = 'processing' "
                            "AND session = ?", (account,)).fetchone()[0]
    finally:
        conn.close()


def sending(tmp_path: Path, account: str) -> int:
    """How many of an account's claims have a stored random_id (the send started)."""
    conn = sqlite3.connect(tmp_path / "sessions" / "shared" / "checkpoint.db", timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM messages WHERE status = 'processing' "
                            "AND session = ? AND random_id IS NOT NULL",
                            (account,)).fetchone()[0]
    finally:
        conn.close()


def done_by_account(tmp_path: Path) -> dict[str, int]:
    """Done messages per account; {} until the first cloner has created the checkpoint (the
    four create it at once)."""
    path = tmp_path / "sessions" / "shared" / "checkpoint.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(path, timeout=30)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages'").fetchone():
            return {}
        return dict(conn.execute("SELECT session, COUNT(*) FROM messages "
                                 "WHERE status = 'done' GROUP BY session"))
    finally:
        conn.close()


def test_every_message_exactly_once_despite_sigkill(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)          # about kills, not budgets
    for name in ACCOUNTS:
        world.add_account(name)
    source = world.create_channel("Source", username="kill_source", kind="forum",
                                  owner="session1", members=ACCOUNTS[1:])
    world.create_channel("Target", username="kill_target", kind="forum", owner="session1",
                         admins=ACCOUNTS[1:])
    topics = [world.create_topic(source, f"Topic {n}", by="session1") for n in range(TOPICS)]
    build_history(world, source, MESSAGES, topics=topics, album_share=0.1, media_share=0.2,
                  reply_share=0.1, seed=7)
    folders = {name: world.make_session_folder(
        tmp_path / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@kill_source", "TARGET_CHAT": "@kill_target",
            "COPY_MODE": "copy", "CLAIM_TIMEOUT": "2"}) for name in ACCOUNTS}

    run = kill_at_random(folders, held=lambda name: held_by(tmp_path, name),
                         done=lambda: done_by_account(tmp_path), seed=11, run_limit=RUN_LIMIT)
    workers, kills, mid_claim = run.workers, run.kills, run.mid_claim
    # two accounts die for good right after a send (a random_id stored, its answer not
    # recorded): the others take their claims over and must find those sends in the target
    gone, after_send = [], 0

    def account_with_a_send_in_doubt() -> str | None:
        running = [n for n, p in workers.items() if p.poll() is None and n not in gone]
        assert len(running) > 2, "the accounts finished before two were killed after a send"
        return next((n for n in running if sending(tmp_path, n)), None)
    while len(gone) < KILLED_FOR_GOOD:
        victim = wait_until(account_with_a_send_in_doubt, what="a send in doubt",
                            timeout=run.seconds_left(RUN_LIMIT), interval=0.01)
        workers[victim].kill()
        workers[victim].wait()
        after_send += sending(tmp_path, victim) > 0
        gone.append(victim)
    for name, process in workers.items():
        _, err = process.communicate(timeout=max(run.seconds_left(RUN_LIMIT), 30))
        assert process.returncode == (-9 if name in gone else 0), (name, err[-2000:])
    assert kills >= MIN_KILLS, f"the run ended after {kills} kills; kill more often"
    assert mid_claim >= 1                         # killed while holding messages
    assert len(gone) == KILLED_FOR_GOOD and after_send >= 1   # left sends in doubt

    sources = [m for m in world.messages(source) if isinstance(m, types.Message)]
    targets = {m.id: m for m in world.messages("@kill_target") if isinstance(m, types.Message)}
    assert len(sources) == MESSAGES
    conn = sqlite3.connect(tmp_path / "sessions" / "shared" / "checkpoint.db")
    rows = dict(conn.execute("SELECT msg_id, target_msg_id FROM messages "
                             "WHERE status = 'done'"))
    conn.close()
    by_account = done_by_account(tmp_path)
    clone = {s.id: targets[rows[s.id]] for s in sources}
    assert len(targets) == MESSAGES                               # nothing twice
    assert sorted(t.id for t in clone.values()) == sorted(targets)  # nothing lost
    assert len(by_account) == len(ACCOUNTS)                       # the work was shared
    for s in sources:
        t = clone[s.id]
        assert (t.message, t.entities, type(t.media)) == (s.message, s.entities, type(s.media))
        assert world.media_bytes(t) == world.media_bytes(s)
    albums: dict[int, set[int]] = {}
    for s in sources:
        if s.grouped_id:
            albums.setdefault(s.grouped_id, set()).add(clone[s.id].grouped_id)
    assert albums and all(len(g) == 1 and None not in g for g in albums.values())
    assert len({next(iter(g)) for g in albums.values()}) == len(albums)
    replies = [s for s in sources if source_reply_id(s)]
    assert replies
    for s in replies:
        assert source_reply_id(clone[s.id]) == clone[source_reply_id(s)].id
    titles = {t["topic_id"]: t["title"] for t in world.topics(source)}
    target_topics = {t["title"]: t["topic_id"] for t in world.topics("@kill_target")}
    assert len(target_topics) == TOPICS + 1                       # each created once
    for s in sources:
        assert source_topic_of(clone[s.id]) == target_topics[titles[source_topic_of(s)]]
