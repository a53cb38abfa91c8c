"""Two "VPSes" clone into one target through one PostgreSQL checkpoint while workers are
killed with SIGKILL: each VPS is its own sessions/ folder with two accounts, all four share
SHARED_DB_URL and one simulated Telegram world. Nothing lost, nothing twice, albums, replies
and topics intact.

4,000 messages, the issue's figure (about 30 s here); TWO_VPS_MESSAGES=N runs another count:

    TWO_VPS_MESSAGES=1000 .venv/bin/python -m pytest -q tests/test_clone_two_vps.py
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import helpers
import psycopg
from helpers import python, wait_until
from telethon import types

from telegram_sim import World

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from clone_requests import build_history  # noqa: E402
from sigkill_clones import (  # noqa: E402
    SHARED,
    check_cloned_once,
    forum_world,
    kill_at_random,
    start_clone,
)

VPSES = {"vps1": ["session1", "session2"], "vps2": ["session3", "session4"]}
ACCOUNTS = [name for names in VPSES.values() for name in names]
MESSAGES = int(os.environ.get("TWO_VPS_MESSAGES", "4000"))
MIN_KILLS = 3
RUN_LIMIT = 120 + MESSAGES * 0.1  # seconds for the whole run, kills included


def query(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def held_by(url: str, account: str) -> int:
    """How many messages an account holds (claimed, not finished) in the checkpoint."""
    return query(url, "SELECT COUNT(*) FROM messages WHERE status = 'processing' "
                      "AND session = %s", account)[0][0]


def done_by_account(url: str) -> dict[str, int]:
    """Done messages per account; {} until the first cloner has created the schema (the
    four create it at once, migrate_db.pg_upgrade serialises them)."""
    try:
        return dict(query(url, "SELECT session, COUNT(*) FROM messages "
                               "WHERE status = 'done' GROUP BY session"))
    except psycopg.errors.UndefinedTable:
        return {}


def test_two_vpses_share_one_postgresql_checkpoint_despite_sigkill(
        tmp_path: Path, pg_url: str) -> None:
    world, source = forum_world(tmp_path / "world.db", ACCOUNTS, "vps", MESSAGES)
    folders = {name: world.make_session_folder(
        tmp_path / vps / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@vps_source", "TARGET_CHAT": "@vps_target",
            "COPY_MODE": "copy", "CLAIM_TIMEOUT": "2", "SHARED_DB_URL": pg_url})
        for vps, names in VPSES.items() for name in names}

    run = kill_at_random(folders, held=lambda name: held_by(pg_url, name),
                         done=lambda: done_by_account(pg_url), seed=17, run_limit=RUN_LIMIT)
    workers, kills, mid_claim, began = run.workers, run.kills, run.mid_claim, run.began
    for name, process in workers.items():
        _, err = process.communicate(timeout=max(run.seconds_left(RUN_LIMIT), 30))
        assert process.returncode == 0, (name, err[-2000:])
    assert kills >= MIN_KILLS, f"the run ended after {kills} kills; kill more often"
    assert mid_claim >= 1                         # killed while holding messages
    for vps in VPSES:                             # each VPS: its own accounts.db only
        assert not (tmp_path / vps / "sessions" / "shared" / "checkpoint.db").exists()

    assert len([m for m in world.messages(source) if isinstance(m, types.Message)]) == MESSAGES
    rows = dict(query(pg_url, "SELECT msg_id, target_msg_id FROM messages "
                              "WHERE status = 'done'"))
    by_account = done_by_account(pg_url)
    assert len(by_account) == len(ACCOUNTS)                       # both VPSes worked
    counts = check_cloned_once(world, source, "@vps_target", rows)
    print(f"\n{MESSAGES} messages, {kills} SIGKILLs ({mid_claim} holding claims), "
          f"done per account {dict(sorted(by_account.items()))}, "
          + ", ".join(f"{n} {what}" for what, n in counts.items())
          + f", {time.monotonic() - began:.0f} s")


def test_ordered_mode_and_audit_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)          # the test injects its own FloodWait
    for name in ("session1", "session3"):
        world.add_account(name)
    source = world.create_channel("Src", username="ord_source", owner="session1",
                                  members=["session3"])
    world.create_channel("Dst", username="ord_target", owner="session1", admins=["session3"])
    build_history(world, source, 120, album_share=0.1, media_share=0.1, reply_share=0.1,
                  seed=3)
    folders = [world.make_session_folder(
        tmp_path / vps / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@ord_source", "TARGET_CHAT": "@ord_target", "COPY_MODE": "copy",
            "ORDERED": "true", "SHARED_DB_URL": pg_url})
        for vps, name in (("vps1", "session1"), ("vps2", "session3"))]
    # session1 is held up on its first send while session3 goes on: order must still hold.
    # The wait outlasts session3's start on a busy machine (else session1 sends all 120).
    world.inject_fault("FLOOD_WAIT", seconds=10, account="session1", times=1,
                       request="SendMessageRequest")
    workers = [start_clone(folders[0])]
    wait_until(lambda: world.faults()[0]["fired"] or workers[0].poll() is not None,
               what="session1's fault", timeout=RUN_LIMIT)
    workers.append(start_clone(folders[1]))
    for process in workers:
        _, err = process.communicate(timeout=RUN_LIMIT)
        assert process.returncode == 0, err[-2000:]
    sources = [m for m in world.messages(source) if isinstance(m, types.Message)]
    targets = [m for m in world.messages("@ord_target") if isinstance(m, types.Message)]
    assert [m.message for m in targets] == [m.message for m in sources]
    assert set(done_by_account(pg_url)) == {"session1", "session3"}
    audit = helpers.run(python(SHARED, "--audit"), cwd=folders[1], timeout=RUN_LIMIT)
    assert audit.returncode == 0, audit.stdout + audit.stderr
