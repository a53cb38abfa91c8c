"""A simulated clock for campaign.py's scheduler, and a runner of several account workers on
it in one process: hours of schedule in seconds (tests, bench/campaign_schedule.py).
Production code takes any `campaign.Clock`; this one lives here because only tests and
benchmarks use it."""
from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import campaign
import migrate_db

UTC = timezone.utc        # datetime.UTC is Python 3.11+


class FakeClock(campaign.Clock):
    """Simulated time that jumps ahead instantly: hours of schedule in seconds.

    With several concurrent workers (`participants`), time advances only when every one of
    them is asleep, to the earliest wake-up: a discrete-event clock. A worker that finishes
    calls `leave()` so the others are not held back.
    """

    poll_seconds = None

    def __init__(self, start: datetime | None = None, participants: int = 1) -> None:
        self._now = start or datetime.now(UTC)
        self.participants = participants
        self._sleepers: list[tuple[datetime, int, asyncio.Future]] = []
        self._seq = 0

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Jump ahead (`wake` is not needed: stops are seen between steps)."""
        until = self._now + timedelta(seconds=max(0.0, seconds))
        if self.participants <= 1:
            self._now = until
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (until, self._seq, future))
        self._advance()
        try:
            await future
        except asyncio.CancelledError:
            self._sleepers = [s for s in self._sleepers if s[2] is not future]
            heapq.heapify(self._sleepers)
            raise

    def leave(self) -> None:
        """A participant is done: it no longer has to be asleep for time to move."""
        self.participants -= 1
        self._advance()

    def _advance(self) -> None:
        while self._sleepers and len(self._sleepers) >= max(self.participants, 1):
            wake, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake)
            if not future.done():
                future.set_result(None)
                return


async def run_accounts_together(db_path: Path, run_id: str,
                                profiles: Sequence[campaign.Profile], config: campaign.Config,
                                clock: FakeClock, stop: campaign.StopSignal | None = None
                                ) -> list[campaign.WorkerResult]:
    """Every account's worker (campaign.run_account) as an asyncio task of this process,
    sharing `clock`; campaign.py `start` runs one process per account instead."""
    async def one(profile: campaign.Profile) -> campaign.WorkerResult:
        conn = migrate_db.connect(db_path, kind="campaign")
        try:
            return await campaign.run_account(conn, run_id, profile, config, clock, stop)
        finally:
            conn.close()
            clock.leave()
    clock.participants = len(profiles)
    return list(await asyncio.gather(*(one(p) for p in profiles)))
