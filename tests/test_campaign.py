"""campaign.py over the simulated Telegram, in one process with a FakeClock: the spec's
per-run scenario, the hourly window across runs, cycle delays, PeerFlood failover, chat
errors, network drops and random_id, legacy databases. Hours of schedule run in seconds."""
from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from clocks import FakeClock
from legacy_schemas import LEGACY_CAMPAIGN_TABLES
from telethon.client import users as telethon_users

import campaign
import migrate_db
import telegram_session
import telegram_sim
from campaign import Config

UTC = timezone.utc        # datetime.UTC is Python 3.11+

TEXTS = ("First text", "Second text")
HOUR = timedelta(hours=1)


@dataclass
class Setup:
    """A simulated world with account folders, and a campaign database using them."""

    tmp: Path
    world: telegram_sim.World
    db_path: Path
    conn: sqlite3.Connection
    profiles: list[campaign.Profile]
    chats: list[str]

    def messages(self, chat: str) -> list[str]:
        """The texts posted in a simulated chat (its service message left out)."""
        return [m.message for m in self.world.messages(chat)
                if isinstance(m, telegram_sim.types.Message)]

    def attempts(self, run_id: str | None = None, status: str = "success") -> list[tuple]:
        """(profile, chat, attempted_at) of attempts, in time order."""
        rows = self.conn.execute(
            "SELECT p.profile_name, t.chat_username, a.attempted_at FROM task_attempts a "
            "JOIN tasks t ON t.id = a.task_id JOIN profiles p ON p.id = a.profile_id "
            "WHERE a.status = ? AND (? IS NULL OR a.run_id = ?) ORDER BY a.attempted_at",
            (status, run_id, run_id)).fetchall()
        return [(name, chat, migrate_db.parse_utc(when)) for name, chat, when in rows]


def make_campaign(tmp: Path, accounts: tuple[str, ...] = ("s1",), chats: int = 10, *,
                  random_id_mode: str = "original", members: bool = True) -> Setup:
    """World + account folders under tmp/sessions, `chats` megagroups @chat000..., and a
    campaign database at tmp/sessions/shared/campaign.db with chats, texts and profiles."""
    world = telegram_sim.World.create(tmp / "world.db", random_id_mode=random_id_mode)
    for name in accounts:
        world.add_account(name)
        # hours of sends run in seconds of real time here: the world's own rate limits (real
        # time) would answer FloodWait; those waits are tested with injected faults
        world.set_account(name, rate_limits=False)
        world.make_session_folder(tmp / "sessions" / name, name)
    names = [f"@chat{i:03d}" for i in range(chats)]
    for name in names:
        world.create_channel(name, username=name[1:], kind="megagroup",
                             members=accounts if members else ())
    db_path = tmp / "sessions" / "shared" / "campaign.db"
    conn = migrate_db.connect(db_path, kind="campaign")
    now = datetime.now(UTC)
    campaign.add_chats(conn, names, "default", now)
    campaign.import_texts(conn, TEXTS, replace=False, now=now)
    profiles = [campaign.add_profile(conn, tmp / "sessions" / name, now)[0]
                for name in accounts]
    return Setup(tmp, world, db_path, conn, profiles, names)


async def run_workers(setup: Setup, run_id: str, config: Config, clock: FakeClock,
                      profiles: list[campaign.Profile] | None = None,
                      stop_after: int | None = None,
                      head_start: bool = False) -> list[campaign.WorkerResult]:
    """Every profile's worker over its real client; with `stop_after`, a stop (as Ctrl+C
    gives) once that many sends succeeded in total; with `head_start`, the other workers
    start once the first profile's worker has sent (which client connects first is up to
    the machine's load otherwise)."""
    profiles = profiles or setup.profiles
    stop = campaign.StopSignal()
    sent = 0
    first_sent = asyncio.Event()
    clock.participants = len(profiles)

    async def one(profile: campaign.Profile) -> campaign.WorkerResult:
        if head_start and profile is not profiles[0]:
            await first_sent.wait()
        account = telegram_session.load_account(profile.folder)
        conn = migrate_db.connect(setup.db_path, kind="campaign")
        try:
            async with telegram_session.open_client(
                    account, raise_last_call_error=True, request_retries=0) as client:
                sender = campaign.TelegramSender(client, account, clock, stop,
                                                 config.parse_mode)

                async def send(chat: str, text: str, random_id: int) -> int | None:
                    nonlocal sent
                    result = await sender.send(chat, text, random_id)
                    sent += 1
                    if profile is profiles[0]:
                        first_sent.set()
                    if stop_after is not None and sent >= stop_after:
                        stop.set()
                    return result
                worker = campaign.Worker(conn, run_id, profile, config, send, clock, stop)
                return await worker.run()
        finally:
            conn.close()
            clock.leave()
            first_sent.set()            # a first worker that ended unsent holds no one back
    return list(await asyncio.gather(*(one(p) for p in profiles)))


def assert_window_held(setup: Setup, limit: int) -> None:
    """No account ever had more than `limit` successful sends in any 60 minutes."""
    for profile in setup.profiles:
        times = [when for name, _, when in setup.attempts() if name == profile.name]
        for first, later in zip(times, times[limit:], strict=False):
            assert later - first >= HOUR, f"{profile.name}: {limit + 1} sends within an hour"


# ----------------------------------------------------------------------------- the spec

async def test_spec_scenario_carry_over_then_own_cycles(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=10)
    config = Config(max_messages_per_hour=30, max_cycles=2, cycle_delay_minutes=20)
    clock = FakeClock()
    first = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    assert (first.quota_total, first.carry_total) == (20, 0)
    await run_workers(setup, first.run_id, config, clock, stop_after=10)
    assert campaign.finish_run(setup.conn, first.run_id, clock.now()) == "interrupted"
    sent_first = len(setup.attempts(first.run_id))
    assert sent_first == 10

    second = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    assert second.run_id != first.run_id
    assert (second.quota_total, second.carry_total) == (30, 10)  # 10 carried + 10 x 2
    await run_workers(setup, second.run_id, config, clock)
    assert campaign.finish_run(setup.conn, second.run_id, clock.now()) == "finished"
    # the spec's query: every attempt of the run carries its run_id
    rows = setup.conn.execute("SELECT * FROM task_attempts WHERE run_id = ?",
                              (second.run_id,)).fetchall()
    assert len(rows) == 30
    for chat in setup.chats:  # 2 per run: the first run's leftovers came in the second
        assert len(setup.messages(chat)) == 4
    # "done for this run" is this run's successful attempt rows, chat by chat
    counted = setup.conn.execute(
        "SELECT t.run_sent, (SELECT COUNT(*) FROM task_attempts a WHERE a.task_id = t.id "
        "AND a.run_id = ? AND a.status = 'success') FROM tasks t", (second.run_id,)).fetchall()
    assert all(kept == rows for kept, rows in counted) and sum(k for k, _ in counted) == 30
    status = "\n".join(campaign.status_lines(setup.conn, config, clock.now()))
    assert "carried over from the run before: 10/10 sent" in status
    assert "30/30 sent" in status

    third = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    assert (third.quota_total, third.carry_total) == (20, 0)  # a new start: max_cycles again
    completed = setup.conn.execute("SELECT SUM(completed_cycles) FROM tasks").fetchone()[0]
    assert completed == 40  # all-time statistics


def per_chat_sends(setup: Setup, run_id: str) -> dict[str, int]:
    rows = setup.conn.execute(
        "SELECT t.chat_username, COUNT(a.id) FROM tasks t LEFT JOIN task_attempts a ON "
        "a.task_id = t.id AND a.run_id = ? AND a.status = 'success' GROUP BY t.id", (run_id,))
    return dict(rows.fetchall())


async def test_spec_100_chat_example_never_compounds(tmp_path: Path) -> None:
    """Spec 000's example (100 chats, max_cycles 2, 30/h, 20 min), with the runs an operator
    actually meets: stopped half way, failed at once, stopped again, killed before sending."""
    setup = make_campaign(tmp_path, chats=100)
    config = Config(max_messages_per_hour=30, max_cycles=2, cycle_delay_minutes=20)
    clock = FakeClock()

    def new_run() -> campaign.RunInfo:
        return campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())

    first = new_run()
    assert (first.quota_total, first.carry_total) == (200, 0)
    await run_workers(setup, first.run_id, config, clock, stop_after=100)  # Ctrl+C
    assert campaign.finish_run(setup.conn, first.run_id, clock.now()) == "interrupted"
    assert len(setup.attempts(first.run_id)) == 100

    second = new_run()          # "100 + 200 = 300 messages"
    assert (second.quota_total, second.carry_total) == (300, 100)
    # it fails at once (say every account is locked): nothing sent, the carry passes through
    assert campaign.finish_run(setup.conn, second.run_id, clock.now()) == "interrupted"
    third = new_run()
    assert (third.quota_total, third.carry_total) == (300, 100)
    owed = dict(setup.conn.execute("SELECT chat_username, run_quota FROM tasks"))
    assert max(owed.values()) <= 4 and sum(owed.values()) == 300
    status = "\n".join(campaign.status_lines(setup.conn, config, clock.now()))
    assert re.search(r"@chat\d{3}: owed \d = \d carried \+ 2 new, 0 sent", status)

    await run_workers(setup, third.run_id, config, clock, stop_after=120)  # stopped again
    campaign.finish_run(setup.conn, third.run_id, clock.now())
    sends = per_chat_sends(setup, third.run_id)
    assert sum(sends.values()) == 120 and max(sends.values()) <= 4
    # the carry-over went first (100); 20 of the third run's own 200 were sent
    fourth = new_run()
    assert (fourth.quota_total, fourth.carry_total) == (380, 180)
    assert max(dict(setup.conn.execute("SELECT chat_username, run_quota FROM tasks")
                    ).values()) <= 4
    # killed before its first send: the next run owes exactly the same
    campaign.finish_run(setup.conn, fourth.run_id, clock.now())
    fifth = new_run()
    assert (fifth.quota_total, fifth.carry_total) == (380, 180)


async def test_carry_over_is_claimed_before_own_cycles(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=3)
    config = Config(max_cycles=1, cycle_delay_minutes=0)
    now = datetime.now(UTC)
    run = campaign.create_run(setup.conn, config, None, setup.profiles, now)
    with migrate_db.transaction(setup.conn):  # the last chat was owed one from before
        setup.conn.execute("UPDATE tasks SET run_carry = 1, run_quota = 2 WHERE id = 3")
    claim = campaign.claim_next(setup.conn, run.run_id, setup.profiles[0].id, now)
    assert claim is not None and claim.chat == "@chat002" and claim.carry


# ----------------------------------------------------------------------------- limits

async def test_hourly_limit_held_across_two_runs(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=12)
    config = Config(max_messages_per_hour=5, max_cycles=1, cycle_delay_minutes=0)
    clock = FakeClock()
    first = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, first.run_id, config, clock, stop_after=5)
    campaign.finish_run(setup.conn, first.run_id, clock.now())
    second = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, second.run_id, config, clock)
    first_sends = [when for _, _, when in setup.attempts(first.run_id)]
    second_sends = [when for _, _, when in setup.attempts(second.run_id)]
    assert len(first_sends) == 5 and len(second_sends) == 7 + 12
    # the new run did not get a fresh hour: it waited for the first run's sends to age
    assert second_sends[0] - first_sends[0] >= HOUR
    assert_window_held(setup, 5)
    # 24 sends at 5 an hour: the last one in the fifth hour, not later
    assert second_sends[-1] - first_sends[0] < 5 * HOUR


def test_next_free_slot_is_the_oldest_send_plus_an_hour(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=3)
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    with migrate_db.transaction(setup.conn):
        for minutes in (50, 30, 10):
            setup.conn.execute(
                "INSERT INTO task_attempts (task_id, profile_id, run_id, status, attempted_at) "
                "VALUES (1, ?, 'r', 'success', ?)",
                (setup.profiles[0].id, migrate_db.utc_text(now - timedelta(minutes=minutes))))
        setup.conn.execute(  # failures never use up the hour
            "INSERT INTO task_attempts (task_id, profile_id, run_id, status, attempted_at) "
            "VALUES (1, ?, 'r', 'failed', ?)", (setup.profiles[0].id, migrate_db.utc_text(now)))
    pid = setup.profiles[0].id
    assert campaign.next_free_slot(setup.conn, pid, 4, now) == now
    assert campaign.next_free_slot(setup.conn, pid, 3, now) == now + timedelta(minutes=10)
    assert campaign.next_free_slot(setup.conn, pid, 2, now) == now + timedelta(minutes=30)


async def test_cycle_delay_between_sends_to_one_chat(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=2)
    config = Config(max_messages_per_hour=100, max_cycles=3, cycle_delay_minutes=20,
                    delay_randomness=0.5)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, run.run_id, config, clock)
    for chat in setup.chats:
        times = [when for _, name, when in setup.attempts(run.run_id) if name == chat]
        assert len(times) == 3
        for before, after in zip(times, times[1:], strict=False):
            assert timedelta(minutes=20) <= after - before <= timedelta(minutes=30, seconds=1)


# ----------------------------------------------------------------------------- errors

async def test_peer_flood_stops_the_account_and_others_take_its_chats(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=8)
    config = Config(max_messages_per_hour=100, max_cycles=2, cycle_delay_minutes=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    s1, s2 = setup.profiles
    # in turn, so that who sends what is certain (run together, s2 may take every due chat
    # before s1's client is even connected, and s1 then never meets the refusal): s1 sends
    # twice, Telegram limits it at its next send, and s2 does the rest
    [alone] = await run_workers(setup, run.run_id, config, clock, [s1], stop_after=2)
    assert alone.sent == 2
    setup.world.inject_fault("PEER_FLOOD", account="s1", request="SendMessageRequest")
    [limited] = await run_workers(setup, run.run_id, config, FakeClock(clock.now()), [s1])
    assert limited.status == "peer_flood" and limited.sent == 0
    refused = setup.conn.execute("SELECT t.chat_username, t.status FROM task_attempts a JOIN "
                                 "tasks t ON t.id = a.task_id WHERE a.status = 'failed'"
                                 ).fetchone()
    assert refused[1] == "pending"  # back for the other accounts at once
    clock = FakeClock(clock.now())
    [other] = await run_workers(setup, run.run_id, config, clock, [s2])
    assert other.sent == 14
    assert len(setup.messages(refused[0])) == 2
    for chat in setup.chats:
        assert len(setup.messages(chat)) == 2
    assert campaign.finish_run(setup.conn, run.run_id, clock.now()) == "finished"
    status = "\n".join(campaign.status_lines(setup.conn, config, clock.now()))
    assert "s1:" in status and "peer flood" in status and "PeerFlood: Telegram limited" in status
    kind, _ = telegram_session.current_wait(telegram_session.load_account(
        setup.profiles[0].folder))
    assert kind == "peer_flood"
    failed = setup.conn.execute("SELECT error_type FROM task_attempts WHERE status = 'failed'"
                                ).fetchall()
    assert failed == [("PeerFloodError",)]
    plan = "\n".join(campaign.plan_lines(setup.conn, config, None, setup.profiles, clock.now()))
    assert "left out, limited by PeerFlood: s1" in plan


@pytest.mark.parametrize(("error", "code", "status"), [
    ("USER_BANNED_IN_CHANNEL", 400, "restricted"),
    ("FROZEN_METHOD_INVALID", 420, "frozen"),
])
async def test_account_level_refusals_stop_the_account_not_the_chats(
        tmp_path: Path, error: str, code: int, status: str) -> None:
    """Telegram answers s1's sends with an account-level refusal after its 2nd: s1 stops for
    the run at once, the chat is not counted toward blocking (max_attempts_before_block 1),
    and s2 sends everything else, that chat included. The accounts run in turn so that
    which one meets the refusal is certain."""
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=8)
    setup.world.inject_fault(error, code=code, account="s1", request="SendMessageRequest",
                             after=2)
    config = Config(max_messages_per_hour=100, max_cycles=2, cycle_delay_minutes=1,
                    max_attempts_before_block=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    s1, s2 = setup.profiles
    [first] = await run_workers(setup, run.run_id, config, clock, [s1])
    assert (first.status, first.sent, first.failed) == (status, 2, 1)
    refused = setup.conn.execute("SELECT t.chat_username, t.status FROM task_attempts a JOIN "
                                 "tasks t ON t.id = a.task_id WHERE a.status = 'failed'"
                                 ).fetchone()
    assert refused[1] == "pending"  # back for the others at once
    [second] = await run_workers(setup, run.run_id, config, FakeClock(clock.now()), [s2])
    assert second.sent == 14
    assert len(setup.messages(refused[0])) == 2
    assert all(len(setup.messages(chat)) == 2 for chat in setup.chats)
    assert setup.conn.execute("SELECT COUNT(*) FROM tasks WHERE is_blocked = 1"
                              ).fetchone() == (0,)
    assert campaign.finish_run(setup.conn, run.run_id, clock.now()) == "finished"
    status_text = "\n".join(campaign.status_lines(setup.conn, config, clock.now()))
    assert f"this run: {status}: {error}" in status_text


@pytest.mark.parametrize(("state", "status", "error"), [
    ({"restricted": True}, "restricted", "UserBannedInChannelError"),
    ({"limited": True}, "peer_flood", "PeerFloodError"),
])
async def test_account_refused_by_the_simulated_telegram(tmp_path: Path, state: dict,
                                                         status: str, error: str) -> None:
    """The simulator's own account states: a restricted account gets USER_BANNED_IN_CHANNEL
    on every write to a group, a limited one PEER_FLOOD on every send. One refusal stops
    it for the run; the other account sends everything and no chat is blocked."""
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=6)
    setup.world.set_account("s1", **state)
    config = Config(max_messages_per_hour=100, max_cycles=1, cycle_delay_minutes=0,
                    max_attempts_before_block=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    s1, s2 = setup.profiles
    [first] = await run_workers(setup, run.run_id, config, clock, [s1])  # in turn: certain
    assert (first.status, first.sent, first.failed) == (status, 0, 1)
    [second] = await run_workers(setup, run.run_id, config, FakeClock(clock.now()), [s2])
    assert second.sent == 6
    assert all(len(setup.messages(chat)) == 1 for chat in setup.chats)
    assert setup.conn.execute("SELECT error_type, COUNT(*) FROM task_attempts WHERE "
                              "status = 'failed' GROUP BY error_type").fetchall() == [(error, 1)]
    assert setup.conn.execute("SELECT COUNT(*) FROM tasks WHERE is_blocked = 1"
                              ).fetchone() == (0,)


async def test_chat_level_refusal_stays_with_the_chat(tmp_path: Path) -> None:
    """A chat s1 may not write to (not a member) is that chat's problem: s1 goes on with the
    other chats, and the chat is blocked after max_attempts_before_block refusals."""
    setup = make_campaign(tmp_path, ("s1",), chats=4)
    setup.world.leave("s1", "@chat001")
    setup.world.restrict("s1", "@chat003", ["send_messages"])  # muted in that chat only
    config = Config(max_messages_per_hour=100, max_cycles=1, cycle_delay_minutes=0,
                    max_attempts_before_block=2, retry_delay_minutes=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    [result] = await run_workers(setup, run.run_id, config, clock)
    assert result.status == "done" and result.sent == 2 and result.blocked == 2
    assert [chat for (chat,) in setup.conn.execute(
        "SELECT chat_username FROM tasks WHERE is_blocked = 1 ORDER BY id")] == [
        "@chat001", "@chat003"]


async def test_flood_wait_pauses_one_account_and_skips_nothing(tmp_path: Path,
                                                               monkeypatch) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=6)
    setup.world.inject_fault("FLOOD_WAIT", seconds=600, account="s1",
                             request="SendMessageRequest", after=1, times=1)
    config = Config(max_messages_per_hour=100, max_cycles=2, cycle_delay_minutes=5)
    clock = FakeClock()
    # Telethon remembers a FloodWait per request type by time.time(): on the simulated
    # clock, so that the wait is over once the worker slept through it
    monkeypatch.setattr(telethon_users, "time",
                        SimpleNamespace(time=lambda: clock.now().timestamp()))
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, run.run_id, config, clock, head_start=True)
    for chat in setup.chats:
        assert setup.messages(chat) == list(TEXTS)
    assert setup.conn.execute("SELECT COUNT(*) FROM task_attempts WHERE status != 'success'"
                              ).fetchone() == (0,)
    s1_times = [when for name, _, when in setup.attempts(run.run_id) if name == "s1"]
    assert len(s1_times) >= 2 and s1_times[1] - s1_times[0] >= timedelta(seconds=599)
    wait = telegram_session.current_wait(telegram_session.load_account(
        setup.profiles[0].folder))
    assert wait is not None and wait[0] == "flood_wait"  # every process and status see it
    status = "\n".join(campaign.status_lines(setup.conn, config, datetime.now(UTC)))
    assert re.search(r"s1: .*flood wait, \d+ min left", status)


async def test_stop_during_a_flood_wait_sends_nothing_more(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=2)
    setup.world.inject_fault("FLOOD_WAIT", seconds=3600, account="s1",
                             request="SendMessageRequest", after=1, times=1)
    config = Config(max_messages_per_hour=100, max_cycles=1, cycle_delay_minutes=0)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    original_sleep = clock.sleep

    async def sleep(seconds: float, wake=None) -> None:
        if seconds >= 3000:  # Ctrl+C while the account waits out its FloodWait
            campaign.request_stop(setup.conn, run.run_id)
            wake.set()
        await original_sleep(seconds, wake)
    clock.sleep = sleep
    results = await run_workers(setup, run.run_id, config, clock)
    assert results[0].status == "stopped" and results[0].sent == 1
    assert [len(setup.messages(chat)) for chat in setup.chats] == [1, 0]
    failed = setup.conn.execute("SELECT error_type FROM task_attempts WHERE status = 'failed'"
                                ).fetchall()
    assert failed == [("FloodWaitError",)]
    assert campaign.finish_run(setup.conn, run.run_id, clock.now()) == "stopped"
    assert campaign.remaining_sends(setup.conn, run.run_id) == 1  # carried to the next start


async def test_chats_that_refuse_are_blocked_after_max_attempts(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=2)
    setup.world.create_channel("Closed", username="closedchat", kind="megagroup")  # not a member
    now = datetime.now(UTC)
    campaign.add_chats(setup.conn, ["@closedchat", "@nosuchchat"], "default", now)
    config = Config(max_messages_per_hour=100, max_cycles=1, cycle_delay_minutes=0,
                    max_attempts_before_block=3, retry_delay_minutes=5)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, run.run_id, config, clock)
    blocked = dict(setup.conn.execute(
        "SELECT chat_username, block_reason FROM tasks WHERE is_blocked = 1"))
    assert set(blocked) == {"@closedchat", "@nosuchchat"}
    assert blocked["@closedchat"].startswith("ChatWriteForbiddenError (3 attempts)")
    assert blocked["@nosuchchat"].startswith("UsernameNotFound (3 attempts)")
    errors = setup.conn.execute("SELECT error_type, COUNT(*) FROM task_attempts WHERE "
                                "status = 'failed' GROUP BY error_type").fetchall()
    assert errors == [("ChatWriteForbiddenError", 3), ("UsernameNotFound", 3)]
    assert campaign.finish_run(setup.conn, run.run_id, clock.now()) == "finished"
    for chat in setup.chats:
        assert setup.messages(chat) == [TEXTS[0]]
    status = "\n".join(campaign.status_lines(setup.conn, config, clock.now()))
    assert "blocked chats: 2" in status and "@nosuchchat (default): UsernameNotFound" in status
    tasks = setup.conn.execute("SELECT completed_cycles, failed_count FROM tasks WHERE "
                               "chat_username = '@closedchat'").fetchone()
    assert tasks == (0, 3)  # failures never count as cycles


async def test_slow_mode_waits_for_the_chat(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=1)
    setup.world.inject_fault("SLOWMODE_WAIT", seconds=600, account="s1",
                             request="SendMessageRequest", after=1, times=1)
    config = Config(max_messages_per_hour=100, max_cycles=2, cycle_delay_minutes=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, run.run_id, config, clock)
    times = [when for _, _, when in setup.attempts(run.run_id)]
    assert len(times) == 2 and times[1] - times[0] >= timedelta(minutes=10)
    assert setup.messages(setup.chats[0]) == list(TEXTS)
    assert setup.conn.execute("SELECT is_blocked FROM tasks").fetchone() == (0,)


@pytest.mark.parametrize("mode", ["original", "error"])
async def test_connection_drop_after_delivery_is_not_sent_twice(tmp_path: Path,
                                                                mode: str) -> None:
    setup = make_campaign(tmp_path, chats=3, random_id_mode=mode)
    setup.world.inject_fault("DISCONNECT", account="s1", request="SendMessageRequest",
                             after=2, times=1, executed=True)
    config = Config(max_messages_per_hour=100, max_cycles=2, cycle_delay_minutes=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    await run_workers(setup, run.run_id, config, clock)
    for chat in setup.chats:
        assert setup.messages(chat) == list(TEXTS)
    rows = setup.conn.execute("SELECT status, COUNT(*) FROM task_attempts GROUP BY status"
                              ).fetchall()
    assert rows == [("success", 6)]
    # the drop was retried with the same random_id: Telegram answered with the original
    ids = setup.conn.execute("SELECT sent_msg_id FROM task_attempts").fetchall()
    assert (None,) in ids if mode == "error" else (None,) not in ids


async def test_worker_stops_on_request_and_the_run_shows_stopped(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=6)
    config = Config(max_messages_per_hour=2, max_cycles=1, cycle_delay_minutes=0)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())
    campaign.request_stop(setup.conn, run.run_id)
    results = await run_workers(setup, run.run_id, config, clock)
    assert results[0].status == "stopped" and results[0].sent == 0
    assert campaign.finish_run(setup.conn, run.run_id, clock.now()) == "stopped"


async def test_send_refused_for_auth_goes_to_the_other_accounts(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=1)
    config = Config(max_cycles=1)
    clock = FakeClock()
    run = campaign.create_run(setup.conn, config, None, setup.profiles, clock.now())

    async def refused(chat: str, text: str, random_id: int) -> int | None:
        raise campaign.errors.AuthKeyUnregisteredError(request=None)

    async def sent(chat: str, text: str, random_id: int) -> int | None:
        return 1
    first = campaign.Worker(setup.conn, run.run_id, setup.profiles[0], config, refused, clock)
    with pytest.raises(telegram_session.TelegramAuthError):
        await first.run()
    # refused, so surely not sent: the chat is not kept waiting for the logged-out account
    second = campaign.Worker(setup.conn, run.run_id, setup.profiles[1], config, sent, clock)
    assert (await second.run()).sent == 1
    assert campaign.remaining_sends(setup.conn, run.run_id) == 0


# ----------------------------------------------------------------------------- claims

def test_claims_are_exclusive_and_dead_claims_released(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=2)
    config = Config(max_cycles=1)
    now = datetime.now(UTC)
    run = campaign.create_run(setup.conn, config, None, setup.profiles, now)
    s1, s2 = (p.id for p in setup.profiles)
    first = campaign.claim_next(setup.conn, run.run_id, s1, now, pid=999_999_999)
    second = campaign.claim_next(setup.conn, run.run_id, s2, now)
    assert first and second and first.chat != second.chat
    assert campaign.claim_next(setup.conn, run.run_id, s2, now) is None
    # the first claimer's process does not exist: its chat is released, but its send's
    # outcome is unknown, so only the same account may take it back (same random_id)
    assert campaign.release_dead_claims(setup.conn, now) == 1
    assert campaign.claim_next(setup.conn, run.run_id, s2, now) is None
    assert campaign.claim_open_attempt(setup.conn, s2, now) is None
    again = campaign.claim_open_attempt(setup.conn, s1, now)
    assert again and again.random_id == first.random_id and again.resumed


# ----------------------------------------------------------------------------- legacy

def legacy_profile_uuid(name: str) -> str:
    """The external (browser-profile) UUID the earlier system gave the profile `name`."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


def make_legacy_db(path: Path, profiles: list[str], chats: list[str],
                   templates: tuple[str, ...] = ("Hello from the template",),
                   attempts: tuple[tuple[int, str, str], ...] = ()) -> None:
    """A campaign database as the earlier system left it, in its real layout (NOTES.md):
    chats of group 'default' marked completed, stuck in_progress, pending and blocked (in
    turn), templates in `messages`, and `attempts` (task id, status, 'YYYY-MM-DD HH:MM:SS')
    made by the first profile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_CAMPAIGN_TABLES)
    conn.executemany("INSERT INTO profiles (profile_id, profile_name) VALUES (?, ?)",
                     [(legacy_profile_uuid(p), p) for p in profiles])
    states = ["completed", "in_progress", "pending", "blocked"]
    for index, chat in enumerate(chats):
        state = states[index % len(states)]
        conn.execute("INSERT INTO tasks (group_id, chat_username, status, total_cycles, "
                     "completed_cycles, is_blocked, block_reason, assigned_profile_id) "
                     "VALUES ('default', ?, ?, 2, ?, ?, ?, ?)",
                     (chat, state, 2 if state == "completed" else 0, int(state == "blocked"),
                      "ChatWriteForbidden" if state == "blocked" else None,
                      legacy_profile_uuid(profiles[0]) if state == "in_progress" else None))
    conn.executemany("INSERT INTO messages (group_id, text) VALUES ('default', ?)",
                     [(text,) for text in templates])
    conn.executemany("INSERT INTO task_attempts (task_id, profile_id, cycle_number, status, "
                     "message_text, timestamp) VALUES (?, ?, 1, ?, ?, ?)",
                     [(task, legacy_profile_uuid(profiles[0]), status, templates[0], stamp)
                      for task, status, stamp in attempts])
    conn.commit()
    conn.close()


def legacy_time(moment: datetime) -> str:
    """A time as the earlier system stored it (CURRENT_TIMESTAMP text, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def test_legacy_database_migrated_then_run(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    world = telegram_sim.World.create(tmp_path / "world.db")
    chats = [f"@chat{i:03d}" for i in range(5)]
    for name in ("s1", "s2"):
        world.add_account(name)
        world.make_session_folder(tmp_path / "sessions" / name, name)
    for chat in chats:
        world.create_channel(chat, username=chat[1:], kind="megagroup", members=["s1", "s2"])
    db_path = tmp_path / "sessions" / "shared" / "campaign.db"
    # s1 sent 3 times in the last hour under the earlier system; @chat002 was delayed by it
    # for 2 hours
    recent = [now - timedelta(minutes=m) for m in (50, 30, 10)]
    make_legacy_db(db_path, ["s1"], chats, templates=("Template one", "Template two"),
                   attempts=tuple((1, "success", legacy_time(t)) for t in recent)
                   + ((4, "failed", legacy_time(now - HOUR)),))
    delayed_until = now + 2 * HOUR
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE tasks SET next_available_at = ? WHERE chat_username = '@chat002'",
                (legacy_time(delayed_until),))
    raw.commit()
    raw.close()

    conn = migrate_db.connect(db_path, kind="campaign")
    s1, new = campaign.add_profile(conn, tmp_path / "sessions" / "s1", now)
    assert not new and s1.id == 1  # the earlier row, now with its folder
    s2, new = campaign.add_profile(conn, tmp_path / "sessions" / "s2", now)
    assert new
    ids = dict(conn.execute("SELECT profile_name, profile_id FROM profiles"))
    assert ids["s1"] == legacy_profile_uuid("s1") and len(ids["s2"]) == 36
    # the earlier sends of the last hour count for s1
    assert campaign.window_sends(conn, s1.id, now) == recent
    config = Config(max_messages_per_hour=4, max_cycles=1, cycle_delay_minutes=1)
    run = campaign.create_run(conn, config, None, [s1, s2], now)
    assert (run.chats, run.quota_total, run.carry_total) == (4, 4, 0)  # @chat003 blocked
    setup = Setup(tmp_path, world, db_path, conn, [s1, s2], chats)
    clock = FakeClock(now)
    await run_workers(setup, run.run_id, config, clock)

    sent = {chat: setup.messages(chat) for chat in chats}
    assert {chat for chat, texts in sent.items() if texts} == {
        "@chat000", "@chat001", "@chat002", "@chat004"}
    # the templates are what was sent, in rotation by each chat's all-time sends
    assert sent["@chat000"] == ["Template one"]     # completed 2 before: 2 % 2 -> first
    assert sent["@chat001"] == ["Template one"]
    attempts = setup.attempts(run.run_id)
    by_chat = {chat: when for _, chat, when in attempts}
    assert by_chat["@chat002"] >= delayed_until     # the earlier delay is honoured
    # s1's window holds across the earlier rows and the new ones
    s1_times = sorted(recent + [when for name, _, when in attempts if name == "s1"])
    for first, later in zip(s1_times, s1_times[4:], strict=False):
        assert later - first >= HOUR
    assert conn.execute("SELECT COUNT(*) FROM task_attempts WHERE run_id IS NULL"
                        ).fetchone()[0] == 4
    assert conn.execute("SELECT completed_cycles FROM tasks WHERE id = 1").fetchone() == (3,)
    conn.close()


def test_sends_stamped_later_than_now_still_count(tmp_path: Path) -> None:
    """The clock stepped back an hour: the sends just made look 'in the future', and must
    still fill the window, not free it."""
    setup = make_campaign(tmp_path, chats=1)
    profile = setup.profiles[0].id
    before = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    with migrate_db.transaction(setup.conn):
        setup.conn.executemany(
            "INSERT INTO task_attempts (task_id, profile_id, status, attempted_at) "
            "VALUES (1, ?, 'success', ?)",
            [(profile, migrate_db.utc_text(before + timedelta(minutes=m))) for m in range(10)])
    stepped_back = before - HOUR
    assert len(campaign.window_sends(setup.conn, profile, stepped_back)) == 10
    slot = campaign.next_free_slot(setup.conn, profile, 10, stepped_back)
    assert slot == before + HOUR  # not one extra send until the real hour has passed
    assert campaign.next_free_slot(setup.conn, profile, 11, stepped_back) == stepped_back


def test_fake_clock_advances_to_the_earliest_sleeper() -> None:
    async def scenario() -> list[tuple[str, datetime]]:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC), participants=2)
        woke = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))
            clock.leave()
        await asyncio.gather(sleeper("long", 3600), sleeper("short", 60))
        return woke
    woke = asyncio.run(scenario())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert woke == [("short", start + timedelta(minutes=1)), ("long", start + HOUR)]


def test_config_round_trip_is_recorded_with_the_run(tmp_path: Path) -> None:
    setup = make_campaign(tmp_path, chats=1)
    config = replace(Config(), max_cycles=3, text_order="random")
    run = campaign.create_run(setup.conn, config, "default", setup.profiles,
                              datetime.now(UTC))
    stored = setup.conn.execute("SELECT config_json, group_id, status FROM campaign_runs "
                                "WHERE run_id = ?", (run.run_id,)).fetchone()
    assert '"max_cycles": 3' in stored[0] and '"text_order": "random"' in stored[0]
    assert stored[1:] == ("default", "running")
