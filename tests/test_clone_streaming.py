"""clone_streaming(.py/_shared.py) as real processes over the simulated Telegram."""
from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import clean_env, python, wait_until
from telethon import types

from clone_streaming import source_topic_of
from telegram_sim import World, build_demo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from clone_requests import tiny_png  # noqa: E402

SINGLE = ROOT / "clone_streaming.py"
SHARED = ROOT / "clone_streaming_shared.py"
RUN_TIMEOUT = 90


def cloner_env(tmp: Path | None) -> dict[str, str]:
    """The environment of a cloner run by a test: no chat settings inherited, its
    temporary files under `tmp` when given."""
    return clean_env("SOURCE_CHAT", "TARGET_CHAT", "TELEGRAM_SIMULATOR",
                     **({"TMPDIR": str(tmp)} if tmp is not None else {}))


def start(folder: Path, *args: str, script: Path = SHARED, tmp: Path | None = None
          ) -> subprocess.Popen:
    return helpers.start(python(script, *args), cwd=folder, env=cloner_env(tmp))


def start_second_when_first_waits(world: World, folders: list[Path], *args: str
                                  ) -> list[subprocess.Popen]:
    """Start folders[0]'s cloner, and folders[1]'s once the first has hit the world's first
    fault (so it holds a claim), making both accounts take part whatever the timing."""
    first = start(folders[0], *args)
    wait_until(lambda: world.faults()[0]["fired"] or first.poll() is not None,
               what="the first account's fault", timeout=RUN_TIMEOUT)
    return [first, start(folders[1], *args)]


def run(folder: Path, *args: str, script: Path = SHARED, tmp: Path | None = None
        ) -> subprocess.CompletedProcess:
    return helpers.run(python(script, *args), cwd=folder, env=cloner_env(tmp),
                       timeout=RUN_TIMEOUT)


def add_env(folder: Path, **values: str) -> None:
    with open(folder / ".env", "a", encoding="utf-8") as env:
        env.writelines(f"{key}={value}\n" for key, value in values.items())


def content(world: World, chat: str) -> list:
    return [m for m in world.messages(chat) if isinstance(m, types.Message)]


def checkpoint_rows(path: Path) -> dict[int, tuple]:
    conn = sqlite3.connect(path)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT msg_id, status, session, target_msg_id, error FROM messages")}
    finally:
        conn.close()


@pytest.fixture
def demo(tmp_path: Path):
    """The rehearsal's world: two accounts, a source forum with everything, a target forum."""
    world = World.create(tmp_path / "world.db")
    sessions = tmp_path / "sessions"
    build_demo(world, sessions)
    for name in ("session1", "session2"):
        add_env(sessions / name, SOURCE_CHAT="@demo_source", TARGET_CHAT="@demo_target",
                COPY_MODE="copy")
    yield world, sessions
    world.close()


def test_copy_recreates_text_media_albums_replies_and_topics(demo) -> None:
    world, sessions = demo
    result = run(sessions / "session1", "--once")
    assert result.returncode == 0, result.stderr
    source, target = content(world, "@demo_source"), content(world, "@demo_target")
    assert [(m.message, m.entities, type(m.media)) for m in target] == \
        [(m.message, m.entities, type(m.media)) for m in source]
    assert all(m.fwd_from is None for m in target)          # copies, no forward header
    rows = checkpoint_rows(sessions / "shared" / "checkpoint.db")
    clone = {s.id: t for s in source for t in target if t.id == rows[s.id][2]}
    assert len(clone) == len(source)
    for s in source:                                        # albums stay albums
        if s.grouped_id:
            partners = [o.id for o in source if o.grouped_id == s.grouped_id]
            assert {clone[p].grouped_id for p in partners} == {clone[s.id].grouped_id}
            assert clone[s.id].grouped_id is not None
    reply = next(s for s in source if s.message == "A reply to the photo")
    assert clone[reply.id].reply_to.reply_to_msg_id == clone[reply.reply_to.reply_to_msg_id].id
    topics = {t["title"]: t["topic_id"] for t in world.topics("@demo_target")}
    assert set(topics) == {"General", "News", "Talk"}
    source_topics = {t["topic_id"]: t["title"] for t in world.topics("@demo_source")}
    for s in source:
        assert source_topic_of(clone[s.id]) == topics[source_topics[source_topic_of(s)]]
    inner = next(s for s in source if s.message == "A reply inside News")
    assert clone[inner.id].reply_to.reply_to_msg_id == \
        clone[inner.reply_to.reply_to_msg_id].id
    topic_map = json.loads((sessions / "session1" / "topic_map.json").read_text())
    assert {source_topics[int(s)]: t for s, t in topic_map["map"].items()} == \
        {"News": topics["News"], "Talk": topics["Talk"]}
    assert "summary: cloned 12" in result.stderr
    assert (sessions / "session1" / "clone.log").read_text().count("summary") == 1


def test_second_account_and_restart_find_nothing_to_do(demo) -> None:
    world, sessions = demo
    assert run(sessions / "session1", "--once").returncode == 0
    before = len(world.messages("@demo_target"))
    world.reset_counters()
    for name in ("session2", "session1"):
        result = run(sessions / name, "--once")
        assert result.returncode == 0, result.stderr
        assert "cloned 0" in result.stderr
        assert world.counters(name).get("GetHistoryRequest", 0) <= 2
    assert len(world.messages("@demo_target")) == before
    assert "CreateForumTopicRequest" not in world.counters()


def test_forward_mode_batches_and_resumes_after_the_checkpoint(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)          # 240 sends at once: about batching
    world.add_account("session1")
    source = world.create_channel("Src", username="fwd_source", owner="session1")
    world.create_channel("Dst", username="fwd_target", owner="session1")
    for n in range(240):
        world.post(source, f"post {n}")
    world.post_album(source, [tiny_png(1), tiny_png(2)], captions=["a", "b"])
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": str(world.peer_id(source)),
                                                  "TARGET_CHAT": "https://t.me/fwd_target",
                                                  "COPY_MODE": "forward"})
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    target = content(world, "@fwd_target")
    assert [m.message for m in target] == [m.message for m in content(world, source)]
    assert all(m.fwd_from is not None for m in target)
    assert target[-1].grouped_id and target[-1].grouped_id == target[-2].grouped_id
    assert world.counters("session1")["ForwardMessagesRequest"] <= 4
    world.post(source, "after the restart")
    world.reset_counters()
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    assert [m.message for m in content(world, "@fwd_target")][-1] == "after the restart"
    assert len(content(world, "@fwd_target")) == 243
    assert world.counters("session1")["GetHistoryRequest"] <= 2   # not the whole history
    assert (folder / "checkpoint.db").is_file()


@pytest.mark.parametrize("mode", ["original", "error"])
def test_crash_between_send_and_done_sends_nothing_twice(tmp_path: Path, mode: str) -> None:
    world = World.create(tmp_path / "world.db", random_id_mode=mode)
    world.add_account("session1")
    source = world.create_channel("Src", username="crash_source", owner="session1")
    world.create_channel("Dst", username="crash_target", owner="session1")
    for n in range(5):
        world.post(source, f"post {n}")
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@crash_source",
                                                  "TARGET_CHAT": "@crash_target",
                                                  "COPY_MODE": "copy"})
    assert run(folder, "--once").returncode == 0
    db = tmp_path / "sessions" / "shared" / "checkpoint.db"
    sent = checkpoint_rows(db)
    # the state a SIGKILL right after the send leaves: claimed, random_id stored, not done
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE messages SET status = 'processing', target_msg_id = NULL, "
                     "processed_at = NULL WHERE msg_id = 5")
    conn.close()
    result = run(folder, "--once")
    assert result.returncode == 0, result.stderr
    assert [m.message for m in content(world, "@crash_target")] == \
        [f"post {n}" for n in range(5)]
    after = checkpoint_rows(db)
    assert after[5][:3] == sent[5][:3]                      # done, the same target id
    # "original": Telegram answers with the first message; "error": RANDOM_ID_DUPLICATE,
    # and the copy is found among the target's recent messages
    assert "cloned 1" in result.stderr
    if mode == "error":
        assert "already sent before a restart 1" in result.stderr


def noforwards_world(tmp_path: Path, **env: str) -> tuple[World, Path]:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    source = world.create_channel("Protected", username="locked_source", owner="session1",
                                  noforwards=True)
    world.create_channel("Dst", username="locked_target", owner="session1")
    world.post(source, "text")
    world.post(source, "photo", file=tiny_png(7))
    world.post(source, "doc", file=b"document bytes\n", file_name="d.txt")
    world.post_album(source, [tiny_png(8), tiny_png(9)], captions=["one", "two"])
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@locked_source",
                                                  "TARGET_CHAT": "@locked_target", **env})
    return world, folder


def test_noforwards_source_is_not_copied_without_allow_reupload(tmp_path: Path) -> None:
    world, folder = noforwards_world(tmp_path)
    result = run(folder, "--once")
    assert result.returncode == 0, result.stderr
    assert content(world, "@locked_target") == []
    rows = checkpoint_rows(tmp_path / "sessions" / "shared" / "checkpoint.db")
    failed = [r for r in rows.values() if r[0] == "failed"]
    assert len(failed) == 5 and all("ALLOW_REUPLOAD=true" in r[3] for r in failed)
    status = run(folder, "--status")
    assert status.returncode == 0 and "ALLOW_REUPLOAD" in status.stdout
    assert "failed 5" in result.stderr


def test_noforwards_source_is_reuploaded_when_allowed(tmp_path: Path) -> None:
    world, folder = noforwards_world(tmp_path, ALLOW_REUPLOAD="true")
    temp = tmp_path / "tmp"
    tag = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    leftover = temp / f"clone-session1-{tag}-killed"          # from a process killed earlier
    leftover.mkdir(parents=True)
    (leftover / "half-downloaded.jpg").write_bytes(b"x")
    result = run(folder, "--once", tmp=temp)
    assert result.returncode == 0, result.stderr
    source, target = content(world, "@locked_source"), content(world, "@locked_target")
    assert [m.message for m in target] == [m.message for m in source]
    for s, t in zip(source, target, strict=True):
        assert world.media_bytes(t) == world.media_bytes(s)
        if s.media is not None:                              # a new upload, not a reference
            old = getattr(s.media, "photo", None) or s.media.document
            new = getattr(t.media, "photo", None) or t.media.document
            assert new.id != old.id
    assert target[-1].grouped_id == target[-2].grouped_id is not None
    assert list(temp.iterdir()) == []               # temporary media and leftovers gone


def two_account_world(tmp_path: Path, name: str) -> tuple[World, int]:
    """A world where session1 and session2 both read @NAME_source and may post in
    @NAME_target; returns the world and the source chat."""
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)          # the tests inject their own FloodWaits
    for account in ("session1", "session2"):
        world.add_account(account)
    source = world.create_channel("Src", username=f"{name}_source", owner="session1",
                                  members=["session2"])
    world.create_channel("Dst", username=f"{name}_target", owner="session1",
                         admins=["session2"])
    return world, source


def test_flood_wait_storm_on_one_account_loses_nothing(tmp_path: Path) -> None:
    world, source = two_account_world(tmp_path, "storm")
    for n in range(60):
        world.post(source, f"post {n}")
    world.inject_fault("FLOOD_WAIT", seconds=1, account="session1",
                       request="SendMessageRequest", times=6)
    folders = [world.make_session_folder(
        tmp_path / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@storm_source", "TARGET_CHAT": "@storm_target",
            "COPY_MODE": "copy"}) for name in ("session1", "session2")]
    processes = start_second_when_first_waits(world, folders, "--once")
    for process in processes:
        _, err = process.communicate(timeout=RUN_TIMEOUT)
        assert process.returncode == 0, err
    assert [m.message for m in content(world, "@storm_target")] and \
        sorted(m.message for m in content(world, "@storm_target")) == \
        sorted(f"post {n}" for n in range(60))
    rows = checkpoint_rows(tmp_path / "sessions" / "shared" / "checkpoint.db")
    by_account = [sum(1 for r in rows.values() if r[0] == "done" and r[1] == name)
                  for name in ("session1", "session2")]
    assert by_account[1] > by_account[0]                     # session2 was never held up
    assert world.faults()[0]["fired"] > 0


@pytest.mark.parametrize("copy_mode", ["copy", "forward"])
def test_ordered_mode_keeps_source_order_across_accounts(tmp_path: Path,
                                                         copy_mode: str) -> None:
    world, source = two_account_world(tmp_path, "order")
    for n in range(150):
        if n % 10 == 5:
            world.post_album(source, [tiny_png(n), tiny_png(n + 1)], captions=[f"p {n}", ""])
        else:
            world.post(source, f"p {n}")
    folders = [world.make_session_folder(
        tmp_path / "sessions" / name, name, extra_env={
            "SOURCE_CHAT": "@order_source", "TARGET_CHAT": "@order_target",
            "COPY_MODE": copy_mode, "ORDERED": "true"}) for name in ("session1", "session2")]
    # session1 is held up on its first send while session2 starts: order must still hold.
    # The wait outlasts session2's start on a busy machine (else session1 sends all 150).
    world.inject_fault("FLOOD_WAIT", seconds=10, account="session1", times=1,
                       request="ForwardMessagesRequest" if copy_mode == "forward"
                       else "SendMessageRequest")
    processes = start_second_when_first_waits(world, folders, "--once")
    for process in processes:
        _, err = process.communicate(timeout=RUN_TIMEOUT)
        assert process.returncode == 0, err
    assert [m.message for m in content(world, "@order_target")] == \
        [m.message for m in content(world, "@order_source")]
    rows = checkpoint_rows(tmp_path / "sessions" / "shared" / "checkpoint.db")
    assert {r[1] for r in rows.values() if r[0] == "done"} == {"session1", "session2"}


def live_world(tmp_path: Path, **env: str) -> tuple[World, int, Path]:
    """session1 owns @live_source (one message, "old") and @live_target; its folder clones
    the one into the other with `env` added. The world, the source and the folder."""
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    source = world.create_channel("Src", username="live_source", owner="session1")
    world.create_channel("Dst", username="live_target", owner="session1")
    world.post(source, "old")
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@live_source",
                                                  "TARGET_CHAT": "@live_target", **env})
    return world, source, folder


def test_follow_clones_new_messages_until_interrupted(tmp_path: Path) -> None:
    world, source, folder = live_world(tmp_path)
    process = start(folder, script=SINGLE)
    try:
        wait_until(lambda: len(content(world, "@live_target")) >= 1, what="the backfill")
        world.post(source, "new")
        world.post_album(source, [tiny_png(3), tiny_png(4)], captions=["live", "album"])
        wait_until(lambda: len(content(world, "@live_target")) >= 4, what="the live copies")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    target = content(world, "@live_target")
    assert [m.message for m in target] == ["old", "new", "live", "album"]
    assert target[2].grouped_id == target[3].grouped_id is not None
    assert process.returncode == 130
    assert "Traceback" not in err


@pytest.mark.parametrize(("env", "expected"), [
    ({"SOURCE_CHAT": "@demo_source"}, "TARGET_CHAT is not set"),
    ({"SOURCE_CHAT": "-100abc", "TARGET_CHAT": "@demo_target"}, "SOURCE_CHAT='-100abc' is not"),
    ({"SOURCE_CHAT": "@demo_source", "TARGET_CHAT": "@demo_target", "COPY_MODE": "mirror"},
     "COPY_MODE='mirror'"),
    ({"SOURCE_CHAT": "@demo_source", "TARGET_CHAT": "@demo_target", "SOURCE_TOPIC": "x"},
     "SOURCE_TOPIC='x' is not a whole number"),
    ({"SOURCE_CHAT": "@no_such_chat", "TARGET_CHAT": "@demo_target"},
     "SOURCE_CHAT=no_such_chat: this account sees no such chat"),
])
def test_bad_env_values_give_one_line_and_exit_2(tmp_path: Path, env: dict,
                                                  expected: str) -> None:
    world = World.create(tmp_path / "world.db")
    sessions = tmp_path / "sessions"
    build_demo(world, sessions)
    add_env(sessions / "session1", **env)
    result = run(sessions / "session1", "--once")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert content(world, "@demo_target") == []


def test_help_lists_every_env_key() -> None:
    for script, keys in ((SINGLE, ["CHECKPOINT_DB"]),
                         (SHARED, ["SHARED_DB_PATH", "CLAIM_TIMEOUT", "ORDERED"])):
        result = helpers.run(python(script, "--help"))
        assert result.returncode == 0
        for key in ["SOURCE_CHAT", "TARGET_CHAT", "SOURCE_TOPIC", "TARGET_TOPIC",
                    "AUTO_CREATE_TOPICS", "COPY_MODE", "ALLOW_REUPLOAD", "MAX_MEDIA_MB",
                    "TG_API_ID", "SESSION_NAME", *keys]:
            assert key in result.stdout, (script.name, key)


def test_source_topic_and_target_topic_restrict_and_redirect(demo) -> None:
    world, sessions = demo
    news = next(t["topic_id"] for t in world.topics("@demo_source") if t["title"] == "News")
    inbox = world.create_topic("@demo_target", "Inbox", by="session1")
    add_env(sessions / "session1", SOURCE_TOPIC=str(news), TARGET_TOPIC=str(inbox))
    result = run(sessions / "session1", "--once")
    assert result.returncode == 0, result.stderr
    target = content(world, "@demo_target")
    assert [m.message for m in target] == ["First news item", "A reply inside News"]
    assert all(source_topic_of(m) == inbox for m in target)
    assert target[1].reply_to.reply_to_msg_id == target[0].id
    assert [t["title"] for t in world.topics("@demo_target")] == ["General", "Inbox"]
    rows = checkpoint_rows(sessions / "shared" / "checkpoint.db")
    assert sum(1 for r in rows.values() if r[3] == "outside SOURCE_TOPIC") == 10


def test_topics_are_listed_past_the_first_page(tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.configure(rate_limits=False)          # 130 topics at once: about paging
    world.add_account("session1")
    source = world.create_channel("Big forum", username="big_forum", kind="forum",
                                  owner="session1")
    world.create_channel("Dst", username="big_target", kind="forum", owner="session1")
    topics = [world.create_topic(source, f"Topic {n:03d}", by="session1") for n in range(130)]
    world.post(source, "in the oldest topic", topic=topics[0])
    world.post(source, "in the newest topic", topic=topics[-1])
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1",
                                       extra_env={"SOURCE_CHAT": "@big_forum",
                                                  "TARGET_CHAT": "@big_target",
                                                  "COPY_MODE": "forward"})
    result = run(folder, "--once", script=SINGLE)
    assert result.returncode == 0, result.stderr
    titles = {t["topic_id"]: t["title"] for t in world.topics("@big_target")}
    target = content(world, "@big_target")
    assert [(m.message, titles[source_topic_of(m)]) for m in target] == [
        ("in the oldest topic", "Topic 000"), ("in the newest topic", "Topic 129")]
    assert world.counters("session1")["GetForumTopicsRequest"] >= 2   # paginated


def test_earlier_checkpoint_keyed_by_username_is_resumed_not_redone(demo) -> None:
    world, sessions = demo
    db = sessions / "shared" / "checkpoint.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    with conn:        # the earlier system's table: done rows under the .env text, NULL status
        conn.execute("CREATE TABLE messages (source_chat TEXT, msg_id INTEGER, status TEXT, "
                     "session TEXT, processed_at TEXT, target_msg_id INTEGER, "
                     "PRIMARY KEY (source_chat, msg_id))")
        conn.executemany("INSERT INTO messages VALUES ('@demo_source', ?, 'done', 'old', "
                         "'2024-01-01 00:00:00', NULL)", [(i,) for i in range(1, 9)])
        conn.execute("INSERT INTO messages VALUES ('@demo_source', 9, NULL, NULL, NULL, NULL)")
    conn.close()
    result = run(sessions / "session1", "--once")
    assert result.returncode == 0, result.stderr
    assert [m.message for m in content(world, "@demo_target")] == \
        [m.message for m in content(world, "@demo_source") if m.id > 8]
    assert "9 checkpoint rows of an earlier run filed under" in result.stderr
    rows = checkpoint_rows(db)
    assert set(rows) == set(range(1, 16)) and all(r[0] != "pending" for r in rows.values())


def test_media_over_max_media_mb_is_marked_failed_with_the_reason(demo) -> None:
    world, sessions = demo
    add_env(sessions / "session1", MAX_MEDIA_MB="0.00001")
    result = run(sessions / "session1", "--once")
    assert result.returncode == 0, result.stderr
    assert all(m.media is None for m in content(world, "@demo_target"))
    rows = checkpoint_rows(sessions / "shared" / "checkpoint.db")
    failed = [r for r in rows.values() if r[0] == "failed"]
    assert len(failed) == 7 and all("over MAX_MEDIA_MB" in r[3] for r in failed)


def test_revoked_session_exits_3_with_the_login_command(demo) -> None:
    world, sessions = demo
    world.revoke_session("session1")
    result = run(sessions / "session1", "--once")
    assert result.returncode == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "telegram_session.py auth" in errors[0]
    assert "Traceback" not in result.stderr


def test_second_target_and_second_source_on_one_checkpoint_each_clone_completely(
        tmp_path: Path) -> None:
    world = World.create(tmp_path / "world.db")
    world.add_account("session1")
    first = world.create_channel("S1", username="pair_source1", owner="session1")
    second = world.create_channel("S2", username="pair_source2", owner="session1")
    for chat in ("pair_target1", "pair_target3"):
        world.create_channel(chat, username=chat, owner="session1")
    for n in range(5):
        world.post(first, f"one {n}")
        world.post(second, f"two {n}")
    folder = world.make_session_folder(tmp_path / "sessions" / "session1", "session1")
    for source, target in (("@pair_source1", "@pair_target1"),
                           ("@pair_source1", "@pair_target3"),
                           ("@pair_source2", "@pair_target1")):
        result = run(folder, "--once", "--source", source, "--target", target)
        assert result.returncode == 0, result.stderr
        assert "cloned 5" in result.stderr
    assert [m.message for m in content(world, "@pair_target3")] == \
        [f"one {n}" for n in range(5)]
    assert [m.message for m in content(world, "@pair_target1")] == \
        [f"one {n}" for n in range(5)] + [f"two {n}" for n in range(5)]
    status = run(folder, "--status", "--source", "@pair_source1", "--target", "@pair_target1")
    pairs = status.stdout.split("\n\n")[1].splitlines()[2:]
    assert len(pairs) == 3 and all(line.split()[3] == "5" for line in pairs)   # done
