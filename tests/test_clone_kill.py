"""Four accounts clone 2,000 messages into one target while workers are killed with SIGKILL,
two of them at the end for good right after a send (their claims are taken over, the sends
found in the target): 0 duplicates, 0 lost."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from helpers import wait_until
from sigkill_clones import check_cloned_once, forum_world, kill_at_random
from telethon import types

ACCOUNTS = [f"session{n}" for n in range(1, 5)]
MESSAGES = 2000
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
    world, source = forum_world(tmp_path / "world.db", ACCOUNTS, "kill", MESSAGES)
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

    assert len([m for m in world.messages(source) if isinstance(m, types.Message)]) == MESSAGES
    conn = sqlite3.connect(tmp_path / "sessions" / "shared" / "checkpoint.db")
    rows = dict(conn.execute("SELECT msg_id, target_msg_id FROM messages "
                             "WHERE status = 'done'"))
    conn.close()
    assert len(done_by_account(tmp_path)) == len(ACCOUNTS)        # the work was shared
    check_cloned_once(world, source, "@kill_target", rows)
