"""The cloner when Telegram says no (the REFUSALS policy), on the simulated Telegram, the
target checked message by message; --audit, --retry-failed, checkpoint.txt, COPY_MODE=auto."""
from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
from pathlib import Path

from helpers import wait_until
from test_clone_streaming import (
    RUN_TIMEOUT,
    SINGLE,
    add_env,
    checkpoint_rows,
    content,
    run,
    start,
    tiny_png,
    two_account_world,
)

from clone_streaming import REFUSALS, source_reply_id, source_topic_of
from telegram_sim import World, build_demo

DB = Path("sessions") / "shared" / "checkpoint.db"


def folders_for(world: World, tmp_path: Path, name: str, **env: str) -> list[Path]:
    return [world.make_session_folder(
        tmp_path / "sessions" / account, account, extra_env={
            "SOURCE_CHAT": f"@{name}_source", "TARGET_CHAT": f"@{name}_target", **env})
        for account in ("session1", "session2")]


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_the_policy_table_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in REFUSALS:
        assert f"`{name}`" in readme, name


def test_ordered_two_hour_flood_wait_hands_the_turn_to_the_other_account(
        tmp_path: Path) -> None:
    world, source = two_account_world(tmp_path, "wait")
    for n in range(40):
        world.post(source, f"p {n}")
    folders = folders_for(world, tmp_path, "wait", COPY_MODE="copy", ORDERED="true")
    world.inject_fault("FLOOD_WAIT", seconds=7200, account="session1", times=1,
                       request="SendMessageRequest", after=3)
    first = start(folders[0], "--once")
    wait_until(lambda: world.faults()[0]["fired"], what="session1's two-hour wait")
    second = start(folders[1], "--once")
    _, err = second.communicate(timeout=RUN_TIMEOUT)
    assert second.returncode == 0, err
    assert first.poll() is None                     # still sleeping through its wait
    first.send_signal(signal.SIGINT)
    _, err1 = first.communicate(timeout=30)
    assert "Traceback" not in err1 and "sleeping until" in err1
    assert [m.message for m in content(world, "@wait_target")] == [f"p {n}" for n in range(40)]
    rows = checkpoint_rows(tmp_path / DB)
    done = [r for r in rows.values() if r[0] == "done"]
    assert len(done) == 40
    assert sum(1 for r in done if r[1] == "session1") == 3      # before its wait
    assert not [r for r in rows.values() if r[0] == "processing"]  # nothing held


def test_peer_flood_stops_the_account_with_exit_5_and_fails_nothing(tmp_path: Path) -> None:
    world, source = two_account_world(tmp_path, "peer")
    for n in range(20):
        world.post(source, f"p {n}")
    folders = folders_for(world, tmp_path, "peer", COPY_MODE="copy")
    world.inject_fault("PEER_FLOOD", account="session1", request="SendMessageRequest",
                       after=2)
    first = run(folders[0], "--once")
    assert first.returncode == 5, first.stderr
    lines = errors_of(first.stderr)
    assert len(lines) == 1 and "PEER_FLOOD" in lines[0] and "try again after" in lines[0]
    rows = checkpoint_rows(tmp_path / DB)
    assert not [r for r in rows.values() if r[0] in ("failed", "processing")]
    second = run(folders[1], "--once")
    assert second.returncode == 0, second.stderr
    assert [m.message for m in content(world, "@peer_target")] == [f"p {n}" for n in range(20)]


def test_target_without_the_right_to_post_is_one_line_and_exit_2(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    world.add_account("owner")
    source = world.create_channel("Src", username="mute_source", owner="session1")
    world.create_channel("Dst", username="mute_target", owner="owner", members=["session1"])
    world.post(source, "hello")
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@mute_source",
                                                  "TARGET_CHAT": "@mute_target"})
    result = run(folder, "--once")
    assert result.returncode == 2
    lines = errors_of(result.stderr)
    assert len(lines) == 1 and "CHAT_WRITE_FORBIDDEN" in lines[0]
    assert "TARGET_CHAT=mute_target" in lines[0] and "right to post" in lines[0]
    assert "Traceback" not in result.stderr
    rows = checkpoint_rows(tmp_path / DB)
    assert not [r for r in rows.values() if r[0] in ("failed", "processing")]


def protected_midway(tmp_path: Path, **env: str) -> tuple[World, int, subprocess.Popen]:
    """A source that turns protected while the cloner (forwarding) sleeps through a short
    FloodWait on its first forward."""
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    source = world.create_channel("Src", username="turn_source", owner="session1")
    world.create_channel("Dst", username="turn_target", owner="session1")
    world.post(source, "text")
    world.post(source, "photo", file=tiny_png(3))
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@turn_source",
                                                  "TARGET_CHAT": "@turn_target",
                                                  "COPY_MODE": "forward", **env})
    world.inject_fault("FLOOD_WAIT", seconds=2, request="ForwardMessagesRequest", times=1)
    process = start(folder, "--once", script=SINGLE)
    wait_until(lambda: world.faults()[0]["fired"], what="the first forward")
    world.set_noforwards(source)
    return world, source, process


def test_source_turned_protected_fails_with_the_reason_and_goes_on(tmp_path: Path) -> None:
    world, _, process = protected_midway(tmp_path)
    _, err = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, err
    assert content(world, "@turn_target") == []
    rows = checkpoint_rows(tmp_path / "sessions" / "session1" / "checkpoint.db")
    failed = [r for r in rows.values() if r[0] == "failed"]
    assert len(failed) == 2 and all(r[3].startswith("CHAT_FORWARDS_RESTRICTED") for r in failed)


def test_source_turned_protected_is_reuploaded_when_allowed(tmp_path: Path) -> None:
    world, source, process = protected_midway(tmp_path, ALLOW_REUPLOAD="true")
    _, err = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, err
    target, original = content(world, "@turn_target"), content(world, source)
    assert [m.message for m in target] == ["text", "photo"]
    assert all(m.fwd_from is None for m in target)             # copies, not forwards
    assert world.media_bytes(target[1]) == world.media_bytes(original[1])


def test_expired_file_reference_is_fetched_again(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    source = world.create_channel("Src", username="ref_source", owner="session1")
    world.create_channel("Dst", username="ref_target", owner="session1")
    world.post(source, "photo", file=tiny_png(5))
    world.inject_fault("FILE_REFERENCE_EXPIRED", request="SendMediaRequest", times=1)
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@ref_source",
                                                  "TARGET_CHAT": "@ref_target",
                                                  "COPY_MODE": "copy"})
    world.reset_counters()
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    target = content(world, "@ref_target")
    assert [m.message for m in target] == ["photo"]
    assert world.media_bytes(target[0]) == world.media_bytes(content(world, source)[0])
    assert world.counters("session1")["GetMessagesRequest"] >= 1 or \
        world.counters("session1").get("GetChannelMessagesRequest", 0) >= 1


def cloned_demo(tmp_path: Path, **env: str) -> tuple[World, Path]:
    """The demo world (telegram_sim.build_demo) cloned once by session1 from @demo_source
    into @demo_target with `env` added to its .env; the world and the sessions folder."""
    world = World.create(tmp_path / "world.db")
    sessions = tmp_path / "sessions"
    build_demo(world, sessions)
    add_env(sessions / "session1", SOURCE_CHAT="@demo_source", TARGET_CHAT="@demo_target",
            **env)
    result = run(sessions / "session1", "--once")
    assert result.returncode == 0, result.stderr
    return world, sessions


def test_audit_names_cloned_failed_skipped_and_missing(tmp_path: Path) -> None:
    world, sessions = cloned_demo(tmp_path, COPY_MODE="copy", MAX_MEDIA_MB="0.00001")
    audit = run(sessions / "session1", "--audit")
    assert audit.returncode == 0, audit.stderr
    assert "missing  0" in audit.stdout
    assert "over MAX_MEDIA_MB" in audit.stdout and "service message" in audit.stdout
    world.post("@demo_source", "posted after the clone")
    audit = run(sessions / "session1", "--audit")
    assert audit.returncode == 1
    newest = content(world, "@demo_source")[-1].id
    assert "missing  1" in audit.stdout and str(newest) in audit.stdout.splitlines()[-1]
    (tmp_path / "audit.txt").write_text(audit.stdout)


def test_retry_failed_clones_the_failed_messages_on_the_next_run(tmp_path: Path) -> None:
    world, sessions = cloned_demo(tmp_path, COPY_MODE="copy", MAX_MEDIA_MB="0.00001")
    status = run(sessions / "session1", "--status")
    assert "why not cloned (by reason)" in status.stdout and "over MAX_MEDIA_MB" in status.stdout
    retry = run(sessions / "session1", "--retry-failed")
    assert retry.returncode == 0 and "7 failed messages" in retry.stdout
    result = run(sessions / "session1", "--once", "--max-media-mb", "10")
    assert result.returncode == 0, result.stderr
    assert [(m.message, type(m.media)) for m in content(world, "@demo_target")] != []
    rows = checkpoint_rows(sessions / "shared" / "checkpoint.db")
    assert not [r for r in rows.values() if r[0] == "failed"]
    assert len(content(world, "@demo_target")) == len(content(world, "@demo_source"))


def test_checkpoint_txt_of_the_earlier_single_account_cloner_is_honoured(
        tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    source = world.create_channel("Src", username="txt_source", owner="session1")
    world.create_channel("Dst", username="txt_target", owner="session1")
    ids = [world.post(source, f"p {n}") for n in range(8)]
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@txt_source",
                                                  "TARGET_CHAT": "@txt_target"})
    (folder / "checkpoint.txt").write_text(f"{ids[4]}\n")
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    assert [m.message for m in content(world, "@txt_target")] == ["p 5", "p 6", "p 7"]
    audit = run(folder, "--audit", script=SINGLE)
    assert audit.returncode == 0 and "missing  0" in audit.stdout
    again = run(folder, "--once", script=SINGLE)                  # honoured once only
    assert "cloned 0" in again.stderr and len(content(world, "@txt_target")) == 3


def test_auto_mode_copies_replies_and_forwards_the_rest(tmp_path: Path) -> None:
    world, sessions = cloned_demo(tmp_path, COPY_MODE="auto")
    rows = checkpoint_rows(sessions / "shared" / "checkpoint.db")
    target = {m.id: m for m in content(world, "@demo_target")}
    for s in content(world, "@demo_source"):
        clone = target[rows[s.id][2]]
        if source_reply_id(s):
            assert clone.fwd_from is None
            assert source_reply_id(clone) == rows[source_reply_id(s)][2]
        else:
            assert clone.fwd_from is not None


def test_auto_mode_places_topic_posts_and_copies_replies_inside_topics(
        tmp_path: Path) -> None:
    """Forum to forum in auto mode: posts of a topic are forwarded into the same topic of
    the target (ForwardMessages' top_msg_id places them), a reply inside a topic is copied
    into that topic, linked to the copy of its message; General stays General."""
    world = World.create(tmp_path / "world.db")
    sessions = tmp_path / "sessions"
    build_demo(world, sessions)
    add_env(sessions / "session1", SOURCE_CHAT="@demo_source", TARGET_CHAT="@demo_target",
            COPY_MODE="auto")
    result = run(sessions / "session1", "--once")
    assert result.returncode == 0, result.stderr
    rows = checkpoint_rows(sessions / "shared" / "checkpoint.db")
    target = {m.id: m for m in content(world, "@demo_target")}
    titles = {t["topic_id"]: t["title"] for t in world.topics("@demo_source")}
    topics = {t["title"]: t["topic_id"] for t in world.topics("@demo_target")}
    in_topics = replies_in_topics = 0
    for s in content(world, "@demo_source"):
        clone = target[rows[s.id][2]]
        assert source_topic_of(clone) == topics[titles[source_topic_of(s)]]
        in_topics += titles[source_topic_of(s)] != "General"
        if source_reply_id(s):
            assert clone.fwd_from is None
            assert source_reply_id(clone) == rows[source_reply_id(s)][2]
            replies_in_topics += titles[source_topic_of(s)] != "General"
        else:
            assert clone.fwd_from is not None
    assert in_topics >= 4 and replies_in_topics == 1


def test_slow_mode_target_gets_one_message_at_a_time(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    world.add_account("owner")
    source = world.create_channel("Src", username="slow_source", owner="session1")
    world.create_channel("Dst", username="slow_target", kind="megagroup", owner="owner",
                         members=["session1"], slowmode_seconds=1)
    for n in range(3):
        world.post(source, f"p {n}")
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@slow_source",
                                                  "TARGET_CHAT": "@slow_target",
                                                  "COPY_MODE": "forward"})
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    assert [m.message for m in content(world, "@slow_target")] == ["p 0", "p 1", "p 2"]
    conn = sqlite3.connect(folder / "checkpoint.db")
    assert conn.execute("SELECT COUNT(*) FROM messages WHERE status = 'failed'"
                        ).fetchone()[0] == 0
    conn.close()


def member_target_world(tmp_path: Path, name: str, *, kind: str = "megagroup",
                        **chat: object) -> tuple[World, int, Path]:
    """session1 reads @NAME_source (its own) and is a plain member of @NAME_target (owned
    by another account): Telegram's rights for members apply."""
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    world.add_account("owner")
    source = world.create_channel("Src", username=f"{name}_source", owner="session1",
                                  kind="forum" if kind == "forum" else "channel")
    world.create_channel("Dst", username=f"{name}_target", kind=kind, owner="owner",
                         members=["session1"], **chat)
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": f"@{name}_source",
                                                  "TARGET_CHAT": f"@{name}_target"})
    return world, source, folder


def test_missing_media_right_fails_those_messages_by_name_and_the_clone_goes_on(
        tmp_path: Path) -> None:
    world, source, folder = member_target_world(tmp_path, "rights",
                                                default_banned=["send_media"])
    world.post(source, "text before")
    world.post(source, "a photo", file=tiny_png(1))
    world.post_album(source, [tiny_png(2), tiny_png(3)], captions=["album", ""])
    world.post(source, "text after")
    for mode in ("forward", "copy"):
        result = run(folder, "--once", "--copy-mode", mode, script=SINGLE)
        assert result.returncode == 0, result.stderr
        if mode == "forward":
            rows = checkpoint_rows(folder / "checkpoint.db")
            assert [m.message for m in content(world, "@rights_target")] == \
                ["text before", "text after"]
            failed = {i: r[3] for i, r in rows.items() if r[0] == "failed"}
            assert len(failed) == 3 and set(failed.values()) == {"CHAT_SEND_MEDIA_FORBIDDEN"}
            status = run(folder, "--status", script=SINGLE)
            assert re.search(r"failed +CHAT_SEND_MEDIA_FORBIDDEN +3", status.stdout)
            assert "3 failed messages" in run(folder, "--retry-failed", script=SINGLE).stdout
    # copy mode after --retry-failed: the same refusal, the same outcome, nothing sent twice
    assert [m.message for m in content(world, "@rights_target")] == ["text before", "text after"]
    rows = checkpoint_rows(folder / "checkpoint.db")
    assert sum(1 for r in rows.values() if r[3] == "CHAT_SEND_MEDIA_FORBIDDEN") == 3


def test_topic_creation_without_the_right_is_one_line_and_exit_2(tmp_path: Path) -> None:
    world, source, folder = member_target_world(tmp_path, "topics", kind="forum",
                                                default_banned=["manage_topics"])
    topic = world.create_topic(source, "News", by="session1")
    world.post(source, "in a topic", topic=topic)
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 2
    lines = errors_of(result.stderr)
    assert len(lines) == 1 and "CHAT_ADMIN_REQUIRED" in lines[0]
    assert "manage topics" in lines[0] and "topics_target" in lines[0]
    rows = checkpoint_rows(folder / "checkpoint.db")
    assert not [r for r in rows.values() if r[0] in ("failed", "processing")]
    assert content(world, "@topics_target") == []


def test_restricted_account_stops_with_exit_5_and_fails_nothing(tmp_path: Path) -> None:
    world, source, folder = member_target_world(tmp_path, "banned")
    world.post(source, "hello")
    world.set_account("session1", restricted=True)
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 5
    lines = errors_of(result.stderr)
    assert len(lines) == 1 and "USER_BANNED_IN_CHANNEL" in lines[0]
    rows = checkpoint_rows(folder / "checkpoint.db")
    assert not [r for r in rows.values() if r[0] in ("failed", "processing")]


def test_slow_mode_member_forwards_one_message_per_request(tmp_path: Path) -> None:
    world, source, folder = member_target_world(tmp_path, "slowly", slowmode_seconds=1)
    for n in range(3):
        world.post(source, f"p {n}")
    world.reset_counters()
    result = run(folder, "--once", "--copy-mode", "forward", script=SINGLE)
    assert result.returncode == 0, result.stderr
    assert [m.message for m in content(world, "@slowly_target")] == ["p 0", "p 1", "p 2"]
    rows = checkpoint_rows(folder / "checkpoint.db")
    assert [r[0] for r in rows.values() if r[0] != "skipped"] == ["done"] * 3
    # the batch of three was refused (SLOWMODE_MULTI_MSGS_DISABLED), then one per request
    # (each SLOWMODE_WAIT under a minute is slept inside Telethon)
    assert world.counters("session1")["ForwardMessagesRequest"] >= 4


def test_file_reference_expired_after_a_flood_wait_is_fetched_again(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    world.configure(file_reference_lifetime=1)
    source = world.create_channel("Src", username="old_source", owner="session1")
    world.create_channel("Dst", username="old_target", owner="session1")
    world.post(source, "photo", file=tiny_png(9))
    # Telethon sleeps through the short wait, then sends the same media request again:
    # its file reference is two seconds old by then
    world.inject_fault("FLOOD_WAIT", seconds=2, request="SendMediaRequest", times=1)
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@old_source",
                                                  "TARGET_CHAT": "@old_target",
                                                  "COPY_MODE": "copy"})
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    target = content(world, "@old_target")
    assert [m.message for m in target] == ["photo"]
    assert world.media_bytes(target[0]) == world.media_bytes(content(world, source)[0])
    assert "fetching them again" in (folder / "clone.log").read_text()
