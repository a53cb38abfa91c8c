"""campaign.py's operator controls over the simulated Telegram: a `start` killed with SIGKILL
leaves no worker behind, `start --workers N`, unblock / remove-chat / clear-wait, `report`,
`check`, text formatting and an ETA that counts waits."""
from __future__ import annotations

import os
import re
import signal
from datetime import datetime, timedelta

from clocks import FakeClock
from helpers import wait_until
from test_campaign import HOUR, UTC, make_campaign, run_workers
from test_campaign_cli import cli, run_main, start_in_background, successes, write_config

import campaign
import migrate_db
import telegram_session
import telegram_sim
from campaign import Config


def run_states(setup, run_id: str) -> dict[str, tuple]:
    """profile name -> (status, started_at, ended_at, pid) of the run's workers."""
    return {name: rest for name, *rest in setup.conn.execute(
        "SELECT p.profile_name, rp.status, rp.started_at, rp.ended_at, rp.pid FROM "
        "campaign_run_profiles rp JOIN profiles p ON p.id = rp.profile_id WHERE rp.run_id = ?",
        (run_id,))}


# ----------------------------------------------------------------------------- no orphans

def test_start_killed_with_sigkill_leaves_no_worker_and_no_lock(tmp_path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=4)
    write_config(setup, max_messages_per_hour=1, max_cycles=1)
    start = start_in_background(setup)
    # each account sends once, then waits (up to an hour) for its next slot
    wait_until(lambda: successes(setup) == 2, what="a send by each account")
    run_id = setup.conn.execute("SELECT run_id FROM campaign_runs").fetchone()[0]
    wait_until(lambda: all(pid for _, _, _, pid in run_states(setup, run_id).values()),
               what="both workers' pids")
    workers = [pid for _, _, _, pid in run_states(setup, run_id).values()]
    assert len(workers) == 2 and all(campaign.pid_alive(pid) for pid in workers)

    os.kill(start.pid, signal.SIGKILL)        # the supervisor only, not its process group
    start.communicate(timeout=60)
    wait_until(lambda: not any(campaign.pid_alive(pid) for pid in workers),
               what="the workers to end with their supervisor")
    states = run_states(setup, run_id)
    assert {name: state[0] for name, state in states.items()} == {"s1": "stopped",
                                                                  "s2": "stopped"}
    for name in ("s1", "s2"):  # their session locks went with them
        account = telegram_session.load_account(tmp_path / "sessions" / name)
        assert telegram_session.lock_holder(account) is None

    write_config(setup)  # fast limits, max_cycles 2
    result = cli(setup, "start")
    assert result.returncode == 0, result.stderr
    # the killed run sent, so its own unsent cycles (2 chats x 1) carry over
    assert "4 chats, 10 sends owed (2 carried over" in result.stdout
    # both accounts worked (a locked one ends 'failed'); which sent how much is a race
    assert re.search(r"  s1: \d+ sent, 0 failed, done", result.stdout)
    assert re.search(r"  s2: \d+ sent, 0 failed, done", result.stdout)
    assert setup.conn.execute("SELECT status FROM campaign_runs WHERE run_id = ?",
                              (run_id,)).fetchone() == ("interrupted",)


# ----------------------------------------------------------------------------- --workers

def test_workers_limit_starts_the_next_account_when_one_stops(tmp_path) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2", "s3"), chats=4)
    setup.world.inject_fault("PEER_FLOOD", account="s1", request="SendMessageRequest", after=1)
    write_config(setup)
    result = cli(setup, "start", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"  s1: 1 sent, 1 failed, peer_flood", result.stdout)
    assert "  s2: 7 sent, 0 failed, done" in result.stdout
    assert "  s3: 0 sent, 0 failed, not started" in result.stdout
    run_id = setup.conn.execute("SELECT run_id FROM campaign_runs").fetchone()[0]
    states = run_states(setup, run_id)
    assert states["s2"][1] >= states["s1"][2]  # s2 started once s1 had ended
    assert all(len(setup.messages(chat)) == 2 for chat in setup.chats)


# ----------------------------------------------------------------------------- chat controls

def test_unblock_and_remove_chat(tmp_path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=3)
    write_config(setup)
    with migrate_db.transaction(setup.conn):
        setup.conn.execute("UPDATE tasks SET is_blocked = 1, status = 'blocked', fail_streak = 3,"
                           " block_reason = 'ChatWriteForbiddenError (3 attempts)' "
                           "WHERE chat_username = '@chat001'")
    code, out, _ = run_main(setup, capsys, "unblock", "@Chat001")
    assert code == 0 and out.strip() == ("@chat001 (default) unblocked (was blocked: "
                                         "ChatWriteForbiddenError (3 attempts))")
    assert setup.conn.execute("SELECT is_blocked, status, fail_streak, block_reason FROM tasks "
                              "WHERE chat_username = '@chat001'").fetchone() == (
        0, "pending", 0, None)
    code, out, _ = run_main(setup, capsys, "unblock", "@chat001")
    assert code == 0 and "@chat001 (default) is not blocked (pending)" in out
    code, _, err = run_main(setup, capsys, "unblock", "@nochat")
    assert code == 2 and err.strip() == "error: no chat @nochat (status lists the chats)"

    code, out, _ = run_main(setup, capsys, "remove-chat", "https://t.me/chat002")
    assert code == 0 and out.startswith("@chat002 (default) removed")
    code, out, _ = run_main(setup, capsys, "plan")
    assert "2 chats not blocked" in out and "@chat002" not in out
    code, out, _ = run_main(setup, capsys, "status")
    assert "blocked chats: 0" in out and "removed chats: 1" in out
    result = cli(setup, "start")
    assert result.returncode == 0, result.stderr
    assert setup.messages("@chat002") == [] and len(setup.messages("@chat001")) == 2
    (tmp_path / "again.txt").write_text("@chat002\n", encoding="utf-8")
    code, out, _ = run_main(setup, capsys, "import-chats", str(tmp_path / "again.txt"))
    assert code == 0 and out.startswith("1 chats added")


def test_clear_wait_refuses_a_running_wait_unless_forced(tmp_path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=1)
    write_config(setup)
    account = telegram_session.load_account(tmp_path / "sessions" / "s1")
    telegram_session.record_wait(account, 3600, request="SendMessageRequest")
    code, _, err = run_main(setup, capsys, "clear-wait", "s1")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: s1: Telegram's flood wait, 60 min left (until ")
    assert "Use --force to clear it anyway" in err
    assert telegram_session.current_wait(account) is not None
    code, out, _ = run_main(setup, capsys, "clear-wait", "s1", "--force")
    assert code == 0 and out.startswith("s1: 1 wait(s) cleared (flood wait, ")
    assert telegram_session.current_wait(account) is None
    code, out, _ = run_main(setup, capsys, "clear-wait", "s1")
    assert code == 0 and out.strip() == "s1: no wait recorded; nothing to clear"
    code, _, err = run_main(setup, capsys, "clear-wait", "s9")
    assert code == 2 and "unknown profile(s): s9" in err


# ----------------------------------------------------------------------------- report

async def test_report_per_account_and_per_chat(tmp_path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=5)
    for name in ("s1", "s2"):
        setup.world.leave(name, "@chat001")           # nobody may write there
    with migrate_db.transaction(setup.conn):
        setup.conn.execute("UPDATE tasks SET is_blocked = 1, status = 'blocked', block_reason "
                           "= 'CHANNEL_PRIVATE earlier' WHERE chat_username = '@chat004'")
    config = Config(max_messages_per_hour=100, max_cycles=2, cycle_delay_minutes=1,
                    max_attempts_before_block=2, retry_delay_minutes=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    s1, s2 = setup.profiles
    # in turn, so that who sends what is certain: s2 sends once, then is limited by
    # Telegram at its next send; s1 does the rest and meets the chat nobody may write to
    await run_workers(setup, run.run_id, config, clock, [s2], stop_after=1)
    setup.world.inject_fault("PEER_FLOOD", account="s2", request="SendMessageRequest")
    await run_workers(setup, run.run_id, config, FakeClock(clock.now()), [s2])
    await run_workers(setup, run.run_id, config, FakeClock(clock.now()), [s1])
    campaign.finish_run(setup.conn, run.run_id, clock.now())
    write_config(setup)
    code, out, _ = run_main(setup, capsys, "report", run.run_id[:8])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"run {run.run_id} (all groups): finished, started ")
    assert lines[1:5] == [
        "  owed 8 (0 carried over + 8 new), sent 6, failed attempts 3",
        "accounts:",
        "  s1: 5 sent, 2 failed (ChatWriteForbiddenError x2); done",
        "  s2: 1 sent, 1 failed (PeerFloodError x1); peer_flood: PeerFlood: Telegram limited "
        "this account (check @SpamBot); stopped for this run, its chats go to the other "
        "accounts"]
    assert lines[5:8] == [
        "chats:", "  @chat000: 2/2 sent",
        "  @chat001: 0/2 sent; failed: ChatWriteForbiddenError x2, PeerFloodError x1; skipped 2:"
        " blocked: ChatWriteForbiddenError (2 attempts): You can't write in this chat (caused "
        "by SendMessageRequest)"]
    assert "  @chat004: skipped, blocked before the run: CHANNEL_PRIVATE earlier" in lines
    code, latest, _ = run_main(setup, capsys, "report")
    assert code == 0 and latest == out
    code, _, err = run_main(setup, capsys, "report", "nope")
    assert code == 2 and "no run with id 'nope'" in err


# ----------------------------------------------------------------------------- check

def test_check_lists_membership_write_rights_and_slow_mode(tmp_path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=3)
    setup.world.leave("s1", "@chat001")
    setup.world.restrict("s1", "@chat002", ["send_messages"])
    setup.world.create_channel("Slow", username="slowchat", kind="megagroup", members=["s1"],
                               slowmode_seconds=60)
    setup.world.create_channel("News", username="newschan", kind="channel", members=["s1"])
    campaign.add_chats(setup.conn, ["@slowchat", "@newschan", "@nosuchchat"], "default",
                       datetime.now(UTC))
    write_config(setup)
    code, out, _ = run_main(setup, capsys, "check")
    assert code == 1
    assert out.splitlines() == [
        "s1:",
        "  @chat000: member, may write, no slow mode",
        "  @chat001: not a member (join it before the run)",
        "  @chat002: member, may NOT write (Telegram restricts sending there)",
        "  @slowchat: member, may write, slow mode 60 s (one message per 1 min from this "
        "account)",
        "  @newschan: member, may NOT write (Telegram restricts sending there)",
        "  @nosuchchat: cannot see it (not found)",
        "check: 1 account(s) x 6 chat(s), 4 problem(s)",
    ]


# ----------------------------------------------------------------------------- formatting, ETA

async def test_texts_are_sent_as_markdown_by_default_and_literally_with_none(tmp_path) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=2)
    campaign.import_texts(setup.conn, ["**Bold** and [a link](https://example.org)"],
                          replace=True, now=datetime.now(UTC))
    for parse_mode, chat in (("markdown", "@chat000"), ("none", "@chat001")):
        config = Config(max_cycles=1, cycle_delay_minutes=0, parse_mode=parse_mode)
        with migrate_db.transaction(setup.conn):
            setup.conn.execute("UPDATE tasks SET is_blocked = (chat_username != ?)", (chat,))
        run = campaign.create_run(setup.conn, config, None, setup.profiles, datetime.now(UTC))
        await run_workers(setup, run.run_id, config, FakeClock())
    [formatted] = [m for m in setup.world.messages("@chat000")
                   if isinstance(m, telegram_sim.types.Message)]
    assert formatted.message == "Bold and a link"
    assert [type(e).__name__ for e in formatted.entities] == ["MessageEntityBold",
                                                             "MessageEntityTextUrl"]
    assert setup.messages("@chat001") == ["**Bold** and [a link](https://example.org)"]


def test_eta_counts_recorded_waits_and_hourly_slots(tmp_path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=40)
    write_config(setup, max_messages_per_hour=30, max_cycles=1, cycle_delay_minutes=20)
    code, out, _ = run_main(setup, capsys, "plan")
    # 30 at once, the other 10 when the hour has passed
    assert code == 0 and "should end in about 1 h (around" in out
    account = telegram_session.load_account(tmp_path / "sessions" / "s1")
    telegram_session.record_wait(account, 59 * 60, request="SendMessageRequest")
    code, out, _ = run_main(setup, capsys, "plan")
    assert "should end in about 1 h 59 min (around" in out
    # status of a running run: the same schedule from what is left
    now = datetime.now(UTC)
    run = campaign.create_run(setup.conn, Config(max_messages_per_hour=30, max_cycles=1),
                              None, setup.profiles, now, pid=os.getpid())
    lines = "\n".join(campaign.status_lines(setup.conn, Config(max_messages_per_hour=30),
                                            now + timedelta(minutes=1)))
    assert f"run {run.run_id}" in lines
    assert "ETA: about 1 h 58 min (around" in lines
    end = campaign.estimate_end(setup.conn, Config(max_messages_per_hour=30), setup.profiles,
                                [(1, now)] * 40, now)
    # the wait was recorded a moment before `now`
    assert abs(end - now - (HOUR + timedelta(minutes=59))) < timedelta(seconds=30)
