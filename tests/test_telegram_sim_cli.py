"""telegram_sim.py's command line and World API: the demo world, show, faults, bad input."""
from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import python
from telethon import errors

import telegram_sim
from telegram_sim import SimulatorError, World

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "telegram_sim.py"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The script as a user runs it: a real process, its exit code and output."""
    return helpers.run(python(SCRIPT, *args), cwd=cwd)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run telegram_sim.main() in this process from tmp_path: (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = telegram_sim.main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_init_demo_then_show_prints_the_source(tmp_path):
    made = run_cli("init", "demo.db", "--demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "demo_source" in made.stdout
    for name in telegram_sim.DEMO_ACCOUNTS:
        folder = tmp_path / "demo-sessions" / name
        env = (folder / ".env").read_text()
        assert f"TELEGRAM_SIMULATOR={tmp_path / 'demo.db'}" in env
        assert f"SESSION_NAME={name}" in env
        for path in (folder / ".env", folder / f"{name}.session"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600

    shown = run_cli("show", "demo.db", "@demo_source", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("Demo source (@demo_source, forum")
    body = "\n".join(lines[1:])
    assert "**demo**" in body                               # formatting entities kept
    assert "photo" in body and "document application/pdf" in body
    assert "service TopicCreate  News" in body
    grouped = [line for line in lines if "group=-" not in line and "group=" in line]
    assert len(grouped) == 5                                 # an album of 3, one of 2
    assert any("reply_to=3" in line for line in lines)      # the reply to the photo
    assert len(lines) == 1 + 15

    target = run_cli("show", "demo.db", "Demo target", cwd=tmp_path)
    assert target.returncode == 0 and "1 messages" in target.stdout


async def test_demo_folders_work_with_a_client(tmp_path, cli):
    assert cli("init", "w.db", "--demo", "--sessions-dir", "accounts")[0] == 0
    from telethon import TelegramClient
    client = TelegramClient(str(tmp_path / "accounts" / "session2" / "session2"), 1, "x")
    telegram_sim.attach(client, tmp_path / "w.db")
    await client.connect()
    try:
        assert (await client.get_me()).username == "demo_user2"
        texts = [m.text async for m in client.iter_messages("@demo_source", reverse=True)]
        assert len(texts) == 15 and texts[1].startswith("Welcome to the **demo**")
        sent = await client.send_message("@demo_target", "rehearsal")
        assert sent.id == 2
        photo = tmp_path / "photo.png"
        photo.write_bytes(telegram_sim._DEMO_PNG)
        await client.send_message("@demo_source", "a member may write")
        with pytest.raises(errors.ChatSendMediaForbiddenError):   # but not send media
            await client.send_file("@demo_source", photo)
    finally:
        await client.disconnect()


async def test_operator_commands_shape_a_world(tmp_path, cli):
    assert cli("init", "w.db")[0] == 0
    code, out, _ = cli("add-account", "w.db", "alice", "--phone", "+1 555 000 1001",
                       "--folder", "alice")
    assert code == 0 and "+15550001001" in out and "login code 12345" in out
    assert cli("add-account", "w.db", "bob")[0] == 0
    assert cli("login-code", "w.db", "24680")[1] == "login code: 24680\n"
    code, out, _ = cli("add-chat", "w.db", "Room", "--username", "room", "--kind", "forum",
                       "--owner", "alice", "--members", "bob", "--slowmode", "30",
                       "--default-banned", "send_media,manage_topics")
    assert code == 0 and "forum 'Room'" in out
    code, out, _ = cli("chat", "w.db", "@room", "--restrict", "bob:send_plain",
                       "--noforwards", "on")
    assert code == 0 and '"noforwards": true' in out and "send_plain" in out
    code, out, _ = cli("topic", "w.db", "@room", "--create", "News")
    assert code == 0 and "topic 'News' id 2" in out
    photo = tmp_path / "a.png"
    photo.write_bytes(telegram_sim._DEMO_PNG)
    assert cli("post", "w.db", "@room", "**hi**", "--md", "--topic", "News")[1] == "posted 3\n"
    assert cli("post", "w.db", "@room", "album", "--file", str(photo), "--file",
               str(photo))[1] == "posted 4 5\n"
    assert cli("edit", "w.db", "@room", "3", "changed")[0] == 0
    assert cli("delete", "w.db", "@room", "4", "5", "99")[1] == "2 message(s) deleted\n"
    assert cli("topic", "w.db", "@room", "--close", "2")[0] == 0
    code, out, _ = cli("settings", "w.db", "--rate-limit", "send_chat=5/0.5",
                       "--file-reference-lifetime", "600")
    assert code == 0 and '"file_reference_lifetime": 600' in out and "0.5" in out
    assert cli("account", "w.db", "bob", "--limited", "on")[0] == 0
    assert cli("clock", "w.db", "--advance", "60")[0] == 0
    with World.open(tmp_path / "w.db") as world:
        texts = [getattr(m, "message", None) for m in world.messages("@room")]
        assert "changed" in texts and "album" not in texts
        assert world.member_rights("bob", "@room")["banned_rights"] == [
            "manage_topics", "send_media", "send_plain"]
        assert world.settings()["rate_limit_budgets"]["send_chat"] == (5, 0.5)
        assert [a["limited"] for a in world.accounts()] == [0, 1]
        assert world.topics("@room")[1]["title"] == "News"
    code, _, err = cli("chat", "w.db", "@room", "--restrict", "bob:fly")
    assert code == 2 and "unknown right(s) fly" in err


def test_faults_counters_accounts_and_revoke_commands(cli):
    assert cli("init", "w.db", "--demo")[0] == 0
    code, out, _ = cli("faults", "w.db", "add", "--error", "FLOOD_WAIT", "--seconds", "30",
                       "--request", "SendMessage", "--account", "session1", "--times", "2")
    assert code == 0 and "fault 1 added" in out
    listed = cli("faults", "w.db", "list")[1]
    assert "FLOOD_WAIT" in listed and "SendMessageRequest" in listed
    assert "1 fault(s) removed" in cli("faults", "w.db", "clear")[1]
    assert "(none)" in cli("faults", "w.db", "list")[1]
    accounts = cli("accounts", "w.db")[1]
    assert "session1" in accounts and "session2" in accounts
    assert "(none)" in cli("counters", "w.db")[1]
    assert "1 session(s) revoked" in cli("revoke", "w.db", "session1")[1]
    channels = cli("channels", "w.db")[1]
    assert "demo_source" in channels and "demo_target" in channels


@pytest.mark.parametrize("args, message", [
    (("show", "missing.db", "x"), "no such world"),
    (("show", "w.db", "@nope"), "no chat '@nope'"),
    (("init", "w.db"), "already exists"),
    (("faults", "w.db", "add", "--error", "FLOOD_WAIT"), "FLOOD_WAIT needs seconds"),
    (("faults", "w.db", "add", "--error", "PEER_FLOOD", "--request", "Nope"),
     "unknown request type 'NopeRequest'"),
    (("faults", "w.db", "add", "--error", "PEER_FLOOD", "--account", "ghost"),
     "no account 'ghost'"),
    (("revoke", "w.db", "ghost"), "no account 'ghost'"),
    (("show", "other.db", "x"), "not a simulated world"),
    (("show", "notes.txt", "x"), "not a simulated world (not SQLite)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cli, args, message):
    assert cli("init", "w.db")[0] == 0
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = cli(*args)
    assert code == 2
    assert message in err
    assert err.strip().splitlines()[-1].startswith("telegram_sim.py: error:")
    other = sqlite3.connect(tmp_path / "other.db")
    assert [r[0] for r in other.execute("SELECT name FROM sqlite_master")] == ["t"]


def test_bad_input_as_a_real_process(tmp_path):
    result = run_cli("show", "missing.db", "@source", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "telegram_sim.py: error: missing.db: no such world; create it with "
        "`python telegram_sim.py init missing.db`")


def test_demo_refuses_existing_account_folders(tmp_path, cli):
    folder = tmp_path / "accounts" / "session1"
    folder.mkdir(parents=True)
    (folder / ".env").write_text("TG_API_ID=1\n")
    code, _, err = cli("init", "w.db", "--demo", "--sessions-dir", "accounts")
    assert code == 2 and "does not overwrite" in err
    assert (folder / ".env").read_text() == "TG_API_ID=1\n"
    assert not (tmp_path / "w.db").exists()


def test_world_api_rejects_bad_use(sim_world, tmp_path):
    sim_world.add_account("a", username="taken_name")
    with pytest.raises(SimulatorError, match="already exists"):
        sim_world.add_account("a")
    with pytest.raises(SimulatorError, match="is taken"):
        sim_world.create_channel("C", username="taken_name")
    with pytest.raises(SimulatorError, match="invalid username"):
        sim_world.add_account("b", username="x")
    with pytest.raises(SimulatorError, match="kind must be"):
        sim_world.create_channel("C", kind="supergroup")
    with pytest.raises(SimulatorError, match="no username"):
        sim_world.create_channel("G", kind="group", username="group_name")
    folder = sim_world.make_session_folder(tmp_path / "acc" / "a", "a")
    with pytest.raises(SimulatorError, match="refusing to overwrite"):
        sim_world.make_session_folder(folder, "a")
    chat = sim_world.create_channel("Plain", owner="a")
    with pytest.raises(SimulatorError, match="not a forum"):
        sim_world.create_topic(chat, "T")
    with pytest.raises(SimulatorError, match="REPLY_TO_INVALID"):
        sim_world.post(chat, "x", reply_to=99)
    with pytest.raises(SimulatorError, match="an album has"):
        sim_world.post_album(chat, [b"x"] * 11)
    with pytest.raises(SimulatorError, match="random_id_mode"):
        World.create(tmp_path / "bad.db", random_id_mode="sometimes")
    assert sim_world.chat_id(sim_world.peer_id(chat)) == chat == sim_world.chat_id("Plain")
    assert sim_world.members(chat) == {"a": "creator"}


def test_session_folder_is_a_real_authorised_telethon_session(sim_world, tmp_path):
    sim_world.add_account("a", phone="+1 555 000 1234")
    folder = sim_world.make_session_folder(tmp_path / "acc" / "a", "a",
                                           extra_env={"SOURCE_CHAT": "@src"})
    env = dict(line.split("=", 1) for line in (folder / ".env").read_text().splitlines())
    assert env["TG_PHONE"] == "+15550001234" and env["SOURCE_CHAT"] == "@src"
    assert len(env["TG_API_HASH"]) == 32 and env["TG_API_ID"].isdigit()
    from telethon.sessions import SQLiteSession
    session = SQLiteSession(str(folder / "a"))
    try:
        assert session.dc_id == telegram_sim.DC_ID and session.auth_key.key
        assert sim_world.server.user_for_key(telegram_sim._key_id(session.auth_key)) \
            == sim_world.account_id("a")
    finally:
        session.close()
    assert not os.access(folder / ".env", os.X_OK)


def test_a_world_of_an_earlier_version_gets_the_new_columns(tmp_path, cli):
    assert cli("init", "w.db", "--demo", "--sessions-dir", "accounts")[0] == 0
    conn = sqlite3.connect(tmp_path / "w.db")
    for table, column in (("accounts", "limited"), ("channels", "default_banned"),
                          ("participants", "banned_rights"), ("events", "kind")):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.commit()
    conn.close()
    code, out, _ = cli("accounts", "w.db")
    assert code == 0 and "limited" in out
    with World.open(tmp_path / "w.db") as world:
        assert world.chat_settings("@demo_source")["default_banned"] == []
        world.post("@demo_source", "still works")


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), ([], 2), (["nosuchcommand"], 2)])
def test_help_and_usage_errors_do_not_load_telethon(argv: list[str], code: int) -> None:
    """Telethon loads when the simulator first needs it (issue 15's fast --help), and the
    request tables built from it then work."""
    probe = ("import sys, telegram_sim\n"
             "try:\n"
             f"    telegram_sim.main({argv!r})\n"
             "except SystemExit as exc:\n"
             "    print(exc.code, 'telethon' in sys.modules)\n"
             "print('SendMessageRequest' in {c.__name__ for c in telegram_sim.handlers()})\n")
    result = helpers.run([sys.executable, "-c", probe], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [f"{code} False", "True"]
