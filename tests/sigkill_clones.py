"""Shared cloners killed at random: the kill loop of the SQLite kill test and the two-VPS
PostgreSQL test. Each account is a real `clone_streaming_shared.py --once` process."""
from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import helpers
from helpers import python, wait_until

SHARED = Path(__file__).resolve().parent.parent / "clone_streaming_shared.py"
KILL_EVERY = (0.3, 0.9)          # seconds between kills, drawn at random
MAX_KILLS = 8


def start_clone(folder: Path) -> subprocess.Popen:
    """One account's shared cloner, backfill then stop (what a restart by run.sh runs)."""
    return helpers.start(python(SHARED, "--once"), cwd=folder, stdout=subprocess.DEVNULL)


@dataclass
class KillRun:
    workers: dict[str, subprocess.Popen]
    began: float
    kills: int = 0
    mid_claim: int = 0            # kills of an account holding claims at that moment

    def seconds_left(self, limit: float) -> float:
        return limit - (time.monotonic() - self.began)


def kill_at_random(folders: dict[str, Path], *, held: Callable[[str], int],
                   done: Callable[[], dict[str, int]], seed: int,
                   run_limit: float) -> KillRun:
    """Start every account, wait until each has cloned something (so the work is shared),
    then SIGKILL one at random (one holding claims when there is one: the case that must
    not lose anything) and restart it, up to MAX_KILLS times within `run_limit` seconds."""
    run = KillRun({name: start_clone(folder) for name, folder in folders.items()},
                  time.monotonic())
    rng = random.Random(seed)

    def every_account_cloned_something() -> bool:
        ended = {n: p.stderr.read()[-2000:] for n, p in run.workers.items()
                 if p.poll() is not None}
        assert not ended, ended
        return len(done()) == len(folders)
    wait_until(every_account_cloned_something, what="every account to clone something",
               timeout=run_limit)
    while run.kills < MAX_KILLS and run.seconds_left(run_limit) > 0:
        time.sleep(rng.uniform(*KILL_EVERY))
        running = [name for name, process in run.workers.items() if process.poll() is None]
        if not running:
            break
        holding = [name for name in running if held(name)]
        victim = rng.choice(holding or running)
        run.workers[victim].kill()                # SIGKILL: no cleanup of any kind
        run.workers[victim].wait()
        run.kills += 1
        run.mid_claim += held(victim) > 0
        run.workers[victim] = start_clone(folders[victim])
    return run
