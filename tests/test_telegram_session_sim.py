"""telegram_session.py over the simulated Telegram: real TelegramClient objects, real session
files, real OS processes (lock contention, kill -9, a pseudo-terminal), faults injected into
the simulated world (FloodWait, dropped connections, revoked or duplicated sessions)."""
from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
from helpers import python, wait_until
from telethon import TelegramClient

import telegram_session as ts

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "telegram_session.py"
SEVEN_HOURS = 7 * 3600


@pytest.fixture
def world(sim_world):
    """The simulated world of the test (conftest's sim_world)."""
    return sim_world


@pytest.fixture(autouse=True)
def close_registries():
    yield
    for conn in ts._registry_connections.values():
        conn.close()
    ts._registry_connections.clear()


@pytest.fixture
def make_account(sim_account_folder):
    """make_account(name) -> an authorised account folder tmp_path/sessions/NAME, @user_NAME."""
    return lambda name: sim_account_folder(name, username=f"user_{name}")


async def no_sleep(seconds: float) -> None:
    """Sleeps nothing: lets a test see what would have been slept."""


def run_cli(*args: str, cwd: Path, **options) -> subprocess.CompletedProcess:
    return helpers.run(python(SCRIPT, *args), cwd=cwd, **options)


def write_worker(tmp_path: Path, body: str) -> Path:
    """A worker script: opens the account in argv[1] with open_client and runs `body`."""
    script = tmp_path / "worker_script.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import telegram_session as ts\n"
        "async def main(folder):\n"
        "    account = ts.load_account(folder)\n"
        "    async with ts.open_client(account) as client:\n"
        + "".join(f"        {line}\n" for line in body.splitlines())
        + "try:\n"
        "    asyncio.run(main(sys.argv[1]))\n"
        "except ts.AccountError as exc:\n"
        "    print(f'error: {exc}', file=sys.stderr)\n"
        "    sys.exit(exc.exit_code)\n", encoding="utf-8")
    return script


def run_worker(tmp_path: Path, body: str, folder: Path) -> subprocess.Popen:
    """A real worker process on the account, its output piped."""
    script = write_worker(tmp_path, body)
    return helpers.start(python(script, folder))


# ----------------------------------------------------------------------------- open_client

async def test_open_client_yields_an_authorised_client_and_backs_up(make_account):
    folder = make_account("acct")
    account = ts.load_account(folder)
    async with ts.open_client(folder) as client:
        assert isinstance(client, TelegramClient)
        assert client.flood_sleep_threshold == ts.DEFAULT_FLOOD_SLEEP_THRESHOLD
        me = await client.get_me()
        assert me.username == "user_acct"
        assert ts.lock_holder(account).pid == os.getpid()
        assert len(ts.list_backups(account)) == 1      # after connecting
    assert ts.lock_holder(account) is None
    assert ts.list_backups(account)                    # after disconnecting (same second: same)
    row = sqlite3.connect(account.registry_db).execute(
        "SELECT user_id, username, authorized FROM accounts WHERE name = 'acct'").fetchone()
    assert row == (me.id, "user_acct", 1)


async def test_flood_sleep_threshold_is_set(make_account):
    async with ts.open_client(make_account("acct"), flood_sleep_threshold=5) as client:
        assert client.flood_sleep_threshold == 5


async def test_lock_contention_between_two_processes(make_account, tmp_path: Path, world):
    folder = make_account("acct")
    worker = run_worker(tmp_path, "print('open', flush=True)\nawait asyncio.sleep(60)", folder)
    try:
        assert worker.stdout.readline().strip() == "open"
        with pytest.raises(ts.TelegramSessionError) as caught:
            async with ts.open_client(folder):
                pytest.fail("a second client opened a locked account")
        # at once, not after waiting for the holder: it still runs and holds the lock
        assert worker.poll() is None
        assert ts.lock_holder(ts.load_account(folder)).pid == worker.pid
        assert f"in use by pid {worker.pid} (worker_script.py)" in str(caught.value)
        result = run_cli("status", "--sessions-dir", "sessions", cwd=tmp_path)
        assert f"pid {worker.pid} (worker_script.py)" in result.stdout
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    # kill -9 left no stale lock: the kernel released it with the process
    async with ts.open_client(folder) as client:
        assert (await client.get_me()).username == "user_acct"


async def test_corrupt_session_is_restored_from_backup_and_works(make_account):
    folder = make_account("acct")
    account = ts.load_account(folder)
    async with ts.open_client(account):
        pass
    account.session_path.write_bytes(b"\0" * 100 + account.session_path.read_bytes()[100:])
    async with ts.open_client(account) as client:
        assert (await client.get_me()).username == "user_acct"
    kept = [p.name for p in account.backup_dir.iterdir() if ".replaced-" in p.name]
    assert kept == [p.name for p in account.backup_dir.iterdir()
                    if p.name.startswith("acct.session.replaced-")] and len(kept) == 1


async def test_corrupt_session_without_backup_is_refused(make_account, tmp_path: Path):
    folder = make_account("acct")
    (folder / "acct.session").write_bytes(b"this is not a database at all" * 40)
    with pytest.raises(ts.TelegramSessionError) as caught:
        async with ts.open_client(folder):
            pytest.fail("opened a corrupt session")
    assert "no good backup" in str(caught.value)
    assert "python telegram_session.py auth" in caught.value.recovery
    result = run_cli("check", "sessions/acct", cwd=tmp_path)
    assert result.returncode == ts.EXIT_SESSION
    assert "no good backup: log in again: python telegram_session.py auth sessions/acct" \
        in result.stdout


# ----------------------------------------------------------------------------- authorisation

async def test_revoked_session_raises_auth_error_and_is_recorded(make_account, world):
    folder = make_account("acct")
    world.revoke_session("acct")
    with pytest.raises(ts.TelegramAuthError) as caught:
        async with ts.open_client(folder):
            pytest.fail("a revoked session opened")
    assert "AUTH_KEY_UNREGISTERED" in str(caught.value)
    assert caught.value.recovery == "log in again: python telegram_session.py auth " \
        + ts.display_path(folder.resolve())
    assert caught.value.exit_code == ts.EXIT_AUTH
    account = ts.load_account(folder)
    row = sqlite3.connect(account.registry_db).execute(
        "SELECT authorized, last_error FROM accounts WHERE name = 'acct'").fetchone()
    assert row[0] == 0 and "AUTH_KEY_UNREGISTERED" in row[1]
    assert ts.lock_holder(account) is None


@pytest.mark.parametrize("error, code, expected", [
    ("SESSION_REVOKED", 401, "terminated from another device"),
    ("USER_DEACTIVATED_BAN", 401, "banned"),
    ("AUTH_KEY_DUPLICATED", 406, "used from two places at once"),
])
async def test_auth_errors_each_have_their_own_recovery(make_account, world, error, code,
                                                        expected):
    folder = make_account("acct")
    world.inject_fault(error, code=code, request="GetUsersRequest")
    with pytest.raises(ts.TelegramAuthError) as caught:
        async with ts.open_client(folder):
            pytest.fail("opened despite " + error)
    assert expected in caught.value.message and error in caught.value.message
    assert caught.value.recovery


def read_terminal(fd: int, *, seconds: float) -> bytes:
    """What a pseudo-terminal shows until its process closes it or `seconds` pass."""
    output = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:   # EIO: the process exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    return output


def test_revoked_session_never_prompts_even_on_a_terminal(make_account, world, tmp_path):
    folder = make_account("acct")
    world.revoke_session("acct")
    script = write_worker(tmp_path, "pass")
    pid, fd = pty.fork()
    if pid == 0:   # the child: stdin, stdout and stderr are the terminal
        os.execv(sys.executable, [sys.executable, str(script), str(folder)])
    output = read_terminal(fd, seconds=helpers.TIMEOUT)
    try:
        _, status = wait_until(lambda: (ended := os.waitpid(pid, os.WNOHANG))[0] and ended,
                               what="the worker to exit", timeout=5)
    except AssertionError:    # still running: it is waiting for someone to type
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        pytest.fail("the worker waited on the terminal: " + output.decode(errors="replace"))
    os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == ts.EXIT_AUTH, text
    assert "AUTH_KEY_UNREGISTERED" in text and "telegram_session.py auth" in text
    for prompt in ("Please enter your phone", "Phone number", "Login code", "password"):
        assert prompt not in text        # neither Telethon's start() prompts nor auth's


# ----------------------------------------------------------------------------- rate limits

class Stopped(Exception):
    """The worker was stopped (Ctrl+C, kill, reboot) while it slept through a wait."""


async def test_seven_hour_flood_wait_recorded_seen_by_status_and_honoured_after_restart(
        make_account, world, tmp_path: Path):
    folder = make_account("acct")
    account = ts.load_account(folder)
    chat = world.create_channel("Room", username="room_chat", kind="megagroup", owner="acct")
    world.inject_fault("FLOOD_WAIT", seconds=SEVEN_HOURS, request="SendMessageRequest",
                       times=1)
    slept: list[float] = []

    async def stopped_while_sleeping(seconds: float) -> None:
        slept.append(seconds)
        raise Stopped

    async with ts.open_client(account) as client:
        with pytest.raises(Stopped):
            await ts.call_with_flood_wait(
                account, lambda: client.send_message("room_chat", "hello"),
                request="messages.SendMessage", sleep=stopped_while_sleeping)
    assert len(slept) == 1 and SEVEN_HOURS - 5 < slept[0] <= SEVEN_HOURS
    assert not [m for m in world.messages(chat) if getattr(m, "message", "")]
    kind, until = ts.current_wait(account)
    assert kind == "flood_wait"
    row = sqlite3.connect(account.registry_db).execute(
        "SELECT kind, request, seconds FROM rate_limits WHERE account = 'acct'").fetchall()
    assert row == [("flood_wait", "messages.SendMessage", SEVEN_HOURS)]

    # another process sees it, without connecting
    result = run_cli("status", "--sessions-dir", "sessions", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("acct "))
    assert "flood wait, 7.0 h left" in line or "flood wait, 6.9 h left" in line

    # a restarted script sleeps until the wait ends before it sends anything
    world.reset_counters()
    worker = run_worker(tmp_path, (
        "async def fake_sleep(seconds):\n"
        "    print(f'slept {seconds:.0f}', flush=True)\n"
        "await ts.wait_if_limited(account, sleep=fake_sleep)\n"
        "await client.send_message('room_chat', 'after the wait')\n"
        "print('sent', flush=True)"), folder)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    words = out.split()
    assert words[0] == "slept" and SEVEN_HOURS - 60 < int(words[1]) <= SEVEN_HOURS
    assert words[2] == "sent"
    assert f"sleeping until {ts.format_time(until)}" in err
    assert world.counters("acct").get("SendMessageRequest") == 1
    assert [m.message for m in world.messages(chat) if getattr(m, "message", "")] == \
        ["after the wait"]


async def test_wait_over_the_threshold_is_slept_for_real_then_sent_once(make_account, world):
    folder = make_account("acct")
    chat = world.create_channel("Room", username="room_chat", kind="megagroup", owner="acct")
    world.inject_fault("FLOOD_WAIT", seconds=2, request="SendMessageRequest", times=1)
    account = ts.load_account(folder)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)
    async with ts.open_client(account, flood_sleep_threshold=1) as client:
        await ts.call_with_flood_wait(account, lambda: client.send_message("room_chat", "hi"),
                                      sleep=sleep)
    assert len(slept) == 1 and 0 < slept[0] <= 2    # the rest of the wait, slept for real
    assert [m.message for m in world.messages(chat) if getattr(m, "message", "")] == ["hi"]
    assert world.counters("acct")["SendMessageRequest"] == 2     # refused once, then sent


async def test_flood_wait_while_connecting_is_recorded_and_slept_on_restart(make_account,
                                                                             world):
    folder = make_account("acct")
    world.inject_fault("FLOOD_WAIT", seconds=SEVEN_HOURS, request="GetUsersRequest", times=1)
    with pytest.raises(ts.TelegramRateLimitError) as caught:
        async with ts.open_client(folder):
            pytest.fail("opened during a flood wait")
    assert caught.value.seconds == SEVEN_HOURS
    assert caught.value.exit_code == ts.EXIT_FAILURE
    assert "flood wait, 7.0 h left" in str(caught.value) or "6.9 h" in str(caught.value)
    assert ts.current_wait(ts.load_account(folder))[1] == caught.value.until
    # the restart (run.sh) sleeps through it before connecting again
    world.reset_counters()
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)
        assert world.counters("acct") == {}      # nothing was sent before the sleep

    async with ts.open_client(folder, sleep=record_sleep) as client:
        assert (await client.get_me()).username == "user_acct"
    assert len(slept) == 1 and SEVEN_HOURS - 60 < slept[0] <= SEVEN_HOURS


async def test_short_flood_wait_is_slept_inside_telethon_and_not_recorded(make_account, world):
    folder = make_account("acct")
    world.create_channel("Room", username="room_chat", kind="megagroup", owner="acct")
    world.inject_fault("FLOOD_WAIT", seconds=1, request="SendMessageRequest", times=1)
    account = ts.load_account(folder)
    async with ts.open_client(account, flood_sleep_threshold=5) as client:
        await ts.call_with_flood_wait(account, lambda: client.send_message("room_chat", "hi"))
    assert ts.current_wait(account) is None


async def test_peer_flood_is_recorded_and_stops_the_account(make_account, world):
    folder = make_account("acct")
    world.create_channel("Room", username="room_chat", kind="megagroup", owner="acct")
    world.inject_fault("PEER_FLOOD", request="SendMessageRequest")
    account = ts.load_account(folder)
    async with ts.open_client(account) as client:
        with pytest.raises(ts.errors.PeerFloodError):
            await ts.call_with_flood_wait(
                account, lambda: client.send_message("room_chat", "hi"), sleep=no_sleep)
    kind, _ = ts.current_wait(account)
    assert kind == "peer_flood"


# ----------------------------------------------------------------------------- back-off

async def test_dropped_connections_are_retried_with_growing_jittered_delays(
        make_account, world):
    folder = make_account("acct")
    world.inject_fault("DISCONNECT", request="GetConfigRequest", times=3)
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    # connection_retries=0: no reconnects inside Telethon, so every drop reaches open_client
    async with ts.open_client(folder, sleep=record_sleep, backoff_base=1.0,
                              connection_retries=0) as client:
        assert (await client.get_me()).username == "user_acct"
    assert len(delays) == 3
    for attempt, delay in enumerate(delays):
        assert 0.5 * 2 ** attempt <= delay < 2 ** attempt


async def test_unreachable_after_every_attempt_is_one_clear_error(make_account, world):
    folder = make_account("acct")
    world.inject_fault("DISCONNECT", request="GetConfigRequest")
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    with pytest.raises(ts.TelegramConnectionError, match="unreachable after 3 attempts"):
        async with ts.open_client(folder, connect_attempts=3, sleep=record_sleep,
                                  connection_retries=0):
            pytest.fail("connected through a dead network")
    assert len(delays) == 2
    assert ts.lock_holder(ts.load_account(folder)) is None


# ----------------------------------------------------------------------------- auth, check

def test_auth_logs_in_again_after_revocation(make_account, world, tmp_path: Path):
    folder = make_account("acct")
    world.revoke_session("acct")
    world.set_login_code("24680")
    result = run_cli("auth", "sessions/acct", cwd=tmp_path, input="11111\n24680\n")
    assert result.returncode == 0, result.stderr
    assert "That code is not right" in result.stderr
    assert "authorised as acct @user_acct" in result.stdout
    assert (folder / "acct.session").stat().st_mode & 0o777 == 0o600
    check = run_cli("check", "sessions/acct", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "PASS  authorised" in check.stdout


def test_auth_without_a_terminal_is_one_line_exit_2(make_account, world, tmp_path: Path):
    make_account("acct")
    world.revoke_session("acct")
    result = run_cli("auth", "sessions/acct", cwd=tmp_path)
    assert result.returncode == ts.EXIT_USAGE
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: auth needs a terminal to type the login code into; run it by "
                      "hand in a terminal, not from run.sh or a pipe"]
    assert "Traceback" not in result.stderr


def test_check_passes_on_a_good_folder_and_explains_a_wrong_one(make_account, world,
                                                                tmp_path: Path):
    make_account("good")
    bad = make_account("bad")
    world.revoke_session("bad")
    (bad / ".env").chmod(0o644)
    result = run_cli("check", "sessions/good", "sessions/bad", cwd=tmp_path)
    out = result.stdout
    good_part, bad_part = out.split("sessions/bad\n", 1)
    assert "FAIL" not in good_part
    for name in (".env complete", "file modes", "session integrity", "lock holder",
                 "current waits", "authorised", "get_me", "clock skew"):
        assert f"PASS  {name}" in good_part
    assert "set to 0600" in bad_part
    assert "FAIL  authorised" in bad_part and "AUTH_KEY_UNREGISTERED" in bad_part
    assert "fix: log in again: python telegram_session.py auth sessions/bad" in bad_part
    assert "SKIP  get_me" in bad_part
    assert result.returncode == ts.EXIT_AUTH
    status = run_cli("status", "--sessions-dir", "sessions", cwd=tmp_path)
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert " NO " in rows["bad"] and "FAILED" in rows["bad"]
    assert " yes " in rows["good"] and rows["good"].rstrip().endswith(" ok")


async def test_missing_world_is_a_config_error(make_account, tmp_path: Path):
    folder = make_account("acct")
    env = folder / ".env"
    env.write_text(env.read_text().replace(str(tmp_path / "world.db"), "../nowhere.db"))
    with pytest.raises(ts.AccountConfigError, match="TELEGRAM_SIMULATOR points to"):
        async with ts.open_client(folder):
            pytest.fail("opened without a world")
    assert ts.lock_holder(ts.load_account(folder)) is None


def test_auth_of_a_new_folder_asks_for_the_phone(make_account, world, tmp_path: Path):
    folder = make_account("acct")
    phone = next(a["phone"] for a in world.accounts() if a["name"] == "acct")
    (folder / "acct.session").unlink()
    env = folder / ".env"
    env.write_text("".join(line + "\n" for line in env.read_text().splitlines()
                           if not line.startswith("TG_PHONE=")))
    result = run_cli("auth", "sessions/acct", cwd=tmp_path, input=f"+{phone}\n12345\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Phone number (international format")
    assert "authorised as acct @user_acct" in result.stdout
    assert (folder / "acct.session").stat().st_mode & 0o777 == 0o600
    assert "was mode" not in result.stderr         # created private, never loosened
    # auth again: the session is kept, nothing is asked
    again = run_cli("auth", "sessions/acct", cwd=tmp_path)
    assert again.returncode == 0 and "already logged in" in again.stderr


def test_ctrl_c_at_the_code_prompt_exits_130_cleanly(make_account, world, tmp_path: Path):
    make_account("acct")
    world.revoke_session("acct")
    auth = helpers.start(python(SCRIPT, "auth", "sessions/acct"), cwd=tmp_path,
                         stdin=subprocess.PIPE, text=False)
    prompt = b""
    while not prompt.endswith(b"Login code Telegram sent you: "):
        chunk = auth.stdout.read1(100)
        assert chunk, auth.stderr.read().decode()
        prompt += chunk
    auth.send_signal(signal.SIGINT)
    _, err = auth.communicate(timeout=30)
    assert auth.returncode == ts.EXIT_INTERRUPTED
    assert b"Traceback" not in err and err.rstrip().endswith(b"interrupted")
    assert ts.lock_holder(ts.load_account(tmp_path / "sessions" / "acct")) is None
