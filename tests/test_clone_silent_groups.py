"""SILENT and basic groups on the simulated Telegram: backfilled copies do not notify unless
SILENT=false (each kind of send: text, photo, album, forward), followed ones do by default;
a basic group is refused as a shared source with one line saying why, and cloned by one
account in its own ids."""
from __future__ import annotations

import signal
from pathlib import Path

from helpers import wait_until
from telethon.tl import types
from test_clone_streaming import (
    RUN_TIMEOUT,
    SINGLE,
    checkpoint_rows,
    content,
    run,
    start,
    tiny_png,
)

from telegram_sim import World


def sent_silently(world: World, chat: str) -> list[tuple[str, bool]]:
    """(text, silent) of every message in the chat, in order."""
    return [(m.message, bool(m.silent)) for m in content(world, chat)]


def test_backfilled_copies_are_silent_by_default_and_notify_with_silent_false(
        tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)
    world.add_account("session1")
    source = world.create_channel("Src", username="quiet_source", owner="session1")
    targets = ("quiet_copy", "quiet_forward", "loud_copy", "loud_forward")
    for name in targets:
        world.create_channel(name, username=name, owner="session1")
    first = world.post(source, "text")
    world.post(source, "photo", file=tiny_png(1))
    world.post_album(source, [tiny_png(2), tiny_png(3)], captions=["a", "b"])
    world.post(source, "reply", reply_to=first)
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@quiet_source"})
    expected = ["text", "photo", "a", "b", "reply"]
    for name in targets:
        mode = name.split("_")[1]
        silent = "--silent" if name.startswith("quiet") else "--no-silent"
        result = run(folder, "--once", "--target", f"@{name}", "--copy-mode", mode, silent,
                     script=SINGLE)
        assert result.returncode == 0, result.stderr
        copies = sent_silently(world, f"@{name}")
        assert [text for text, _ in copies] == expected, name
        assert all(flag == name.startswith("quiet") for _, flag in copies), (name, copies)
    forwarded = content(world, "@quiet_forward")
    assert all(m.fwd_from is not None for m in forwarded)     # ForwardMessages was used
    assert all(m.fwd_from is None for m in content(world, "@quiet_copy"))


def test_without_silent_the_backfill_is_silent_and_following_notifies(
        tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)
    world.add_account("session1")
    source = world.create_channel("Src", username="plain_source", owner="session1")
    world.create_channel("Dst", username="plain_target", owner="session1")
    world.post(source, "one")
    world.post_album(source, [tiny_png(4), tiny_png(5)], captions=["x", "y"])
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@plain_source",
                                                  "TARGET_CHAT": "@plain_target",
                                                  "COPY_MODE": "copy",
                                                  "RECONCILE_SECONDS": "0.5"})
    process = start(folder, script=SINGLE)
    try:
        log = folder / "clone.log"
        wait_until(lambda: log.is_file() and "following new messages" in log.read_text(),
                   what="the end of the backfill")
        world.post(source, "live")
        wait_until(lambda: len(content(world, "@plain_target")) == 4, what="the live copy")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=RUN_TIMEOUT)
    assert "Traceback" not in err
    assert sent_silently(world, "@plain_target") == \
        [("one", True), ("x", True), ("y", True), ("live", False)]


def basic_group_world(tmp_path: Path) -> tuple[World, int]:
    """A basic group (owner + session1 + session2) whose messages session1 sees under ids of
    its own (it got an earlier group's messages first), and a target channel."""
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)
    for account in ("owner", "session1", "session2"):
        world.add_account(account)
    earlier = world.create_channel("Earlier", kind="group", owner="owner",
                                   members=["session1"])
    for n in range(3):
        world.post(earlier, f"earlier {n}")
    group = world.create_channel("Family", kind="group", owner="owner",
                                 members=["session1", "session2"])
    world.create_channel("Dst", username="family_target", owner="session1",
                         members=["session2"], admins=["session2"])
    first = world.post(group, "hello")
    world.post(group, "photo", file=tiny_png(6))
    world.post_album(group, [tiny_png(7), tiny_png(8)], captions=["p", "q"])
    world.post(group, "answer", reply_to=first, by="session2")
    return world, group


def test_shared_cloner_refuses_a_basic_group_source_in_one_line(tmp_path: Path) -> None:
    world, group = basic_group_world(tmp_path)
    folder = world.make_session_folder(
        tmp_path / "sessions" / "session1", "session1",
        extra_env={"SOURCE_CHAT": str(world.peer_id(group)),
                   "TARGET_CHAT": "@family_target", "COPY_MODE": "copy"})
    result = run(folder, "--once")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"SOURCE_CHAT={world.peer_id(group)} is a basic group" in lines[0]
    assert "ids differ from account to account" in lines[0]
    assert content(world, "@family_target") == []


def test_one_account_clones_a_basic_group(tmp_path: Path) -> None:
    world, group = basic_group_world(tmp_path)
    folder = world.make_session_folder(
        tmp_path / "sessions" / "session1", "session1",
        extra_env={"SOURCE_CHAT": str(world.peer_id(group)),
                   "TARGET_CHAT": "@family_target", "COPY_MODE": "copy"})
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    mine = [m for m in world.messages(group, viewer="session1")
            if isinstance(m, types.Message)]
    copies = content(world, "@family_target")
    assert [m.message for m in copies] == ["hello", "photo", "p", "q", "answer"]
    for original, copy in zip(mine, copies, strict=True):
        assert world.media_bytes(copy) == world.media_bytes(original)
    assert copies[-1].reply_to.reply_to_msg_id == copies[0].id     # the reply kept its link
    assert copies[2].grouped_id and copies[2].grouped_id == copies[3].grouped_id
    # the checkpoint holds session1's own ids of the group's messages, not the group's
    rows = checkpoint_rows(tmp_path / "sessions" / "session1" / "checkpoint.db")
    done = sorted(msg_id for msg_id, row in rows.items() if row[0] == "done")
    assert [m.id for m in mine] == done == [6, 7, 8, 9, 10]
    again = run(folder, "--once", script=SINGLE)                   # nothing sent twice
    assert again.returncode == 0, again.stderr
    assert len(content(world, "@family_target")) == 5


def test_shared_cloner_refuses_a_basic_group_target_in_one_line(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)
    world.add_account("session1")
    source = world.create_channel("Src", username="into_source", owner="session1")
    room = world.create_channel("Room", kind="group", owner="session1")
    world.post(source, "hello")
    folder = world.make_session_folder(
        tmp_path / "sessions" / "session1", "session1",
        extra_env={"SOURCE_CHAT": "@into_source", "TARGET_CHAT": str(world.peer_id(room)),
                   "COPY_MODE": "copy"})
    result = run(folder, "--once")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"TARGET_CHAT={world.peer_id(room)} is a basic group" in lines[0]
    assert not [m for m in world.messages(room) if isinstance(m, types.Message)]


def test_one_account_clones_into_a_basic_group(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)
    world.add_account("session1")
    source = world.create_channel("Src", username="into_source", owner="session1")
    room = world.create_channel("Room", kind="group", owner="session1")
    first = world.post(source, "hello")
    world.post_album(source, [tiny_png(9), tiny_png(10)], captions=["p", "q"])
    world.post(source, "answer", reply_to=first)
    folder = world.make_session_folder(
        tmp_path / "sessions" / "session1", "session1",
        extra_env={"SOURCE_CHAT": "@into_source", "TARGET_CHAT": str(world.peer_id(room)),
                   "COPY_MODE": "copy"})
    for _ in range(2):                                             # the second sends nothing
        result = run(folder, "--once", script=SINGLE)
        assert result.returncode == 0, result.stderr
    copies = [m for m in world.messages(room, viewer="session1")
              if isinstance(m, types.Message)]
    assert [(m.message, bool(m.silent)) for m in copies] == \
        [("hello", True), ("p", True), ("q", True), ("answer", True)]
    assert copies[-1].reply_to.reply_to_msg_id == copies[0].id
    rows = checkpoint_rows(tmp_path / "sessions" / "session1" / "checkpoint.db")
    assert sorted(row[2] for row in rows.values() if row[0] == "done") == \
        [m.id for m in copies]                                     # session1's own ids
