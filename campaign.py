#!/usr/bin/env python3
"""Send the operator's messages to the operator's chats from several accounts, per run.

Each `start` is a run with its own UUID4 run_id: every chat gets up to `max_cycles`
successful sends in the run (first the carry-over: what the last run that sent left undone
of its own cycles, never compounding; see CARRY_SQL), each account stays under
`max_messages_per_hour` over any 60 minutes across all runs, and two sends to one chat are
at least `cycle_delay_minutes` apart. One worker process per account (at most --workers at
once) claims chats atomically from the shared SQLite database (spec 000).

    python campaign.py init
    python campaign.py import-chats chats.txt [--group G]
    python campaign.py import-messages texts.json [--group G]
    python campaign.py add-profile sessions/session1
    python campaign.py check                   # each account: member, may write, slow mode
    python campaign.py plan                    # what a start would send, and how long it takes
    python campaign.py start [--group G] [--profiles session1 session2] [--workers N] [--dry-run]
    python campaign.py status | runs | stop | list-profiles | report [RUN_ID]
    python campaign.py unblock CHAT | remove-chat CHAT | clear-wait ACCOUNT [--force]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import heapq
import io
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn

import migrate_db
import telegram_session
from migrate_db import parse_utc, transaction, utc_text
from telegram_session import format_time

# loaded when first used, so --help answers at once
yaml = migrate_db.lazy_import("yaml")
errors = migrate_db.lazy_import("telethon.errors")
functions = migrate_db.lazy_import("telethon.functions")
types = migrate_db.lazy_import("telethon.types")
telethon_utils = migrate_db.lazy_import("telethon.utils")

UTC = timezone.utc        # datetime.UTC is Python 3.11+

# ----------------------------------------------------------------------------- settings

SUITE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = SUITE_DIR / "config.yaml"
EXAMPLE_CONFIG = SUITE_DIR / "config.example.yaml"
DEFAULT_DB = SUITE_DIR / "sessions" / "shared" / "campaign.db"
DEFAULT_GROUP = "default"

EXIT_OK = telegram_session.EXIT_OK
EXIT_FAILURE = telegram_session.EXIT_FAILURE
EXIT_USAGE = telegram_session.EXIT_USAGE
EXIT_AUTH = telegram_session.EXIT_AUTH
EXIT_SESSION = telegram_session.EXIT_SESSION
EXIT_INTERRUPTED = telegram_session.EXIT_INTERRUPTED

WINDOW = timedelta(hours=1)                # the sliding window of max_messages_per_hour
POLL_SECONDS = 2.0                         # how often a sleeping worker checks for `stop`
IDLE_POLL_SECONDS = 1.0                    # nothing claimable but others still sending
MAX_MESSAGE_CHARS = 4096                   # Telegram's limit for one text message
NETWORK_BACKOFF_START = 2.0                # seconds; doubles up to retry.network_backoff_max
WORKER_RESTARTS = 5                        # a crashing worker is restarted this many times
RESTART_PAUSE_MAX = 60.0
STOP_WAIT_SECONDS = 30.0
PARENT_CHECK_SECONDS = 1.0                 # how often a worker checks its `start` is alive
ANY_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # next_available_at '': a chat never sent to
PLAN_LINES = 50                            # chats listed by `plan` before "... N more"

TEXT_ORDERS = ("rotation", "random")
PARSE_MODES = ("markdown", "html", "none")  # how texts are formatted (Telethon's parsers)
CHOICES = {"order": TEXT_ORDERS, "parse_mode": PARSE_MODES}
USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,31}")
LINK = re.compile(r"(?:https?://)?(?:www\.)?(?:t|telegram)\.(?:me|dog)/(?:s/)?([^/?#\s]+)/?",
                  re.IGNORECASE)
NUMERIC_ID = re.compile(r"-?\d{1,20}")


@functools.cache
def chat_errors() -> tuple[type[Exception], ...]:
    """Telegram errors that say this chat cannot take our messages: counted, then the chat
    blocked (functions, these: naming Telethon's classes loads it)."""
    return (
        errors.ChatWriteForbiddenError, errors.ChannelPrivateError,
        errors.UsernameNotOccupiedError, errors.UsernameInvalidError,
        errors.ChatAdminRequiredError, errors.ChatRestrictedError, errors.PeerIdInvalidError,
        errors.ChatSendPlainForbiddenError, errors.UserIsBlockedError,
        errors.InputUserDeactivatedError,
    )


@functools.cache
def account_refusals() -> dict[type[Exception], tuple[str, str]]:
    """Telegram errors that say this account may not send anywhere (USER_BANNED_IN_CHANNEL:
    the account is restricted from writing in groups and channels, not banned from one
    chat): the account stops for the run and the chat goes back to the others at once.
    error -> (worker status, reason shown in status and report)"""
    return {
        errors.PeerFloodError: (
            "peer_flood", "PeerFlood: Telegram limited this account (check @SpamBot)"),
        errors.UserBannedInChannelError: (
            "restricted", "USER_BANNED_IN_CHANNEL: Telegram restricted this account from "
                          "writing in groups and channels (check @SpamBot)"),
        errors.FrozenMethodInvalidError: (
            "frozen", "FROZEN_METHOD_INVALID: Telegram froze this account (check @SpamBot)"),
    }


@functools.cache
def network_errors() -> tuple[type[Exception], ...]:
    """The request may or may not have reached Telegram: retried with the same random_id."""
    return (OSError, asyncio.TimeoutError, errors.ServerError, errors.TimedOutError)

log = logging.getLogger("campaign")


class CampaignError(Exception):
    """A problem the operator must fix, reported as one line; `exit_code` 1 or 2."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------- the clock

class Clock:
    """Wall-clock time for the scheduler; tests and benchmarks inject a simulated clock
    (tests/clocks.py)."""

    poll_seconds: float | None = POLL_SECONDS   # None: sleeps are never cut short to poll

    def now(self) -> datetime:
        """The current time, UTC."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep `seconds` (nothing when not positive), or until `wake` is set."""
        if wake is None:
            await asyncio.sleep(max(0.0, seconds))
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(0.0, seconds))


def format_duration(seconds: float) -> str:
    """e.g. '6 h 40 min', '12 min', '40 s'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class Config:
    """config.yaml, validated. See config.example.yaml for what each key means."""

    max_messages_per_hour: int = 30
    max_cycles: int = 1
    cycle_delay_minutes: float = 20.0
    delay_randomness: float = 0.2
    max_attempts_before_block: int = 3
    retry_delay_minutes: float = 5.0
    network_backoff_max_seconds: float = 300.0
    text_order: str = "rotation"
    parse_mode: str = "markdown"
    database_path: Path | None = None
    source: str = "built-in defaults"

    def as_json(self) -> str:
        """The settings a run used, for campaign_runs.config_json."""
        values = asdict(self)
        values["database_path"] = str(self.database_path) if self.database_path else None
        values.pop("source")
        return json.dumps(values, sort_keys=True)


# key -> (Config field, kind, minimum, maximum); kind: int | number | str | a CHOICES key.
# The maxima keep out values that are surely typing mistakes (and would overflow a timer).
CONFIG_KEYS: dict[str, dict[str, tuple[str, str, float | None, float | None]]] = {
    "limits": {
        "max_messages_per_hour": ("max_messages_per_hour", "int", 1, 1000),
        "max_cycles": ("max_cycles", "int", 1, 1000),
        "cycle_delay_minutes": ("cycle_delay_minutes", "number", 0, 7 * 24 * 60),
        "delay_randomness": ("delay_randomness", "number", 0, 1),
    },
    "retry": {
        "max_attempts_before_block": ("max_attempts_before_block", "int", 1, 1000),
        "retry_delay_minutes": ("retry_delay_minutes", "number", 0, 7 * 24 * 60),
        "network_backoff_max_seconds": ("network_backoff_max_seconds", "number", 1, 24 * 3600),
    },
    "messages": {"order": ("text_order", "order", None, None),
                 "parse_mode": ("parse_mode", "parse_mode", None, None)},
    "database": {"path": ("database_path", "str", None, None)},
}


def _check_value(where: str, value: Any, kind: str, low: float | None,
                 high: float | None) -> Any:
    """The value converted for Config, or ValueError naming the key and what it must be."""
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where} must be a non-empty text, got {value!r}")
        return value
    if kind in CHOICES:
        if value not in CHOICES[kind]:
            raise ValueError(f"{where} must be one of {', '.join(CHOICES[kind])}, "
                             f"got {value!r}")
        return value
    whole = kind == "int"
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        noun = "a whole number" if whole else "a number"
        raise ValueError(f"{where} must be {noun}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if low is not None and value < low:
        what = "negative" if value < 0 else "too small"
        raise ValueError(f"{where} must be >= {low:g}, got {value!r} ({what})")
    if high is not None and value > high:
        raise ValueError(f"{where} must be <= {high:g}, got {value!r}")
    return value if whole else float(value)


def parse_config(data: Any, source: str, base_dir: Path) -> Config:
    """A Config from parsed YAML; ValueError('KEY ...') on the first problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"the file must be a mapping of sections "
                         f"({', '.join(CONFIG_KEYS)}), got {type(data).__name__}")
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section not in CONFIG_KEYS:
            raise ValueError(f"unknown key {section!r} (known: {', '.join(CONFIG_KEYS)})")
        if content is None:
            continue
        if not isinstance(content, dict):
            raise ValueError(f"{section} must be a mapping of keys, got {content!r}")
        known = CONFIG_KEYS[section]
        for key, value in content.items():
            if key not in known:
                raise ValueError(f"unknown key {section}.{key} "
                                 f"(known in {section}: {', '.join(known)})")
            name, kind, low, high = known[key]
            values[name] = _check_value(f"{section}.{key}", value, kind, low, high)
    if "database_path" in values:
        path = Path(values["database_path"]).expanduser()
        values["database_path"] = path if path.is_absolute() else base_dir / path
    return Config(**values, source=source)


def load_config(path: Path | None) -> Config:
    """config.yaml validated; `path` None means the default file, or defaults if it is absent.

    Raises CampaignError (exit 2) with one line naming the file and the key.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG
    if not path.exists():
        if explicit:
            raise CampaignError(f"{path}: no such config file (copy {EXAMPLE_CONFIG.name} "
                                "and edit it)", EXIT_USAGE)
        return Config()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read: {exc.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not UTF-8 text", EXIT_USAGE) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CampaignError(f"{path}: not valid YAML{where}: {problem}", EXIT_USAGE) from None
    try:
        return parse_config(data, str(path), path.resolve().parent)
    except ValueError as exc:
        raise CampaignError(f"{path}: {exc}", EXIT_USAGE) from None


def cycle_delay_seconds(config: Config, rng: random.Random) -> float:
    """The pause before the next send to a chat: cycle_delay_minutes stretched by up to
    delay_randomness (never shorter than the configured delay)."""
    base = config.cycle_delay_minutes * 60.0
    return base * (1.0 + rng.uniform(0.0, config.delay_randomness))


# ----------------------------------------------------------------------------- importing

def normalise_chat(raw: str) -> str:
    """'@name' (lower case) for usernames and t.me links, the digits for numeric ids.

    Raises ValueError saying what is wrong with the entry.
    """
    entry = raw.strip()
    if NUMERIC_ID.fullmatch(entry):
        return entry
    link = LINK.fullmatch(entry)
    if link:
        entry = link.group(1)
        if entry.startswith(("+", "joinchat")):
            raise ValueError("invite links cannot be messaged; join the chat and list its "
                             "@username or numeric id")
    elif "/" in entry or "." in entry:
        raise ValueError("not a t.me link, @username or numeric id")
    name = entry[1:] if entry.startswith("@") else entry
    if not USERNAME.fullmatch(name):
        raise ValueError("a username has 4-32 letters, digits or _ and starts with a letter")
    return "@" + name.lower()


def _chat_cells(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """(line number, raw entry) of a chat list: txt one per line, csv first column (or the
    column named chat/username/chat_username/link/id). Blank lines and # comments skipped."""
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        column, start = 0, 0
        if rows:
            header = [cell.strip().lower() for cell in rows[0]]
            for name in ("chat_username", "chat", "username", "link", "id"):
                if name in header:
                    column, start = header.index(name), 1
                    break
        for number, row in enumerate(rows[start:], start=start + 1):
            cell = row[column].strip() if len(row) > column else ""
            if cell and not cell.startswith("#"):
                yield number, cell
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


@dataclass
class ChatImport:
    """What a chat list held: entries to add, duplicates and problems, by line number."""

    chats: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_input_file(path: Path) -> str:
    """The text of a file the operator gave us (UTF-8, BOM allowed); CampaignError if not."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such file", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not UTF-8 text", EXIT_USAGE) from None
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read: {exc.strerror}", EXIT_USAGE) from None


def read_chat_list(path: Path) -> ChatImport:
    """Parse a chat list; every malformed line and duplicate is reported with its number."""
    text = read_input_file(path)
    result, seen = ChatImport(), {}
    try:
        cells = list(_chat_cells(path, text))
    except csv.Error as exc:
        raise CampaignError(f"{path}: not valid CSV: {exc}", EXIT_USAGE) from None
    for number, raw in cells:
        try:
            chat = normalise_chat(raw)
        except ValueError as exc:
            result.problems.append(f"{path}:{number}: {raw!r}: {exc}")
            continue
        if chat in seen:
            result.duplicates.append(f"{path}:{number}: {chat} repeats line {seen[chat]}")
            continue
        seen[chat] = number
        result.chats.append(chat)
    return result


def add_chats(conn: sqlite3.Connection, chats: Sequence[str], group: str,
              now: datetime) -> tuple[int, int]:
    """Add normalised chats to `group` in one transaction; returns (added, already there)."""
    stamp = utc_text(now)
    with transaction(conn):
        added = conn.executemany(  # rowcount: the rows inserted, not those ignored
            "INSERT OR IGNORE INTO tasks (group_id, chat_username, status, next_available_at, "
            "created_at, updated_at) VALUES (?, ?, 'pending', '', ?, ?)",
            [(group, chat, stamp, stamp) for chat in chats]).rowcount
        added += conn.executemany(  # a chat removed with remove-chat comes back
            f"UPDATE tasks SET {UNBLOCK_SET} WHERE group_id = ? AND chat_username = ? AND "
            "status = 'removed'", [(stamp, group, chat) for chat in chats]).rowcount
    return added, len(chats) - added


# what unblock (and importing a removed chat again) sets: a chat to message, no errors counted
UNBLOCK_SET = ("status = 'pending', is_blocked = 0, block_reason = NULL, fail_streak = 0, "
               "next_available_at = COALESCE(next_available_at, ''), updated_at = ?")


def find_chat(conn: sqlite3.Connection, raw: str, group: str | None) -> list[tuple]:
    """(id, group, status, block_reason) of the tasks for a chat the operator named;
    CampaignError (exit 2) when it is malformed or not in the database."""
    try:
        chat = normalise_chat(raw)
    except ValueError as exc:
        raise CampaignError(f"{raw!r}: {exc}", EXIT_USAGE) from None
    clause, args = _group_clause(group)
    rows = conn.execute(f"SELECT id, group_id, status, block_reason FROM tasks WHERE "
                        f"chat_username = ? {clause} ORDER BY id", (chat, *args)).fetchall()
    if not rows:
        where = f" in group {group!r}" if group else ""
        raise CampaignError(f"no chat {chat}{where} (status lists the chats)", EXIT_USAGE)
    return rows


def unblock_chat(conn: sqlite3.Connection, raw: str, group: str | None,
                 now: datetime) -> list[str]:
    """Make a blocked (or removed) chat one to message again; returns what was done."""
    lines = []
    for task_id, chat_group, status, reason in find_chat(conn, raw, group):
        if status not in ("blocked", "removed"):
            lines.append(f"{normalise_chat(raw)} ({chat_group}) is not blocked ({status})")
            continue
        with transaction(conn):
            conn.execute(f"UPDATE tasks SET {UNBLOCK_SET} WHERE id = ?", (utc_text(now), task_id))
        lines.append(f"{normalise_chat(raw)} ({chat_group}) unblocked (was {status}: {reason})")
    return lines


def remove_chat(conn: sqlite3.Connection, raw: str, group: str | None,
                now: datetime) -> list[str]:
    """Take a chat out of every run (its rows and attempts are kept for the hourly window and
    the reports); refused while a worker is sending to it."""
    rows = find_chat(conn, raw, group)
    lines = []
    for task_id, chat_group, _status, _ in rows:
        with transaction(conn):
            removed = conn.execute(
                "UPDATE tasks SET status = 'removed', is_blocked = 1, block_reason = "
                "'removed by the operator', updated_at = ? WHERE id = ? AND status != "
                "'in_progress'", (utc_text(now), task_id)).rowcount
        if not removed:
            raise CampaignError(f"{normalise_chat(raw)} ({chat_group}): a worker is sending to "
                                "it right now; try again in a moment")
        lines.append(f"{normalise_chat(raw)} ({chat_group}) removed: no run sends to it "
                     "(import it again, or unblock it, to bring it back)")
    return lines


def clear_wait(profile: Profile, now: datetime, force: bool) -> str:
    """End the account's recorded Telegram wait (FloodWait, PeerFlood) early. Refused while
    the wait Telegram gave is still running, unless `force`: sending during it only brings
    the same refusal again."""
    try:
        account = telegram_session.load_account(profile.folder)
    except telegram_session.AccountError as exc:
        raise CampaignError(str(exc), EXIT_USAGE) from None
    wait = telegram_session.current_wait(account, now=now)
    if wait is None:
        return f"{profile.name}: no wait recorded; nothing to clear"
    kind, until = wait
    described = telegram_session.describe_wait(kind, until, now)
    if not force:
        raise CampaignError(f"{profile.name}: Telegram's {described} (until "
                            f"{format_time(until)}); sending before then is refused again. "
                            "Use --force to clear it anyway")
    conn = migrate_db.connect(account.registry_db, kind="accounts")
    try:
        with transaction(conn):
            cleared = conn.execute("UPDATE rate_limits SET until = ? WHERE account = ? AND "
                                   "until > ?", (utc_text(now), account.name, utc_text(now))
                                   ).rowcount
    finally:
        conn.close()
    return f"{profile.name}: {cleared} wait(s) cleared ({described} was left)"


def read_texts(path: Path) -> list[str]:
    """The texts of a messages file: json (a text, a list of texts or of {"text": ...}, or
    {"messages": [...]}) or txt (the whole file, or several texts separated by '---' lines).
    """
    content = read_input_file(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise CampaignError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}",
                                EXIT_USAGE) from None
        if isinstance(data, dict) and "messages" in data:
            data = data["messages"]
        items = data if isinstance(data, list) else [data]
        texts = []
        for index, item in enumerate(items, start=1):
            value = item.get("text") if isinstance(item, dict) else item
            if not isinstance(value, str):
                raise CampaignError(f"{path}: message {index} is not a text (a string or "
                                    '{"text": "..."})', EXIT_USAGE)
            texts.append(value)
    else:
        texts = re.split(r"^---\s*$", content, flags=re.MULTILINE)
    texts = [text.strip() for text in texts]
    for index, text in enumerate(texts, start=1):
        if not text:
            raise CampaignError(f"{path}: message {index} is empty", EXIT_USAGE)
        if len(text) > MAX_MESSAGE_CHARS:
            raise CampaignError(f"{path}: message {index} has {len(text)} characters; "
                                f"Telegram allows {MAX_MESSAGE_CHARS}", EXIT_USAGE)
    return texts


def import_texts(conn: sqlite3.Connection, texts: Sequence[str], *, replace: bool,
                 now: datetime, group: str | None = None) -> tuple[int, int]:
    """Store the texts to send to the chats of `group` (None: of every group), identical
    active ones once; returns (added, already there). With `replace` the earlier texts of
    that group (None: every text) are set inactive first."""
    added = 0
    with transaction(conn):
        if replace:
            conn.execute("UPDATE campaign_texts SET is_active = 0 WHERE ? IS NULL OR "
                         "group_id = ?", (group, group))
        for text in dict.fromkeys(texts):
            exists = conn.execute("SELECT id FROM campaign_texts WHERE text = ? AND "
                                  "group_id IS ? AND is_active = 1", (text, group)).fetchone()
            if not exists:
                conn.execute("INSERT INTO campaign_texts (text, group_id, is_active, "
                             "created_at) VALUES (?, ?, 1, ?)", (text, group, utc_text(now)))
                added += 1
    return added, len(texts) - added


def active_texts(conn: sqlite3.Connection, group: str | None = None) -> list[tuple[int, str]]:
    """(id, text) of the texts to send to a chat of `group` (its own and those for every
    group; None: every active text), in import order."""
    return conn.execute("SELECT id, text FROM campaign_texts WHERE is_active = 1 AND "
                        "(? IS NULL OR group_id IS NULL OR group_id = ?) ORDER BY id",
                        (group, group)).fetchall()


def groups_without_texts(conn: sqlite3.Connection, group: str | None) -> list[str]:
    """The groups (of `group`, or all) with chats to message but no active text for them."""
    clause, args = _group_clause(group)
    groups = [g for (g,) in conn.execute(
        f"SELECT DISTINCT group_id FROM tasks WHERE is_blocked = 0 {clause} ORDER BY group_id",
        args)]
    return [g for g in groups if not active_texts(conn, g)]


# ----------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class Profile:
    """An account taking part in campaigns: its row in `profiles` and its folder."""

    id: int
    name: str
    folder: Path


def _stored_folder(folder: Path) -> str:
    """Folders inside the suite are stored relative to it, so a copied suite still works."""
    try:
        return str(folder.resolve().relative_to(SUITE_DIR))
    except ValueError:
        return str(folder.resolve())


def add_profile(conn: sqlite3.Connection, folder: Path, now: datetime) -> tuple[Profile, bool]:
    """Register an account folder (its .env must load); returns (profile, newly added)."""
    try:
        account = telegram_session.load_account(folder)
    except telegram_session.AccountError as exc:
        raise CampaignError(str(exc), EXIT_USAGE) from None
    with transaction(conn):
        row = conn.execute("SELECT id FROM profiles WHERE profile_name = ?",
                           (account.name,)).fetchone()
        if row:
            conn.execute("UPDATE profiles SET folder = ?, is_active = 1 WHERE id = ?",
                         (_stored_folder(account.folder), row[0]))
            return Profile(row[0], account.name, account.folder), False
        cursor = conn.execute(
            "INSERT INTO profiles (profile_id, profile_name, folder, is_active, created_at) "
            "VALUES (?, ?, ?, 1, ?)", (str(uuid.uuid4()), account.name,
                                       _stored_folder(account.folder), utc_text(now)))
    return Profile(cursor.lastrowid, account.name, account.folder), True


def list_profiles(conn: sqlite3.Connection, names: Sequence[str] | None = None) -> list[Profile]:
    """Active profiles (or exactly the named ones); CampaignError for an unknown name."""
    rows = conn.execute("SELECT id, profile_name, folder FROM profiles WHERE is_active = 1 "
                        "ORDER BY id").fetchall()
    profiles = [Profile(pid, name, _profile_folder(name, folder)) for pid, name, folder in rows]
    if not names:
        return profiles
    by_name = {p.name: p for p in profiles}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise CampaignError(f"unknown profile(s): {', '.join(unknown)} (add them with "
                            "add-profile FOLDER; list-profiles shows the known ones)",
                            EXIT_USAGE)
    return [by_name[name] for name in dict.fromkeys(names)]


def _profile_folder(name: str, stored: str | None) -> Path:
    if not stored:  # a legacy profile row: the account folder of that name
        return SUITE_DIR / "sessions" / name
    path = Path(stored)
    return path if path.is_absolute() else SUITE_DIR / path


# ----------------------------------------------------------------------------- the schedule

def window_sends(conn: sqlite3.Connection, profile_id: int, now: datetime) -> list[datetime]:
    """When this account's successful sends of the last 60 minutes happened, oldest first
    (every run counts: max_messages_per_hour is global). Sends stamped later than `now`
    count too: after the clock is stepped back they are still recent, and forgetting them
    would allow extra sends. The earlier system's attempts name the account by its external
    profile_id; they count the same."""
    rows = conn.execute(
        "SELECT attempted_at FROM task_attempts WHERE profile_id IN "
        "(?, (SELECT profile_id FROM profiles WHERE id = ?)) "
        "AND status = 'success' AND attempted_at > ?",
        (profile_id, profile_id, utc_text(now - WINDOW))).fetchall()
    return sorted(parse_utc(value) for (value,) in rows)


def next_free_slot(conn: sqlite3.Connection, profile_id: int, limit: int,
                   now: datetime) -> datetime:
    """The first instant this account may send without more than `limit` successful sends
    in any 60 minutes: `now` if it is under the limit."""
    sends = window_sends(conn, profile_id, now)
    if len(sends) < limit:
        return now
    return sends[len(sends) - limit] + WINDOW


@dataclass
class Claim:
    """A chat a worker holds, with the attempt row (and random_id) made before sending."""

    task_id: int
    chat: str
    attempt_id: int
    random_id: int
    text_id: int
    text: str
    run_id: str
    cycle_number: int
    carry: bool
    resumed: bool = False


def new_random_id() -> int:
    """A signed 64-bit random_id, as messages.sendMessage takes it."""
    return secrets.randbits(64) - 2 ** 63


def choose_text(texts: Sequence[tuple[int, str]], sends_so_far: int, order: str,
                rng: random.Random) -> tuple[int, str]:
    """Rotation: the chat's next text in turn (by its all-time sends); random: any."""
    if order == "random":
        return rng.choice(texts)
    return texts[sends_so_far % len(texts)]


_CLAIM_SQL = """
UPDATE tasks SET status = 'in_progress', assigned_profile_id = :profile, claimed_pid = :pid,
                 claimed_at = :now, updated_at = :now
WHERE id = (SELECT id FROM tasks INDEXED BY {index}
            WHERE current_run_id = :run AND status = 'pending' AND open_attempt_id IS NULL
              AND run_sent < {limit} AND next_available_at <= :now
            ORDER BY next_available_at, id LIMIT 1)
RETURNING id, chat_username, run_sent, run_carry, completed_cycles, group_id"""
CLAIM_CARRY_SQL = _CLAIM_SQL.format(index="idx_tasks_claim_carry", limit="run_carry")
CLAIM_OWN_SQL = _CLAIM_SQL.format(index="idx_tasks_claim", limit="run_quota")


def claim_next(conn: sqlite3.Connection, run_id: str, profile_id: int, now: datetime,
               order: str = "rotation", rng: random.Random | None = None,
               pid: int | None = None) -> Claim | None:
    """Atomically take the next chat this run owes a send (carry-over first) and record the
    attempt, with its random_id and one of the chat's group's texts, before anything is
    sent. None when nothing is due now; CampaignError when the group has no text."""
    params = {"profile": profile_id, "pid": pid or os.getpid(), "now": utc_text(now),
              "run": run_id}
    with migrate_db.durable_transaction(conn):   # on disk before the send goes out
        row = conn.execute(CLAIM_CARRY_SQL, params).fetchone()
        carry = row is not None
        if row is None:
            row = conn.execute(CLAIM_OWN_SQL, params).fetchone()
        if row is None:
            return None
        task_id, chat, run_sent, run_carry, completed, group = row
        texts = active_texts(conn, group)
        if not texts:
            raise CampaignError(f"no texts to send to group {group!r}; import them with "
                                "import-messages FILE --group GROUP")
        text_id, text = choose_text(texts, completed, order, rng or random)
        random_id = new_random_id()
        attempt_id = conn.execute(
            "INSERT INTO task_attempts (task_id, profile_id, run_id, cycle_number, status, "
            "random_id, text_id, attempted_at) VALUES (?, ?, ?, ?, 'sending', ?, ?, ?)",
            (task_id, profile_id, run_id, run_sent + 1, random_id, text_id,
             params["now"])).lastrowid
        conn.execute("UPDATE tasks SET open_attempt_id = ? WHERE id = ?", (attempt_id, task_id))
    return Claim(task_id, chat, attempt_id, random_id, text_id, text, run_id, run_sent + 1,
                 carry)


def claim_open_attempt(conn: sqlite3.Connection, profile_id: int, now: datetime,
                       pid: int | None = None) -> Claim | None:
    """Take back a send of this account whose outcome is unknown (its worker died or
    stopped mid-send). It is sent again with the same random_id, so Telegram delivers it at
    most once; only the same account can do that, so the chat waits for it.

    Looked for before any transaction: the usual answer (none) then takes no write lock on
    every pick; the take itself is guarded, so losing a race only returns None."""
    row = conn.execute(
        "SELECT a.id, a.task_id, a.random_id, a.text_id, a.run_id, a.cycle_number, "
        "t.chat_username, COALESCE(c.text, '') FROM task_attempts a "
        "CROSS JOIN tasks t ON t.id = a.task_id AND t.open_attempt_id = a.id "
        "LEFT JOIN campaign_texts c ON c.id = a.text_id "
        "WHERE a.profile_id = ? AND a.status = 'sending' AND t.status = 'pending' "
        "ORDER BY a.id LIMIT 1", (profile_id,)).fetchone()
    if row is None:
        return None
    attempt_id, task_id, random_id, text_id, run_id, cycle, chat, text = row
    with transaction(conn):
        taken = conn.execute(
            "UPDATE tasks SET status = 'in_progress', assigned_profile_id = ?, "
            "claimed_pid = ?, claimed_at = ?, updated_at = ? WHERE id = ? AND "
            "status = 'pending' AND open_attempt_id = ?",
            (profile_id, pid or os.getpid(), utc_text(now), utc_text(now), task_id,
             attempt_id)).rowcount
    if not taken:
        return None
    return Claim(task_id, chat, attempt_id, random_id, text_id, text, run_id, cycle or 0,
                 carry=False, resumed=True)


def record_success(conn: sqlite3.Connection, claim: Claim, message_id: int | None,
                   now: datetime, next_available: datetime) -> None:
    """The send went through: the attempt counts for its run and the chat rests until
    `next_available` (the cycle delay)."""
    stamp = utc_text(now)
    with transaction(conn):
        conn.execute("UPDATE task_attempts SET status = 'success', sent_msg_id = ?, "
                     "error_type = NULL, attempted_at = ? WHERE id = ?",
                     (message_id, stamp, claim.attempt_id))
        conn.execute(
            "UPDATE tasks SET status = 'pending', run_sent = run_sent + "
            "(CASE WHEN current_run_id = ? THEN 1 ELSE 0 END), "
            "completed_cycles = completed_cycles + 1, success_count = success_count + 1, "
            "fail_streak = 0, last_attempt_at = ?, next_available_at = ?, "
            "open_attempt_id = NULL, claimed_pid = NULL, claimed_at = NULL, updated_at = ? "
            "WHERE id = ?", (claim.run_id, stamp, utc_text(next_available), stamp, claim.task_id))


def record_failure(conn: sqlite3.Connection, claim: Claim, error_type: str, message: str,
                   now: datetime, *, next_available: datetime | None = None,
                   block_after: int | None = None) -> bool:
    """The send did not happen: the attempt is failed with its error type and the chat
    released (to rest until `next_available`, if given). With `block_after`, a chat error:
    the chat is blocked once that many have come in a row. Returns whether it was blocked."""
    stamp = utc_text(now)
    with transaction(conn):
        conn.execute("UPDATE task_attempts SET status = 'failed', error_type = ?, "
                     "error_message = ?, attempted_at = ? WHERE id = ?",
                     (error_type, message[:500], stamp, claim.attempt_id))
        streak = conn.execute(
            "UPDATE tasks SET fail_streak = fail_streak + ?, failed_count = failed_count + 1, "
            "last_attempt_at = ?, updated_at = ? WHERE id = ? RETURNING fail_streak",
            (1 if block_after else 0, stamp, stamp, claim.task_id)).fetchone()[0]
        blocked = block_after is not None and streak >= block_after
        reason = f"{error_type} ({streak} attempts): {message}"[:500] if blocked else None
        conn.execute(
            "UPDATE tasks SET status = ?, is_blocked = ?, block_reason = COALESCE(?, "
            "block_reason), next_available_at = MAX(next_available_at, ?), "
            "open_attempt_id = NULL, claimed_pid = NULL, claimed_at = NULL WHERE id = ?",
            ("blocked" if blocked else "pending", int(blocked), reason,
             utc_text(next_available or now), claim.task_id))
    return blocked


def release_claim(conn: sqlite3.Connection, claim: Claim, now: datetime) -> None:
    """Give a chat back with its send's outcome unknown: the attempt stays 'sending' and the
    chat waits for this account to send it again with the same random_id."""
    with transaction(conn):
        conn.execute("UPDATE tasks SET status = 'pending', claimed_pid = NULL, "
                     "claimed_at = NULL, updated_at = ? WHERE id = ? AND status = 'in_progress'",
                     (utc_text(now), claim.task_id))


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def release_dead_claims(conn: sqlite3.Connection, now: datetime) -> int:
    """Chats held by worker processes that no longer exist become claimable again (a send
    whose outcome is unknown stays with its account). Returns how many were released."""
    held = conn.execute("SELECT id, claimed_pid FROM tasks WHERE status = 'in_progress'"
                        ).fetchall()
    dead = [(task_id, pid) for task_id, pid in held if not pid_alive(pid)]
    if not dead:
        return 0
    with transaction(conn):
        for task_id, pid in dead:
            conn.execute("UPDATE tasks SET status = 'pending', claimed_pid = NULL, "
                         "claimed_at = NULL, updated_at = ? WHERE id = ? AND status = "
                         "'in_progress' AND claimed_pid IS ?", (utc_text(now), task_id, pid))
    return len(dead)


def remaining_sends(conn: sqlite3.Connection, run_id: str) -> int:
    """The sends the run still owes (blocked chats excluded)."""
    return conn.execute(
        "SELECT COALESCE(SUM(MAX(run_quota - run_sent, 0)), 0) FROM tasks "
        "WHERE current_run_id = ? AND is_blocked = 0", (run_id,)).fetchone()[0]


def next_due(conn: sqlite3.Connection, run_id: str) -> datetime | None:
    """When the next chat the run owes a send becomes claimable (None: no such chat)."""
    due = conn.execute(
        "SELECT MIN(next_available_at) FROM tasks INDEXED BY idx_tasks_claim "
        "WHERE current_run_id = ? AND status = 'pending' AND open_attempt_id IS NULL "
        "AND run_sent < run_quota", (run_id,)).fetchone()[0]
    if due is None:
        return None
    return parse_utc(due) if due else ANY_TIME


def held_by_workers(conn: sqlite3.Connection, run_id: str) -> int:
    """How many of the run's chats workers hold right now."""
    return conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'in_progress' AND "
                        "current_run_id = ?", (run_id,)).fetchone()[0]


# ----------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class RunInfo:
    """A run as `start` made it."""

    run_id: str
    quota_total: int
    carry_total: int
    chats: int


# What the next run carries over for a chat, from the chat's last run (spec 000, never
# compounding): if that run sent nothing at all (it failed at once, or was killed before its
# first send), the carry-over it had passes through unchanged; otherwise only that run's own
# cycles left unsent (a send of it whose outcome is unknown counts as made). A carry-over the
# run did not finish is not carried again: no chat is ever owed more than max_cycles plus
# one run's carry-over.
CARRY_SQL = """CASE
    WHEN tasks.current_run_id IS NULL THEN 0
    WHEN NOT EXISTS (SELECT 1 FROM task_attempts s WHERE s.run_id = tasks.current_run_id
                     AND s.status = 'success') THEN tasks.run_carry
    ELSE MAX(MIN(tasks.run_quota - tasks.run_carry,
                 tasks.run_quota - tasks.run_sent - COALESCE(
                     (SELECT 1 FROM task_attempts a WHERE a.id = tasks.open_attempt_id
                      AND a.run_id = tasks.current_run_id), 0)), 0)
END"""


def _group_clause(group: str | None) -> tuple[str, tuple]:
    return ("AND group_id = ?", (group,)) if group else ("", ())


def _mark_dead_runs(conn: sqlite3.Connection, now: datetime) -> None:
    """Runs whose `start` process is gone without closing them become 'interrupted'."""
    for run_id, pid in conn.execute("SELECT run_id, pid FROM campaign_runs "
                                    "WHERE status = 'running'").fetchall():
        if not pid_alive(pid):
            with transaction(conn):
                conn.execute("UPDATE campaign_runs SET status = 'interrupted', ended_at = ?, "
                             "end_reason = COALESCE(end_reason, 'the start process ended "
                             "without closing the run') WHERE run_id = ? AND status = "
                             "'running'", (utc_text(now), run_id))


def running_run(conn: sqlite3.Connection, now: datetime) -> tuple[str, int] | None:
    """(run_id, pid) of the run whose `start` process is alive, if any."""
    _mark_dead_runs(conn, now)
    return conn.execute("SELECT run_id, pid FROM campaign_runs WHERE status = 'running' "
                        "ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()


def campaign_totals(conn: sqlite3.Connection, group: str | None,
                    max_cycles: int) -> tuple[int, int, int]:
    """(chats, carry-over sends, total sends) a new run would have."""
    clause, args = _group_clause(group)
    chats, carry = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(c), 0) FROM (SELECT {CARRY_SQL} "
        f"AS c FROM tasks WHERE is_blocked = 0 {clause})", args).fetchone()
    return chats, carry, carry + chats * max_cycles


def create_run(conn: sqlite3.Connection, config: Config, group: str | None,
               profiles: Sequence[Profile], now: datetime, pid: int | None = None) -> RunInfo:
    """Start a run: a UUID4 run_id recorded with its configuration, and every chat of the
    group owed `max_cycles` sends plus what the previous run left undone (carry-over).
    Chats held by dead workers are released first."""
    release_dead_claims(conn, now)
    run_id = str(uuid.uuid4())
    clause, args = _group_clause(group)
    stamp = utc_text(now)
    with transaction(conn):
        conn.execute(f"UPDATE tasks SET run_carry = {CARRY_SQL} WHERE is_blocked = 0 {clause}",
                     args)
        conn.execute(
            "UPDATE tasks SET current_run_id = ?, run_quota = run_carry + ?, run_sent = 0, "
            "next_available_at = COALESCE(next_available_at, ''), updated_at = ? "
            "WHERE is_blocked = 0 " + clause, (run_id, config.max_cycles, stamp, *args))
        chats, quota, carry = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(run_quota), 0), COALESCE(SUM(run_carry), 0) "
            "FROM tasks WHERE current_run_id = ?", (run_id,)).fetchone()
        conn.execute(
            "INSERT INTO campaign_runs (run_id, started_at, status, group_id, config_json, pid, "
            "quota_total, carry_total) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
            (run_id, stamp, group, config.as_json(), pid or os.getpid(), quota, carry))
        conn.executemany(
            "INSERT INTO campaign_run_profiles (run_id, profile_id, status, started_at) "
            "VALUES (?, ?, 'starting', ?)", [(run_id, p.id, stamp) for p in profiles])
    return RunInfo(run_id, quota, carry, chats)


def request_stop(conn: sqlite3.Connection, run_id: str) -> None:
    """Set the run's stop flag; its workers finish the send in flight and exit."""
    with transaction(conn):
        conn.execute("UPDATE campaign_runs SET stop_requested = 1 WHERE run_id = ?", (run_id,))


def stop_requested(conn: sqlite3.Connection, run_id: str) -> bool:
    """Whether `stop` (or Ctrl+C on `start`) asked this run to end."""
    row = conn.execute("SELECT stop_requested FROM campaign_runs WHERE run_id = ?",
                       (run_id,)).fetchone()
    return bool(row and row[0])


def set_worker_state(conn: sqlite3.Connection, run_id: str, profile_id: int, status: str,
                     now: datetime, *, reason: str | None = None, pid: int | None = None,
                     ended: bool = False) -> None:
    """Record a worker's state in campaign_run_profiles (what `status` shows per account)."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO campaign_run_profiles (run_id, profile_id, status, started_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (run_id, profile_id) DO UPDATE SET "
            "status = excluded.status, started_at = CASE WHEN excluded.status = 'running' "
            "THEN excluded.started_at ELSE started_at END",
            (run_id, profile_id, status, utc_text(now)))
        conn.execute(
            "UPDATE campaign_run_profiles SET reason = COALESCE(?, reason), "
            "pid = COALESCE(?, pid), ended_at = ? WHERE run_id = ? AND profile_id = ?",
            (reason, pid, utc_text(now) if ended else None, run_id, profile_id))


def finish_run(conn: sqlite3.Connection, run_id: str, now: datetime,
               reason: str | None = None) -> str:
    """Close the run: 'finished' when nothing is owed, 'stopped' when asked to, else
    'interrupted' (what is owed carries over to the next start). Returns the status."""
    if remaining_sends(conn, run_id) == 0:
        status = "finished"
    elif stop_requested(conn, run_id):
        status = "stopped"
    else:
        status = "interrupted"
    with transaction(conn):
        conn.execute("UPDATE campaign_runs SET status = ?, ended_at = ?, end_reason = ? "
                     "WHERE run_id = ?", (status, utc_text(now), reason, run_id))
    return status


# ----------------------------------------------------------------------------- sending

def message_id_from(result: Any, random_id: int) -> int | None:
    """The id of the message a messages.sendMessage result describes (the original one when
    Telegram recognised the random_id)."""
    if isinstance(result, types.UpdateShortSentMessage):
        return result.id
    updates = getattr(result, "updates", None) or []
    for update in updates:
        if isinstance(update, types.UpdateMessageID) and update.random_id == random_id:
            return update.id
    for update in updates:
        message = getattr(update, "message", None)
        if isinstance(update, (types.UpdateNewMessage, types.UpdateNewChannelMessage)) \
                and getattr(message, "id", None):
            return message.id
    return None


def chat_reference(chat: str) -> str | int:
    """What Telethon resolves: '@name' as is, numeric ids as int."""
    return int(chat) if NUMERIC_ID.fullmatch(chat) else chat


def format_text(text: str, parse_mode: str) -> tuple[str, list[Any]]:
    """(plain text, formatting entities) of a text in `parse_mode` (markdown and html as
    Telethon's client.send_message parses them; none: sent as written)."""
    if parse_mode == "none":
        return text, []
    parser = telethon_utils.sanitize_parse_mode("md" if parse_mode == "markdown" else "html")
    message, entities = parser.parse(text)
    return message, entities


class StopSignal:
    """Set by SIGTERM/SIGINT in a worker process, or by a test; checked between sends."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        """Ask the worker to end after the send in flight."""
        self.event.set()

    def is_set(self) -> bool:
        """Whether ending was asked for."""
        return self.event.is_set()


class SendCancelled(Exception):
    """A stop came while the account was waiting out a FloodWait: nothing more is sent."""


class TelegramSender:
    """Sends one text with a given random_id through a connected TelegramClient, sleeping
    through FloodWaits (recorded in the account registry for every process to see); a stop
    during such a wait cancels the send instead of making it."""

    def __init__(self, client: Any, account: telegram_session.Account, clock: Clock,
                 stop: StopSignal | None = None, parse_mode: str = "markdown") -> None:
        self.client = client
        self.account = account
        self.clock = clock
        self.stop = stop or StopSignal()
        self.parse_mode = parse_mode

    async def _sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds, self.stop.event)
        if self.stop.is_set():
            raise SendCancelled(f"stopped during a {seconds:.0f} s wait")

    async def send(self, chat: str, text: str, random_id: int) -> int | None:
        """Send; returns the message id. A RANDOM_ID_DUPLICATE answer means Telegram already
        has this message: it is reported as sent (id unknown). Other errors propagate."""
        async def call() -> Any:
            if not self.client.is_connected():  # the connection dropped mid-request
                await self.client.connect()
            peer = await self.client.get_input_entity(chat_reference(chat))
            message, entities = format_text(text, self.parse_mode)
            return await self.client(functions.messages.SendMessageRequest(
                peer=peer, message=message, random_id=random_id, no_webpage=True,
                entities=entities or None))
        try:
            result = await telegram_session.call_with_flood_wait(
                self.account, call, request="messages.SendMessage", sleep=self._sleep)
        except errors.RandomIdDuplicateError:
            return None
        return message_id_from(result, random_id)


SendFunction = Callable[[str, str, int], Awaitable["int | None"]]


@dataclass
class WorkerResult:
    """How one account's worker ended, and what it did in the run."""

    profile: str
    sent: int = 0
    failed: int = 0
    blocked: int = 0
    status: str = "done"        # done | stopped | one of account_refusals()' statuses
    reason: str | None = None


@dataclass
class Delivery:
    """A claimed chat being sent, and what the tries so far tell."""

    claim: Claim
    maybe_delivered: bool       # a try may have reached Telegram: its random_id is kept
    backoff: float = NETWORK_BACKOFF_START     # the next pause after a network problem, s


class Worker:
    """One account's sending loop for one run: wait for a slot in the hourly window, claim
    the next due chat, send with the attempt's random_id, record the outcome."""

    def __init__(self, conn: sqlite3.Connection, run_id: str, profile: Profile, config: Config,
                 send: SendFunction, clock: Clock, stop: StopSignal | None = None,
                 rng: random.Random | None = None) -> None:
        self.conn = conn
        self.run_id = run_id
        self.profile = profile
        self.config = config
        self.send = send
        self.clock = clock
        self.stop = stop or StopSignal()
        self.rng = rng or random.Random()
        self.result = WorkerResult(profile.name)

    def stopping(self) -> bool:
        """Whether this worker should end now (signal or the run's stop flag)."""
        if not self.stop.is_set() and stop_requested(self.conn, self.run_id):
            self.stop.set()
        return self.stop.is_set()

    async def sleep_until(self, moment: datetime, *, while_work_left: bool = False) -> None:
        """Sleep until `moment`, waking early (and returning) if a stop is asked or, with
        `while_work_left`, once the run owes nothing this worker could send."""
        while not self.stopping():
            if while_work_left and not self.work_left():
                return
            left = (moment - self.clock.now()).total_seconds()
            if left <= 0:
                return
            step = left if self.clock.poll_seconds is None else min(left, self.clock.poll_seconds)
            await self.clock.sleep(step, self.stop.event)

    async def run(self) -> WorkerResult:
        """Send until the run owes nothing this account can send, a stop, or Telegram
        refusing the account (account_refusals())."""
        set_worker_state(self.conn, self.run_id, self.profile.id, "running", self.clock.now(),
                         pid=os.getpid())
        release_dead_claims(self.conn, self.clock.now())  # e.g. this account's crashed worker
        while not self.stopping():
            now = self.clock.now()
            slot = next_free_slot(self.conn, self.profile.id,
                                  self.config.max_messages_per_hour, now)
            if slot > now:
                if not self.work_left():
                    break
                log.info("%s: at the limit of %d sends per hour; next slot %s",
                         self.profile.name, self.config.max_messages_per_hour,
                         format_time(slot))
                await self.sleep_until(slot, while_work_left=True)
                continue
            claim = claim_open_attempt(self.conn, self.profile.id, now) or claim_next(
                self.conn, self.run_id, self.profile.id, now, self.config.text_order,
                self.rng)
            if claim is None:
                if not await self.wait_for_work():
                    break
                continue
            if not await self.deliver(claim):
                break
        if self.result.status == "done" and self.stop.is_set():
            self.result.status = "stopped"
        set_worker_state(self.conn, self.run_id, self.profile.id, self.result.status,
                         self.clock.now(), reason=self.result.reason, ended=True)
        return self.result

    def work_left(self) -> bool:
        """Whether the run still owes a send this worker could make, now or later."""
        return next_due(self.conn, self.run_id) is not None or bool(
            held_by_workers(self.conn, self.run_id)) or bool(
            self.conn.execute("SELECT 1 FROM task_attempts a CROSS JOIN tasks t ON "
                              "t.id = a.task_id AND t.open_attempt_id = a.id WHERE "
                              "a.profile_id = ? AND a.status = 'sending' LIMIT 1",
                              (self.profile.id,)).fetchone())

    async def wait_for_work(self) -> bool:
        """Nothing due now: sleep until the next chat is due (or others release theirs).
        False when the run owes nothing more that this worker could send."""
        release_dead_claims(self.conn, self.clock.now())
        due = next_due(self.conn, self.run_id)
        if due is not None:
            await self.sleep_until(max(due, self.clock.now()))
            return True
        if held_by_workers(self.conn, self.run_id):
            await self.sleep_until(self.clock.now() + timedelta(seconds=IDLE_POLL_SECONDS))
            return True
        return False

    async def deliver(self, claim: Claim) -> bool:
        """Send one claimed chat and record the outcome; False when the worker must end. A
        failed send is acted on as send_failures() says."""
        delivery = Delivery(claim, maybe_delivered=claim.resumed)
        while True:
            try:
                message_id = await self.send(claim.chat, claim.text, claim.random_id)
            except tuple(kind for kinds in send_failures() for kind in kinds) as exc:
                act = next(act for kinds, act in send_failures().items()
                           if isinstance(exc, kinds))
                go_on = await act(self, delivery, exc)
                if go_on is None:           # send again, with the same random_id
                    continue
                return go_on
            now = self.clock.now()
            delay = timedelta(seconds=cycle_delay_seconds(self.config, self.rng))
            record_success(self.conn, claim, message_id, now, now + delay)
            self.result.sent += 1
            log.info("%s: sent to %s (run cycle %d%s%s)", self.profile.name, claim.chat,
                     claim.cycle_number, ", carry-over" if claim.carry else "",
                     ", resumed after a crash" if claim.resumed else "")
            return True

    # -- what a failed send does (send_failures()): True next chat, False end, None again --

    def give_back(self, delivery: Delivery, error_type: str, exc: Exception) -> None:
        """The chat is not sent by this worker: released with its random_id kept for this
        account's next try if a try may have reached Telegram, else failed (not sent: the
        chat goes back to every account)."""
        if delivery.maybe_delivered:
            release_claim(self.conn, delivery.claim, self.clock.now())
        else:
            record_failure(self.conn, delivery.claim, error_type, str(exc), self.clock.now())

    async def cancelled(self, delivery: Delivery, exc: Exception) -> bool:
        """A stop came while waiting out a FloodWait: the chat is given back, the worker
        ends."""
        self.give_back(delivery, "FloodWaitError", exc)
        return False

    async def account_refused(self, delivery: Delivery, exc: Exception) -> bool:
        """Telegram refuses this account everywhere (PeerFlood, restricted, frozen): it stops
        for the run; the chat, not at fault, goes back to the other accounts at once."""
        record_failure(self.conn, delivery.claim, type(exc).__name__, str(exc),
                       self.clock.now())
        self.result.failed += 1
        status, reason = next(value for kind, value in account_refusals().items()
                              if isinstance(exc, kind))
        self.result.status = status
        self.result.reason = f"{reason}; stopped for this run, its chats go to the other accounts"
        log.error("%s: %s", self.profile.name, self.result.reason)
        return False

    async def slow_mode(self, delivery: Delivery, exc: Exception) -> bool:
        """Slow mode in the chat: failed, and not due again before the wait is over."""
        now = self.clock.now()
        record_failure(self.conn, delivery.claim, "SlowModeWaitError", str(exc), now,
                       next_available=now + timedelta(seconds=exc.seconds))
        self.result.failed += 1
        return True

    async def flood_wait(self, delivery: Delivery, exc: Exception) -> None:
        """A FloodWait (only from a sender without the account registry): wait it out."""
        await self.clock.sleep(exc.seconds)

    async def chat_refused(self, delivery: Delivery, exc: Exception) -> bool:
        """The chat refused the message: see chat_error."""
        self.chat_error(delivery.claim, type(exc).__name__, str(exc))
        return True

    async def not_found(self, delivery: Delivery, exc: Exception) -> bool:
        """Telethon knows no such username, or never saw the id: as a chat refusal."""
        chat = delivery.claim.chat
        self.chat_error(delivery.claim,
                        "UsernameNotFound" if chat.startswith("@") else "EntityNotFound",
                        str(exc))
        return True

    async def network_trouble(self, delivery: Delivery, exc: Exception) -> bool | None:
        """The send may or may not have reached Telegram: wait (twice as long each time),
        then send again with the same random_id; False (chat released, outcome kept unknown
        for this account) when a stop comes meanwhile."""
        delivery.maybe_delivered = True
        claim, seconds = delivery.claim, delivery.backoff
        log.warning("%s: network problem sending to %s (%s: %s); trying again in %.0f s",
                    self.profile.name, claim.chat, type(exc).__name__, exc, seconds)
        await self.sleep_until(self.clock.now() + timedelta(seconds=seconds))
        if self.stopping():
            release_claim(self.conn, claim, self.clock.now())
            return False
        delivery.backoff = min(seconds * 2, self.config.network_backoff_max_seconds)
        return None

    async def auth_refused(self, delivery: Delivery, exc: Exception) -> NoReturn:
        """The account's session is no longer authorised: the chat is given back and the
        worker ends with the account's recovery line (TelegramAuthError)."""
        self.give_back(delivery, type(exc).__name__, exc)
        raise telegram_session.auth_error(
            telegram_session.load_account(self.profile.folder), exc) from None

    def chat_error(self, claim: Claim, error_type: str, message: str) -> None:
        """A chat refused the message: counted toward blocking it, retried later."""
        now = self.clock.now()
        retry_at = now + timedelta(minutes=self.config.retry_delay_minutes)
        blocked = record_failure(self.conn, claim, error_type, message, now,
                                 next_available=retry_at,
                                 block_after=self.config.max_attempts_before_block)
        self.result.failed += 1
        if blocked:
            self.result.blocked += 1
            log.warning("%s: %s blocked after %d attempts: %s", self.profile.name, claim.chat,
                        self.config.max_attempts_before_block, error_type)
        else:
            log.warning("%s: %s refused the message (%s); trying again later",
                        self.profile.name, claim.chat, error_type)


FailureAction = Callable[[Worker, Delivery, Exception], Awaitable["bool | None"]]


@functools.cache
def send_failures() -> dict[tuple[type[Exception], ...], FailureAction]:
    """What a worker does when a send fails: error classes -> the Worker method that acts.
    The first row that matches wins (ServerError and TimedOutError are RPCErrors: network
    comes before the last row). Built on first use: naming Telethon's classes loads it."""
    return {
        (SendCancelled,): Worker.cancelled,                 # a stop during a FloodWait
        tuple(account_refusals()): Worker.account_refused,  # PeerFlood, restricted, frozen
        (errors.SlowModeWaitError,): Worker.slow_mode,      # failed until the wait is over
        (errors.FloodWaitError,): Worker.flood_wait,        # waited out, sent again
        chat_errors(): Worker.chat_refused,                 # counted toward blocking
        (ValueError,): Worker.not_found,                    # counted toward blocking
        network_errors(): Worker.network_trouble,           # sent again, same random_id
        telegram_session.AUTH_ERRORS: Worker.auth_refused,  # the worker ends: log in again
        (errors.RPCError,): Worker.chat_refused,            # any other refusal
    }


# ----------------------------------------------------------------------------- workers

def configure_logging(folder: Path | None = None, verbose: bool = False,
                      quiet: bool = False) -> None:
    """Console logging, plus campaign.log in the account folder for a worker."""
    log_file = folder / "campaign.log" if folder is not None and folder.is_dir() else None
    migrate_db.setup_logging(verbose, quiet, log_file)


async def run_account(conn: sqlite3.Connection, run_id: str, profile: Profile, config: Config,
                      clock: Clock, stop: StopSignal | None = None,
                      rng: random.Random | None = None) -> WorkerResult:
    """One account's worker over Telegram: opens the client (never prompts), then sends."""
    account = telegram_session.load_account(profile.folder)
    # request_retries=0: a RANDOM_ID_DUPLICATE (a ServerError) arrives at once, not after
    # Telethon's five retries; receive_updates=False: a sender listens to nothing, so
    # Telegram pushes it none of its chats' traffic (every request in invokeWithoutUpdates)
    async with telegram_session.open_client(account, request_retries=0,
                                            receive_updates=False) as client:
        stop = stop or StopSignal()
        sender = TelegramSender(client, account, clock, stop, config.parse_mode)
        worker = Worker(conn, run_id, profile, config, sender.send, clock, stop, rng)
        return await worker.run()


def worker_command(args: argparse.Namespace, run_id: str, profile: Profile) -> list[str]:
    """The hidden `worker` subcommand `start` runs, one process per account."""
    command = [sys.executable, str(Path(__file__).resolve()), "--db", str(args.db_path)]
    if args.config:
        command += ["--config", str(args.config)]
    return command + ["worker", "--run", run_id, "--profile", profile.name]


class Supervisor:
    """`start`'s process: one worker process per account, at most `workers` at once (the
    next account starts when one ends while sends are still owed), restarted after a crash
    (with a growing pause) unless it ended for a reason a restart cannot fix."""

    def __init__(self, args: argparse.Namespace, conn: sqlite3.Connection, run_id: str,
                 profiles: Sequence[Profile], workers: int | None = None) -> None:
        self.args = args
        self.conn = conn
        self.run_id = run_id
        self.profiles = profiles
        self.workers = workers or len(profiles)
        self.waiting = list(profiles)       # accounts not started yet
        self.children: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = dict.fromkeys((p.name for p in profiles), 0)
        self.restart_at: dict[str, float] = {}
        self.interrupted = False
        self.signalled: int | None = None
        self.exit_codes: dict[str, int] = {}
        self.metrics = migrate_db.MetricsFile(
            getattr(args, "metrics_file", None) or os.environ.get("METRICS_FILE"))
        self.sent_seen, self.idle_since = -1, time.monotonic()

    def spawn(self, profile: Profile) -> None:
        """Start (or restart) the account's worker process."""
        self.children[profile.name] = subprocess.Popen(
            worker_command(self.args, self.run_id, profile), stdin=subprocess.DEVNULL)

    def on_signal(self, signum: int, _frame: Any) -> None:
        """Ctrl+C / SIGTERM / SIGHUP: noted here, acted on by the watch loop (no database work
        inside a signal handler)."""
        self.signalled = signum

    def stop_workers(self) -> None:
        """Ask the workers to finish the send in flight and end: the run's stop flag, and
        SIGTERM to each (which wakes them from any wait)."""
        self.interrupted = self.interrupted or self.signalled == signal.SIGINT
        self.signalled = None
        request_stop(self.conn, self.run_id)
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    def run(self) -> None:
        """Spawn, watch and restart workers until every one has ended."""
        signal.signal(signal.SIGINT, self.on_signal)
        migrate_db.handle_stop_signals(self.on_signal)
        self.start_waiting()
        by_name = {p.name: p for p in self.profiles}
        while self.children or self.restart_at:
            time.sleep(0.2)
            if self.signalled is not None:
                self.stop_workers()
            if time.monotonic() - self.metrics.written_at >= self.metrics.every:
                self.report()
            for name, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[name]
                self.exit_codes[name] = code
                if self.should_restart(name, code):
                    pause = min(RESTART_PAUSE_MAX, 2.0 ** self.restarts[name])
                    self.restarts[name] += 1
                    print(f"{name}: worker ended with code {code}; restarting in "
                          f"{pause:.0f} s ({self.restarts[name]}/{WORKER_RESTARTS})",
                          file=sys.stderr, flush=True)
                    self.restart_at[name] = time.monotonic() + pause
            for name, when in list(self.restart_at.items()):
                if stop_requested(self.conn, self.run_id):
                    del self.restart_at[name]
                elif time.monotonic() >= when:
                    del self.restart_at[name]
                    self.spawn(by_name[name])
            self.start_waiting()
        self.report()                   # the metrics file's last state: the run's end
        now = Clock().now()
        for profile in self.waiting:  # never needed: the run ended first
            set_worker_state(self.conn, self.run_id, profile.id, "not started", now,
                             reason=f"--workers {self.workers}: the others were enough",
                             ended=True)

    def start_waiting(self) -> None:
        """Start accounts not started yet while fewer than `workers` run and sends are owed."""
        while self.waiting and len(self.children) + len(self.restart_at) < self.workers \
                and not stop_requested(self.conn, self.run_id) \
                and remaining_sends(self.conn, self.run_id):
            self.spawn(self.waiting.pop(0))

    def report(self) -> None:
        """Every 15 s: the metrics file (--metrics-file), and a heartbeat line once no send
        has succeeded for a while (the accounts are waiting for their next slot)."""
        rows = dict(self.conn.execute(
            "SELECT status, COUNT(*) FROM task_attempts WHERE run_id = ? GROUP BY status",
            (self.run_id,)).fetchall())
        sent = rows.get("success", 0)
        if sent != self.sent_seen:
            self.sent_seen, self.idle_since = sent, time.monotonic()
        elif time.monotonic() - self.idle_since >= migrate_db.HEARTBEAT_SECONDS:
            log.info("heartbeat: run %s waiting, %d sent so far, workers: %s", self.run_id,
                     sent, ", ".join(sorted(self.children)) or "none running")
            self.idle_since = time.monotonic()
        if self.metrics.path is None:
            self.metrics.written_at = time.monotonic()
            return
        accounts = []
        for profile in self.profiles:
            with contextlib.suppress(telegram_session.AccountError):
                accounts.append(telegram_session.load_account(profile.folder))
        waits, wait_seconds = telegram_session.wait_totals(accounts)
        last = self.conn.execute("SELECT MAX(attempted_at) FROM task_attempts WHERE run_id = ? "
                                 "AND status = 'success'", (self.run_id,)).fetchone()[0]
        try:
            self.metrics.write(migrate_db.suite_metrics("campaign", rows, sent, waits,
                                                        wait_seconds, last))
        except OSError as exc:
            log.warning("metrics file %s not written (%s)", self.metrics.path, exc)
            self.metrics.written_at = time.monotonic()

    def should_restart(self, name: str, code: int) -> bool:
        """A crash (signal, exit 1) is restarted; done, usage, auth and lock problems not."""
        if code in (EXIT_OK, EXIT_USAGE, EXIT_AUTH, EXIT_SESSION, EXIT_INTERRUPTED):
            return False
        if stop_requested(self.conn, self.run_id):
            return False
        return self.restarts[name] < WORKER_RESTARTS


# ----------------------------------------------------------------------------- reports

def account_summary(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """One line per account of the run: sends, failures, how its worker ended."""
    rows = conn.execute(
        "SELECT p.profile_name, rp.status, rp.reason, "
        "(SELECT COUNT(*) FROM task_attempts a WHERE a.run_id = rp.run_id AND "
        " a.profile_id = rp.profile_id AND a.status = 'success'), "
        "(SELECT COUNT(*) FROM task_attempts a WHERE a.run_id = rp.run_id AND "
        " a.profile_id = rp.profile_id AND a.status = 'failed') "
        "FROM campaign_run_profiles rp JOIN profiles p ON p.id = rp.profile_id "
        "WHERE rp.run_id = ? ORDER BY p.profile_name", (run_id,)).fetchall()
    return [f"  {name}: {sent} sent, {failed} failed, {status}"
            + (f" ({reason})" if reason else "") for name, status, reason, sent, failed in rows]


def estimate_end(conn: sqlite3.Connection, config: Config, profiles: Sequence[Profile],
                 owed: Sequence[tuple[int, datetime]], now: datetime) -> datetime | None:
    """When the last of the `owed` sends ((sends, chat next due) per chat) should be made by
    these accounts: the schedule played forward as the workers run it, with each account's
    recorded Telegram wait, the sends already in its hourly window and its free slots, and
    the mean cycle delay between two sends to one chat. None without an account to send."""
    limit = config.max_messages_per_hour
    delay = timedelta(minutes=config.cycle_delay_minutes * (1 + config.delay_randomness / 2))
    windows: list[list[datetime]] = []
    accounts: list[tuple[datetime, int]] = []
    for profile in profiles:
        wait = recorded_wait(profile, now)
        if wait and wait[0] == "peer_flood":
            continue
        window = window_sends(conn, profile.id, now)[-limit:]
        free = now if len(window) < limit else max(now, window[-limit] + WINDOW)
        if wait:
            free = max(free, wait[1])
        windows.append(window)
        accounts.append((free, len(windows) - 1))
    chats = [(max(due, now), index, count) for index, (count, due) in enumerate(owed) if count]
    heapq.heapify(accounts)
    heapq.heapify(chats)
    end = None
    while accounts and chats:
        due, index, count = heapq.heappop(chats)
        free, account = heapq.heappop(accounts)
        end = max(due, free)
        window = windows[account]
        window.append(end)
        del window[:-limit]
        heapq.heappush(accounts, (end if len(window) < limit else window[0] + WINDOW,
                                  account))
        if count > 1:
            heapq.heappush(chats, (end + delay, index, count - 1))
    return end if accounts else None


def eta_text(end: datetime | None, now: datetime) -> str:
    """'about 6 h (around 14:00 UTC ...)', from an estimate_end result."""
    if end is None:
        return "never: no account can send"
    return f"about {format_duration((end - now).total_seconds())} (around {format_time(end)})"


def plan_lines(conn: sqlite3.Connection, config: Config, group: str | None,
               profiles: Sequence[Profile], now: datetime) -> list[str]:
    """What a start would send to whom, and when it should end."""
    chats, carry, total = campaign_totals(conn, group, config.max_cycles)
    texts = active_texts(conn)
    usable = [p for p in profiles if account_wait(p, now)[0] != "peer_flood"]
    lines = [f"group: {group or 'all groups'}; {chats} chats not blocked; "
             f"{len(texts)} text(s) in {config.text_order}",
             f"accounts: {', '.join(p.name for p in usable) or 'none'}"
             + (f" (left out, limited by PeerFlood: "
                f"{', '.join(p.name for p in profiles if p not in usable)})"
                if len(usable) < len(profiles) else ""),
             f"sends: {total} = {carry} carried over from the last run + {chats} chats x "
             f"{config.max_cycles} cycle(s)",
             f"limits: {config.max_messages_per_hour}/h per account, at least "
             f"{config.cycle_delay_minutes:g} min between sends to one chat "
             f"(+ up to {config.delay_randomness:.0%}); settings from {config.source}"]
    clause, args = _group_clause(group)
    if total:
        owed = [(count, parse_utc(due) if due else ANY_TIME) for count, due in conn.execute(
            f"SELECT {CARRY_SQL} + ?, next_available_at FROM tasks WHERE is_blocked = 0 "
            f"{clause}", (config.max_cycles, *args))]
        lines.append("should end in " + eta_text(
            estimate_end(conn, config, usable, owed, now), now)
            + " (hourly slots, cycle delays and recorded waits included)")
    rows = conn.execute(
        f"SELECT chat_username, {CARRY_SQL}, completed_cycles, group_id "
        f"FROM tasks WHERE is_blocked = 0 {clause} ORDER BY id LIMIT ?",
        (*args, PLAN_LINES)).fetchall()
    for chat, owed, done, chat_group in rows:
        own = active_texts(conn, chat_group)
        first = choose_text(own, done, config.text_order, random.Random(0))[1] \
            if own else "(no texts for its group)"
        preview = first if len(first) <= 40 else first[:37] + "..."
        extra = f" + {owed} carried over" if owed else ""
        lines.append(f"  {chat}: {config.max_cycles}{extra}; first text: {preview!r}")
    if chats > len(rows):
        lines.append(f"  ... and {chats - len(rows)} more chats")
    return lines


def recorded_wait(profile: Profile, now: datetime) -> tuple[str, datetime] | None:
    """(kind, until) of the account's running Telegram wait, if any (none if its folder
    cannot be read: `status` says why)."""
    try:
        account = telegram_session.load_account(profile.folder)
    except telegram_session.AccountError:
        return None
    return telegram_session.current_wait(account, now=now)


def account_wait(profile: Profile, now: datetime) -> tuple[str | None, str]:
    """(kind, description) of the account's recorded Telegram wait, or (None, problem/'')."""
    try:
        account = telegram_session.load_account(profile.folder)
    except telegram_session.AccountError as exc:
        return None, f"folder problem: {exc.message}"
    wait = telegram_session.current_wait(account, now=now)
    if wait is None:
        return None, ""
    kind, until = wait
    return kind, telegram_session.describe_wait(kind, until, now)


def status_lines(conn: sqlite3.Connection, config: Config, now: datetime) -> list[str]:
    """Accounts (last hour, next slot, waits), the latest run's progress, blocked chats."""
    lines = ["accounts:"]
    run = conn.execute("SELECT run_id, status, started_at, ended_at, quota_total, carry_total, "
                       "end_reason, group_id FROM campaign_runs "
                       "ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
    worker_states = {}
    for profile_id, status, reason, pid in conn.execute(
            "SELECT profile_id, status, reason, pid FROM campaign_run_profiles WHERE run_id = ?",
            (run[0] if run else "",)):
        state = "not running (its worker process is gone)" \
            if status == "running" and not pid_alive(pid) else status
        worker_states[profile_id] = state + (f": {reason}" if reason else "")
    profiles = list_profiles(conn)
    for profile in profiles:
        sent = len(window_sends(conn, profile.id, now))
        slot = next_free_slot(conn, profile.id, config.max_messages_per_hour, now)
        wait_left = format_duration((slot - now).total_seconds())
        free = "now" if slot <= now else f"{format_time(slot)} (in {wait_left})"
        _, wait = account_wait(profile, now)
        parts = [f"{sent}/{config.max_messages_per_hour} in the last hour",
                 f"next free slot {free}"]
        if wait:
            parts.append(wait)
        if profile.id in worker_states:
            parts.append(f"this run: {worker_states[profile.id]}")
        lines.append(f"  {profile.name}: " + "; ".join(parts))
    if not profiles:
        lines.append("  none (add one with add-profile FOLDER)")
    if run:
        lines += run_lines(conn, config, run, profiles, now)
    blocked = conn.execute("SELECT chat_username, group_id, block_reason FROM tasks "
                           "WHERE is_blocked = 1 AND status != 'removed' ORDER BY id").fetchall()
    lines.append(f"blocked chats: {len(blocked)}" + (" (unblock CHAT to retry one)"
                                                      if blocked else ""))
    lines += [f"  {chat} ({group}): {reason}" for chat, group, reason in blocked]
    removed = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'removed'").fetchone()[0]
    if removed:
        lines.append(f"removed chats: {removed}")
    waiting = conn.execute(
        "SELECT t.chat_username, p.profile_name FROM tasks t JOIN task_attempts a ON "
        "a.id = t.open_attempt_id LEFT JOIN profiles p ON p.id = a.profile_id "
        "WHERE t.status = 'pending'").fetchall()
    if waiting:
        lines.append("sends interrupted mid-way (resent with the same random_id by the same "
                     "account when it runs again):")
        lines += [f"  {chat}: {name}" for chat, name in waiting]
    return lines


def run_lines(conn: sqlite3.Connection, config: Config, run: tuple,
              profiles: Sequence[Profile], now: datetime) -> list[str]:
    """The latest run's progress, carry-over and ETA."""
    run_id, status, started, ended, quota, carry, reason, group = run
    sent = conn.execute("SELECT COUNT(*) FROM task_attempts WHERE run_id = ? AND "
                        "status = 'success'", (run_id,)).fetchone()[0]
    failed = conn.execute("SELECT COUNT(*) FROM task_attempts WHERE run_id = ? AND "
                          "status = 'failed'", (run_id,)).fetchone()[0]
    carry_sent = conn.execute("SELECT COALESCE(SUM(MIN(run_sent, run_carry)), 0) FROM tasks "
                              "WHERE current_run_id = ?", (run_id,)).fetchone()[0]
    remaining = remaining_sends(conn, run_id)
    lines = [f"run {run_id} ({group or 'all groups'}): {status}, started "
             f"{format_time(parse_utc(started))}"
             + (f", ended {format_time(parse_utc(ended))}" if ended else ""),
             f"  progress: {sent}/{quota} sent, {failed} failed attempts, "
             f"{remaining} still owed",
             f"  carried over from the run before: {carry_sent}/{carry} sent"]
    if status == "running" and remaining:
        sending = {profile_id for (profile_id,) in conn.execute(
            "SELECT profile_id FROM campaign_run_profiles WHERE run_id = ? AND status IN "
            "('starting', 'running')", (run_id,))}
        owed = [(count, parse_utc(due) if due else ANY_TIME) for count, due in conn.execute(
            "SELECT run_quota - run_sent, next_available_at FROM tasks WHERE "
            "current_run_id = ? AND is_blocked = 0 AND run_sent < run_quota", (run_id,))]
        end = estimate_end(conn, config, [p for p in profiles if p.id in sending], owed, now)
        lines.append(f"  ETA: {eta_text(end, now)} (hourly slots, cycle delays and "
                     "recorded waits included)")
    if reason:
        lines.append(f"  ended because: {reason}")
    rows = conn.execute(
        "SELECT chat_username, run_quota, run_carry, run_sent, status FROM tasks "
        "WHERE current_run_id = ? ORDER BY run_sent >= run_quota, id LIMIT ?",
        (run_id, PLAN_LINES)).fetchall()
    chats = conn.execute("SELECT COUNT(*) FROM tasks WHERE current_run_id = ?",
                         (run_id,)).fetchone()[0]
    lines.append("  per chat (owed = carried over + new this run):")
    lines += [f"  {chat}: owed {quota} = {carried} carried + {quota - carried} new, "
              f"{sent} sent" + (f" ({state})" if state in ("blocked", "removed") else "")
              for chat, quota, carried, sent, state in rows]
    if chats > len(rows):
        lines.append(f"  ... and {chats - len(rows)} more chats")
    return lines


def find_run(conn: sqlite3.Connection, run_id: str | None) -> tuple:
    """The run `run_id` names (a unique prefix will do; None: the latest) as (run_id, status,
    started_at, ended_at, quota_total, carry_total, end_reason, group_id)."""
    columns = ("SELECT run_id, status, started_at, ended_at, quota_total, carry_total, "
               "end_reason, group_id FROM campaign_runs ")
    if run_id is None:
        rows = conn.execute(columns + "ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchall()
        if not rows:
            raise CampaignError("no runs yet (start one with: campaign.py start)")
        return rows[0]
    rows = conn.execute(columns + "WHERE substr(run_id, 1, ?) = ? LIMIT 2",
                        (len(run_id), run_id)).fetchall()
    if len(rows) != 1:
        what = "no run" if not rows else "more than one run"
        raise CampaignError(f"{what} with id {run_id!r} (runs lists them)", EXIT_USAGE)
    return rows[0]


def _by_error(pairs: Sequence[tuple[str | None, int]]) -> str:
    return ", ".join(f"{name or 'unknown'} x{count}" for name, count in pairs)


def report_lines(conn: sqlite3.Connection, run: tuple) -> list[str]:
    """A run's outcome per account and per chat: sent, failed by Telegram's error name, and
    for each send owed but not made, why."""
    run_id, status, started, ended, quota, carry, reason, group = run
    lines = [f"run {run_id} ({group or 'all groups'}): {status}, started "
             f"{format_time(parse_utc(started))}"
             + (f", ended {format_time(parse_utc(ended))}" if ended else "")
             + (f" ({reason})" if reason else "")]
    totals = dict(conn.execute("SELECT status, COUNT(*) FROM task_attempts WHERE run_id = ? "
                               "GROUP BY status", (run_id,)).fetchall())
    lines.append(f"  owed {quota or 0} ({carry or 0} carried over + {(quota or 0) - (carry or 0)}"
                 f" new), sent {totals.get('success', 0)}, failed attempts "
                 f"{totals.get('failed', 0)}")
    failures: dict[tuple[str, int], list[tuple[str | None, int]]] = {}
    for who, key, error, count in conn.execute(
            "SELECT 'profile', CAST(profile_id AS INTEGER), error_type, COUNT(*) FROM "
            "task_attempts "
            "WHERE run_id = ? AND status = 'failed' GROUP BY profile_id, error_type UNION ALL "
            "SELECT 'task', task_id, error_type, COUNT(*) FROM task_attempts "
            "WHERE run_id = ? AND status = 'failed' GROUP BY task_id, error_type "
            "ORDER BY 4 DESC, 3", (run_id, run_id)):
        failures.setdefault((who, key), []).append((error, count))
    lines.append("accounts:")
    for profile_id, name, state, why, sent in conn.execute(
            "SELECT rp.profile_id, p.profile_name, rp.status, rp.reason, (SELECT COUNT(*) FROM "
            "task_attempts a WHERE a.run_id = rp.run_id AND a.profile_id = rp.profile_id AND "
            "a.status = 'success') FROM campaign_run_profiles rp JOIN profiles p ON "
            "p.id = rp.profile_id WHERE rp.run_id = ? ORDER BY p.profile_name", (run_id,)):
        failed = failures.get(("profile", profile_id), [])
        lines.append(f"  {name}: {sent} sent, {sum(c for _, c in failed)} failed"
                     + (f" ({_by_error(failed)})" if failed else "") + f"; {state}"
                     + (f": {why}" if why else ""))
    lines.append("chats:")
    rows = conn.execute(
        "SELECT t.id, t.chat_username, t.current_run_id IS ?, t.run_quota, t.run_sent, "
        "t.status, t.block_reason, t.open_attempt_id, (SELECT COUNT(*) FROM task_attempts a "
        "WHERE a.task_id = t.id AND a.run_id = ? AND a.status = 'success') FROM tasks t "
        "WHERE t.current_run_id = ? OR t.id IN (SELECT task_id FROM task_attempts WHERE "
        "run_id = ?) ORDER BY t.id", (run_id, run_id, run_id, run_id)).fetchall()
    for task_id, chat, latest, owed, run_sent, state, block, in_doubt, sent in rows:
        failed = failures.get(("task", task_id), [])
        text = f"  {chat}: {sent}" + (f"/{owed}" if latest else "") + " sent"
        if failed:
            text += f"; failed: {_by_error(failed)}"
        if latest and run_sent < owed:
            if state in ("blocked", "removed"):
                why = f"{state}: {block}"
            elif in_doubt:
                why = "a send in doubt waits for its account to run again"
            elif status == "running":
                why = "not due yet"
            else:
                why = f"the run ended ({status}) first"
            text += f"; skipped {owed - run_sent}: {why}"
        lines.append(text)
    clause, args = _group_clause(group)
    before = conn.execute(
        "SELECT chat_username, status, block_reason FROM tasks WHERE is_blocked = 1 AND "
        f"current_run_id IS NOT ? {clause} AND id NOT IN (SELECT task_id FROM task_attempts "
        "WHERE run_id = ?) ORDER BY id", (run_id, *args, run_id)).fetchall()
    lines += [f"  {chat}: skipped, {state} before the run: {block}"
              for chat, state, block in before]
    return lines


def _chat_access(entity: Any) -> tuple[bool, bool]:
    """(member, may write) for a resolved chat, from the rights Telegram reports to us."""
    member = not getattr(entity, "left", True)
    if getattr(entity, "creator", False):
        return member, member
    admin = getattr(entity, "admin_rights", None)
    if getattr(entity, "broadcast", False):  # a channel: only admins who may post
        return member, member and bool(admin and admin.post_messages)
    banned = [rights for rights in (getattr(entity, "banned_rights", None),
                                    getattr(entity, "default_banned_rights", None)) if rights]
    return member, member and (admin is not None or not any(r.send_messages for r in banned))


async def check_account(profile: Profile, chats: Sequence[str]) -> list[tuple[str, bool]]:
    """(line, is a problem) per chat for one account: member, may write, slow mode."""
    account = telegram_session.load_account(profile.folder)
    results = []
    async with telegram_session.open_client(account) as client:
        for chat in chats:
            async def resolve(ref: str | int = chat_reference(chat)) -> Any:
                return await client.get_entity(ref)
            try:
                entity = await telegram_session.call_with_flood_wait(
                    account, resolve, request="contacts.ResolveUsername")
            except (ValueError, errors.RPCError) as exc:
                name = type(exc).__name__ if isinstance(exc, errors.RPCError) else "not found"
                results.append((f"{chat}: cannot see it ({name})", True))
                continue
            if not isinstance(entity, (types.Channel, types.Chat)):
                results.append((f"{chat}: not a group or channel", True))
                continue
            member, may_write = _chat_access(entity)
            if not member:
                results.append((f"{chat}: not a member (join it before the run)", True))
                continue
            if not may_write:
                results.append((f"{chat}: member, may NOT write (Telegram restricts sending "
                                "there)", True))
                continue
            slow = 0
            if isinstance(entity, types.Channel) and entity.megagroup:
                async def full_chat(channel: Any = entity) -> Any:
                    return await client(functions.channels.GetFullChannelRequest(channel))
                full = await telegram_session.call_with_flood_wait(
                    account, full_chat, request="channels.GetFullChannel")
                slow = full.full_chat.slowmode_seconds or 0
            results.append((f"{chat}: member, may write, " + (
                f"slow mode {slow} s (one message per {format_duration(slow)} from this "
                "account)" if slow else "no slow mode"), False))
    return results


def check_lines(profiles: Sequence[Profile], chats: Sequence[str]) -> tuple[list[str], int]:
    """What `check` prints, and the number of problems found."""
    lines, problems = [], 0
    for profile in profiles:
        lines.append(f"{profile.name}:")
        try:
            results = asyncio.run(check_account(profile, chats))
        except telegram_session.AccountError as exc:
            lines.append(f"  cannot check: {exc}")
            problems += 1
            continue
        lines += [f"  {line}" for line, _ in results]
        problems += sum(bad for _, bad in results)
    lines.append(f"check: {len(profiles)} account(s) x {len(chats)} chat(s), "
                 f"{problems} problem(s)")
    return lines, problems


def runs_lines(conn: sqlite3.Connection) -> list[str]:
    """Every run, newest first: id, times, status, sends."""
    rows = conn.execute(
        "SELECT r.run_id, r.started_at, r.ended_at, r.status, r.group_id, r.quota_total, "
        "r.carry_total, r.config_json, "
        "(SELECT COUNT(*) FROM task_attempts a WHERE a.run_id = r.run_id AND "
        "a.status = 'success'), (SELECT COUNT(*) FROM task_attempts a WHERE "
        "a.run_id = r.run_id AND a.status = 'failed') FROM campaign_runs r "
        "ORDER BY r.started_at DESC, r.rowid DESC").fetchall()
    if not rows:
        return ["no runs yet (start one with: campaign.py start)"]
    lines = []
    for run_id, started, ended, status, group, quota, carry, settings, sent, failed in rows:
        end = format_time(parse_utc(ended)) if ended else "-"
        used = json.loads(settings) if settings else {}
        limits = (f"; max_cycles {used['max_cycles']}, {used['max_messages_per_hour']}/h"
                  if "max_cycles" in used else "")
        lines.append(f"{run_id}  {status:<11} {format_time(parse_utc(started))} -> {end}  "
                     f"group {group or 'all'}: {sent}/{quota or 0} sent "
                     f"(carry-over {carry or 0}), {failed} failed{limits}")
    return lines


# ----------------------------------------------------------------------------- commands

def open_db(args: argparse.Namespace) -> sqlite3.Connection:
    """The campaign database (created and migrated as needed)."""
    try:
        return migrate_db.connect(args.db_path, kind="campaign")
    except sqlite3.DatabaseError as exc:
        raise CampaignError(f"{args.db_path}: cannot open the database: {exc}") from None
    except OSError as exc:
        raise CampaignError(f"{args.db_path}: {exc.strerror}") from None


def cmd_init(args: argparse.Namespace) -> int:
    """Create the database, and config.yaml from the example when there is none."""
    conn = open_db(args)
    conn.close()
    print(f"database ready: {args.db_path}")
    # a --config FILE exists here (load_config refused a missing one): only the default
    # config.yaml can be the one missing
    target = DEFAULT_CONFIG
    if args.config is None and not target.exists() and EXAMPLE_CONFIG.exists():
        try:
            migrate_db.write_atomically(target, EXAMPLE_CONFIG.read_bytes())
        except OSError as exc:
            raise CampaignError(f"{target}: cannot write: {exc.strerror}") from None
        print(f"config written: {target} (edit the limits before starting)")
    return EXIT_OK


def cmd_import_chats(args: argparse.Namespace) -> int:
    """Add a chat list to a group."""
    report = read_chat_list(args.file)
    if report.problems:
        for line in report.problems:
            print(line, file=sys.stderr)
        raise CampaignError(f"{args.file}: {len(report.problems)} malformed line(s), nothing "
                            "imported; fix them and import again", EXIT_USAGE)
    if not report.chats:
        raise CampaignError(f"{args.file}: no chats in the file (one @username, t.me link or "
                            "numeric id per line)", EXIT_USAGE)
    conn = open_db(args)
    added, existing = add_chats(conn, report.chats, args.group, Clock().now())
    for line in report.duplicates:
        print(f"duplicate skipped: {line}")
    print(f"{added} chats added to group {args.group!r}, {existing} already there"
          + (f", {len(report.duplicates)} duplicate line(s) skipped" if report.duplicates
             else ""))
    return EXIT_OK


def cmd_import_messages(args: argparse.Namespace) -> int:
    """Store the texts to send."""
    texts = read_texts(args.file)
    conn = open_db(args)
    added, existing = import_texts(conn, texts, replace=args.replace, now=Clock().now(),
                                   group=args.group)
    total = len(active_texts(conn, args.group))
    where = f"group {args.group!r}" if args.group else "every group"
    print(f"{added} text(s) added for {where}, {existing} already there; {total} active "
          f"for {where}, sent in {args.config_obj.text_order}")
    return EXIT_OK


def cmd_add_profile(args: argparse.Namespace) -> int:
    """Register an account folder."""
    conn = open_db(args)
    profile, new = add_profile(conn, args.folder, Clock().now())
    print(f"profile {profile.name} {'added' if new else 'updated'} ({profile.folder})")
    return EXIT_OK


def cmd_list_profiles(args: argparse.Namespace) -> int:
    """The accounts campaigns use, with their last hour and any wait."""
    conn = open_db(args)
    now = Clock().now()
    profiles = list_profiles(conn)
    if not profiles:
        print("no profiles (add one with add-profile FOLDER)")
    for profile in profiles:
        sent = len(window_sends(conn, profile.id, now))
        _, wait = account_wait(profile, now)
        print(f"{profile.name}  {profile.folder}  {sent}/"
              f"{args.config_obj.max_messages_per_hour} in the last hour"
              + (f"  {wait}" if wait else ""))
    return EXIT_OK


def _start_inputs(conn: sqlite3.Connection, args: argparse.Namespace,
                  now: datetime) -> list[Profile]:
    """The accounts for a start, after checking there is something to send and someone to
    send it; CampaignError naming what is missing."""
    clause, params = _group_clause(args.group)
    if not conn.execute(f"SELECT 1 FROM tasks WHERE is_blocked = 0 {clause} LIMIT 1",
                        params).fetchone():
        where = f"group {args.group!r}" if args.group else "any group"
        raise CampaignError(f"no chats to message in {where}; import them with "
                            "import-chats FILE [--group G]")
    missing = groups_without_texts(conn, args.group)
    if missing:
        raise CampaignError(f"no texts to send to group(s) {', '.join(map(repr, missing))}; "
                            "import them with import-messages FILE [--group G]")
    profiles = list_profiles(conn, args.profiles)
    if not profiles:
        raise CampaignError("no profiles; add an account folder with add-profile FOLDER")
    usable = []
    for profile in profiles:
        kind, wait = account_wait(profile, now)
        if kind == "peer_flood":
            print(f"{profile.name}: left out of this run ({wait})")
        else:
            usable.append(profile)
    if not usable:
        raise CampaignError("every account is limited by PeerFlood; see status")
    return usable


def cmd_plan(args: argparse.Namespace) -> int:
    """What a start would send to whom, and when it should end."""
    conn = open_db(args)
    now = Clock().now()
    profiles = list_profiles(conn, args.profiles)
    for line in plan_lines(conn, args.config_obj, args.group, profiles, now):
        print(line)
    return EXIT_OK


def cmd_start(args: argparse.Namespace) -> int:
    """Make a run and send with one worker process per account until done or stopped."""
    conn = open_db(args)
    now = Clock().now()
    config = args.config_obj
    running = running_run(conn, now)
    if running:
        raise CampaignError(f"run {running[0]} is still running (start process {running[1]}); "
                            "stop it first with: campaign.py stop")
    profiles = _start_inputs(conn, args, now)
    if args.dry_run:
        print("dry run: nothing is sent and no run is recorded")
        for line in plan_lines(conn, config, args.group, profiles, now):
            print(line)
        return EXIT_OK
    info = create_run(conn, config, args.group, profiles, now)
    print(f"Session ID (run_id): {info.run_id}", flush=True)
    print(f"{info.chats} chats, {info.quota_total} sends owed ({info.carry_total} carried "
          f"over from the run before), accounts: {', '.join(p.name for p in profiles)}",
          flush=True)
    supervisor = Supervisor(args, conn, info.run_id, profiles, args.workers)
    supervisor.run()
    crashed = [name for name, code in supervisor.exit_codes.items()
               if code not in (EXIT_OK, EXIT_INTERRUPTED)]
    reason = (f"worker(s) failed: {', '.join(crashed)}" if crashed else None)
    status = finish_run(conn, info.run_id, Clock().now(), reason)
    print(f"run {info.run_id} {status}", flush=True)
    for line in account_summary(conn, info.run_id):
        print(line)
    if supervisor.interrupted:
        return EXIT_INTERRUPTED
    codes = set(supervisor.exit_codes.values())
    if len(codes) == 1 and codes & {EXIT_USAGE, EXIT_AUTH, EXIT_SESSION}:
        return codes.pop()
    if status == "interrupted":
        print(f"error: run {info.run_id} ended with sends still owed "
              f"({reason or 'no account could send them'}); they carry over to the next "
              "start", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """One account's worker process (started by `start`)."""
    conn = open_db(args)
    profiles = list_profiles(conn, [args.profile])
    profile = profiles[0]
    configure_logging(profile.folder, args.verbose, args.quiet)
    stop = StopSignal()
    clock = Clock()
    parent = os.getppid()

    async def main() -> WorkerResult:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, *migrate_db.STOP_SIGNALS):
            loop.add_signal_handler(signum, stop.set)
        watchdog = asyncio.ensure_future(watch_parent(parent, stop, profile.name))
        try:
            return await run_account(conn, args.run, profile, args.config_obj, clock, stop)
        finally:
            watchdog.cancel()

    try:
        result = asyncio.run(main())
    except telegram_session.AccountError as exc:
        set_worker_state(conn, args.run, profile.id, "failed", clock.now(),
                         reason=exc.message, ended=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        # the event loop is closed and has put the default action (death) back: a second
        # stop signal (`stop` and `start` both send one) must not kill a worker that is
        # already ending, or it would count as crashed
        for signum in migrate_db.STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    print(f"{profile.name}: {result.sent} sent, {result.failed} failed "
          f"({result.blocked} chats blocked), {result.status}"
          + (f" ({result.reason})" if result.reason else ""), flush=True)
    return EXIT_OK


async def watch_parent(parent: int, stop: StopSignal, name: str) -> None:
    """Stop the worker when the `start` process that made it is gone (killed, even with
    SIGKILL): its send in flight is finished, the chat and the account's session lock are
    released, and the next `start` has the account."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("%s: the start process %d is gone; stopping", name, parent)
    stop.set()


def cmd_status(args: argparse.Namespace) -> int:
    """Accounts, the latest run, blocked chats."""
    conn = open_db(args)
    now = Clock().now()
    running_run(conn, now)
    for line in status_lines(conn, args.config_obj, now):
        print(line)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Before a run: is each account a member of each chat, may it write, slow mode."""
    conn = open_db(args)
    profiles = list_profiles(conn, args.profiles)
    if not profiles:
        raise CampaignError("no profiles; add an account folder with add-profile FOLDER")
    clause, params = _group_clause(args.group)
    chats = [chat for (chat,) in conn.execute(
        f"SELECT chat_username FROM tasks WHERE is_blocked = 0 {clause} "
        "GROUP BY chat_username ORDER BY MIN(id)", params)]
    if not chats:
        raise CampaignError("no chats to check; import them with import-chats FILE")
    lines, problems = check_lines(profiles, chats)
    for line in lines:
        print(line, flush=True)
    return EXIT_FAILURE if problems else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """A run's outcome per account and per chat (default: the latest run)."""
    conn = open_db(args)
    running_run(conn, Clock().now())
    for line in report_lines(conn, find_run(conn, args.run_id)):
        print(line)
    return EXIT_OK


def cmd_unblock(args: argparse.Namespace) -> int:
    """Message a blocked chat again."""
    conn = open_db(args)
    for line in unblock_chat(conn, args.chat, args.group, Clock().now()):
        print(line)
    return EXIT_OK


def cmd_remove_chat(args: argparse.Namespace) -> int:
    """Take a chat out of every run."""
    conn = open_db(args)
    for line in remove_chat(conn, args.chat, args.group, Clock().now()):
        print(line)
    return EXIT_OK


def cmd_clear_wait(args: argparse.Namespace) -> int:
    """End an account's recorded Telegram wait early."""
    conn = open_db(args)
    profile = list_profiles(conn, [args.account])[0]
    print(clear_wait(profile, Clock().now(), args.force))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    """Every run, newest first."""
    conn = open_db(args)
    for line in runs_lines(conn):
        print(line)
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """Ask the running run to end: workers finish the send in flight, then exit."""
    conn = open_db(args)
    running = running_run(conn, Clock().now())
    if running is None:
        print("no run is running")
        return EXIT_OK
    run_id, pid = running
    request_stop(conn, run_id)
    pids = [pid] + [p for (p,) in conn.execute(
        "SELECT pid FROM campaign_run_profiles WHERE run_id = ? AND pid IS NOT NULL",
        (run_id,))]
    for target in pids:
        if pid_alive(target) and _is_campaign_process(target):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
    print(f"stop requested for run {run_id}; waiting up to {args.wait:g} s", flush=True)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        status = conn.execute("SELECT status FROM campaign_runs WHERE run_id = ?",
                              (run_id,)).fetchone()[0]
        if status != "running":
            print(f"run {run_id} {status}")
            for line in account_summary(conn, run_id):
                print(line)
            return EXIT_OK
        time.sleep(0.2)
    print(f"run {run_id} is still finishing its sends in flight; see status")
    return EXIT_OK


def _is_campaign_process(pid: int) -> bool:
    """Whether the pid is one of ours (a reused pid of another program is left alone)."""
    try:
        return b"campaign.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    """The command line: global options, then one subcommand."""
    parser = argparse.ArgumentParser(
        description="Per-run message campaigns from several Telegram accounts, inside every "
                    "limit (max_cycles per chat per run, max_messages_per_hour per account).",
        epilog="Exit codes: 0 done, 1 runtime failure, 2 usage/config error, 3 an account "
               "must log in again, 4 session/lock problem, 130 Ctrl+C.",
        parents=[migrate_db.cli_options()])
    files = parser.add_argument_group("files")
    files.add_argument("--db", type=Path, help="campaign database (default: database.path "
                       f"from the config, else {DEFAULT_DB.relative_to(SUITE_DIR)})")
    files.add_argument("--config", type=Path,
                       help=f"config file (default: {DEFAULT_CONFIG.name} next to this script; "
                            "built-in defaults if it does not exist)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser("init", help="create the database (and config.yaml from the "
                        "example)").set_defaults(handler=cmd_init)
    chats = commands.add_parser("import-chats", help="add chats (txt or csv: @usernames, "
                                "t.me links, numeric ids)")
    chats.add_argument("file", type=Path, metavar="FILE")
    chats.add_argument("--group", default=DEFAULT_GROUP,
                       help="the group the chats belong to (default: %(default)s)")
    chats.set_defaults(handler=cmd_import_chats)
    texts = commands.add_parser("import-messages", help="add the texts to send (json or txt; "
                                "several texts in txt separated by --- lines)")
    texts.add_argument("file", type=Path, metavar="FILE")
    texts.add_argument("--group", help="only for this group's chats (default: every group)")
    texts.add_argument("--replace", action="store_true",
                       help="stop sending the texts imported before (for that group)")
    texts.set_defaults(handler=cmd_import_messages)
    profile = commands.add_parser("add-profile", help="register an account folder")
    profile.add_argument("folder", type=Path, metavar="FOLDER",
                         help="an account folder, e.g. sessions/session1")
    profile.set_defaults(handler=cmd_add_profile)
    commands.add_parser("list-profiles", help="the registered accounts").set_defaults(
        handler=cmd_list_profiles)
    for name, handler, text in (
            ("start", cmd_start, "make a run and send until done, stop or Ctrl+C"),
            ("plan", cmd_plan, "what a start would send to whom, and when it should end"),
            ("check", cmd_check, "before a run: is each account a member of each chat, may it "
                                 "write there, slow mode (exit 1 on any problem)")):
        sub = commands.add_parser(name, help=text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--group", help="only this group's chats (default: every group)")
        sub.add_argument("--profiles", nargs="+", metavar="NAME",
                         help="only these accounts (default: every active profile)")
        if name == "start":
            sub.add_argument("--workers", type=int, metavar="N",
                             help="at most N accounts send at once; the next one starts when "
                                  "one stops (default: every account)")
            sub.add_argument("--dry-run", action="store_true",
                             help="print the plan; send nothing, record no run")
            sub.add_argument("--metrics-file", metavar="PATH", type=Path,
                             help="METRICS_FILE: Prometheus text rewritten every "
                                  f"{migrate_db.METRICS_SECONDS:g} s (node_exporter textfile)")
    commands.add_parser("status", help="accounts, the latest run's progress, blocked "
                        "chats").set_defaults(handler=cmd_status)
    report = commands.add_parser("report", help="a run per account and per chat: sent, "
                                 "skipped and why, failed by error name")
    report.add_argument("run_id", nargs="?", metavar="RUN_ID",
                        help="the run (a unique prefix will do; default: the latest)")
    report.set_defaults(handler=cmd_report)
    for name, handler, text in (
            ("unblock", cmd_unblock, "message a blocked chat again"),
            ("remove-chat", cmd_remove_chat, "take a chat out of every run (its history is "
                                             "kept)")):
        sub = commands.add_parser(name, help=text)
        sub.set_defaults(handler=handler)
        sub.add_argument("chat", metavar="CHAT", help="@username, t.me link or numeric id")
        sub.add_argument("--group", help="only in this group (default: every group)")
    wait = commands.add_parser("clear-wait", help="end an account's recorded Telegram wait")
    wait.add_argument("account", metavar="ACCOUNT", help="the profile name, e.g. session1")
    wait.add_argument("--force", action="store_true",
                      help="clear it even though Telegram's wait is still running")
    wait.set_defaults(handler=cmd_clear_wait)
    commands.add_parser("runs", help="every run with its sends").set_defaults(handler=cmd_runs)
    stop = commands.add_parser("stop", help="end the running run cleanly")
    stop.add_argument("--wait", type=float, default=STOP_WAIT_SECONDS,
                      help="seconds to wait for the workers to finish (default: %(default)s)")
    stop.set_defaults(handler=cmd_stop)
    worker = commands.add_parser("worker")  # internal, started by `start`: no help, unlisted
    worker.add_argument("--run", required=True)
    worker.add_argument("--profile", required=True)
    worker.set_defaults(handler=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load the config, run the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "stop" and not (math.isfinite(args.wait) and args.wait >= 0):
        parser.error(f"--wait must be a number of seconds >= 0, got {args.wait}")
    if args.command == "start" and args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    try:
        args.config_obj = load_config(args.config)
        args.db_path = args.db or args.config_obj.database_path or DEFAULT_DB
        if args.command != "worker":
            configure_logging(verbose=args.verbose, quiet=args.quiet)
        return args.handler(args)
    except CampaignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.OperationalError as exc:
        print(f"error: {args.db_path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    migrate_db.run_main(main)
