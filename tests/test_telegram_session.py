"""telegram_session.py without Telegram: .env loading, the folder lock across real processes,
session integrity, backups and restore on real SQLite files, the rate-limit registry, and the
command line (status, new, check and .env errors) run as real subprocesses."""
from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import helpers
import pytest
from helpers import clean_env, python
from telethon import errors
from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession

import telegram_session as ts

UTC = timezone.utc        # datetime.UTC is Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "telegram_session.py"
GOOD_ENV = {"TG_API_ID": "12345", "TG_API_HASH": "0123456789abcdef0123456789abcdef",
            "TG_PHONE": "+15550001111"}


def write_env(folder: Path, values: dict[str, str], mode: int = 0o600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    env = folder / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    env.chmod(mode)
    return env


def write_session(path: Path) -> None:
    """A real Telethon session file holding an authorisation key."""
    session = SQLiteSession(str(path))
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(os.urandom(256))
    session.save()
    session.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """sessions/acct with a complete .env and a healthy session file."""
    folder = tmp_path / "sessions" / "acct"
    write_env(folder, GOOD_ENV)
    write_session(folder / "acct.session")
    return folder


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch):
    """The .env under test decides; nothing leaks in from the caller's environment."""
    for key in ("TG_API_ID", "TG_API_HASH", "TG_PHONE", "SESSION_NAME", "TELEGRAM_SIMULATOR",
                "ACCOUNTS_DB"):
        monkeypatch.delenv(key, raising=False)
    yield
    for conn in ts._registry_connections.values():
        conn.close()
    ts._registry_connections.clear()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    return helpers.run(python(SCRIPT, *args), cwd=cwd,
                       env=clean_env("TG_", "TELEGRAM_SIMULATOR", **(env or {})))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """cli(*args) -> (exit code, stdout, stderr) of main() run in this process from tmp_path."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = ts.main(list(args))
        except SystemExit as exc:     # parser.error
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


# ----------------------------------------------------------------------------- .env

def test_load_account_reads_the_folders_env_not_the_working_directory(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    elsewhere = tmp_path / "elsewhere"
    write_env(elsewhere, {**GOOD_ENV, "TG_API_ID": "999"})
    monkeypatch.chdir(elsewhere)
    account = ts.load_account(folder)
    assert account.api_id == 12345
    assert account.name == "acct"
    assert account.session_path == folder.resolve() / "acct.session"
    assert account.registry_db == (folder / ".." / "shared" / "accounts.db").resolve()
    assert account.simulator is None
    assert account.phone == "+15550001111"


def test_missing_key_is_taken_from_the_process_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "acct"
    write_env(folder, {"TG_API_ID": "12345", "SESSION_NAME": "main",
                       "TELEGRAM_SIMULATOR": "../world.db", "SOURCE_CHAT": "@src"})
    monkeypatch.setenv("TG_API_HASH", "fromprocess")
    account = ts.load_account(folder)
    assert account.api_hash == "fromprocess"
    assert account.name == "main"
    assert account.session_path.name == "main.session"
    assert account.simulator == (tmp_path / "world.db").resolve()
    assert account.env["SOURCE_CHAT"] == "@src"
    assert account.phone is None


@pytest.mark.parametrize("values, mode, expected", [
    ({"TG_API_HASH": "abc"}, 0o600, ".env: TG_API_ID is missing or empty"),
    ({"TG_API_ID": "12345"}, 0o600, ".env: TG_API_HASH is missing or empty"),
    ({**GOOD_ENV, "TG_API_ID": "12a45"}, 0o600, "TG_API_ID must be a number, not '12a45'"),
    (GOOD_ENV, 0o666, ".env is world-writable (mode 0666)"),
])
def test_env_errors_are_one_line_naming_key_and_file(tmp_path: Path, values, mode, expected):
    folder = tmp_path / "acct"
    write_env(folder, values, mode)
    with pytest.raises(ts.AccountConfigError) as caught:
        ts.load_account(folder)
    text = str(caught.value)
    assert expected in text
    assert "\n" not in text
    assert str(folder / ".env") in text or "acct/.env" in text
    assert caught.value.exit_code == ts.EXIT_USAGE
    assert caught.value.recovery


@pytest.mark.parametrize("command, values, mode, expected", [
    ("auth", {"TG_API_HASH": "abc"}, 0o600, "TG_API_ID is missing or empty"),
    ("backup", {**GOOD_ENV, "TG_API_ID": "twelve"}, 0o600, "TG_API_ID must be a number"),
    ("restore", GOOD_ENV, 0o646, "world-writable"),
])
def test_cli_env_errors_exit_2_with_one_line(tmp_path: Path, command, values, mode, expected):
    folder = tmp_path / "sessions" / "acct"
    write_env(folder, values, mode)
    result = run_cli(command, "sessions/acct", cwd=tmp_path)
    assert result.returncode == ts.EXIT_USAGE
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: sessions/acct/.env")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_env_and_missing_folder(tmp_path: Path):
    (tmp_path / "acct").mkdir()
    with pytest.raises(ts.AccountConfigError, match=r"\.env does not exist.*cp "):
        ts.load_account(tmp_path / "acct")
    with pytest.raises(ts.AccountConfigError, match="is not an account folder"):
        ts.load_account(tmp_path / "nothing")


def test_loose_modes_are_tightened_and_reported(folder: Path, caplog: pytest.LogCaptureFixture):
    (folder / ".env").chmod(0o644)
    (folder / "acct.session").chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="telegram_session"):
        account = ts.load_account(folder)
        ts.ensure_session_file(account)
    assert (folder / ".env").stat().st_mode & 0o777 == 0o600
    assert (folder / "acct.session").stat().st_mode & 0o777 == 0o600
    assert "was mode 0644 (readable by others); set to 0600" in caplog.text
    assert "was mode 0640" in caplog.text


# ----------------------------------------------------------------------------- folder lock

HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
import telegram_session as ts
lock = ts.FolderLock(ts.load_account(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def start_holder(tmp_path: Path, folder: Path) -> subprocess.Popen:
    script = tmp_path / "holder_script.py"
    script.write_text(HOLDER.format(root=str(ROOT)), encoding="utf-8")
    child = helpers.start(python(script, folder))
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_process_fails_at_once_naming_pid_and_script(folder: Path, tmp_path: Path):
    child = start_holder(tmp_path, folder)
    try:
        account = ts.load_account(folder)
        with pytest.raises(ts.TelegramSessionError) as caught:
            ts.FolderLock(account).acquire()
        assert f"in use by pid {child.pid} (holder_script.py)" in str(caught.value)
        assert f"kill {child.pid}" in caught.value.recovery
        assert caught.value.exit_code == ts.EXIT_SESSION
        holder = ts.lock_holder(account)
        assert holder is not None and holder.pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the kernel released the dead holder's lock: the account is free again
    assert ts.lock_holder(account) is None
    with ts.FolderLock(account):
        assert ts.lock_holder(account).pid == os.getpid()
    assert ts.lock_holder(account) is None


def test_status_probe_does_not_create_a_lock_file(folder: Path):
    account = ts.load_account(folder)
    assert ts.lock_holder(account) is None
    assert not account.lock_path.exists()


# ----------------------------------------------------------------------------- session file

def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))


def test_corrupt_session_is_restored_from_newest_good_backup(
        folder: Path, caplog: pytest.LogCaptureFixture):
    account = ts.load_account(folder)
    first = ts.backup_session(account)
    newest = first.with_name("acct-29991231T235959Z.session")
    first.rename(newest)
    stale = newest.with_name("acct-20000101T000000Z.session")
    stale.write_bytes(b"not a database")
    original_key = sqlite3.connect(folder / "acct.session").execute(
        "SELECT auth_key FROM sessions").fetchone()[0]
    corrupt(folder / "acct.session")
    (folder / "acct.session-journal").write_bytes(b"stale journal")
    assert ts.session_file_problem(folder / "acct.session") == "file is not a database"
    with caplog.at_level(logging.WARNING, logger="telegram_session"):
        ts.ensure_session_file(account)
    assert "restored" in caplog.text and newest.name in caplog.text
    assert ts.session_file_problem(folder / "acct.session") is None
    restored_key = sqlite3.connect(folder / "acct.session").execute(
        "SELECT auth_key FROM sessions").fetchone()[0]
    assert restored_key == original_key
    assert not (folder / "acct.session-journal").exists()
    kept = [p for p in account.backup_dir.iterdir() if p.name.startswith("acct.session.replaced-")]
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"garbage")   # nothing lost


def test_corrupt_session_without_backup_is_refused_with_guidance(folder: Path):
    account = ts.load_account(folder)
    corrupt(folder / "acct.session")
    with pytest.raises(ts.TelegramSessionError) as caught:
        ts.ensure_session_file(account)
    assert "is corrupt (file is not a database) and there is no good backup" in str(caught.value)
    assert "python telegram_session.py auth" in caught.value.recovery
    assert caught.value.exit_code == ts.EXIT_SESSION


def test_missing_or_empty_session_asks_for_auth(folder: Path):
    account = ts.load_account(folder)
    (folder / "acct.session").unlink()
    with pytest.raises(ts.TelegramAuthError, match="never logged in") as caught:
        ts.ensure_session_file(account)
    assert "auth" in caught.value.recovery and caught.value.exit_code == ts.EXIT_AUTH
    SQLiteSession(str(folder / "acct.session")).close()   # a session with no login in it
    with pytest.raises(ts.TelegramAuthError, match="holds no login"):
        ts.ensure_session_file(account)


def test_backups_keep_the_newest_few_and_never_copy_a_corrupt_file(folder: Path):
    account = ts.load_account(folder)
    account.backup_dir.mkdir()
    for day in range(1, 8):
        write_session(account.backup_dir / f"acct-202601{day:02d}T000000Z.session")
    made = ts.backup_session(account)
    names = [p.name for p in ts.list_backups(account)]
    assert len(names) == ts.KEEP_BACKUPS
    assert names[0] == made.name
    assert "acct-20260101T000000Z.session" not in names
    assert made.stat().st_mode & 0o777 == 0o600
    corrupt(folder / "acct.session")
    with pytest.raises(ts.TelegramSessionError, match="cannot be backed up"):
        ts.backup_session(account)
    assert [p.name for p in ts.list_backups(account)] == names


def test_cli_backup_and_restore(folder: Path, tmp_path: Path, cli):
    code, out, err = cli("backup", "sessions/acct")
    assert code == 0, err
    assert "backed up sessions/acct/acct.session to sessions/acct/backups/acct-" in out
    corrupt(folder / "acct.session")
    code, out, err = cli("restore", "sessions/acct")
    assert code == 0, err
    assert out.startswith("restored sessions/acct/acct.session from ")
    assert ts.session_file_problem(folder / "acct.session") is None
    bad = tmp_path / "bad.session"
    bad.write_bytes(b"nope")
    code, out, err = cli("restore", "sessions/acct", "--from", str(bad))
    assert code == ts.EXIT_SESSION
    assert "cannot be restored" in err and err.count("\n") == 1


def test_cli_restore_with_no_backup_points_to_auth(folder: Path, cli):
    corrupt(folder / "acct.session")
    code, _, err = cli("restore", "sessions/acct")
    assert code == ts.EXIT_SESSION
    assert "no good backup" in err
    assert "python telegram_session.py auth sessions/acct" in err


# ----------------------------------------------------------------------------- registry

def test_describe_wait_formats():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert ts.describe_wait("flood_wait", now + timedelta(hours=19.2), now) == \
        "flood wait, 19.2 h left"
    assert ts.describe_wait("peer_flood", now + timedelta(minutes=5), now) == \
        "peer flood, 5 min left"
    assert ts.describe_wait("flood_wait", now + timedelta(seconds=42), now) == \
        "flood wait, 42 s left"


def test_recorded_wait_is_current_until_it_ends(folder: Path):
    account = ts.load_account(folder)
    assert ts.current_wait(account) is None
    until = ts.record_wait(account, 25200, request="messages.SendMessage")
    kind, current_until = ts.current_wait(account)
    assert kind == "flood_wait" and current_until == until
    assert ts.current_wait(account, now=until + timedelta(seconds=1)) is None
    row = sqlite3.connect(account.registry_db).execute(
        "SELECT account, kind, request, seconds FROM rate_limits").fetchone()
    assert row == ("acct", "flood_wait", "messages.SendMessage", 25200)


async def test_wait_if_limited_sleeps_the_recorded_time(folder: Path):
    account = ts.load_account(folder)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    assert await ts.wait_if_limited(account, sleep=fake_sleep) == 0.0
    until = ts.record_wait(account, 7 * 3600)
    now = until - timedelta(hours=2)
    assert await ts.wait_if_limited(account, sleep=fake_sleep, now=now) == 7200.0
    assert slept == [7200.0]


async def test_call_with_flood_wait_records_sleeps_and_retries(folder: Path):
    account = ts.load_account(folder)
    slept: list[float] = []
    calls = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def make_call():
        calls.append(1)
        if len(calls) == 1:
            raise errors.FloodWaitError(request=None, capture=120)
        return "sent"

    result = await ts.call_with_flood_wait(account, make_call, request="messages.SendMessage",
                                           sleep=fake_sleep)
    assert result == "sent" and len(calls) == 2
    # the recorded wait is slept through before the second call
    assert len(slept) == 1 and 118 < slept[0] <= 120
    row = sqlite3.connect(account.registry_db).execute(
        "SELECT kind, request, seconds FROM rate_limits").fetchone()
    assert row == ("flood_wait", "messages.SendMessage", 120)


async def test_peer_flood_is_recorded_and_raised(folder: Path):
    account = ts.load_account(folder)

    async def make_call():
        raise errors.PeerFloodError(request=None)

    with pytest.raises(errors.PeerFloodError):
        await ts.call_with_flood_wait(account, make_call, request="messages.SendMessage")
    assert ts.current_wait(account)[0] == "peer_flood"


def test_status_from_another_process_shows_wait_lock_and_config_errors(
        folder: Path, tmp_path: Path):
    account = ts.load_account(folder)
    ts.record_wait(account, 7 * 3600, request="messages.SendMessage")
    ts.record_account_state(account, user_id=777, username="alice", authorized=1,
                            last_check_at="2026-11-21T10:00:00+00:00", last_check_ok=1)
    write_env(tmp_path / "sessions" / "broken", {"TG_API_ID": "x"})
    (tmp_path / "sessions" / "shared").mkdir(exist_ok=True)
    with ts.FolderLock(account):
        result = run_cli("status", "--sessions-dir", "sessions", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ACCOUNT", "USER", "AUTHORISED", "WAIT", "LOCK", "LAST",
                                "CHECK"]
    acct = next(line for line in lines if line.startswith("acct "))
    assert "@alice" in acct and " yes " in acct
    assert "flood wait, 7.0 h left" in acct or "flood wait, 6.9 h left" in acct
    assert f"pid {os.getpid()}" in acct
    assert "2026-11-21 10:00:00 UTC ok" in acct
    broken = next(line for line in lines if line.startswith("broken "))
    assert "bad .env: TG_API_ID must be a number, not 'x'" in broken
    assert not any(line.startswith("shared") for line in lines)


def test_status_needs_no_database(folder: Path, tmp_path: Path):
    result = run_cli("status", "--sessions-dir", "sessions", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "acct" in result.stdout
    assert not (tmp_path / "sessions" / "shared" / "accounts.db").exists()


# ----------------------------------------------------------------------------- new, check

def test_new_makes_a_private_folder_from_the_template(tmp_path: Path, cli):
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    code, out, err = cli("new", "acct9", "--sessions-dir", "sessions")
    assert code == 0, err
    assert "auth sessions/acct9" in out
    env = sessions / "acct9" / ".env"
    assert env.stat().st_mode & 0o777 == 0o600
    assert "SESSION_NAME=acct9\n" in env.read_text()
    assert (sessions / "acct9" / "run.sh").resolve().is_file()
    code, _, err = cli("new", "acct9", "--sessions-dir", "sessions")
    assert code == ts.EXIT_USAGE and "already exists" in err
    code, _, err = cli("new", "../x", "--sessions-dir", "sessions")
    assert code == ts.EXIT_USAGE and "letters, digits" in err
    # the new folder is not usable until filled in, and check says what to fill in
    code, out, _ = cli("check", "sessions/acct9")
    assert code == ts.EXIT_USAGE
    assert "FAIL  .env complete" in out and "TG_API_ID is missing" in out
    assert "fix: add TG_API_ID=" in out


def test_check_reports_a_corrupt_session_and_a_missing_one(folder: Path, cli):
    account = ts.load_account(folder)
    ts.backup_session(account)
    corrupt(folder / "acct.session")
    (folder / ".env").chmod(0o644)
    code, out, _ = cli("check", "sessions/acct")
    assert code == ts.EXIT_SESSION
    assert "PASS  .env complete" in out
    assert re.search(r"PASS  file modes +\.env was 0644, set to 0600", out)
    assert re.search(r"FAIL  session integrity +acct.session is corrupt \(file is not a "
                     r"database\); 1 backup,", out)
    assert "fix: python telegram_session.py restore sessions/acct" in out
    assert "SKIP  authorised" in out
    (folder / "acct.session").unlink()
    code, out, _ = cli("check", "sessions/acct")
    assert code == ts.EXIT_AUTH
    assert "fix: log in: python telegram_session.py auth sessions/acct" in out
    row = sqlite3.connect(account.registry_db).execute(
        "SELECT last_check_ok, last_error FROM accounts WHERE name = 'acct'").fetchone()
    assert row[0] == 0 and "session integrity" in row[1]


def test_cli_usage_errors_exit_2(cli):
    code, _, err = cli("check", "--sessions-dir", "nowhere")
    assert code == ts.EXIT_USAGE and "no such folder" in err
    code, _, _ = cli("frobnicate")
    assert code == ts.EXIT_USAGE


def test_check_explains_every_problem_of_a_folder_set_up_wrong(folder: Path, cli):
    write_env(folder, {**GOOD_ENV, "TG_API_ID": "my-api-id"}, mode=0o644)
    corrupt(folder / "acct.session")
    (folder / "acct.session").chmod(0o666)
    code, out, _ = cli("check", "sessions/acct")
    assert code == ts.EXIT_USAGE
    assert "FAIL  .env complete      sessions/acct/.env: TG_API_ID must be a number, not " \
           "'my-api-id'" in out
    assert re.search(r"PASS  file modes +\.env was 0644, set to 0600, acct\.session was 0666, "
                     r"set to 0600", out)
    assert "FAIL  session integrity  acct.session is corrupt (file is not a database); " \
           "no backups" in out
    assert "fix: no good backup: log in again: python telegram_session.py auth sessions/acct" \
        in out
    assert "SKIP  authorised         needs the problems above fixed first" in out


def test_check_refuses_a_world_writable_env(folder: Path, cli):
    (folder / ".env").chmod(0o666)
    code, out, _ = cli("check", "sessions/acct")
    assert code == ts.EXIT_USAGE
    assert re.search(r"FAIL  file modes +\.env is world-writable \(0666\)", out)
    assert "fix: check its contents, then run: chmod 600 sessions/acct/.env" in out
    assert (folder / ".env").stat().st_mode & 0o777 == 0o666     # left for the operator


def test_damaged_registry_is_one_error_line(folder: Path, tmp_path: Path):
    ts.record_wait(ts.load_account(folder), 60)          # the registry exists ...
    registry = tmp_path / "sessions" / "shared" / "accounts.db"
    for leftover in registry.parent.glob("accounts.db-*"):
        leftover.unlink()
    registry.write_bytes(b"not a database at all" * 100)  # ... and is then damaged
    for command in (["status", "--sessions-dir", "sessions"], ["check", "sessions/acct"]):
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode != 0, command
        assert "Traceback" not in result.stderr
        errors_ = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors_) == 1 and "accounts.db" in errors_[0], result.stderr
