"""Following a source: the reconciler catches what lost updates missed, an idle line is
logged; with SYNC_EDITS/SYNC_DELETES edits and deletions reach the copies, also across a
restart (on the simulated Telegram)."""
from __future__ import annotations

import signal
import time
from pathlib import Path

from test_clone_streaming import SINGLE, content, start

from telegram_sim import World

WAIT = 60


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def follow_world(tmp_path: Path, **env: str) -> tuple[World, int, Path]:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    source = world.create_channel("Src", username="live_source", owner="session1")
    world.create_channel("Dst", username="live_target", owner="session1")
    world.post(source, "old")
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@live_source",
                                                  "TARGET_CHAT": "@live_target",
                                                  "COPY_MODE": "copy", **env})
    return world, source, folder


def stop(process) -> str:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert "Traceback" not in err
    return err


def test_reconciler_clones_what_lost_updates_missed_and_idle_is_logged(
        tmp_path: Path) -> None:
    world, source, folder = follow_world(tmp_path, RECONCILE_SECONDS="0.3")
    world.inject_fault("LOSE_UPDATES", account="session1")      # no new-message events
    process = start(folder, script=SINGLE)
    try:
        wait_for(lambda: len(content(world, "@live_target")) == 1, "the backfill")
        world.post(source, "new, its update lost")
        wait_for(lambda: len(content(world, "@live_target")) == 2, "the reconciler")
        newest = content(world, source)[-1].id
        wait_for(lambda: f"following live_source: up to date, newest {newest}" in
                 (folder / "clone.log").read_text(), "the idle line")
    finally:
        stop(process)
    assert [m.message for m in content(world, "@live_target")] == \
        ["old", "new, its update lost"]
