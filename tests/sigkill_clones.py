"""Shared cloners killed at random: the world, the kill loop and the final check of the
SQLite kill test and the two-VPS PostgreSQL test. Each account is a real
`clone_streaming_shared.py --once` process."""
from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import helpers
from helpers import python, wait_until
from telethon import types

from clone_streaming import source_reply_id, source_topic_of
from telegram_sim import World

sys.path.insert(0, str(helpers.ROOT / "bench"))

from clone_requests import build_history  # noqa: E402

SHARED = helpers.ROOT / "clone_streaming_shared.py"
KILL_EVERY = (0.3, 0.9)          # seconds between kills, drawn at random
MAX_KILLS = 8
TOPICS = 5


def forum_world(path: Path, accounts: list[str], name: str, messages: int
                ) -> tuple[World, int]:
    """A world where accounts[0] owns the forums @NAME_source (TOPICS topics, `messages`
    messages: albums, media, replies) and @NAME_target, the other accounts read the source
    and post in the target; rate limits off (about kills, not budgets)."""
    world = World.create(path)
    world.configure(rate_limits=False)
    for account in accounts:
        world.add_account(account)
    source = world.create_channel("Source", username=f"{name}_source", kind="forum",
                                  owner=accounts[0], members=accounts[1:])
    world.create_channel("Target", username=f"{name}_target", kind="forum",
                         owner=accounts[0], admins=accounts[1:])
    topics = [world.create_topic(source, f"Topic {n}", by=accounts[0]) for n in range(TOPICS)]
    build_history(world, source, messages, topics=topics, album_share=0.1, media_share=0.2,
                  reply_share=0.1, seed=7)
    return world, source


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


def check_cloned_once(world: World, source: int, target: str, rows: dict[int, int]) -> dict:
    """Every source message is in the target exactly once (`rows`: the checkpoint's done
    source id -> target id): text, entities, media, albums kept whole, replies pointing to
    the copies, each topic created once. Returns counts for a summary line."""
    sources = [m for m in world.messages(source) if isinstance(m, types.Message)]
    targets = {m.id: m for m in world.messages(target) if isinstance(m, types.Message)}
    clone = {s.id: targets[rows[s.id]] for s in sources}
    assert len(targets) == len(sources)                             # nothing twice
    assert sorted(t.id for t in clone.values()) == sorted(targets)  # nothing lost
    for s in sources:
        t = clone[s.id]
        assert (t.message, t.entities, type(t.media)) == (s.message, s.entities, type(s.media))
        assert world.media_bytes(t) == world.media_bytes(s)
    albums: dict[int, set[int]] = {}
    for s in sources:
        if s.grouped_id:
            albums.setdefault(s.grouped_id, set()).add(clone[s.id].grouped_id)
    split = {g: [(s.id, clone[s.id].id, clone[s.id].grouped_id) for s in sources
                 if s.grouped_id == g] for g, copies in albums.items()
             if len(copies) != 1 or None in copies}
    assert albums and not split, split
    assert len({next(iter(g)) for g in albums.values()}) == len(albums)
    replies = [s for s in sources if source_reply_id(s)]
    assert replies
    for s in replies:
        assert source_reply_id(clone[s.id]) == clone[source_reply_id(s)].id
    titles = {t["topic_id"]: t["title"] for t in world.topics(source)}
    target_topics = {t["title"]: t["topic_id"] for t in world.topics(target)}
    assert len(target_topics) == TOPICS + 1                         # each created once
    for s in sources:
        assert source_topic_of(clone[s.id]) == target_topics[titles[source_topic_of(s)]]
    return {"target messages": len(targets), "albums": len(albums), "replies": len(replies),
            "topics": len(target_topics)}
