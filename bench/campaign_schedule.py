#!/usr/bin/env python3
"""Benchmark: how well campaign.py uses the hourly limits over 10 simulated hours.

Three accounts (max_messages_per_hour 30) send to 500 chats (max_cycles 2, cycle delay 20
min) through real Telethon clients over the simulated Telegram, on a FakeClock, so the ten
hours take seconds. Prints sends per account-hour achieved / allowed (goal >= 0.98) and the
largest number of sends of one account in any 60-minute window (must never exceed 30).

    python bench/campaign_schedule.py [--hours 10] [--accounts 3] [--chats 500]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SUITE_DIR))
sys.path.insert(0, str(SUITE_DIR / "tests"))

from clocks import FakeClock, run_accounts_together  # noqa: E402

import campaign  # noqa: E402
import migrate_db  # noqa: E402
import telegram_sim  # noqa: E402

PER_HOUR = 30
MAX_CYCLES = 2
CYCLE_DELAY_MINUTES = 20
GOAL_RATIO = 0.98


class HorizonClock(FakeClock):
    """A FakeClock that asks the workers to stop once simulated time reaches `horizon`."""

    def __init__(self, horizon: timedelta, stop: campaign.StopSignal) -> None:
        super().__init__()
        self.end = self.now() + horizon
        self.stop = stop

    async def sleep(self, seconds: float, wake=None) -> None:
        await super().sleep(seconds, wake)
        if self.now() >= self.end:
            self.stop.set()


def build(folder: Path, accounts: int, chats: int) -> tuple[Path, list[campaign.Profile]]:
    """A simulated world with the accounts and chats, and a campaign database using them."""
    world = telegram_sim.World.create(folder / "world.db")
    names = [f"acc{i}" for i in range(1, accounts + 1)]
    for name in names:
        world.add_account(name)
        # simulated hours pass in seconds: the world's real-time rate limits would answer
        # FloodWait to what is, in simulated time, 30 sends an hour
        world.set_account(name, rate_limits=False)
        world.make_session_folder(folder / "sessions" / name, name)
    chat_names = [f"@bench{i:04d}" for i in range(chats)]
    for chat in chat_names:
        world.create_channel(chat, username=chat[1:], kind="megagroup", members=names)
    world.close()
    db_path = folder / "sessions" / "shared" / "campaign.db"
    conn = migrate_db.connect(db_path, kind="campaign")
    now = campaign.Clock().now()
    campaign.add_chats(conn, chat_names, "default", now)
    campaign.import_texts(conn, ["Benchmark text A", "Benchmark text B"], replace=False,
                          now=now)
    profiles = [campaign.add_profile(conn, folder / "sessions" / n, now)[0] for n in names]
    conn.close()
    return db_path, profiles


def largest_window(times: list[datetime]) -> int:
    """The most sends in any 60-minute window ending at a send."""
    largest, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= campaign.WINDOW:
            first += 1
        largest = max(largest, last - first + 1)
    return largest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--chats", type=int, default=500)
    args = parser.parse_args()
    if args.hours <= 0 or args.accounts < 1 or args.chats < 1:
        parser.error("--hours, --accounts and --chats must be positive")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("telegram_session").setLevel(logging.ERROR)
    config = campaign.Config(max_messages_per_hour=PER_HOUR, max_cycles=MAX_CYCLES,
                             cycle_delay_minutes=CYCLE_DELAY_MINUTES)
    with tempfile.TemporaryDirectory() as tmp:
        db_path, profiles = build(Path(tmp), args.accounts, args.chats)
        conn = migrate_db.connect(db_path, kind="campaign")
        stop = campaign.StopSignal()
        clock = HorizonClock(timedelta(hours=args.hours), stop)
        start = clock.now()
        run = campaign.create_run(conn, config, None, profiles, start)
        began = time.perf_counter()
        asyncio.run(run_accounts_together(db_path, run.run_id, profiles, config, clock, stop))
        elapsed = time.perf_counter() - began
        end = start + timedelta(hours=args.hours)
        print(f"{args.hours:g} simulated hours, {args.accounts} accounts at {PER_HOUR}/h, "
              f"{args.chats} chats x {MAX_CYCLES} cycles ({run.quota_total} sends owed), "
              f"cycle delay {CYCLE_DELAY_MINUTES} min; ran in {elapsed:.1f} s real time")
        worst, total = 0, 0
        for profile in profiles:
            times = sorted(migrate_db.parse_utc(t) for (t,) in conn.execute(
                "SELECT attempted_at FROM task_attempts WHERE profile_id = ? AND "
                "status = 'success' AND run_id = ?", (profile.id, run.run_id)))
            inside = [t for t in times if t < end]
            window = largest_window(times)
            worst = max(worst, window)
            total += len(inside)
            print(f"  {profile.name}: {len(inside)} sends in {args.hours:g} h, largest "
                  f"60-minute window {window}")
        allowed = args.accounts * PER_HOUR * args.hours
        ratio = total / allowed
        print(f"sends per account-hour: achieved {total / (args.accounts * args.hours):.2f} / "
              f"allowed {PER_HOUR} = {ratio:.3f} (goal >= {GOAL_RATIO}: "
              f"{'met' if ratio >= GOAL_RATIO else 'NOT met'})")
        print(f"largest count in any 60-minute window: {worst} (limit {PER_HOUR}: "
              f"{'never exceeded' if worst <= PER_HOUR else 'EXCEEDED'})")
        conn.close()
    return 0 if ratio >= GOAL_RATIO and worst <= PER_HOUR else 1


if __name__ == "__main__":
    sys.exit(main())
