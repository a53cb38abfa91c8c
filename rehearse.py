#!/usr/bin/env python3
"""Rehearse the suite's main job on the simulated Telegram: two accounts clone one chat at once.

Builds a demo world (a source forum with formatted text, media, albums, replies and topics,
and an empty target forum), makes two account folders, runs two real
`clone_streaming_shared.py --once` processes at the same time on one shared checkpoint,
waits for both, and prints what the simulated target holds: messages cloned per account,
albums, topics, replies, duplicates and lost messages. No Telegram account is needed.

    python rehearse.py [--workdir DIR]

Exit codes: 0 every message cloned exactly once, 1 a duplicate, a lost message or a cloner
that failed, 2 bad usage, 130 Ctrl+C.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from telethon import types

import migrate_db
from clone_streaming import source_reply_id, source_topic_of
from telegram_sim import World, build_demo

SUITE_DIR = Path(__file__).resolve().parent
CLONER = SUITE_DIR / "clone_streaming_shared.py"
ACCOUNTS = ("session1", "session2")
EXTRA_POSTS = 40          # on top of the demo's messages, so the two accounts share work
DEMO_ENV = {"SOURCE_CHAT": "@demo_source", "TARGET_CHAT": "@demo_target", "COPY_MODE": "copy"}
SHARED_DATABASES = ("checkpoint.db", "accounts.db")
RUN_TIMEOUT = 300          # seconds for the two cloners together
EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130


def prepare(workdir: Path) -> tuple[World, Path]:
    """The demo world and the two account folders, configured to clone it."""
    world = World.create(workdir / "world.db")
    sessions = workdir / "sessions"
    chats = build_demo(world, sessions)
    topics = [t["topic_id"] for t in world.topics(chats["source"])]
    for number in range(EXTRA_POSTS):
        world.post(chats["source"], f"post **{number}**", parse_mode="md",
                   topic=topics[number % len(topics)])
    for name in ACCOUNTS:
        with open(sessions / name / ".env", "a", encoding="utf-8") as env:
            env.writelines(f"{key}={value}\n" for key, value in DEMO_ENV.items())
    for database in SHARED_DATABASES:     # created once here, not by two processes at once
        migrate_db.connect(sessions / "shared" / database).close()
    return world, sessions


def run_cloners(sessions: Path) -> list[str]:
    """Start one cloner per account at once, wait for both; returns the failures."""
    processes = {name: subprocess.Popen(
        [sys.executable, str(CLONER), "--once"], cwd=sessions / name,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ACCOUNTS}
    failures = []
    deadline = time.monotonic() + RUN_TIMEOUT
    for name, process in processes.items():
        try:
            _, err = process.communicate(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if process.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else "(no output)"
            failures.append(f"{name}: exit code {process.returncode}: {last}")
    return failures


def _content(world: World, chat: str) -> list[types.Message]:
    return [m for m in world.messages(chat) if isinstance(m, types.Message)]


def summarise(world: World, checkpoint_db: Path) -> tuple[list[str], int, int]:
    """The summary lines, read from the simulated target and the checkpoint, with the
    duplicate and lost counts."""
    sources, targets = _content(world, "@demo_source"), _content(world, "@demo_target")
    by_id = {t.id: t for t in targets}
    conn = migrate_db.connect(checkpoint_db)
    try:
        done = {msg_id: (session, target) for msg_id, session, target in conn.execute(
            "SELECT msg_id, session, target_msg_id FROM messages WHERE status = 'done'")}
    finally:
        conn.close()
    clone = {s.id: by_id[done[s.id][1]] for s in sources
             if s.id in done and done[s.id][1] in by_id
             and (by_id[done[s.id][1]].message, type(by_id[done[s.id][1]].media))
             == (s.message, type(s.media))}
    lost = len(sources) - len(clone)
    duplicates = len(targets) - len({t.id for t in clone.values()})
    lines = [f"{name}: cloned {sum(1 for s, _ in done.values() if s == name)} messages"
             for name in ACCOUNTS]
    albums: dict[int, set] = {}
    for s in sources:
        if s.grouped_id:
            albums.setdefault(s.grouped_id, set()).add(
                clone[s.id].grouped_id if s.id in clone else None)
    intact = sum(1 for groups in albums.values() if len(groups) == 1 and None not in groups)
    lines.append(f"albums: {intact} of {len(albums)} sent as one album")
    topics = [t["title"] for t in world.topics("@demo_target") if t["topic_id"] != 1]
    lines.append(f"topics: {len(topics)} created in the target ({', '.join(topics)})")
    titles = {t["topic_id"]: t["title"] for t in world.topics("@demo_source")}
    target_titles = {t["topic_id"]: t["title"] for t in world.topics("@demo_target")}
    placed = sum(1 for s in sources if s.id in clone
                 and target_titles.get(source_topic_of(clone[s.id])) == titles[source_topic_of(s)])
    lines.append(f"messages in the right topic: {placed} of {len(sources)}")
    replies = [s for s in sources if source_reply_id(s)]
    mapped = sum(1 for s in replies if s.id in clone and source_reply_id(s) in clone
                 and source_reply_id(clone[s.id]) == clone[source_reply_id(s)].id)
    lines.append(f"replies pointing to the cloned message: {mapped} of {len(replies)}")
    lines += [f"source messages: {len(sources)}, target messages: {len(targets)}",
              f"duplicates: {duplicates}", f"lost: {lost}"]
    return lines, duplicates, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rehearse two accounts cloning one chat at once on the simulated "
                    "Telegram, then print what the target holds.",
        epilog="exit codes: 0 every message exactly once, 1 a duplicate, a lost message or "
               "a failed cloner, 2 bad usage, 130 Ctrl+C", parents=[migrate_db.cli_options()])
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="an empty or new folder for the world and the account folders, "
                             "kept afterwards (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    migrate_db.setup_logging(args.verbose, args.quiet)
    workdir = args.workdir
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    else:
        try:
            if workdir.exists() and any(workdir.iterdir()):
                parser.error(f"--workdir {workdir} is not empty; give a new or empty folder")
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:      # a file, or a folder that cannot be read or made
            parser.error(f"--workdir {workdir}: {exc.strerror}; give a new or empty folder")
    try:
        world, sessions = prepare(workdir)
        with world:
            print(f"demo world {world.path}: source @demo_source "
                  f"({len(_content(world, '@demo_source'))} messages, 2 topics, 2 albums), "
                  f"empty target @demo_target")
            print(f"running {CLONER.name} --once for {' and '.join(ACCOUNTS)} at the same "
                  f"time (logs: {sessions}/<account>/clone.log)")
            failures = run_cloners(sessions)
            lines, duplicates, lost = summarise(world, sessions / "shared" / "checkpoint.db")
        print("\n".join(["summary, read from the simulated target:"]
                        + [f"  {line}" for line in lines]))
        for failure in failures:
            print(f"error: {failure}", file=sys.stderr)
        if args.workdir is not None:
            print(f"look closer: python telegram_sim.py show {workdir / 'world.db'} "
                  "@demo_target")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return EXIT_OK if not failures and duplicates == 0 and lost == 0 else EXIT_FAILURE


if __name__ == "__main__":
    migrate_db.run_main(main)
