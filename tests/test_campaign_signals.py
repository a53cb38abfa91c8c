"""campaign.py's worker processes under signals: a worker killed with SIGKILL in the middle
of a send and restarted (nothing sent twice), `stop`, and Ctrl+C."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from helpers import wait_until
from test_campaign import make_campaign
from test_campaign_cli import run_main, start_in_background, successes, write_config

import telegram_sim


def start_until_a_send_is_in_doubt(tmp_path: Path):
    """A campaign of 4 chats x 2 cycles on one account, started in the background and
    waited on until its 4th send has reached Telegram but the connection dropped before the
    answer: the attempt is 'sending' (outcome unknown). Returns (setup, start process)."""
    setup = make_campaign(tmp_path, ("s1",), chats=4)
    write_config(setup)
    setup.world.inject_fault("DISCONNECT", account="s1", request="SendMessageRequest",
                             after=3, times=1, executed=True)
    world = telegram_sim.World.open(setup.world.path)
    start = start_in_background(setup)
    wait_until(lambda: world.faults()[0]["fired"] == 1 and setup.conn.execute(
        "SELECT 1 FROM task_attempts WHERE status = 'sending'").fetchone() is not None,
        what="a send in doubt")
    return setup, start


def test_worker_killed_mid_send_is_restarted_and_sends_nothing_twice(tmp_path: Path) -> None:
    # the worker is backing off with the attempt 'sending' when it is killed
    setup, start = start_until_a_send_is_in_doubt(tmp_path)
    pid = setup.conn.execute("SELECT pid FROM campaign_run_profiles").fetchone()[0]
    os.kill(pid, signal.SIGKILL)
    out, err = start.communicate(timeout=60)
    assert start.returncode == 0, err
    assert "s1: worker ended with code -9; restarting" in err
    assert "finished" in out
    for chat in setup.chats:  # 8 cycles, each delivered exactly once
        assert setup.messages(chat) == ["First text", "Second text"]
    rows = setup.conn.execute("SELECT status, COUNT(*), COUNT(DISTINCT random_id) FROM "
                              "task_attempts GROUP BY status").fetchall()
    assert rows == [("success", 8, 8)]
    new_pid = setup.conn.execute("SELECT pid FROM campaign_run_profiles").fetchone()[0]
    assert new_pid != pid


def test_stop_ends_the_run_cleanly_and_what_is_left_carries_over(tmp_path: Path,
                                                                  capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=5)
    write_config(setup, max_messages_per_hour=2, max_cycles=1)
    start = start_in_background(setup)
    wait_until(lambda: successes(setup) == 2, what="two sends")
    code, out, err = run_main(setup, capsys, "stop", "--wait", "30")
    assert code == 0, err
    assert re.search(r"run \S+ stopped", out)
    out, err = start.communicate(timeout=30)
    assert start.returncode == 0, err
    assert re.search(r"run \S+ stopped", out) and "  s1: 2 sent, 0 failed, stopped" in out
    assert successes(setup) == 2
    code, out, _ = run_main(setup, capsys, "plan")
    assert "sends: 8 = 3 carried over from the last run + 5 chats x 1" in out
    assert run_main(setup, capsys, "stop")[1].strip() == "no run is running"


def test_ctrl_c_exits_130_with_a_summary(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=4)
    write_config(setup, max_messages_per_hour=1, max_cycles=1)
    start = start_in_background(setup)
    wait_until(lambda: successes(setup) == 2, what="two sends")
    os.killpg(start.pid, signal.SIGINT)  # the terminal sends it to the whole group
    out, err = start.communicate(timeout=30)
    assert start.returncode == 130, err
    assert "Traceback" not in err
    assert "  s1: 1 sent, 0 failed, stopped" in out and "  s2: 1 sent, 0 failed, stopped" in out
    state = setup.conn.execute("SELECT status FROM campaign_runs").fetchone()
    assert state == ("stopped",)
    assert setup.conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'in_progress'"
                              ).fetchone() == (0,)


def test_whole_start_killed_mid_send_then_started_again(tmp_path: Path) -> None:
    setup, start = start_until_a_send_is_in_doubt(tmp_path)
    os.killpg(start.pid, signal.SIGKILL)  # the supervisor and its worker, at once
    start.communicate(timeout=30)
    again = start_in_background(setup)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    # run 1 owed 8: 3 sent, 1 delivered but unrecorded (resent with its random_id: the
    # original came back), 4 carried over; run 2 then owed 4 + 8
    assert "4 chats, 12 sends owed (4 carried over from the run before)" in out
    for chat in setup.chats:
        assert len(setup.messages(chat)) == 4
    rows = setup.conn.execute("SELECT status, COUNT(*), COUNT(DISTINCT random_id) FROM "
                              "task_attempts GROUP BY status").fetchall()
    assert rows == [("success", 16, 16)]
    runs = setup.conn.execute("SELECT status FROM campaign_runs ORDER BY started_at").fetchall()
    assert runs == [("interrupted",), ("finished",)]
