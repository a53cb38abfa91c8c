"""Following a source: the reconciler catches what lost updates missed, an idle line is
logged; with SYNC_EDITS/SYNC_DELETES edits and deletions reach the copies, also across a
restart (on the simulated Telegram)."""
from __future__ import annotations

import signal
from pathlib import Path

from helpers import wait_until
from test_clone_streaming import SINGLE, content, live_world, run, start


def stop(process) -> str:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert "Traceback" not in err
    return err


def test_reconciler_clones_what_lost_updates_missed_and_idle_is_logged(
        tmp_path: Path) -> None:
    world, source, folder = live_world(tmp_path, COPY_MODE="copy", RECONCILE_SECONDS="0.3")
    world.inject_fault("LOSE_UPDATES", account="session1")      # no new-message events
    process = start(folder, script=SINGLE)
    try:
        wait_until(lambda: len(content(world, "@live_target")) == 1, what="the backfill")
        world.post(source, "new, its update lost")
        wait_until(lambda: len(content(world, "@live_target")) == 2, what="the reconciler")
        newest = content(world, source)[-1].id
        wait_until(lambda: f"following live_source: up to date, newest {newest}" in
                   (folder / "clone.log").read_text(), what="the idle line")
    finally:
        stop(process)
    assert [m.message for m in content(world, "@live_target")] == \
        ["old", "new, its update lost"]


def test_edits_and_deletions_reach_the_copies_live_and_across_a_restart(
        tmp_path: Path) -> None:
    world, source, folder = live_world(tmp_path, COPY_MODE="copy", SYNC_EDITS="true",
                                       SYNC_DELETES="true", RECONCILE_SECONDS="0.5")
    ids = [content(world, source)[0].id] + [world.post(source, f"post {n}") for n in range(3)]
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    # while stopped: an edit and a deletion, caught at the next start
    world.edit(source, ids[1], "post 0, **edited** while stopped", parse_mode="md")
    world.delete(source, [ids[2]])
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    assert [(m.message, m.entities) for m in content(world, "@live_target")] == \
        [(m.message, m.entities) for m in content(world, source)]
    # live: the events
    process = start(folder, script=SINGLE)
    try:
        wait_until(lambda: "following new messages" in (folder / "clone.log").read_text(),
                   what="the follow loop")
        world.edit(source, ids[3], "post 2, edited live")
        world.delete(source, [ids[0]])
        wait_until(lambda: [m.message for m in content(world, "@live_target")] ==
                   ["post 0, edited while stopped", "post 2, edited live"],
                   what="the live sync")
    finally:
        stop(process)
