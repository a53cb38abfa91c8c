#!/usr/bin/env python3
"""API requests per 1,000 cloned messages, by request type, read from the simulator's counters.

For each history (forward mode without topics, copy mode, and an album-heavy history in
forward and copy mode) a fresh simulated world is built, one account runs
`clone_streaming.py --once` as a real process, and the requests the simulator served to that
account are printed per 1,000 cloned messages. Then the same account runs again over the
finished checkpoint and its history requests are counted (goal: at most 2).

Goals: forward mode on a history without topics at most 12 send requests per 1,000
messages, with 5 interleaved topics at most 60 (a batch per topic); copy mode one send
request per message or album; a restart after a full backfill at most 2 history requests.

    python bench/clone_requests.py [--messages 1000]
"""
from __future__ import annotations

import argparse
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SUITE_DIR))

from telegram_sim import World  # noqa: E402

DEFAULT_MESSAGES = 1000
SEND_REQUESTS = ("ForwardMessagesRequest", "SendMessageRequest", "SendMediaRequest",
                 "SendMultiMediaRequest")
HISTORY_REQUESTS = ("GetHistoryRequest",)
GOAL_FORWARD_SENDS = 12
GOAL_FORWARD_TOPICS_SENDS = 60
GOAL_RESTART_HISTORY = 2
RUN_TIMEOUT = 600


def tiny_png(seed: int) -> bytes:
    """A valid 2x2 PNG whose pixels depend on `seed` (so every photo differs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes((seed + i) % 256 for i in range(6)) for _ in range(2))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def build_history(world: World, chat: int, count: int, *, topics: list[int] | None = None,
                  album_share: float = 0.1, media_share: float = 0.2,
                  reply_share: float = 0.1, seed: int = 1) -> int:
    """Post `count` messages to `chat`: formatted text, photos and documents with captions,
    albums of 2-4 (`album_share` of the messages), replies to earlier posts, spread over
    `topics` (and General). Returns the number of messages posted."""
    rng = random.Random(seed)
    posted: list[int] = []
    while len(posted) < count:
        topic = rng.choice([None, *topics]) if topics else None
        roll = rng.random()
        number = len(posted)
        if roll < album_share and count - len(posted) >= 2:
            size = min(rng.randint(2, 4), count - len(posted))
            files = [tiny_png(number + i) for i in range(size)]
            posted += world.post_album(chat, files, topic=topic, captions=[
                f"album {number} item {i}" if i % 2 == 0 else "" for i in range(size)])
        elif roll < album_share + media_share:
            if rng.random() < 0.5:
                posted.append(world.post(chat, f"photo **{number}**", parse_mode="md",
                                         file=tiny_png(number), topic=topic))
            else:
                posted.append(world.post(chat, f"document {number}", file_name=f"f{number}.txt",
                                         file=f"file {number}\n".encode(), topic=topic))
        elif roll < album_share + media_share + reply_share and posted:
            posted.append(world.post(chat, f"reply {number} to an earlier post",
                                     reply_to=rng.choice(posted[-50:])))
        else:
            posted.append(world.post(chat, f"message **{number}** with __formatting__",
                                     parse_mode="md", topic=topic))
    return len(posted)


def make_world(folder: Path, count: int, *, topics: int, album_share: float,
               copy_mode: str) -> tuple[World, Path]:
    """A world with a source, a target and one account folder set up to clone it."""
    world = World.create(folder / "world.db")
    world.add_account("bench")
    kind = "forum" if topics else "channel"
    source = world.create_channel("Bench source", username="bench_source", kind=kind,
                                  owner="bench")
    target = world.create_channel("Bench target", username="bench_target", kind=kind,
                                  owner="bench")
    topic_ids = [world.create_topic(source, f"Topic {i}", by="bench") for i in range(topics)]
    build_history(world, source, count, topics=topic_ids, album_share=album_share)
    account = world.make_session_folder(folder / "sessions" / "bench", "bench", extra_env={
        "SOURCE_CHAT": str(world.peer_id(source)), "TARGET_CHAT": "@bench_target",
        "COPY_MODE": copy_mode, "PROGRESS_EVERY": "1000"})
    del target
    return world, account


def run_clone(account: Path) -> float:
    """Run clone_streaming.py --once in the account folder; returns the seconds taken."""
    began = time.perf_counter()
    subprocess.run([sys.executable, str(SUITE_DIR / "clone_streaming.py"), "--once"],
                   cwd=account, check=True, timeout=RUN_TIMEOUT, capture_output=True)
    return time.perf_counter() - began


def measure(name: str, count: int, *, topics: int, album_share: float,
            copy_mode: str) -> dict:
    """Requests per 1,000 cloned messages for one history, and the restart's history reads."""
    with tempfile.TemporaryDirectory(prefix="clone-requests-") as folder:
        world, account = make_world(Path(folder), count, topics=topics,
                                    album_share=album_share, copy_mode=copy_mode)
        with world:
            seconds = run_clone(account)
            counters = world.counters("bench")
            cloned, units = world.conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT COALESCE(grouped_id, -id)) FROM messages "
                "WHERE channel_id = ? AND is_service = 0",
                (world.chat_id("@bench_target"),)).fetchone()
            world.reset_counters()
            run_clone(account)
            restart = world.counters("bench")
    per_thousand = {k: v * 1000 / max(cloned, 1) for k, v in counters.items()}
    return {"name": name, "cloned": cloned, "units": units, "seconds": seconds,
            "per_thousand": per_thousand,
            "sends": sum(per_thousand.get(k, 0) for k in SEND_REQUESTS),
            "restart_history": sum(restart.get(k, 0) for k in HISTORY_REQUESTS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES,
                        help="messages per history (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.messages < 10:
        parser.error("--messages must be at least 10")
    runs = [
        measure("forward, no topics", args.messages, topics=0, album_share=0.1,
                copy_mode="forward"),
        measure("forward, 5 topics", args.messages, topics=5, album_share=0.1,
                copy_mode="forward"),
        measure("copy, 5 topics", args.messages, topics=5, album_share=0.1, copy_mode="copy"),
        measure("forward, album-heavy", args.messages, topics=0, album_share=0.6,
                copy_mode="forward"),
        measure("copy, album-heavy", args.messages, topics=0, album_share=0.6,
                copy_mode="copy"),
    ]
    ok = True
    for run in runs:
        print(f"\n{run['name']}: {run['cloned']} messages cloned in {run['seconds']:.1f} s "
              f"({run['cloned'] / run['seconds']:.0f} msg/s); requests per 1,000 messages:")
        for request, value in sorted(run["per_thousand"].items(), key=lambda kv: -kv[1]):
            print(f"  {request:<32}{value:>9.1f}")
        print(f"  {'= send requests':<32}{run['sends']:>9.1f}")
        print(f"  restart after the full backfill: {run['restart_history']} history requests "
              f"(goal <= {GOAL_RESTART_HISTORY})")
        ok &= run["restart_history"] <= GOAL_RESTART_HISTORY
    print()
    for run, goal in ((runs[0], GOAL_FORWARD_SENDS), (runs[1], GOAL_FORWARD_TOPICS_SENDS)):
        verdict = "meets" if run["sends"] <= goal else "MISSES"
        print(f"{run['name']}: {run['sends']:.1f} send requests per 1,000 messages "
              f"({verdict} the goal of <= {goal})")
        ok &= run["sends"] <= goal
    for run in (r for r in runs if r["name"].startswith("copy")):
        units = run["units"] * 1000 / max(run["cloned"], 1)
        verdict = "meets" if run["sends"] <= units + 0.5 else "MISSES"
        print(f"{run['name']}: {run['sends']:.1f} send requests per 1,000 messages for "
              f"{units:.1f} messages and albums ({verdict} one request each)")
        ok &= run["sends"] <= units + 0.5
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
