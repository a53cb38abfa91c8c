#!/usr/bin/env python3
"""One Telegram account = one folder: open a client safely, log in, check, back up, restore.

An account folder (`sessions/NAME/`) holds `.env` (TG_API_ID, TG_API_HASH, TG_PHONE,
SESSION_NAME, optional TELEGRAM_SIMULATOR and ACCOUNTS_DB, plus each script's own keys) and
`NAME.session` (Telethon's SQLite session). Every Telegram script of the suite opens its
account with `open_client(folder)`: the folder is locked for the client's whole life, the
session file is checked (and restored from `backups/` if corrupt), the connection is retried
with back-off, authorisation is checked without ever prompting, and waits Telegram imposes
(FloodWait over the threshold, PeerFlood) are recorded in the accounts database so every
process of the account, and `status`, sees them.

    python telegram_session.py auth sessions/session1      # the only interactive login
    python telegram_session.py check [FOLDER ...]          # diagnose, with the fix for each
    python telegram_session.py status                      # every account, without connecting
    python telegram_session.py new NAME                    # a folder from sessions/template
    python telegram_session.py backup FOLDER
    python telegram_session.py restore FOLDER [--from FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import functools
import getpass
import json
import logging
import os
import random
import re
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import migrate_db
from migrate_db import file_stamp, parse_utc, transaction, utc_text

# Telethon and python-dotenv load when first used, so --help answers at once
dotenv = migrate_db.lazy_import("dotenv")
telethon = migrate_db.lazy_import("telethon")
errors = migrate_db.lazy_import("telethon.errors")
functions = migrate_db.lazy_import("telethon.functions")
types = migrate_db.lazy_import("telethon.types")
if TYPE_CHECKING:
    from telethon import TelegramClient

UTC = timezone.utc        # datetime.UTC is Python 3.11+

# ----------------------------------------------------------------------------- settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2          # bad flags or .env values
EXIT_AUTH = 3           # the account must be logged in again: run.sh stops restarting
EXIT_SESSION = 4        # session file or lock problem
EXIT_LIMITED = 5        # Telegram limited the account (PEER_FLOOD...): run.sh stops restarting
EXIT_INTERRUPTED = 130

SUITE_DIR = Path(__file__).resolve().parent
DEFAULT_SESSIONS_DIR = SUITE_DIR / "sessions"
TEMPLATE_NAME = "template"
NOT_ACCOUNT_FOLDERS = {"shared", TEMPLATE_NAME}
ENV_FILE = ".env"
SESSION_SUFFIX = ".session"
BACKUP_DIR = "backups"
KEEP_BACKUPS = 5
DEFAULT_ACCOUNTS_DB = "../shared/accounts.db"
DEFAULT_FLOOD_SLEEP_THRESHOLD = 60          # seconds; longer waits are recorded
CONNECT_ATTEMPTS = 5
REQUEST_RETRIES = 1                         # Telethon's default 5: see _new_client
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
LOCK_ATTEMPTS = 5                            # rides out a `status` probe of the lock
LOCK_RETRY_SECONDS = 0.02
SESSION_BUSY_TIMEOUT = 5.0
PEER_FLOOD_PAUSE_SECONDS = 24 * 3600         # how long an account rests after PeerFlood
CONNECT_REQUEST = "users.GetUsers"           # the request open_client's FloodWaits are under
CLOCK_SKEW_LIMIT_SECONDS = 30.0
PRIVATE_MODE = 0o600
AUTH_CODE_ATTEMPTS = 3
BACKUP_NAME = re.compile(r"-(\d{8}T\d{6}Z)\.session")

log = logging.getLogger("telegram_session")

T = TypeVar("T")


# ----------------------------------------------------------------------------- errors

class AccountError(Exception):
    """An account problem with a one-line recovery instruction and the exit code to use."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, recovery: str) -> None:
        super().__init__(message)
        self.message = message
        self.recovery = recovery

    def __str__(self) -> str:
        return f"{self.message}; {self.recovery}"


class AccountConfigError(AccountError):
    """The folder or its .env is missing, incomplete or unsafe."""

    exit_code = EXIT_USAGE


class TelegramSessionError(AccountError):
    """The .session file is missing or corrupt with no good backup, or the folder is locked."""

    exit_code = EXIT_SESSION


class TelegramAuthError(AccountError):
    """The account is not logged in, or Telegram revoked, banned or duplicated its session."""

    exit_code = EXIT_AUTH


class TelegramRateLimitError(AccountError):
    """Telegram told the account to wait; `.seconds` long, until `.until` (UTC)."""

    exit_code = EXIT_FAILURE

    def __init__(self, seconds: int, until: datetime, *, kind: str = "flood_wait",
                 request: str = "") -> None:
        self.seconds = seconds
        self.until = until
        self.kind = kind
        self.request = request
        what = f" on {request}" if request else ""
        super().__init__(
            f"{describe_wait(kind, until)}{what} (until {format_time(until)})",
            "the account's scripts sleep until then by themselves; do not restart them "
            "to hurry it")


class TelegramConnectionError(AccountError):
    """Telegram could not be reached after every connection attempt."""

    exit_code = EXIT_FAILURE


# ----------------------------------------------------------------------------- the account

@dataclass(frozen=True)
class Account:
    """One account folder's settings, read from its .env."""

    name: str
    folder: Path
    api_id: int
    api_hash: str
    phone: str | None
    session_path: Path
    simulator: Path | None
    registry_db: Path
    env: dict[str, str] = field(repr=False)

    @property
    def lock_path(self) -> Path:
        """The file whose flock marks the account as in use."""
        return self.session_path.with_name(self.session_path.name + ".lock")

    @property
    def backup_dir(self) -> Path:
        """Where consistent copies of the .session file are kept."""
        return self.folder / BACKUP_DIR


def display_path(path: Path) -> str:
    """`path` as the operator would type it: relative to the working directory if inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def format_time(moment: datetime) -> str:
    """A UTC time for messages, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _auth_command(folder: Path) -> str:
    return f"python telegram_session.py auth {display_path(folder)}"


def _mode_text(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def make_private(path: Path) -> int | None:
    """chmod `path` to 0600 if group or others have any access; returns the old mode if changed."""
    mode = path.stat().st_mode
    if not stat.S_IMODE(mode) & 0o077:
        return None
    path.chmod(PRIVATE_MODE)
    log.warning("%s was mode %s (readable by others); set to 0600", display_path(path),
                _mode_text(mode))
    return stat.S_IMODE(mode)


def _read_env_file(env_path: Path) -> dict[str, str]:
    """The .env's values, refusing a world-writable file and tightening a readable one."""
    try:
        mode = env_path.stat().st_mode
    except FileNotFoundError:
        raise AccountConfigError(
            f"{display_path(env_path)} does not exist",
            f"create it: cp {display_path(env_path.with_name('.env.example'))} "
            f"{display_path(env_path)} (or: python telegram_session.py new NAME), "
            "then fill in TG_API_ID, TG_API_HASH, TG_PHONE") from None
    if mode & stat.S_IWOTH:
        raise AccountConfigError(
            f"{display_path(env_path)} is world-writable (mode {_mode_text(mode)}), "
            "so anyone on this machine could have changed it",
            f"check its contents, then run: chmod 600 {display_path(env_path)}")
    make_private(env_path)
    try:
        values = dotenv.dotenv_values(env_path, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccountConfigError(f"{display_path(env_path)} cannot be read ({exc})",
                                 "fix the file's permissions or encoding (UTF-8)") from None
    return {key: value for key, value in values.items() if value is not None}


def _resolve(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def load_account(folder: str | Path) -> Account:
    """Read `<folder>/.env` (never the caller's working directory) into an Account.

    A key missing from the file is taken from the process environment. Raises
    AccountConfigError naming the key and the file when something is missing or wrong.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise AccountConfigError(f"{display_path(folder)} is not an account folder",
                                 "create one: python telegram_session.py new NAME")
    env_path = folder / ENV_FILE
    file_values = _read_env_file(env_path)
    env = {**os.environ, **file_values}
    where = display_path(env_path)

    def required(key: str, hint: str) -> str:
        value = env.get(key, "").strip()
        if not value:
            raise AccountConfigError(f"{where}: {key} is missing or empty",
                                     f"add {key}=<{hint}> to {where}")
        return value

    api_id_text = required("TG_API_ID", "number from https://my.telegram.org")
    try:
        api_id = int(api_id_text)
    except ValueError:
        raise AccountConfigError(
            f"{where}: TG_API_ID must be a number, not {api_id_text!r}",
            f"copy the api_id number from https://my.telegram.org into {where}") from None
    api_hash = required("TG_API_HASH", "hash from https://my.telegram.org")
    name = env.get("SESSION_NAME", "").strip() or folder.name
    if "/" in name or name in {".", ".."}:
        raise AccountConfigError(f"{where}: SESSION_NAME {name!r} is not a file name",
                                 f"set SESSION_NAME to a plain name such as {folder.name}")
    simulator_text = env.get("TELEGRAM_SIMULATOR", "").strip()
    return Account(
        name=name,
        folder=folder,
        api_id=api_id,
        api_hash=api_hash,
        phone=env.get("TG_PHONE", "").strip() or None,
        session_path=folder / f"{name}{SESSION_SUFFIX}",
        simulator=_resolve(folder, simulator_text) if simulator_text else None,
        registry_db=_resolve(folder, env.get("ACCOUNTS_DB", "").strip() or DEFAULT_ACCOUNTS_DB),
        env=env,
    )


def _as_account(folder_or_account: str | Path | Account) -> Account:
    if isinstance(folder_or_account, Account):
        return folder_or_account
    return load_account(folder_or_account)


# ----------------------------------------------------------------------------- folder lock

@dataclass(frozen=True)
class LockHolder:
    """Who holds an account's lock, as written into the lock file."""

    pid: int | None
    script: str
    since: str

    def describe(self) -> str:
        """e.g. 'pid 4242 (clone_streaming.py) since 2026-11-21 22:00:00 UTC'."""
        pid = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        try:
            since = f" since {format_time(parse_utc(self.since))}"
        except ValueError:
            since = ""
        return f"{pid} ({self.script}){since}"


def _read_holder(handle) -> LockHolder:
    handle.seek(0)
    text = handle.read()
    try:
        data = json.loads(text)
        return LockHolder(int(data["pid"]), str(data["script"]), str(data["since"]))
    except (ValueError, KeyError, TypeError):
        return LockHolder(None, "holder not recorded", "")


class FolderLock:
    """An exclusive, non-blocking flock on the account's lock file, released on close or exit.

    The kernel releases a flock when its process dies, so a crashed holder never leaves the
    account locked.
    """

    def __init__(self, account: Account) -> None:
        self.account = account
        self._handle = None

    def acquire(self) -> None:
        """Take the lock or raise TelegramSessionError naming the holder's pid and script."""
        try:
            handle = open(self.account.lock_path, "a+", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise TelegramSessionError(
                f"cannot create the lock file {display_path(self.account.lock_path)} "
                f"({exc.strerror})", "make the account folder writable by this user") from None
        try:
            for attempt in range(LOCK_ATTEMPTS):
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == LOCK_ATTEMPTS - 1:
                        raise
                    time.sleep(LOCK_RETRY_SECONDS)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise TelegramSessionError(
                f"account {self.account.name} ({display_path(self.account.folder)}) is in "
                f"use by {holder.describe()}",
                "only one process may use an account at a time: stop that process "
                f"(kill {holder.pid}) or wait for it to finish" if holder.pid else
                "only one process may use an account at a time: stop the other process"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "script": Path(sys.argv[0]).name,
                                 "since": utc_text()}))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Clear the holder record and drop the lock."""
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.flush()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_holder(account: Account) -> LockHolder | None:
    """Who holds the account's lock now, or None; never blocks and never creates the file."""
    try:
        handle = open(account.lock_path, encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


# ----------------------------------------------------------------------------- session file

def _sqlite_uri(path: Path, mode: str) -> str:
    """A SQLite URI for `path` opened in `mode` (ro, rw): never creates the file."""
    return f"{path.resolve().as_uri()}?mode={mode}"


def session_file_problem(path: Path) -> str | None:
    """Why `path` is not a usable Telethon session file (None if it is).

    Runs `PRAGMA integrity_check` and reads Telethon's `sessions` table; a hot journal left
    by a crash is rolled back by opening the file, as Telethon itself would.
    """
    try:
        conn = sqlite3.connect(_sqlite_uri(path, "rw"), uri=True,
                               timeout=SESSION_BUSY_TIMEOUT)
    except sqlite3.OperationalError as exc:
        return f"cannot be opened ({exc})"
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            return f"integrity check failed: {result}"
        conn.execute("SELECT dc_id, server_address, port, auth_key FROM sessions").fetchall()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise TelegramSessionError(
                f"{display_path(path)} is locked by another program",
                "a .session may be used by one process only: stop the other program using "
                "it (an older script, or a copy started by hand)") from None
        return str(exc)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return None


def session_has_auth_key(path: Path) -> bool:
    """Whether the (healthy) session file holds an authorisation key."""
    with contextlib.closing(sqlite3.connect(_sqlite_uri(path, "ro"), uri=True)) as conn:
        row = conn.execute("SELECT auth_key FROM sessions").fetchone()
    return bool(row and row[0])


def list_backups(account: Account) -> list[Path]:
    """The account's session backups, newest first."""
    if not account.backup_dir.is_dir():
        return []
    pattern = re.compile(re.escape(account.name) + BACKUP_NAME.pattern)
    found = [p for p in account.backup_dir.iterdir() if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of SQLite file `source` at `target`, checked before it replaces
    `target`; private from the first byte (it holds the auth key)."""
    def copy(partial: Path) -> None:
        with contextlib.closing(sqlite3.connect(_sqlite_uri(source, "ro"), uri=True,
                                                timeout=SESSION_BUSY_TIMEOUT)) as src, \
                contextlib.closing(sqlite3.connect(str(partial))) as dst:
            src.backup(dst)
        problem = session_file_problem(partial)
        if problem:
            raise TelegramSessionError(
                f"the copy of {display_path(source)} is not usable ({problem})",
                "check the disk (space, errors) and try again")
    migrate_db.write_atomically(target, copy, mode=PRIVATE_MODE)


def backup_session(account: Account) -> Path:
    """Copy the .session into backups/NAME-YYYYmmddTHHMMSSZ.session, keeping the newest few."""
    problem = session_file_problem(account.session_path) \
        if account.session_path.exists() else "it does not exist"
    if problem:
        raise TelegramSessionError(
            f"{display_path(account.session_path)} cannot be backed up: {problem}",
            f"restore it first: python telegram_session.py restore {display_path(account.folder)}")
    account.backup_dir.mkdir(mode=0o700, exist_ok=True)
    target = account.backup_dir / f"{account.name}-{file_stamp()}{SESSION_SUFFIX}"
    _copy_database(account.session_path, target)
    for old in list_backups(account)[KEEP_BACKUPS:]:
        old.unlink(missing_ok=True)
    log.debug("backed up %s to %s", display_path(account.session_path), display_path(target))
    return target


def _aside_path(account: Account, path: Path, label: str) -> Path:
    """Where a file set aside goes: backups/FILE.LABEL-STAMP, a name never restored from."""
    account.backup_dir.mkdir(mode=0o700, exist_ok=True)
    return account.backup_dir / f"{path.name}.{label}-{file_stamp()}"


def _move_aside(path: Path, account: Account, label: str) -> Path | None:
    """Move a file out of the way into backups/; returns where it went."""
    if not path.exists():
        return None
    target = _aside_path(account, path, label)
    path.replace(target)
    return target


def restore_session(account: Account, source: Path | None = None) -> Path:
    """Replace the .session with `source` or the newest good backup; returns the copy used.

    The replaced file is kept in backups/ as NAME.session.replaced-STAMP (a stale journal
    beside it is moved too, so it is never applied to the restored file).
    """
    if source is not None:
        problem = session_file_problem(source) if source.is_file() else "it does not exist"
        if problem:
            raise TelegramSessionError(f"{display_path(source)} cannot be restored: {problem}",
                                       "pick another file from "
                                       f"{display_path(account.backup_dir)}")
        candidates = [source]
    else:
        candidates = [p for p in list_backups(account) if session_file_problem(p) is None]
        if not candidates:
            raise TelegramSessionError(
                f"no good backup of {display_path(account.session_path)} in "
                f"{display_path(account.backup_dir)}",
                f"log in again: {_auth_command(account.folder)}")
    chosen = candidates[0]
    if account.session_path.exists():   # kept first: if anything below fails, nothing is lost
        shutil.copy2(account.session_path,
                     _aside_path(account, account.session_path, "replaced"))
    journal = account.session_path.with_name(account.session_path.name + "-journal")
    _move_aside(journal, account, "replaced")
    _copy_database(chosen, account.session_path)
    return chosen


def ensure_session_file(account: Account) -> None:
    """Make sure the .session is present, private and sound, restoring a corrupt one.

    Raises TelegramAuthError when there is no session file (never logged in) or it holds no
    authorisation key, TelegramSessionError when it is corrupt and no good backup exists.
    """
    path = account.session_path
    if not path.exists():
        extra = f" (or restore a backup: python telegram_session.py restore " \
                f"{display_path(account.folder)})" if list_backups(account) else ""
        raise TelegramAuthError(f"{display_path(path)} does not exist: the account was never "
                                "logged in here", f"log in: {_auth_command(account.folder)}{extra}")
    make_private(path)
    problem = session_file_problem(path)
    if problem:
        log.error("%s is corrupt (%s)", display_path(path), problem)
        try:
            used = restore_session(account)
        except TelegramSessionError:
            raise TelegramSessionError(
                f"{display_path(path)} is corrupt ({problem}) and there is no good backup",
                f"log in again: {_auth_command(account.folder)}") from None
        log.warning("restored %s from backup %s (the damaged file is kept in %s)",
                    display_path(path), used.name, display_path(account.backup_dir))
    if not session_has_auth_key(path):
        raise TelegramAuthError(f"{display_path(path)} holds no login",
                                f"log in: {_auth_command(account.folder)}")


# ----------------------------------------------------------------------------- registry

_registry_connections: dict[Path, sqlite3.Connection] = {}


def _registry(account: Account) -> sqlite3.Connection:
    """This process's connection to the account's registry database."""
    conn = _registry_connections.get(account.registry_db)
    if conn is None:
        conn = migrate_db.connect(account.registry_db, kind="accounts")
        _registry_connections[account.registry_db] = conn
    return conn


def describe_wait(kind: str, until: datetime, now: datetime | None = None) -> str:
    """e.g. 'flood wait, 19.2 h left'."""
    left = (until - (now or datetime.now(UTC))).total_seconds()
    label = kind.replace("_", " ")
    if left >= 3600:
        return f"{label}, {left / 3600:.1f} h left"
    if left >= 60:
        return f"{label}, {left / 60:.0f} min left"
    return f"{label}, {max(left, 0):.0f} s left"


def record_wait(account: Account, seconds: float, *, kind: str = "flood_wait",
                request: str = "") -> datetime:
    """Record that Telegram told the account to wait `seconds`; returns when it ends (UTC)."""
    started = datetime.now(UTC)
    until = started + timedelta(seconds=seconds)
    conn = _registry(account)
    with transaction(conn):
        conn.execute(
            "INSERT INTO rate_limits (account, kind, request, seconds, started_at, until) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (account.name, kind, request, int(seconds), utc_text(started), utc_text(until)))
    log.warning("account %s: %s%s recorded, %s s, until %s", account.name, kind.replace("_", " "),
                f" on {request}" if request else "", int(seconds), format_time(until))
    return until


def wait_totals(accounts: list[Account]) -> tuple[int, float]:
    """How many waits Telegram imposed on these accounts, and their seconds (for metrics)."""
    count, seconds = 0, 0.0
    for account in accounts:
        row = _registry(account).execute(
            "SELECT COUNT(*), COALESCE(SUM(seconds), 0) FROM rate_limits WHERE account = ?",
            (account.name,)).fetchone()
        count, seconds = count + row[0], seconds + row[1]
    return count, seconds


def _latest_wait(conn: sqlite3.Connection, name: str,
                 now: datetime) -> tuple[str, datetime] | None:
    row = conn.execute("SELECT kind, until FROM rate_limits WHERE account = ? AND until > ? "
                       "ORDER BY until DESC LIMIT 1", (name, utc_text(now))).fetchone()
    return (row[0], parse_utc(row[1])) if row else None


def current_wait(account: Account, *, now: datetime | None = None) -> tuple[str, datetime] | None:
    """The account's running wait as (kind, until), or None."""
    return _latest_wait(_registry(account), account.name, now or datetime.now(UTC))


def _connect_wait_until(account: Account) -> datetime | None:
    """When a running wait Telegram imposed on connecting (users.GetUsers) ends, if any."""
    row = _registry(account).execute(
        "SELECT MAX(until) FROM rate_limits WHERE account = ? AND request = ? AND until > ?",
        (account.name, CONNECT_REQUEST, utc_text())).fetchone()
    return parse_utc(row[0]) if row[0] else None


async def wait_if_limited(account: Account, *, sleep: Callable[[float], Awaitable[Any]]
                          = asyncio.sleep, now: datetime | None = None) -> float:
    """Sleep until the account's recorded wait is over (logging the wake-up time).

    Returns the seconds slept (0 when there is no wait). `now` is the current time to
    measure from (default: the clock).
    """
    now = now or datetime.now(UTC)
    wait = current_wait(account, now=now)
    if wait is None:
        return 0.0
    kind, until = wait
    seconds = (until - now).total_seconds()
    log.warning("account %s: %s; sleeping until %s", account.name,
                describe_wait(kind, until, now), format_time(until))
    await sleep(seconds)
    return seconds


async def call_with_flood_wait(account: Account, make_call: Callable[[], Awaitable[T]], *,
                               request: str = "",
                               sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
    """Await `make_call()`, sleeping through recorded and new FloodWaits; returns its result.

    Before each call the account's recorded wait (from any process) is slept through. A
    FloodWaitError is recorded, slept through and the call made again (Telethon itself
    refuses the same request type on this client until the wait has really passed). A
    PeerFloodError is recorded (kind peer_flood, PEER_FLOOD_PAUSE_SECONDS) and raised: the
    account must stop. Other errors propagate.
    """
    while True:
        await wait_if_limited(account, sleep=sleep)
        try:
            return await make_call()
        except (errors.FloodWaitError, errors.FloodPremiumWaitError) as exc:
            what = request or _request_name(exc)
            until = record_wait(account, exc.seconds, request=what)
            log.warning("account %s: sleeping %s s until %s, then calling %s again",
                        account.name, exc.seconds, format_time(until), what)
        except errors.PeerFloodError as exc:
            record_wait(account, PEER_FLOOD_PAUSE_SECONDS, kind="peer_flood",
                        request=request or _request_name(exc))
            raise


def _request_name(exc: errors.RPCError) -> str:
    """The TL request an RPC error answered, e.g. SendMessageRequest ('' if unknown)."""
    return type(exc.request).__name__ if exc.request is not None else ""


def record_account_state(account: Account, **values: Any) -> None:
    """Upsert the account's row in the registry's `accounts` table with `values`."""
    values = {"folder": str(account.folder), "updated_at": utc_text(), **values}
    columns = ", ".join(values)
    placeholders = ", ".join("?" for _ in values)
    updates = ", ".join(f"{column} = excluded.{column}" for column in values)
    conn = _registry(account)
    with transaction(conn):
        conn.execute(f"INSERT INTO accounts (name, {columns}) VALUES (?, {placeholders}) "
                     f"ON CONFLICT(name) DO UPDATE SET {updates}",
                     (account.name, *values.values()))


# ----------------------------------------------------------------------------- the client

def _new_client(account: Account, flood_sleep_threshold: int,
                client_options: dict[str, Any]) -> TelegramClient:
    """A TelegramClient on the account's session; over the simulated world if one is set."""
    if account.simulator is not None and not account.simulator.is_file():
        raise AccountConfigError(
            f"TELEGRAM_SIMULATOR points to {account.simulator}, which does not exist",
            "make the world with telegram_sim.py, or remove TELEGRAM_SIMULATOR from "
            f"{display_path(account.folder / ENV_FILE)} to use the real Telegram")
    # raise_last_call_error: after Telethon's retries, raise Telegram's own error (e.g.
    # RANDOM_ID_DUPLICATE, a ServerError) instead of ValueError('Request was unsuccessful');
    # request_retries: Telegram's answers are not asked again five times (one more attempt,
    # after a short FloodWait Telethon slept through); dropped connections are retried by
    # the connection itself (connection_retries, auto_reconnect), unchanged
    options = {"raise_last_call_error": True, "request_retries": REQUEST_RETRIES,
               **client_options}
    client = telethon.TelegramClient(str(account.session_path), account.api_id, account.api_hash,
                            flood_sleep_threshold=flood_sleep_threshold, **options)
    if account.simulator is not None:
        import telegram_sim  # only for rehearsals and tests

        log.warning("SIMULATED TELEGRAM (world: %s) for account %s", account.simulator,
                    account.name)
        telegram_sim.attach(client, account.simulator)
    return client


@functools.cache
def auth_problems() -> dict[type[Exception], tuple[str, str]]:
    """Telethon's authorisation errors with what they mean and how to recover (made on
    first use: naming the classes loads Telethon)."""
    return {
        errors.AuthKeyUnregisteredError: (
            "Telegram no longer knows this session (AUTH_KEY_UNREGISTERED)",
            "log in again: {auth}"),
        errors.SessionRevokedError: (
            "the session was terminated from another device (SESSION_REVOKED)",
            "log in again: {auth}"),
        errors.SessionExpiredError: ("the session expired (SESSION_EXPIRED)",
                                     "log in again: {auth}"),
        errors.UserDeactivatedBanError: (
            "Telegram banned this account (USER_DEACTIVATED_BAN)",
            "logging in again will not help: appeal through the official app or "
            "recover@telegram.org, and take the account out of every script"),
        errors.UserDeactivatedError: (
            "the account was deleted (USER_DEACTIVATED)",
            "take the account out of every script and use another one"),
        errors.AuthKeyDuplicatedError: (
            "the session was used from two places at once and Telegram invalidated it "
            "(AUTH_KEY_DUPLICATED)",
            "stop every other copy of this .session (another machine or folder), then log in "
            "again: {auth}"),
    }


def auth_errors() -> tuple[type[Exception], ...]:
    """What auth_error maps (also `telegram_session.AUTH_ERRORS`)."""
    return (errors.UnauthorizedError, errors.AuthKeyError)


def __getattr__(name: str) -> Any:
    """AUTH_ERRORS and AUTH_PROBLEMS for other modules, made when first asked for."""
    if name == "AUTH_ERRORS":
        return auth_errors()
    if name == "AUTH_PROBLEMS":
        return auth_problems()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def auth_error(account: Account, exc: errors.RPCError) -> TelegramAuthError:
    """The TelegramAuthError (with its recovery line) for an authorisation RPC error."""
    message, recovery = next(
        (problem for error_class, problem in auth_problems().items()
         if isinstance(exc, error_class)),
        (f"Telegram refused the session ({exc.message})", "log in again: {auth}"))
    return TelegramAuthError(f"account {account.name}: {message}",
                             recovery.format(auth=_auth_command(account.folder)))


async def _authorised_user(client: TelegramClient, account: Account) -> types.User:
    """The logged-in user, or TelegramAuthError if there is none. Never prompts.

    When is_user_authorized() says no, users.GetUsers is what raises the specific reason
    (AUTH_KEY_UNREGISTERED, SESSION_REVOKED, ...), which the caller maps.
    """
    authorised = await client.is_user_authorized()
    users = await client(functions.users.GetUsersRequest([types.InputUserSelf()]))
    if not authorised or not users or not isinstance(users[0], types.User):
        raise TelegramAuthError(f"account {account.name} is not logged in",
                                f"log in: {_auth_command(account.folder)}")
    return users[0]


async def connect_with_backoff(client: TelegramClient, account: Account, *,
                               verify: Callable[[], Awaitable[T]] | None = None,
                               attempts: int = CONNECT_ATTEMPTS,
                               base_delay: float = BACKOFF_BASE_SECONDS,
                               max_delay: float = BACKOFF_MAX_SECONDS,
                               sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                               ) -> T | None:
    """client.connect() and then `verify()` (if given), retried together on network errors.

    The delay before retry n is min(max_delay, base_delay * 2**(n-1)) scaled by a random
    factor in [0.5, 1): accounts that lost the network together do not all come back in
    the same instant. Returns what `verify` returned. Raises TelegramConnectionError after
    `attempts` failures; other errors propagate at once.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            await client.connect()
            return await verify() if verify is not None else None
        except (OSError, asyncio.TimeoutError) as exc:  # before 3.11 not an OSError
            await client.disconnect()
            if attempt == attempts:
                raise TelegramConnectionError(
                    f"account {account.name}: Telegram unreachable after {attempts} attempts "
                    f"({type(exc).__name__}: {exc})",
                    "check the network; run.sh restarts the script with a growing pause"
                ) from None
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning("account %s: connection failed (%s: %s); retry %d/%d in %.1f s",
                        account.name, type(exc).__name__, exc, attempt + 1, attempts, delay)
            await sleep(delay)


@contextlib.asynccontextmanager
async def open_client(folder_or_account: str | Path | Account, *,
                      flood_sleep_threshold: int = DEFAULT_FLOOD_SLEEP_THRESHOLD,
                      connect_attempts: int = CONNECT_ATTEMPTS,
                      backoff_base: float = BACKOFF_BASE_SECONDS,
                      sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                      **client_options: Any) -> AsyncIterator[TelegramClient]:
    """A connected, authorised TelegramClient for the account; never prompts.

    Holds the folder lock for the client's whole life; checks (and if corrupt restores) the
    .session; sleeps through a running wait Telegram imposed on connecting (a restarted
    script does not knock again); connects with back-off; verifies authorisation; backs the
    session up after connecting and after disconnecting. `sleep` is what waits (injectable
    for tests); `client_options` go to TelegramClient.
    """
    account = _as_account(folder_or_account)
    with FolderLock(account):
        ensure_session_file(account)
        connect_until = _connect_wait_until(account)
        if connect_until is not None:   # connecting again now would only prolong it
            log.warning("account %s: Telegram limited connecting; sleeping until %s",
                        account.name, format_time(connect_until))
            await sleep((connect_until - datetime.now(UTC)).total_seconds())
        wait = current_wait(account)
        if wait is not None:
            log.warning("account %s: %s (until %s); its Telegram work waits until then",
                        account.name, describe_wait(*wait), format_time(wait[1]))
        client = _new_client(account, flood_sleep_threshold, client_options)
        authorised = False
        try:
            try:
                me = await connect_with_backoff(
                    client, account, verify=lambda: _authorised_user(client, account),
                    attempts=connect_attempts, base_delay=backoff_base, sleep=sleep)
            except auth_errors() as exc:
                error = auth_error(account, exc)
                record_account_state(account, authorized=0, last_error=error.message)
                raise error from None
            except TelegramAuthError as exc:
                record_account_state(account, authorized=0, last_error=exc.message)
                raise
            except (errors.FloodWaitError, errors.FloodPremiumWaitError) as exc:
                until = record_wait(account, exc.seconds, request=CONNECT_REQUEST)
                raise TelegramRateLimitError(exc.seconds, until,
                                             request=CONNECT_REQUEST) from None
            authorised = True
            record_account_state(account, user_id=me.id, username=me.username,
                                 phone=me.phone or account.phone, authorized=1, last_error=None)
            client.session.save()
            _backup_quietly(account)
            yield client
        finally:
            await client.disconnect()
            if authorised:
                _backup_quietly(account)


def _backup_quietly(account: Account) -> None:
    """Back up around a session's use; a failure is logged, never raised over the real work."""
    try:
        backup_session(account)
    except (TelegramSessionError, OSError, sqlite3.Error) as exc:
        log.error("account %s: session backup failed: %s", account.name, exc)


# ----------------------------------------------------------------------------- auth

def _read_line(prompt: str) -> str:
    """One line from the operator; EOF (no terminal) is a usage problem, not a crash."""
    try:
        return input(prompt).strip()
    except EOFError:
        raise AccountConfigError("auth needs a terminal to type the login code into",
                                 "run it by hand in a terminal, not from run.sh or a pipe") \
            from None


def _read_secret(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise AccountConfigError("auth needs a terminal to type the password into",
                                 "run it by hand in a terminal") from None


async def _sign_in_with_code(client: TelegramClient, account: Account, phone: str,
                             read_line: Callable[[str], str],
                             read_secret: Callable[[str], str]) -> types.User:
    """send_code_request + sign_in (code, then two-step password if the account has one)."""
    try:
        sent = await client.send_code_request(phone)
    except errors.PhoneNumberInvalidError:
        raise AccountConfigError(f"Telegram does not accept the phone number {phone!r}",
                                 "put it in international format (+15551234567) as TG_PHONE "
                                 f"in {display_path(account.folder / ENV_FILE)}") from None
    except errors.ApiIdInvalidError:
        raise AccountConfigError("Telegram does not accept TG_API_ID with TG_API_HASH "
                                 "(API_ID_INVALID)",
                                 "copy api_id and api_hash again from https://my.telegram.org "
                                 f"into {display_path(account.folder / ENV_FILE)}") from None
    for _ in range(AUTH_CODE_ATTEMPTS):
        code = read_line("Login code Telegram sent you: ")
        try:
            return await client.sign_in(phone, code, phone_code_hash=sent.phone_code_hash)
        except errors.PhoneCodeInvalidError:
            print("That code is not right; try again.", file=sys.stderr)
        except errors.PhoneCodeExpiredError:
            raise TelegramAuthError("the login code expired",
                                    f"start again: {_auth_command(account.folder)}") from None
        except errors.SessionPasswordNeededError:
            return await _sign_in_with_password(client, account, read_secret)
    raise TelegramAuthError(f"{AUTH_CODE_ATTEMPTS} wrong login codes",
                            f"start again: {_auth_command(account.folder)}")


async def _sign_in_with_password(client: TelegramClient, account: Account,
                                 read_secret: Callable[[str], str]) -> types.User:
    for _ in range(AUTH_CODE_ATTEMPTS):
        password = read_secret("Two-step verification password: ")
        try:
            return await client.sign_in(password=password)
        except errors.PasswordHashInvalidError:
            print("That password is not right; try again.", file=sys.stderr)
    raise TelegramAuthError(f"{AUTH_CODE_ATTEMPTS} wrong passwords",
                            f"start again: {_auth_command(account.folder)}")


def _usable_session(account: Account) -> bool:
    """Whether the .session holds a login worth trying; a corrupt one is moved aside."""
    path = account.session_path
    if not path.exists():
        return False
    make_private(path)
    problem = session_file_problem(path)
    if problem:
        kept = _move_aside(path, account, "corrupt")
        log.warning("%s was corrupt (%s); kept as %s, logging in afresh",
                    display_path(path), problem, display_path(kept))
        return False
    return session_has_auth_key(path)


async def authenticate(folder: str | Path, *, read_line: Callable[[str], str] = _read_line,
                       read_secret: Callable[[str], str] = _read_secret) -> types.User:
    """Log the account in interactively (phone, code, two-step password); returns the user.

    An already-authorised session is kept as it is. A session that is not authorised (never
    logged in, revoked, corrupt) is moved into backups/ and a fresh one is made.
    """
    account = load_account(folder)
    with FolderLock(account):
        path = account.session_path
        had_login = _usable_session(account)
        path.touch(mode=PRIVATE_MODE)       # Telethon would make it readable by others
        client = _new_client(account, DEFAULT_FLOOD_SLEEP_THRESHOLD, {})
        try:
            await connect_with_backoff(client, account)
            me = await client.get_me() \
                if had_login and await client.is_user_authorized() else None
            if me is not None:
                log.info("account %s is already logged in; the session is kept", account.name)
            elif had_login:
                await client.disconnect()
                kept = _move_aside(path, account, "unauthorised")
                log.warning("the old session is not authorised; kept as %s", display_path(kept))
                path.touch(mode=PRIVATE_MODE)
                client = _new_client(account, DEFAULT_FLOOD_SLEEP_THRESHOLD, {})
                await connect_with_backoff(client, account)
            if me is None:
                phone = account.phone or read_line(
                    "Phone number (international format, e.g. +15551234567): ")
                me = await _sign_in_with_code(client, account, phone, read_line, read_secret)
            record_account_state(account, user_id=me.id, username=me.username,
                                 phone=me.phone or account.phone, authorized=1,
                                 last_error=None)
            client.session.save()
        except (errors.FloodWaitError, errors.FloodPremiumWaitError) as exc:
            until = record_wait(account, exc.seconds, request="auth")
            raise TelegramRateLimitError(exc.seconds, until, request="auth") from None
        finally:
            await client.disconnect()
        make_private(path)
        backup_session(account)
        return me


# ----------------------------------------------------------------------------- check

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class CheckResult:
    """One line of `check`: what was checked, the outcome, and on failure the fix."""

    name: str
    outcome: str
    detail: str
    fix: str = ""
    exit_code: int = EXIT_OK

    @classmethod
    def failed(cls, name: str, error: AccountError) -> CheckResult:
        """A failure carrying the error's message, recovery line and exit code."""
        return cls(name, FAIL, error.message, error.recovery, error.exit_code)

    def lines(self) -> list[str]:
        """The printed form: outcome, name, detail, and an indented fix line on failure."""
        lines = [f"  {self.outcome:<4}  {self.name:<18} {self.detail}"]
        if self.fix:
            lines.append(f"        {'':<18} fix: {self.fix}")
        return lines


ONLINE_CHECKS = ("authorised", "get_me", "clock skew")


def _mode_check(account: Account, env_mode_before: int | None) -> CheckResult:
    """.env and .session readable by the owner only: loose modes are fixed and reported."""
    env_path = account.folder / ENV_FILE
    if env_mode_before is not None and env_mode_before & stat.S_IWOTH:
        return CheckResult("file modes", FAIL,
                           f".env is world-writable ({_mode_text(env_mode_before)})",
                           f"check its contents, then run: chmod 600 {display_path(env_path)}",
                           EXIT_USAGE)
    notes = []
    for path, known_mode in ((env_path, env_mode_before), (account.session_path, None)):
        if not path.exists():
            continue
        before = known_mode if known_mode is not None else path.stat().st_mode
        make_private(path)
        changed = stat.S_IMODE(before) & 0o077
        notes.append(f"{path.name} was {_mode_text(before)}, set to 0600" if changed
                     else f"{path.name} {_mode_text(before)}")
    return CheckResult("file modes", PASS, ", ".join(notes) or "no .env or .session yet")


def _folder_only_account(folder: Path) -> Account:
    """What can be known of an account whose .env is unusable: its files, by the folder name."""
    folder = folder.expanduser().resolve()
    return Account(name=folder.name, folder=folder, api_id=0, api_hash="", phone=None,
                   session_path=folder / f"{folder.name}{SESSION_SUFFIX}", simulator=None,
                   registry_db=_resolve(folder, DEFAULT_ACCOUNTS_DB), env={})


def _integrity_check(account: Account) -> CheckResult:
    path = account.session_path
    backups = list_backups(account)
    count = f"{len(backups)} backup{'' if len(backups) == 1 else 's'}"
    newest = f"; {count}, newest {backups[0].name}" if backups else "; no backups"
    if not path.exists():
        return CheckResult("session integrity", FAIL, f"{path.name} does not exist{newest}",
                           f"log in: {_auth_command(account.folder)}", EXIT_AUTH)
    try:
        problem = session_file_problem(path)
    except TelegramSessionError as exc:
        return CheckResult.failed("session integrity", exc)
    if problem:
        good = any(session_file_problem(b) is None for b in backups)
        fix = (f"python telegram_session.py restore {display_path(account.folder)} "
               "(scripts also restore it by themselves)") if good else \
            f"no good backup: log in again: {_auth_command(account.folder)}"
        return CheckResult("session integrity", FAIL, f"{path.name} is corrupt ({problem})"
                           f"{newest}", fix, EXIT_SESSION)
    if not session_has_auth_key(path):
        return CheckResult("session integrity", FAIL, f"{path.name} holds no login{newest}",
                           f"log in: {_auth_command(account.folder)}", EXIT_AUTH)
    return CheckResult("session integrity", PASS, f"ok{newest}")


def _wait_check(account: Account) -> CheckResult:
    wait = current_wait(account)
    if wait is None:
        return CheckResult("current waits", PASS, "none")
    kind, until = wait
    return CheckResult("current waits", FAIL,
                       f"{describe_wait(kind, until)} (until {format_time(until)})",
                       "nothing to do: the account's scripts sleep until then by themselves",
                       EXIT_FAILURE)


async def _clock_skew_check(client: TelegramClient) -> CheckResult:
    try:
        config = await client(functions.help.GetConfigRequest())
    except errors.RPCError as exc:
        return CheckResult("clock skew", SKIP, f"server time not available ({exc.message})")
    skew = (datetime.now(UTC) - config.date).total_seconds()
    detail = f"local clock {abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} Telegram"
    if abs(skew) > CLOCK_SKEW_LIMIT_SECONDS:
        return CheckResult("clock skew", FAIL, detail,
                           "synchronise the clock: sudo timedatectl set-ntp true", EXIT_FAILURE)
    return CheckResult("clock skew", PASS, detail)


def _describe_user(user: types.User) -> str:
    name = " ".join(part for part in (user.first_name, user.last_name) if part) or "(no name)"
    handle = f" @{user.username}" if user.username else ""
    phone = f", +{user.phone}" if user.phone else ""
    return f"{name}{handle} (id {user.id}{phone})"


async def _online_checks(account: Account) -> list[CheckResult]:
    try:
        async with open_client(account) as client:
            results = [CheckResult("authorised", PASS, "yes")]
            me = await client.get_me()
            results.append(CheckResult("get_me", PASS, _describe_user(me)))
            results.append(await _clock_skew_check(client))
            return results
    except AccountError as exc:
        failure = CheckResult.failed("authorised", exc)
    except errors.RPCError as exc:      # e.g. Telegram's internal errors, after its retries
        failure = CheckResult("authorised", FAIL,
                              f"Telegram refused it ({type(exc).__name__}: {exc})",
                              "try again later", EXIT_FAILURE)
    return [failure] + [CheckResult(name, SKIP, "needs the account to connect")
                        for name in ONLINE_CHECKS[1:]]


async def check_account(folder: str | Path) -> list[CheckResult]:
    """Every check of one account folder, in order.

    With an unusable .env the checks that need no .env still run (on the folder's name);
    the online checks run only when nothing before them failed and no process holds the
    account.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [CheckResult.failed(".env complete", AccountConfigError(
            f"{display_path(folder.resolve())} is not an account folder",
            "create one: python telegram_session.py new NAME"))]
    env_path = folder.expanduser().resolve() / ENV_FILE
    env_mode_before = env_path.stat().st_mode if env_path.exists() else None
    try:
        account = load_account(folder)
    except AccountConfigError as exc:
        account = _folder_only_account(folder)
        results = [CheckResult.failed(".env complete", exc)]
    else:
        phone = "TG_PHONE set" if account.phone else "TG_PHONE not set (auth will ask)"
        sim = f"; SIMULATED world {account.simulator}" if account.simulator else ""
        results = [CheckResult(".env complete", PASS, f"TG_API_ID, TG_API_HASH set; {phone}; "
                                                      f"session {account.name}{sim}")]
    results += [_mode_check(account, env_mode_before), _integrity_check(account)]
    holder = lock_holder(account)
    results.append(CheckResult("lock holder", PASS, "free" if holder is None
                               else f"in use by {holder.describe()}"))
    results.append(_wait_check(account))
    if holder is not None:
        results += [CheckResult(name, SKIP, "the account is in use; stop its script to run "
                                "this check") for name in ONLINE_CHECKS]
    elif any(r.outcome == FAIL for r in results[:3]):
        results += [CheckResult(name, SKIP, "needs the problems above fixed first")
                    for name in ONLINE_CHECKS]
    else:
        results += await _online_checks(account)
    first_failure = next((r for r in results if r.outcome == FAIL), None)
    record_account_state(account, last_check_at=utc_text(),
                         last_check_ok=int(first_failure is None),
                         **({"last_error": f"{first_failure.name}: {first_failure.detail}"}
                            if first_failure else {}))
    return results


# ----------------------------------------------------------------------------- status

def account_folders(sessions_dir: Path) -> list[Path]:
    """The account folders under `sessions_dir` (every folder but shared/ and template/)."""
    return sorted(p for p in sessions_dir.iterdir()
                  if p.is_dir() and p.name not in NOT_ACCOUNT_FOLDERS
                  and not p.name.startswith("."))


def _read_registry(account: Account) -> tuple[dict[str, Any], tuple[str, datetime] | None]:
    """The account's row and running wait, read without creating or upgrading the database."""
    if not account.registry_db.exists():
        return {}, None
    try:
        with contextlib.closing(sqlite3.connect(_sqlite_uri(account.registry_db, "ro"),
                                                uri=True, timeout=SESSION_BUSY_TIMEOUT)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM accounts WHERE name = ?",
                               (account.name,)).fetchone()
            wait = _latest_wait(conn, account.name, datetime.now(UTC))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}, None
        raise
    return (dict(row) if row else {}), wait


def status_row(folder: Path) -> dict[str, str]:
    """One account's line of `status`: user, authorised, wait, lock holder, last check."""
    row = {"account": folder.name, "user": "-", "authorised": "-", "wait": "-", "lock": "-",
           "last check": "-"}
    try:
        account = load_account(folder)
    except AccountConfigError as exc:
        account = _folder_only_account(folder)
        row["user"] = f"bad .env: {exc.message.split(': ', 1)[-1]}" \
            if (folder / ENV_FILE).exists() else "no .env yet (see .env.example)"
    row["account"] = account.name
    info, wait = _read_registry(account)
    if row["user"] == "-" and (info.get("username") or info.get("user_id")):
        row["user"] = f"@{info['username']}" if info.get("username") else f"id {info['user_id']}"
    if not account.session_path.exists():
        row["authorised"] = "no session"
    elif info.get("authorized") is not None:
        row["authorised"] = "yes" if info["authorized"] else "NO"
    if wait:
        row["wait"] = describe_wait(*wait)
    holder = lock_holder(account)
    if holder:
        row["lock"] = f"pid {holder.pid} ({holder.script})"
    if info.get("last_check_at"):
        outcome = "ok" if info.get("last_check_ok") else "FAILED"
        row["last check"] = f"{format_time(parse_utc(info['last_check_at']))} {outcome}"
    return row


# ----------------------------------------------------------------------------- new folder

def make_account_folder(sessions_dir: Path, name: str) -> Path:
    """sessions_dir/NAME from sessions/template: .env (mode 0600, SESSION_NAME=NAME) and run.sh."""
    template = DEFAULT_SESSIONS_DIR / TEMPLATE_NAME
    target = sessions_dir / name
    target.mkdir(parents=True)
    env_text = (template / ".env.example").read_text(encoding="utf-8")
    env_text = re.sub(r"(?m)^SESSION_NAME=.*$", f"SESSION_NAME={name}", env_text)
    migrate_db.write_atomically(target / ENV_FILE, env_text, mode=PRIVATE_MODE)
    shutil.copy2(template / ".env.example", target / ".env.example")
    run_sh = (template / "run.sh").resolve()
    if run_sh.is_file():
        (target / "run.sh").symlink_to(os.path.relpath(run_sh, target))
    return target


# ----------------------------------------------------------------------------- command line

def _sessions_dir(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if not args.sessions_dir.is_dir():
        parser.error(f"--sessions-dir {args.sessions_dir}: no such folder")
    return args.sessions_dir


def cmd_auth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `auth` command: the interactive login."""
    me = asyncio.run(authenticate(args.folder))
    print(f"authorised as {_describe_user(me)}; {display_path(args.folder.resolve())} is "
          "ready for the suite's scripts")
    return EXIT_OK


async def run_check(folders: list[Path]) -> int:
    """Print every check of every folder; the exit code of the first failure, else 0."""
    exit_code = EXIT_OK
    for folder in folders:
        print(display_path(folder.resolve()))
        for result in await check_account(folder):
            print("\n".join(result.lines()))
            if result.outcome == FAIL and exit_code == EXIT_OK:
                exit_code = result.exit_code
    return exit_code


def cmd_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `check` command: the folders given, else every folder under the sessions dir."""
    folders = args.folders or account_folders(_sessions_dir(args, parser))
    if not folders:
        parser.error(f"no account folders under {args.sessions_dir}")
    return asyncio.run(run_check(folders))


def cmd_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `status` command: one row per account folder, without connecting."""
    folders = account_folders(_sessions_dir(args, parser))
    if not folders:
        print(f"no account folders under {display_path(args.sessions_dir.resolve())}; "
              "make one: python telegram_session.py new NAME")
        return EXIT_OK
    rows = [status_row(folder) for folder in folders]
    print(migrate_db.format_table([key.upper() for key in rows[0]],
                                  [list(row.values()) for row in rows]))
    return EXIT_OK


def cmd_new(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `new` command: an account folder from the template."""
    sessions_dir = _sessions_dir(args, parser)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name) or args.name in NOT_ACCOUNT_FOLDERS:
        parser.error(f"NAME {args.name!r}: use letters, digits, - and _ only "
                     f"(and not {' or '.join(sorted(NOT_ACCOUNT_FOLDERS))})")
    if (sessions_dir / args.name).exists():
        parser.error(f"{sessions_dir / args.name} already exists")
    folder = make_account_folder(sessions_dir, args.name)
    print(f"made {display_path(folder.resolve())}: fill in TG_API_ID, TG_API_HASH and "
          f"TG_PHONE in its .env, then run: {_auth_command(folder.resolve())}")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `backup` command."""
    account = load_account(args.folder)
    with FolderLock(account):
        target = backup_session(account)
    print(f"backed up {display_path(account.session_path)} to {display_path(target)}")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The `restore` command."""
    account = load_account(args.folder)
    with FolderLock(account):
        used = restore_session(account, args.source.resolve() if args.source else None)
    print(f"restored {display_path(account.session_path)} from {display_path(used)} "
          f"(the replaced file is kept in {display_path(account.backup_dir)})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command line: auth, check, status, new, backup, restore."""
    parser = argparse.ArgumentParser(
        description="Telegram accounts of the suite: one folder (sessions/NAME) per account.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage or .env error, 3 the account must be "
               "logged in again (auth), 4 session file or lock problem, 130 interrupted.",
        parents=[migrate_db.cli_options()])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    auth = commands.add_parser("auth", help="log the account in (the only interactive login)")
    auth.add_argument("folder", metavar="FOLDER", type=Path, help="account folder")
    auth.set_defaults(handler=cmd_auth)

    check = commands.add_parser("check", help="diagnose accounts; each failed check with its fix")
    check.add_argument("folders", metavar="FOLDER", type=Path, nargs="*",
                       help="account folders (default: every folder under the sessions dir)")
    check.set_defaults(handler=cmd_check)

    status = commands.add_parser("status", help="table of every account, without connecting")
    status.set_defaults(handler=cmd_status)

    new = commands.add_parser("new", help="make an account folder from sessions/template")
    new.add_argument("name", metavar="NAME", help="folder and session name, e.g. session3")
    new.set_defaults(handler=cmd_new)

    for sub in (check, status, new):
        group = sub.add_argument_group("where the accounts are")
        group.add_argument("--sessions-dir", type=Path, default=DEFAULT_SESSIONS_DIR,
                           metavar="DIR", help="folder holding the account folders "
                                               "(default: sessions/ next to this script)")

    backup = commands.add_parser("backup", help="copy the .session into FOLDER/backups/")
    backup.add_argument("folder", metavar="FOLDER", type=Path, help="account folder")
    backup.set_defaults(handler=cmd_backup)

    restore = commands.add_parser("restore", help="put a backup back as the .session")
    restore.add_argument("folder", metavar="FOLDER", type=Path, help="account folder")
    restore.add_argument("--from", dest="source", type=Path, metavar="FILE",
                         help="the backup to restore (default: the newest good one)")
    restore.set_defaults(handler=cmd_restore)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the command, turn account errors into one line + exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    migrate_db.setup_logging(args.verbose, args.quiet)
    try:
        return args.handler(args, parser)
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except errors.RPCError as exc:      # e.g. PHONE_NUMBER_BANNED or PHONE_NUMBER_FLOOD at auth
        print(f"error: Telegram refused it ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:             # `| head`: migrate_db.run_main ends quietly
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print("error: the disk is full; free some space and run again", file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.DatabaseError as exc:     # OperationalError (locked) or a damaged file
        hint = "if it says locked, another process holds it past the busy timeout: try " \
            "again" if isinstance(exc, sqlite3.OperationalError) else \
            "the file (ACCOUNTS_DB, default sessions/shared/accounts.db) is damaged: move " \
            "it aside and run again"
        print(f"error: accounts database: {exc}; {hint}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    migrate_db.run_main(main)
