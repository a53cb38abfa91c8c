#!/usr/bin/env python3
"""Heat Up: history-aware join/read/idle sessions for Telegram accounts over a real channel pool.

An LLM (any OpenAI-compatible endpoint, through AsyncOpenAI) plans 3-7 actions for an
account from the channels in channels_data.json, with a prompt that differs for a new
account and a returning one (last active, total actions, channels joined before). Without
an LLM, or when its answer is unusable, a built-in seeded planner makes the plan. The plan
runs over the account's Telethon client (telegram_session.open_client): channels are joined
(already joined ones skipped), recent messages are read and marked read, idles are bounded.
Every executed action is saved to `session_history` as it completes, failed ones with their
reason; a warmup interrupted by a crash or Ctrl+C continues where it stopped. A job ends
done, partial (some action failed) or failed (no join or read succeeded, or the account was
stopped), with each error. `pool check` resolves every pool channel through an account and
marks the dead ones; plans use only the live channels.

The HTTP API answers as the earlier Heat Up service did (GET /, /health, POST /warmup/ID,
/warmup-sync/ID, GET /sessions/ID/history; `detail` errors, FastAPI's 422 for a bad `days`)
with the suite's additions beside (job ids, /jobs/JOB, planner, plan, /metrics). Without
HEATUP_API_TOKEN it serves only loopback Host names; state-changing requests from a foreign
Origin or with a non-JSON body are refused. Database work runs off the event loop.

    python heatup.py serve [--host 127.0.0.1] [--port 8080]     # the HTTP API
    python heatup.py warmup SESSION_ID [--dry-run]
    python heatup.py plan SESSION_ID                            # print a plan, run nothing
    python heatup.py history SESSION_ID [--days 30]             # any session id
    python heatup.py pool check ACCOUNT                         # mark dead pool channels
    python heatup.py cleanup                                    # drop expired history

SESSION_ID is an account folder under sessions/ (see telegram_session.py); history can be
read for any session id, e.g. the earlier service's, kept with no folder. Settings come from
the environment or the suite's .env: OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL,
HEATUP_API_TOKEN (32 characters or more), SESSION_HISTORY_DAYS (30), DATABASE_PATH
(sessions.db; a relative path is taken from the suite's folder, wherever the script is
started from), HEATUP_SESSIONS_DIR,
HEATUP_CHANNELS_FILE, HEATUP_LLM_TIMEOUT (30 s), HEATUP_TIME_SCALE (1; multiplies read and
idle pauses, e.g. 0 in rehearsals; FloodWaits are always slept in full).

Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error, 3 the account must
log in again, 4 session file or lock problem, 130 interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import os
import random
import re
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import migrate_db
import telegram_session
from migrate_db import parse_utc, transaction, utc_text

# aiohttp, python-dotenv and Telethon load when first used, so --help answers at once
web = migrate_db.lazy_import("aiohttp.web")
dotenv = migrate_db.lazy_import("dotenv")
errors = migrate_db.lazy_import("telethon.errors")
functions = migrate_db.lazy_import("telethon.functions")
types = migrate_db.lazy_import("telethon.types")
if TYPE_CHECKING:
    from telethon import TelegramClient

UTC = timezone.utc        # datetime.UTC is Python 3.11+

# ----------------------------------------------------------------------------- settings

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_SESSIONS_DIR = SCRIPT_DIR / "sessions"
DEFAULT_CHANNELS_FILE = SCRIPT_DIR / "channels_data.json"
DEFAULT_DATABASE = "sessions.db"
DEFAULT_HISTORY_DAYS = 30
MAX_HISTORY_DAYS = 3650
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MODEL = "gpt-4o-mini"
LLM_TIMEOUT_SECONDS = 30.0
LLM_PLACEHOLDER_KEY = "not-needed"        # local OpenAI-compatible servers ignore the key
BODY_LIMIT_BYTES = 4096
CLEANUP_INTERVAL_SECONDS = 24 * 3600
MIN_TOKEN_LENGTH = 32
MAKE_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
EARLIER_API_VERSION = "1.0.0"                   # GET / answers as the earlier service did
HEALTH_DB_TIMEOUT = 0.5                         # seconds /health waits for a database lock
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LLM_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)      # seconds
POOL_CHECK_PAUSE_SECONDS = 1.0                  # between two lookups of `pool check`

MIN_ACTIONS, MAX_ACTIONS = 3, 7
JOIN, READ, IDLE = "join_channel", "read_messages", "idle"
ACTION_TYPES = (JOIN, READ, IDLE)
ACTION_ALIASES = {"join": JOIN, "read": READ, "wait": IDLE, "sleep": IDLE, "pause": IDLE}
DURATION_LIMITS = {READ: (3, 30), IDLE: (5, 120)}          # seconds, inclusive
DEFAULT_DURATIONS = {READ: 10, IDLE: 30}
READ_LIMIT = 20                                             # recent messages read per action
REASON_MAX_CHARS = 200                                      # of a planned action's reason
RECENT_ACTIONS = 5
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
JOB_RUNNING, JOB_DONE, JOB_PARTIAL, JOB_FAILED = "running", "done", "partial", "failed"
POOL_LIVE, POOL_DEAD = "live", "dead"
PEER_FLOOD_REASON = (f"PEER_FLOOD: Telegram limited the account; it rests for "
                     f"{telegram_session.PEER_FLOOD_PAUSE_SECONDS // 3600} h before acting again")
CHANNELS_TOO_MUCH_REASON = ("CHANNELS_TOO_MUCH: the account is in too many channels; leave "
                            "some before joining more")
JOINS_REFUSED_REASON = "not tried: Telegram refused a join of this job with CHANNELS_TOO_MUCH"

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
USERNAME_RE = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,31}")
FALLBACK_POOL_ENTRIES = [
    {"username": "@durov", "description": "Durov's Channel", "category": "Technology",
     "subscribers": 0, "tgstat_url": "https://t.me/durov"},
    {"username": "@telegram", "description": "Telegram News", "category": "News",
     "subscribers": 0, "tgstat_url": "https://t.me/telegram"},
]

NEW_USER_PROMPT = (
    "You are simulating natural behavior for a new Telegram user who just logged in for the "
    "first time.\nThis is your first time using Telegram, so explore channels that interest "
    "you naturally.")
RETURNING_USER_PROMPT = (
    "You are simulating a returning Telegram user who is coming back online.\n\n"
    "Previous activity summary:\n"
    "- Last active: {last_active}\n"
    "- Total previous actions: {total_actions}\n"
    "- Previously joined channels: {joined}\n\n"
    "You're back for another session and should continue natural, varied behavior.")
PLAN_INSTRUCTIONS = (
    "Plan this session as {min_actions} to {max_actions} actions. Answer with JSON only, no "
    "prose:\n"
    '{{"actions": [{{"type": "join_channel", "channel": "@username", "reason": "WHY"}}, '
    '{{"type": "read_messages", "channel": "@username", "duration": SECONDS, '
    '"reason": "WHY"}}, {{"type": "idle", "duration": SECONDS, "reason": "WHY"}}]}}\n'
    "read_messages lasts {read_min}-{read_max} seconds, idle {idle_min}-{idle_max} seconds. "
    "Use only these channels:\n{channels}")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_SESSION = 4                        # a warmup of the account runs elsewhere (its lock)
LOG_FILE = "heatup.log"                 # `serve`'s log, in the folder it runs from

log = logging.getLogger("heatup")
T = TypeVar("T")


class UsageError(Exception):
    """Bad input from the operator: one line, exit 2 (HTTP 400/404)."""


class InvalidSessionId(UsageError):
    """A session id that is not [A-Za-z0-9_-]{1,64}."""


class UnknownSession(UsageError):
    """A well-formed session id with no account folder."""


def check_session_id(session_id: str) -> str:
    """`session_id` if it is [A-Za-z0-9_-]{1,64}; InvalidSessionId otherwise."""
    if not SESSION_ID_RE.fullmatch(session_id):
        raise InvalidSessionId(f"invalid session id {session_id[:80]!r}: use 1-64 letters, "
                               "digits, '_' or '-'")
    return session_id


class PoolError(Exception):
    """channels_data.json exists but is not a JSON list."""


class PlanUnusable(Exception):
    """The LLM could not be asked, or its answer gave no usable plan."""

    def __init__(self, message: str, llm_seconds: float | None = None) -> None:
        super().__init__(message)
        self.llm_seconds = llm_seconds      # how long the LLM took, when it was asked


class WarmupBusy(Exception):
    """The account is already warming up (here or in another process)."""


class AccountLimited(Exception):
    """Telegram told the account to wait; `until` is when it may act again."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class Settings:
    """Where things are and how the service behaves, from the environment and flags."""

    sessions_dir: Path
    database: Path
    channels_file: Path
    history_days: int = DEFAULT_HISTORY_DAYS
    api_token: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = DEFAULT_MODEL
    llm_timeout: float = LLM_TIMEOUT_SECONDS
    time_scale: float = 1.0

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url)


def _env_number(env: dict[str, str], key: str, default: float, *, minimum: float,
                integer: bool = False) -> float:
    text = env.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise UsageError(f"{key}={text!r} is not a number; set it to a number "
                         f"(default {default})") from None
    if value < minimum:
        raise UsageError(f"{key}={text} must be at least {minimum}")
    return value


def settings_from(env: dict[str, str], *, sessions_dir: Path | None = None,
                  database: Path | None = None, channels_file: Path | None = None) -> Settings:
    """Settings from environment values, overridden by command-line paths where given."""
    if database is not None:            # a flag: as given, like every other path flag
        db = database.expanduser()
    else:                               # DATABASE_PATH: relative to the suite's folder, so
        db = Path(env.get("DATABASE_PATH", "").strip() or DEFAULT_DATABASE).expanduser()
        db = db if db.is_absolute() else SCRIPT_DIR / db   # every account shares one history
    return Settings(
        sessions_dir=(sessions_dir or Path(env.get("HEATUP_SESSIONS_DIR", "").strip()
                                           or DEFAULT_SESSIONS_DIR)).expanduser(),
        database=db,
        channels_file=(channels_file or Path(env.get("HEATUP_CHANNELS_FILE", "").strip()
                                             or DEFAULT_CHANNELS_FILE)).expanduser(),
        history_days=int(_env_number(env, "SESSION_HISTORY_DAYS", DEFAULT_HISTORY_DAYS,
                                     minimum=1, integer=True)),
        api_token=env.get("HEATUP_API_TOKEN", "").strip() or None,
        openai_api_key=env.get("OPENAI_API_KEY", "").strip() or None,
        openai_base_url=env.get("OPENAI_BASE_URL", "").strip() or None,
        openai_model=env.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL,
        llm_timeout=_env_number(env, "HEATUP_LLM_TIMEOUT", LLM_TIMEOUT_SECONDS, minimum=0.1),
        time_scale=_env_number(env, "HEATUP_TIME_SCALE", 1.0, minimum=0.0),
    )


# ----------------------------------------------------------------------------- channel pool

@dataclass(frozen=True)
class Channel:
    """One public channel of the pool."""

    username: str
    description: str
    category: str
    subscribers: int
    url: str


def _pool_entry(entry: Any) -> Channel:
    """A Channel from one JSON entry; ValueError says what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    username = entry.get("username")
    if not isinstance(username, str):
        raise ValueError("no username")
    username = "@" + username.strip().lstrip("@")
    if not USERNAME_RE.fullmatch(username):
        raise ValueError(f"username {entry['username']!r} is not a public Telegram username")
    category = entry.get("category")
    if not isinstance(category, str) or not category.strip():
        raise ValueError("no category")
    description = entry.get("description", "")
    subscribers = entry.get("subscribers", 0)
    if not isinstance(description, str):
        raise ValueError("description is not text")
    if not isinstance(subscribers, int) or isinstance(subscribers, bool) or subscribers < 0:
        raise ValueError("subscribers is not a whole number >= 0")
    url = entry.get("tgstat_url") or entry.get("url") or f"https://t.me/{username[1:]}"
    return Channel(username, description.strip(), category.strip(), subscribers, str(url))


def load_pool(path: Path) -> list[Channel]:
    """The channel pool from `path`; malformed entries are logged and skipped.

    A missing file gives the verified fallback (@durov, @telegram) with a warning; a file
    that is not a JSON list raises PoolError.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.warning("%s not found; using the fallback pool @durov, @telegram (create it, or "
                    "run tgstat_fetcher.py fetch)", path)
        data = FALLBACK_POOL_ENTRIES
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoolError(f"{path}: cannot read the channel pool ({exc}); fix the file or "
                        "restore it from git") from None
    if not isinstance(data, list):
        raise PoolError(f"{path}: expected a JSON list of channels, found "
                        f"{type(data).__name__}; fix the file or restore it from git")
    pool: dict[str, Channel] = {}
    for index, entry in enumerate(data):
        try:
            channel = _pool_entry(entry)
        except ValueError as exc:
            log.warning("%s: entry %d skipped: %s", path, index, exc)
            continue
        if channel.username.lower() in pool:
            log.warning("%s: entry %d skipped: %s is listed twice", path, index,
                        channel.username)
            continue
        pool[channel.username.lower()] = channel
    if not pool:
        raise PoolError(f"{path}: no usable channel in the pool; add entries with username "
                        "and category")
    return list(pool.values())


# ----------------------------------------------------------------------------- history store

class HistoryStore:
    """session_history and heatup_jobs in the heat-up database (one connection per process).

    Timestamps are written as UTC ISO-8601 (migrate_db.utc_text) and compared through SQLite's
    julianday(), so rows written by the spec's DEFAULT CURRENT_TIMESTAMP work too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = migrate_db.connect(path, kind="heatup")

    def close(self) -> None:
        self.conn.close()

    # --- history
    def record(self, session_id: str, action_type: str, data: dict[str, Any]) -> int:
        """Save one executed action; returns its row id."""
        with transaction(self.conn):
            cursor = self.conn.execute(
                "INSERT INTO session_history (session_id, action_type, action_data, timestamp)"
                " VALUES (?, ?, ?, ?)",
                (session_id, action_type, json.dumps(data, ensure_ascii=False), utc_text()))
        return int(cursor.lastrowid)

    def _rows(self, where: str, params: tuple, order: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, session_id, action_type, action_data, timestamp "
            f"FROM session_history WHERE {where} ORDER BY {order}", params)
        return [{"id": row_id, "session_id": sid, "action_type": action,
                 "action_data": _parse_data(data), "timestamp": stamp}
                for row_id, sid, action, data, stamp in rows]

    def history(self, session_id: str, days: int) -> list[dict[str, Any]]:
        """The session's actions of the last `days` days, newest first, timestamps as stored."""
        return self._rows("session_id = ? AND julianday(timestamp) >= julianday('now', ?)",
                          (session_id, f"-{days} days"),
                          "julianday(timestamp) DESC, id DESC")

    def summary(self, session_id: str, days: int) -> dict[str, Any]:
        """Spec 001's summary over the last `days` days."""
        return summarize(self.history(session_id, days))

    def cleanup(self, days: int) -> int:
        """Delete history (and finished jobs) older than `days` days; returns rows deleted."""
        cutoff = f"-{days} days"
        with transaction(self.conn):
            deleted = self.conn.execute(
                "DELETE FROM session_history WHERE julianday(timestamp) < julianday('now', ?)",
                (cutoff,)).rowcount
            self.conn.execute(
                "DELETE FROM heatup_jobs WHERE status != ? AND "
                "julianday(created_at) < julianday('now', ?)", (JOB_RUNNING, cutoff))
        return deleted

    # --- jobs
    def create_job(self, session_id: str, plan: Plan) -> str:
        """Store a new running job with its plan; returns the job id.

        A job of the account that a stopped process left running is closed as failed
        (superseded): the account runs one job at a time.
        """
        job_id = uuid.uuid4().hex
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE heatup_jobs SET status = ?, error = ?, finished_at = ? "
                "WHERE session_id = ? AND status = ?",
                (JOB_FAILED, f"interrupted, then superseded by job {job_id}", utc_text(),
                 session_id, JOB_RUNNING))
            self.conn.execute(
                "INSERT INTO heatup_jobs (job_id, session_id, status, planner, planner_note, "
                "plan_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, session_id, JOB_RUNNING, plan.planner, plan.note,
                 json.dumps(plan.actions, ensure_ascii=False), utc_text()))
        return job_id

    def finish_job(self, job_id: str, status: str, error: str | None = None) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE heatup_jobs SET status = ?, error = ?, finished_at = ? WHERE job_id = ?",
                (status, error, utc_text(), job_id))

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job with its plan and the actions it executed so far, or None."""
        row = self.conn.execute(
            "SELECT job_id, session_id, status, planner, planner_note, plan_json, created_at, "
            "finished_at, error FROM heatup_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        keys = ("job_id", "session_id", "status", "planner", "planner_note", "plan",
                "created_at", "finished_at", "error")
        job = dict(zip(keys, row, strict=True))
        job["plan"] = json.loads(job["plan"])
        job["actions"] = self.job_actions(job_id)
        job["execution_summary"] = execution_summary(
            job["plan"], job["actions"], job["error"] if job["status"] == JOB_FAILED else None)
        return job

    def job_actions(self, job_id: str) -> list[dict[str, Any]]:
        """The actions a job executed, in the order it ran them."""
        return self._rows("json_extract(action_data, '$.job_id') = ?", (job_id,), "id")

    def unfinished_jobs(self, session_id: str | None = None) -> list[str]:
        """Ids of jobs left running by a process that stopped, oldest first."""
        query = "SELECT job_id FROM heatup_jobs WHERE status = ?"
        params: tuple = (JOB_RUNNING,)
        if session_id is not None:
            query += " AND session_id = ?"
            params += (session_id,)
        return [job_id for (job_id,) in self.conn.execute(query + " ORDER BY created_at",
                                                          params)]

    # --- pool checks
    def record_pool_check(self, account: str, results: list[tuple[str, str, str]]) -> None:
        """Save what `pool check` found: (username, POOL_LIVE or POOL_DEAD, detail) each."""
        checked_at = utc_text()
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO heatup_pool_checks (username, status, detail, account, checked_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(username) DO UPDATE SET "
                "status = excluded.status, detail = excluded.detail, "
                "account = excluded.account, checked_at = excluded.checked_at",
                [(name.lower(), status, detail, account, checked_at)
                 for name, status, detail in results])

    def dead_channels(self) -> dict[str, str]:
        """{lower-case @username: why} of the channels the last pool check found dead."""
        return dict(self.conn.execute(
            "SELECT username, detail FROM heatup_pool_checks WHERE status = ?", (POOL_DEAD,)))


def _parse_data(text: str | None) -> Any:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _status(row: dict[str, Any]) -> str:
    data = row["action_data"]
    return data.get("status", DONE) if isinstance(data, dict) else DONE


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spec 001's summary of history rows given newest first (failed actions do not count)."""
    succeeded = [r for r in rows if _status(r) != FAILED]
    joined: list[str] = []
    for row in reversed(succeeded):                         # in the order they were joined
        channel = _data(row).get("channel_username")
        if row["action_type"] == JOIN and channel and channel not in joined:
            joined.append(channel)
    return {
        "is_new": not succeeded,
        "total_actions": len(succeeded),
        "joined_channels": joined,
        "last_activity": rows[0]["timestamp"] if rows else None,
        "recent_actions": rows[:RECENT_ACTIONS],
    }


def _data(row: dict[str, Any]) -> dict[str, Any]:
    return row["action_data"] if isinstance(row["action_data"], dict) else {}


def result_text(action_type: str, data: dict[str, Any]) -> str:
    """One line saying what an executed action did (or why it failed)."""
    channel, status = data.get("channel_username"), data.get("status", DONE)
    if status == FAILED:
        return data.get("reason") or "failed"
    if status == SKIPPED:
        return f"{channel}: {data.get('reason', 'skipped')}"
    if action_type == JOIN:
        return f"joined {channel}"
    if action_type == READ:
        return (f"read {data.get('messages_read', 0)} messages in {channel} for "
                f"{data.get('duration')} s")
    return f"idled {data.get('duration')} s"


def execution_summary(plan: list[dict[str, Any]], actions: list[dict[str, Any]],
                      stopped: str | None) -> dict[str, Any]:
    """The earlier API's execution_summary of a job (steps numbered from 1).

    Steps a failed job never reached are listed as failed with `stopped`, its reason.
    """
    by_step = {_data(row).get("step"): row for row in actions}
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    joined: list[str] = []
    for step, action in enumerate(plan):
        row = by_step.get(step)
        if row is None and stopped is None:
            continue                                        # not run yet
        if row is None:
            success, text = False, f"not run: {stopped}"
        else:
            data = _data(row)
            success, text = data.get("status", DONE) != FAILED, result_text(action["type"], data)
            if action["type"] == JOIN and success:      # as the history summary counts
                joined.append(data.get("channel_username"))
        results.append({"step": step + 1, "action": action["type"], "result": text,
                        "success": success})
        if not success:
            failures.append({"step": step + 1, "action": action["type"], "error": text})
    successful = sum(1 for r in results if r["success"])
    return {"total_actions": len(plan), "successful_actions": successful,
            "failed_actions": len(failures), "results": results, "errors": failures,
            "joined_channels": joined}


def job_outcome(actions: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(done | partial | failed, the errors) of a job that ran all its steps.

    Failed when no join or read succeeded (idles are pauses and decide nothing), partial
    when some action failed, done otherwise.
    """
    failed = [row for row in actions if _status(row) == FAILED]
    if not failed:
        return JOB_DONE, None
    details = "; ".join(f"step {_data(row).get('step', 0) + 1} {row['action_type']}: "
                        f"{_data(row).get('reason', 'failed')}" for row in failed)
    channel_rows = [row for row in actions if row["action_type"] in (JOIN, READ)]
    if all(_status(row) == FAILED for row in channel_rows):
        return JOB_FAILED, f"no action succeeded: {details}"
    return JOB_PARTIAL, f"{len(failed)} of {len(actions)} actions failed: {details}"


# ----------------------------------------------------------------------------- planning

@dataclass
class Plan:
    """The actions of one session and which planner made them (note: why, and repairs)."""

    actions: list[dict[str, Any]]
    planner: str
    note: str | None = None
    llm_seconds: float | None = None        # how long the LLM took to answer, when asked


def describe_ago(timestamp: str | None, now: datetime) -> str:
    """'2 days ago' for an ISO timestamp (UTC when it carries no zone)."""
    if not timestamp:
        return "never"
    try:
        moment = parse_utc(timestamp)
    except ValueError:
        return f"at {timestamp}"
    seconds = max((now - moment).total_seconds(), 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def persona_prompt(summary: dict[str, Any], now: datetime) -> str:
    """The spec's new-user prompt, or its returning-user prompt filled from the history."""
    if summary["is_new"]:
        return NEW_USER_PROMPT
    return RETURNING_USER_PROMPT.format(
        last_active=describe_ago(summary["last_activity"], now),
        total_actions=summary["total_actions"],
        joined=", ".join(summary["joined_channels"]) or "none yet")


def plan_messages(summary: dict[str, Any], pool: list[Channel], now: datetime
                  ) -> list[dict[str, str]]:
    """The chat messages that ask the LLM for a plan."""
    channels = "\n".join(f"- {c.username} ({c.category}): {c.description}" for c in pool)
    (read_min, read_max), (idle_min, idle_max) = DURATION_LIMITS[READ], DURATION_LIMITS[IDLE]
    instructions = PLAN_INSTRUCTIONS.format(
        min_actions=MIN_ACTIONS, max_actions=MAX_ACTIONS, read_min=read_min, read_max=read_max,
        idle_min=idle_min, idle_max=idle_max, channels=channels)
    return [{"role": "system", "content": persona_prompt(summary, now)},
            {"role": "user", "content": instructions}]


def parse_plan_text(text: str) -> list[Any]:
    """The list of raw actions in an LLM answer (code fences and prose around JSON allowed)."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("actions"), list):
            return data["actions"]
        if isinstance(data, list):
            return data
    raise PlanUnusable("the answer holds no JSON list of actions")


def _duration(raw: dict[str, Any], action_type: str, label: str, repairs: list[str]) -> int:
    low, high = DURATION_LIMITS[action_type]
    value = raw.get("duration", raw.get("seconds"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        repairs.append(f"{label}: duration {value!r} replaced by "
                       f"{DEFAULT_DURATIONS[action_type]} s")
        return DEFAULT_DURATIONS[action_type]
    clamped = int(min(max(value, low), high))
    if clamped != value:
        repairs.append(f"{label}: duration {value} clamped to {clamped} s")
    return clamped


def repair_actions(raw_actions: list[Any], pool: list[Channel]
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep the usable actions (channels from the pool, durations clamped), at most 7.

    Returns the actions and a line per repair or drop. Raises PlanUnusable when fewer than
    3 usable actions remain.
    """
    by_name = {c.username.lower(): c.username for c in pool}
    actions: list[dict[str, Any]] = []
    repairs: list[str] = []
    joins: set[str] = set()
    for number, raw in enumerate(raw_actions, start=1):
        label = f"action {number}"
        if not isinstance(raw, dict):
            repairs.append(f"{label}: dropped (not an object)")
            continue
        kind = str(raw.get("type") or raw.get("action") or "").strip().lower()
        kind = ACTION_ALIASES.get(kind, kind)
        if kind not in ACTION_TYPES:
            repairs.append(f"{label}: dropped (unknown action {kind or 'missing'!r})")
            continue
        action: dict[str, Any] = {"type": kind}
        if kind in (JOIN, READ):
            raw_channel = raw.get("channel") or raw.get("channel_username") or ""
            channel = by_name.get("@" + str(raw_channel).strip().lstrip("@").lower())
            if channel is None:
                repairs.append(f"{label}: dropped (channel {raw_channel!r} is not in the pool)")
                continue
            if kind == JOIN and channel in joins:
                repairs.append(f"{label}: dropped (joins {channel} twice)")
                continue
            if kind == JOIN:
                joins.add(channel)
            action["channel"] = channel
        if kind in (READ, IDLE):
            action["duration"] = _duration(raw, kind, label, repairs)
        if isinstance(raw.get("reason"), str) and raw["reason"].strip():
            action["reason"] = raw["reason"].strip()[:REASON_MAX_CHARS]
        actions.append(action)
    if len(actions) > MAX_ACTIONS:
        repairs.append(f"{len(actions) - MAX_ACTIONS} actions over {MAX_ACTIONS} dropped")
        actions = actions[:MAX_ACTIONS]
    if len(actions) < MIN_ACTIONS:
        raise PlanUnusable(f"only {len(actions)} usable actions (at least {MIN_ACTIONS} needed)")
    return actions, repairs


async def llm_plan(settings: Settings, summary: dict[str, Any], pool: list[Channel],
                   now: datetime) -> Plan:
    """Ask the configured OpenAI-compatible endpoint for a plan; PlanUnusable if it fails."""
    import openai  # loaded on first use: about a second of start-up, not needed offline

    client = openai.AsyncOpenAI(api_key=settings.openai_api_key or LLM_PLACEHOLDER_KEY,
                                base_url=settings.openai_base_url,
                                timeout=settings.llm_timeout, max_retries=0)
    started = time.monotonic()
    async with client:
        try:
            reply = await client.chat.completions.create(
                model=settings.openai_model, messages=plan_messages(summary, pool, now),
                temperature=0.9)
        except openai.APITimeoutError:
            raise PlanUnusable(f"no answer within {settings.llm_timeout:g} s",
                               time.monotonic() - started) from None
        except openai.APIStatusError as exc:
            raise PlanUnusable(f"the endpoint answered HTTP {exc.status_code}",
                               time.monotonic() - started) from None
        except openai.APIError as exc:
            raise PlanUnusable(f"{type(exc).__name__}: {exc}",
                               time.monotonic() - started) from None
    seconds = time.monotonic() - started
    text = reply.choices[0].message.content if reply.choices else None
    if not text:
        raise PlanUnusable("the answer is empty", seconds)
    try:
        actions, repairs = repair_actions(parse_plan_text(text), pool)
    except PlanUnusable as exc:
        raise PlanUnusable(str(exc), seconds) from None
    for repair in repairs:
        log.warning("LLM plan repaired: %s", repair)
    return Plan(actions, f"llm:{settings.openai_model}", "; ".join(repairs) or None, seconds)


def offline_plan(session_id: str, summary: dict[str, Any], pool: list[Channel]) -> list[dict]:
    """A varied plan from the history and the pool, the same for the same history.

    A returning account first catches up on a channel it joined before; a new one first
    joins one. Joins go to channels not joined yet; reads go to joined channels (earlier
    or in this plan); idles never come first or twice in a row.
    """
    rng = random.Random(f"{session_id}|{summary['total_actions']}|{summary['last_activity']}")
    in_pool = {c.username.lower(): c.username for c in pool}
    categories = {c.username: c.category for c in pool}
    earlier = [in_pool[c.lower()] for c in summary["joined_channels"] if c.lower() in in_pool]
    joined = list(earlier)
    fresh = [c.username for c in pool if c.username not in earlier]
    rng.shuffle(fresh)
    actions: list[dict[str, Any]] = []
    for _ in range(rng.randint(MIN_ACTIONS, MAX_ACTIONS)):
        kinds, weights = [JOIN, READ, IDLE], [4 if fresh else 0, 4, 0]
        if actions and actions[-1]["type"] != IDLE:
            weights[2] = 2
        if not actions:
            weights = [0, 1, 0] if earlier else [1, 0, 0]
        kind = rng.choices(kinds, weights)[0]
        if kind == JOIN:
            channel = fresh.pop()
            joined.append(channel)
            actions.append({"type": JOIN, "channel": channel,
                            "reason": f"explore a new {categories[channel]} channel"})
        elif kind == READ:
            last = actions[-1].get("channel") if actions else None
            channel = rng.choice([c for c in joined if c != last] or joined or fresh)
            actions.append({"type": READ, "channel": channel,
                            "duration": rng.randint(*DURATION_LIMITS[READ]),
                            "reason": "catch up on a channel joined before"
                            if channel in earlier else "read what was just joined"})
        else:
            actions.append({"type": IDLE, "duration": rng.randint(*DURATION_LIMITS[IDLE]),
                            "reason": "take a break"})
    return actions


async def make_plan(settings: Settings, session_id: str, summary: dict[str, Any],
                    pool: list[Channel], now: datetime | None = None) -> Plan:
    """The LLM's plan, or the built-in planner's with the reason it was used."""
    now = now or datetime.now(UTC)
    llm_seconds = None
    if not settings.llm_configured:
        reason = "no OPENAI_API_KEY or OPENAI_BASE_URL set"
    else:
        try:
            return await llm_plan(settings, summary, pool, now)
        except PlanUnusable as exc:
            reason, llm_seconds = f"LLM plan unusable: {exc}", exc.llm_seconds
            log.warning("%s: %s; the built-in planner plans instead", session_id, reason)
    return Plan(offline_plan(session_id, summary, pool), "offline", reason, llm_seconds)


# ----------------------------------------------------------------------------- execution

Sleep = Callable[[float], Awaitable[Any]]


async def resolve_channel(client: TelegramClient, account: telegram_session.Account,
                          username: str) -> types.Channel | str:
    """The channel entity, or the reason it cannot be used (decided by Telegram's error)."""
    try:
        found = await telegram_session.call_with_flood_wait(
            account, lambda: client(functions.contacts.ResolveUsernameRequest(username[1:])),
            request="contacts.ResolveUsername")
    except (errors.UsernameNotOccupiedError, errors.UsernameInvalidError):
        return f"{username} does not exist (unknown username)"
    except (errors.ChannelPrivateError, errors.ChannelInvalidError):
        return f"{username} is private or unavailable (CHANNEL_PRIVATE)"
    if not isinstance(found.peer, types.PeerChannel):
        return f"{username} is not a channel"
    entity = next((chat for chat in found.chats if chat.id == found.peer.channel_id), None)
    if not isinstance(entity, types.Channel):
        return f"{username} is private or unavailable (CHANNEL_PRIVATE)"
    return entity


async def join_channel(client: TelegramClient, account: telegram_session.Account,
                       username: str) -> dict[str, Any]:
    """Join a channel unless already a member; the result to save.

    Refusals that concern the account rather than the channel (CHANNELS_TOO_MUCH,
    PEER_FLOOD) are raised for the job to decide on.
    """
    result: dict[str, Any] = {"channel_username": username}
    entity = await resolve_channel(client, account, username)
    if isinstance(entity, str):
        return {**result, "status": FAILED, "reason": entity}
    if not entity.left:
        return {**result, "status": SKIPPED, "reason": "already a member"}
    try:
        await telegram_session.call_with_flood_wait(
            account, lambda: client(functions.channels.JoinChannelRequest(entity)),
            request="channels.JoinChannel")
    except errors.UserAlreadyParticipantError:
        return {**result, "status": SKIPPED, "reason": "already a member"}
    except (errors.ChannelPrivateError, errors.ChannelInvalidError):
        return {**result, "status": FAILED,
                "reason": f"{username} is private or unavailable (CHANNEL_PRIVATE)"}
    except errors.InviteRequestSentError:
        return {**result, "status": SKIPPED, "reason": "join request sent to the admins"}
    return {**result, "status": DONE}


async def read_messages(client: TelegramClient, account: telegram_session.Account,
                        username: str, duration: float, sleep: Sleep) -> dict[str, Any]:
    """Read the channel's recent messages, mark them read, and spend `duration` on it."""
    result: dict[str, Any] = {"channel_username": username, "duration": duration}
    entity = await resolve_channel(client, account, username)
    if isinstance(entity, str):
        return {**result, "status": FAILED, "reason": entity}
    try:
        messages = await telegram_session.call_with_flood_wait(
            account, lambda: client.get_messages(entity, limit=READ_LIMIT),
            request="messages.GetHistory")
        if messages:
            await telegram_session.call_with_flood_wait(
                account, lambda: client.send_read_acknowledge(entity, max_id=messages[0].id),
                request="channels.ReadHistory")
    except (errors.ChannelPrivateError, errors.ChannelInvalidError):
        return {**result, "status": FAILED,
                "reason": f"{username} is private or unavailable (CHANNEL_PRIVATE)"}
    await sleep(duration)
    return {**result, "status": DONE, "messages_read": len(messages),
            "read_max_id": messages[0].id if messages else None}


async def execute_action(client: TelegramClient, account: telegram_session.Account,
                         action: dict[str, Any], sleep: Sleep) -> dict[str, Any]:
    """Run one planned action; the result to save (status done, skipped or failed)."""
    if action["type"] == JOIN:
        return await join_channel(client, account, action["channel"])
    if action["type"] == READ:
        return await read_messages(client, account, action["channel"], action["duration"],
                                   sleep)
    await sleep(action["duration"])
    return {"status": DONE, "duration": action["duration"]}


async def check_action(client: TelegramClient, account: telegram_session.Account,
                       action: dict[str, Any]) -> str:
    """What executing `action` would do, found out without changing anything."""
    if action["type"] == IDLE:
        return f"would idle {action['duration']} s"
    entity = await resolve_channel(client, account, action["channel"])
    if isinstance(entity, str):
        return f"would fail: {entity}"
    if action["type"] == JOIN:
        return "already a member; would skip" if not entity.left else "would join"
    return f"would read up to {READ_LIMIT} messages for {action['duration']} s"


def _is(refusal: type[errors.RPCError] | None, error: type[errors.RPCError]) -> bool:
    """Whether Telegram's refusal is of the error class `error`."""
    return refusal is not None and issubclass(refusal, error)


def describe_action(action: dict[str, Any]) -> str:
    """'read_messages @durov 12 s' for a planned action."""
    parts = [action["type"], action.get("channel"),
             f"{action['duration']} s" if "duration" in action else None]
    return " ".join(p for p in parts if p)


# ----------------------------------------------------------------------------- the service

class Metrics:
    """What this process did, for GET /metrics (Prometheus text format, written by hand)."""

    def __init__(self) -> None:
        self.jobs: Counter[str] = Counter()                     # by outcome
        self.actions: Counter[tuple[str, str]] = Counter()      # by (action, result)
        self.plans: Counter[str] = Counter()                    # by planner: llm | offline
        self.llm_buckets = [0] * len(LLM_LATENCY_BUCKETS)       # cumulative, as Prometheus
        self.llm_count = 0
        self.llm_sum = 0.0

    def observe_plan(self, plan: Plan) -> None:
        self.plans["llm" if plan.planner.startswith("llm:") else "offline"] += 1
        if plan.llm_seconds is not None:
            self.llm_count += 1
            self.llm_sum += plan.llm_seconds
            for index, bound in enumerate(LLM_LATENCY_BUCKETS):
                if plan.llm_seconds <= bound:
                    self.llm_buckets[index] += 1

    def render(self, *, waiting: int, warming_up: int, live: int, dead: int) -> str:
        """The exposition text; the arguments are gauges read at scrape time."""
        lines: list[str] = []

        def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        family("heatup_jobs_total", "counter", "Warmup jobs finished by this process, by "
               "outcome.", [(_labels(outcome=o), self.jobs[o])
                            for o in (JOB_DONE, JOB_PARTIAL, JOB_FAILED)])
        family("heatup_actions_total", "counter", "Warmup actions executed, by action type "
               "and result.", [(_labels(action=a, result=r), self.actions[a, r])
                               for a in ACTION_TYPES for r in (DONE, SKIPPED, FAILED)])
        family("heatup_plans_total", "counter", "Plans made, by the planner that made them.",
               [(_labels(planner=p), self.plans[p]) for p in ("llm", "offline")])
        buckets = [(_labels(le=f"{bound:g}"), count)
                   for bound, count in zip(LLM_LATENCY_BUCKETS, self.llm_buckets, strict=True)]
        family("heatup_llm_request_duration_seconds", "histogram", "Time the LLM took to "
               "answer a plan request.", [])
        lines.extend(f"heatup_llm_request_duration_seconds_bucket{labels} {count}"
                     for labels, count in [*buckets, (_labels(le="+Inf"), self.llm_count)])
        lines.append(f"heatup_llm_request_duration_seconds_sum {self.llm_sum:g}")
        lines.append(f"heatup_llm_request_duration_seconds_count {self.llm_count}")
        family("heatup_accounts_waiting", "gauge", "Accounts Telegram told to wait (flood "
               "wait or peer flood) that have not finished waiting.", [("", waiting)])
        family("heatup_accounts_warming_up", "gauge", "Accounts with a warmup running in this "
               "process.", [("", warming_up)])
        family("heatup_pool_channels", "gauge", "Channels of the pool, by what the last pool "
               "check found (unchecked ones count as live).",
               [(_labels(state=POOL_LIVE), live), (_labels(state=POOL_DEAD), dead)])
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    """'{a="x",b="y"}' with Prometheus escaping of the values."""
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"


class HeatUp:
    """Pool, history, planner and jobs, shared by the HTTP API and the command line.

    Database work runs on one thread of its own (the store's connection lives there), never
    on the event loop: a database locked by another process delays only what needs it.
    """

    def __init__(self, settings: Settings, store: HistoryStore, pool: list[Channel]) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.metrics = Metrics()
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heatup-db")

    async def db(self, method: Callable[..., T], *args: Any) -> T:
        """Run a HistoryStore method on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._db_thread, functools.partial(method, *args))

    def close(self) -> None:
        """Stop the database thread (after the calls already queued)."""
        self._db_thread.shutdown(wait=True)

    def account_folder(self, session_id: str) -> Path:
        """The account folder named `session_id`, never a path outside the sessions folder."""
        check_session_id(session_id)
        root = self.settings.sessions_dir.resolve()
        folder = root / session_id
        if session_id in telegram_session.NOT_ACCOUNT_FOLDERS or \
                not (folder / ".env").is_file() or folder.resolve().parent != root:
            raise UnknownSession(
                f"no account folder {session_id!r}: create {folder} with its .env and log "
                f"the account in (python telegram_session.py auth {folder}) to warm it up")
        return folder

    def account_folders(self) -> list[Path]:
        """Every account folder under the sessions folder."""
        root = self.settings.sessions_dir
        if not root.is_dir():
            return []
        return sorted(folder for folder in root.iterdir()
                      if folder.name not in telegram_session.NOT_ACCOUNT_FOLDERS
                      and SESSION_ID_RE.fullmatch(folder.name) and (folder / ".env").is_file())

    def waiting_accounts(self) -> int:
        """How many accounts have a flood wait or peer-flood rest running (blocking: a thread)."""
        waiting = 0
        for folder in self.account_folders():
            try:
                account = telegram_session.load_account(folder)
                waiting += telegram_session.current_wait(account) is not None
            except (telegram_session.AccountError, OSError, sqlite3.Error) as exc:
                log.debug("%s: not counted in accounts waiting: %s", folder.name, exc)
        return waiting

    async def sleep(self, seconds: float) -> None:
        """Read and idle pauses, scaled by HEATUP_TIME_SCALE."""
        await asyncio.sleep(seconds * self.settings.time_scale)

    async def live_pool(self) -> list[Channel]:
        """The pool without the channels the last `pool check` found dead."""
        dead = await self.db(self.store.dead_channels)
        live = [channel for channel in self.pool if channel.username.lower() not in dead]
        if not live:
            raise PoolError(f"all {len(self.pool)} channels of the pool were found dead by "
                            "`heatup.py pool check`; refresh the pool (tgstat_fetcher.py "
                            "fetch) and check it again")
        return live

    async def plan(self, session_id: str) -> tuple[Plan, dict[str, Any]]:
        """A plan for the account over the live pool, and the history summary it used."""
        summary = await self.db(self.store.summary, session_id, self.settings.history_days)
        plan = await make_plan(self.settings, session_id, summary, await self.live_pool())
        self.metrics.observe_plan(plan)
        return plan, summary

    async def claim(self, session_id: str) -> telegram_session.Account:
        """Mark the account busy in this process; WarmupBusy/AccountLimited if it may not run."""
        folder = self.account_folder(session_id)
        if session_id in self.busy:
            raise WarmupBusy(f"{session_id} is already warming up")
        self.busy.add(session_id)
        try:
            return await asyncio.to_thread(self._may_run, session_id, folder)
        except BaseException:
            self.busy.discard(session_id)
            raise

    @staticmethod
    def _may_run(session_id: str, folder: Path) -> telegram_session.Account:
        """The account, unless another process holds it or Telegram has it waiting."""
        account = telegram_session.load_account(folder)
        holder = telegram_session.lock_holder(account)
        if holder is not None:
            raise WarmupBusy(f"{session_id} is in use by {holder.describe()}")
        wait = telegram_session.current_wait(account)
        if wait is not None:
            kind, until = wait
            raise AccountLimited(f"{session_id}: {telegram_session.describe_wait(kind, until)}"
                                 f" (until {telegram_session.format_time(until)})", until)
        return account

    async def start(self, session_id: str) -> tuple[str, Plan, dict[str, Any]]:
        """Claim the account, plan, and store the job; the caller runs it with run_job."""
        await self.claim(session_id)
        try:
            plan, summary = await self.plan(session_id)
            job_id = await self.db(self.store.create_job, session_id, plan)
        except BaseException:
            self.busy.discard(session_id)
            raise
        return job_id, plan, summary

    async def run_job(self, job_id: str) -> tuple[dict[str, Any], int]:
        """Execute the job's actions not yet saved, each saved as it completes.

        The account must have been claimed. The job ends done, partial (some action
        failed) or failed (no join or read succeeded, or a Telegram account problem, with
        its reason); the account is released in every case. Returns the job and the exit
        code for the command line.
        """
        job = await self.db(self.store.job, job_id)
        session_id = job["session_id"]
        try:
            error, exit_code = await self._execute(job)
            if error is None:
                status, error = job_outcome(await self.db(self.store.job_actions, job_id))
                exit_code = EXIT_FAILURE if status == JOB_FAILED else EXIT_OK
            else:
                status = JOB_FAILED
            await self.db(self.store.finish_job, job_id, status, error)
        finally:
            self.busy.discard(session_id)
        self.metrics.jobs[status] += 1
        log.info("%s: job %s %s", session_id, job_id, f"{status}: {error}" if error else status)
        return await self.db(self.store.job, job_id), exit_code

    async def _execute(self, job: dict[str, Any]) -> tuple[str | None, int]:
        """Run the remaining steps; (why the job failed or None, exit code)."""
        session_id = job["session_id"]
        done_steps = {_data(row).get("step") for row in job["actions"]}
        try:
            account = await asyncio.to_thread(telegram_session.load_account,
                                              self.account_folder(session_id))
            async with telegram_session.open_client(account) as client:
                joins_refused = False
                for step, action in enumerate(job["plan"]):
                    if step in done_steps:
                        continue
                    refusal = None
                    if action["type"] == JOIN and joins_refused:
                        result = {"channel_username": action["channel"], "status": FAILED,
                                  "reason": JOINS_REFUSED_REASON}
                    else:
                        result, refusal = await self._attempt(client, account, action)
                    joins_refused = joins_refused or _is(refusal, errors.ChannelsTooMuchError)
                    await self._save(job, step, action, result)
                    if _is(refusal, errors.PeerFloodError):
                        return PEER_FLOOD_REASON, EXIT_FAILURE
        except telegram_session.AUTH_ERRORS as exc:
            failure = telegram_session.auth_error(account, exc)
            return str(failure), failure.exit_code
        except errors.RPCError as exc:     # e.g. Telegram's internal errors while connecting
            return f"Telegram refused it ({type(exc).__name__}: {exc})", EXIT_FAILURE
        except telegram_session.AccountError as exc:
            return str(exc), exc.exit_code
        except UsageError as exc:
            return str(exc), EXIT_USAGE
        except OSError as exc:
            return f"connection to Telegram lost ({exc or type(exc).__name__})", EXIT_FAILURE
        return None, EXIT_OK

    async def _attempt(self, client: TelegramClient, account: telegram_session.Account,
                       action: dict[str, Any]
                       ) -> tuple[dict[str, Any], type[errors.RPCError] | None]:
        """One action's result and, when Telegram refused it, the refusal's error class.

        Telegram refusing an action is a failed result, not an exception; account-wide
        refusals (auth errors) propagate.
        """
        failed = {"channel_username": action["channel"]} if "channel" in action else {}
        try:
            return await execute_action(client, account, action, self.sleep), None
        except errors.PeerFloodError as exc:
            return {**failed, "status": FAILED, "reason": PEER_FLOOD_REASON}, type(exc)
        except errors.ChannelsTooMuchError as exc:
            return {**failed, "status": FAILED, "reason": CHANNELS_TOO_MUCH_REASON}, type(exc)
        except telegram_session.AUTH_ERRORS:
            raise
        except errors.RPCError as exc:
            return {**failed, "status": FAILED,
                    "reason": f"Telegram refused it ({type(exc).__name__}: {exc})"}, type(exc)

    async def _save(self, job: dict[str, Any], step: int, action: dict[str, Any],
                    result: dict[str, Any]) -> None:
        """Save one executed action to session_history, tagged with its job and step."""
        session_id = job["session_id"]
        await self.db(self.store.record, session_id, action["type"],
                      {**result, "job_id": job["job_id"], "step": step})
        self.metrics.actions[action["type"], result["status"]] += 1
        log.info("%s: %s: %s%s", session_id, describe_action(action), result["status"],
                 f" ({result['reason']})" if "reason" in result else "")

    def run_in_background(self, job_id: str) -> None:
        """Run the job as a task of this event loop (kept until it ends)."""
        task = asyncio.create_task(self.run_job(job_id), name=f"heatup-job-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def resume_unfinished(self) -> list[str]:
        """Start again, in the background, the jobs a stopped process left running."""
        resumed = []
        for job_id in await self.db(self.store.unfinished_jobs):
            session_id = (await self.db(self.store.job, job_id))["session_id"]
            try:
                await self.claim(session_id)
            except (WarmupBusy, AccountLimited, UsageError,
                    telegram_session.AccountError) as exc:
                log.warning("job %s of %s not resumed now: %s", job_id, session_id, exc)
                continue
            log.info("%s: resuming job %s", session_id, job_id)
            self.run_in_background(job_id)
            resumed.append(job_id)
        return resumed

    async def cleanup(self) -> int:
        deleted = await self.db(self.store.cleanup, self.settings.history_days)
        log.info("cleanup: %d history rows older than %d days deleted", deleted,
                 self.settings.history_days)
        return deleted


def probe_database(path: Path) -> str | None:
    """None if the history database can be written now, else why not.

    Uses a connection of its own with a short busy timeout, so a lock held by another
    process is reported in HEALTH_DB_TIMEOUT seconds instead of being waited out.
    """
    try:
        conn = sqlite3.connect(str(path), timeout=HEALTH_DB_TIMEOUT, isolation_level=None)
    except sqlite3.Error as exc:
        return f"history database {path} cannot be opened ({exc})"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return (f"history database {path} cannot be written ({exc}); requests that save "
                "history wait until it can")
    finally:
        conn.close()
    return None


# ----------------------------------------------------------------------------- HTTP API

@functools.cache
def service_key() -> web.AppKey:
    """The application's key for the HeatUp service (made on first use: loads aiohttp)."""
    return web.AppKey("service", HeatUp)


def json_error(status: int, message: str, *, headers: dict[str, str] | None = None,
               **extra: Any) -> web.Response:
    """An error answer: `detail` as the earlier service (FastAPI) gave it, `error` the same."""
    return web.json_response({"detail": message, "error": message, **extra}, status=status,
                             headers=headers)


def validation_error(location: list[str], kind: str, message: str, value: Any,
                     **context: Any) -> web.Response:
    """FastAPI's 422 answer for one invalid parameter, as the earlier service gave it."""
    item: dict[str, Any] = {"type": kind, "loc": location, "msg": message, "input": value}
    if context:
        item["ctx"] = context
    return web.json_response({"detail": [item]}, status=422)


async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    """Every error answer is JSON with one `detail` line."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except InvalidSessionId as exc:
        return json_error(400, str(exc))
    except UnknownSession as exc:
        return json_error(404, str(exc))
    except WarmupBusy as exc:
        return json_error(409, str(exc))
    except AccountLimited as exc:
        retry = max(int((exc.until - datetime.now(UTC)).total_seconds()), 1)
        return json_error(429, str(exc), headers={"Retry-After": str(retry)})
    except PoolError as exc:
        return json_error(503, str(exc))
    except sqlite3.Error as exc:
        return json_error(503, f"history database unavailable ({exc})")
    except telegram_session.AccountError as exc:
        return json_error(500, str(exc))


def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (any port)."""
    name = host.strip().lower()
    if name.startswith("["):                                # [::1]:8080
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:                              # localhost:8080
        name = name.split(":", 1)[0]
    return is_loopback(name.rstrip("."))


def make_guard_middleware(token: str | None):
    """Refuse what a web page could make a browser send to the API.

    Without a token only loopback Host names are served (DNS rebinding). Requests that
    change state are refused from a foreign Origin (cross-site) and with a body that is
    not JSON (HTML forms); a POST without a body, as the earlier clients send, is fine.
    """
    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        if token is None and not is_loopback_host(request.host):
            return json_error(403, f"Host {request.host[:100]!r} refused: without "
                              "HEATUP_API_TOKEN only loopback names (localhost, 127.0.0.1, "
                              "[::1]) are served")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return json_error(403, f"cross-site request from Origin {origin[:100]!r} "
                                  "refused")
            if request.body_exists and request.content_type != "application/json":
                return json_error(415, "send the body as JSON (Content-Type: "
                                  "application/json), or no body")
        return await handler(request)

    return guard


def make_auth_middleware(token: str | None):
    """With a token, every request needs `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def require_token(request: web.Request, handler) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return json_error(401, "missing or wrong token: send Authorization: Bearer "
                                  "<token>", headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return require_token


async def limit_body(request: web.Request, handler) -> web.StreamResponse:
    """Bodies are small JSON; anything over BODY_LIMIT_BYTES is refused with 413."""
    if request.content_length is not None and request.content_length > BODY_LIMIT_BYTES:
        return json_error(413, f"request body over {BODY_LIMIT_BYTES} bytes")
    if request.can_read_body:
        await request.read()        # raises 413 past client_max_size for chunked bodies
    return await handler(request)


def plan_view(plan: Plan, summary: dict[str, Any]) -> dict[str, Any]:
    """The suite's additions about the plan."""
    return {"planner": plan.planner, "planner_note": plan.note, "is_new": summary["is_new"],
            "plan": plan.actions}


def action_plan(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan as the earlier service gave it."""
    return [{"action": a["type"], "channel_username": a.get("channel"),
             "duration_seconds": a.get("duration", 0), "reason": a.get("reason", "")}
            for a in actions]


async def warmup_body(request: web.Request) -> web.Response | None:
    """Check the earlier service's optional JSON body; a 422 answer when it is unusable.

    Its fields (telegram_api_base_url, telegram_api_key) are accepted and not used: the
    account folder says how to reach Telegram.
    """
    if not request.body_exists:
        return None
    text = await request.text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return validation_error(["body", exc.pos], "json_invalid", "JSON decode error",
                                {}, error=exc.msg)
    if not isinstance(body, dict):
        return validation_error(["body"], "model_attributes_type", "Input should be a valid "
                                "dictionary or object to extract fields from", body)
    return None


async def post_warmup(request: web.Request) -> web.Response:
    refused = await warmup_body(request)
    if refused is not None:
        return refused
    service = request.app[service_key()]
    session_id = request.match_info["session_id"]
    job_id, plan, summary = await service.start(session_id)
    service.run_in_background(job_id)
    return web.json_response({
        "session_id": session_id, "status": "started",
        "message": f"Warmup initiated with {len(plan.actions)} actions",
        "action_plan": action_plan(plan.actions), "execution_summary": None,
        "job_id": job_id, "job_status": JOB_RUNNING, "job_url": f"/jobs/{job_id}",
        **plan_view(plan, summary)})


async def post_warmup_sync(request: web.Request) -> web.Response:
    refused = await warmup_body(request)
    if refused is not None:
        return refused
    service = request.app[service_key()]
    session_id = request.match_info["session_id"]
    job_id, plan, summary = await service.start(session_id)
    job, _ = await service.run_job(job_id)
    done = job["execution_summary"]
    body = {"action_plan": action_plan(plan.actions), "execution_summary": done,
            "job_id": job_id, "job_status": job["status"], **plan_view(plan, summary),
            "actions": job["actions"]}
    if job["status"] == JOB_FAILED:
        return json_error(500, f"Warmup failed: {job['error']}", session_id=session_id, **body)
    return web.json_response({
        "session_id": session_id, "status": "completed",
        "message": f"Warmup completed: {done['successful_actions']}/{done['total_actions']} "
                   "actions successful", **body})


def days_query(text: str | None, default: int) -> int | web.Response:
    """The `days` query parameter, or FastAPI's 422 answer for it."""
    if text is None:
        return default
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        return validation_error(["query", "days"], "int_parsing", "Input should be a valid "
                                "integer, unable to parse string as an integer", text)
    days = int(text)
    if days < 0:
        return validation_error(["query", "days"], "greater_than_equal",
                                "Input should be greater than or equal to 0", text, ge=0)
    if days > MAX_HISTORY_DAYS:
        return validation_error(["query", "days"], "less_than_equal", "Input should be less "
                                f"than or equal to {MAX_HISTORY_DAYS}", text,
                                le=MAX_HISTORY_DAYS)
    return days


async def get_history(request: web.Request) -> web.Response:
    """Spec 001's history: any valid session id, account folder or not."""
    service = request.app[service_key()]
    session_id = check_session_id(request.match_info["session_id"])
    days = days_query(request.query.get("days"), service.settings.history_days)
    if isinstance(days, web.Response):
        return days
    rows = await service.db(service.store.history, session_id, days)
    return web.json_response({"session_id": session_id, "summary": summarize(rows),
                              "history": rows})


async def get_job(request: web.Request) -> web.Response:
    service = request.app[service_key()]
    job_id = request.match_info["job_id"]
    job = await service.db(service.store.job, job_id) if JOB_ID_RE.fullmatch(job_id) else None
    if job is None:
        return json_error(404, f"no job {job_id[:40]!r}")
    return web.json_response(job)


async def get_root(request: web.Request) -> web.Response:
    return web.json_response({"service": "Heat Up", "status": "running",
                              "version": EARLIER_API_VERSION})


async def get_health(request: web.Request) -> web.Response:
    """The earlier fields, the suite's beside them; 503 naming the reason when unhealthy."""
    service = request.app[service_key()]

    def look() -> tuple[str | None, bool]:
        return probe_database(service.settings.database), bool(service.account_folders())

    problem, accounts = await asyncio.to_thread(look)
    return web.json_response({
        "status": "healthy" if problem is None else "unhealthy",
        "telegram_client": accounts, "llm_agent": service.settings.llm_configured,
        "database": problem or "ok", "pool_size": len(service.pool),
        "planner": f"llm:{service.settings.openai_model}" if service.settings.llm_configured
        else "offline",
        "warming_up": sorted(service.busy)}, status=200 if problem is None else 503)


async def get_metrics(request: web.Request) -> web.Response:
    service = request.app[service_key()]
    dead = await service.db(service.store.dead_channels)
    waiting = await asyncio.to_thread(service.waiting_accounts)
    live = sum(1 for c in service.pool if c.username.lower() not in dead)
    text = service.metrics.render(waiting=waiting, warming_up=len(service.busy), live=live,
                                  dead=len(service.pool) - live)
    return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def daily_cleanup(service: HeatUp) -> None:
    while True:
        await asyncio.sleep(CLEANUP_INTERVAL_SECONDS)
        await service.cleanup()


def build_app(service: HeatUp) -> web.Application:
    """The aiohttp application; on start it cleans up, resumes jobs and schedules cleanup."""
    token = service.settings.api_token
    app = web.Application(client_max_size=BODY_LIMIT_BYTES, middlewares=[
        web.middleware(errors_as_json), make_guard_middleware(token),
        make_auth_middleware(token), web.middleware(limit_body)])
    app[service_key()] = service
    app.router.add_get("/", get_root)
    app.router.add_post("/warmup/{session_id}", post_warmup)
    app.router.add_post("/warmup-sync/{session_id}", post_warmup_sync)
    app.router.add_get("/sessions/{session_id}/history", get_history)
    app.router.add_get("/jobs/{job_id}", get_job)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)

    async def background(app: web.Application):
        await service.cleanup()
        await service.resume_unfinished()
        cleaner = asyncio.create_task(daily_cleanup(service))
        yield
        cleaner.cancel()
        for task in list(service.tasks):
            task.cancel()
        await asyncio.gather(cleaner, *service.tasks, return_exceptions=True)

    app.cleanup_ctx.append(background)
    return app


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(service: HeatUp, host: str, port: int) -> None:
    """Run the HTTP API on this event loop until cancelled."""
    runner = web.AppRunner(build_app(service), access_log=log)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("heat-up API on http://%s:%d (pool: %d channels, planner: %s, auth: %s)",
                 host, port, len(service.pool),
                 service.settings.openai_model if service.settings.llm_configured
                 else "offline", "token" if service.settings.api_token else "none")
        await migrate_db.Heartbeat(log).run(
            lambda: f"serving on {host}:{port}, {len(service.tasks)} warmups running")
    finally:
        running = len(service.tasks)
        await runner.cleanup()
        log.info("heat-up API stopped%s", f"; {running} warmups interrupted, each continues "
                 "where it stopped at its next warmup" if running else "")


# ----------------------------------------------------------------------------- command line

def describe_row(row: dict[str, Any]) -> str:
    """'2026-01-10T12:30:00 join_channel @durov failed: reason' for a history row."""
    data = row["action_data"] if isinstance(row["action_data"], dict) else {}
    parts = [row["timestamp"], row["action_type"], data.get("channel_username"),
             data.get("status", DONE)]
    line = " ".join(str(p) for p in parts if p)
    return f"{line}: {data['reason']}" if data.get("reason") else line


def print_plan(plan: Plan, summary: dict[str, Any], session_id: str) -> None:
    who = "new account" if summary["is_new"] else (
        f"returning account, {summary['total_actions']} actions, joined "
        f"{', '.join(summary['joined_channels']) or 'nothing'}")
    print(f"{session_id}: {who}")
    print(f"planner: {plan.planner}" + (f" ({plan.note})" if plan.note else ""))
    for number, action in enumerate(plan.actions, start=1):
        print(f"{number}. {describe_action(action)}")


async def command_plan(service: HeatUp, args: argparse.Namespace) -> int:
    service.account_folder(args.session_id)
    plan, summary = await service.plan(args.session_id)
    if args.json:
        print(json.dumps({"session_id": args.session_id, **plan_view(plan, summary)},
                         ensure_ascii=False, indent=2))
    else:
        print_plan(plan, summary, args.session_id)
    return EXIT_OK


async def command_warmup(service: HeatUp, args: argparse.Namespace) -> int:
    if args.dry_run:
        return await dry_run(service, args.session_id)
    await service.cleanup()
    unfinished = await service.db(service.store.unfinished_jobs, args.session_id)
    if unfinished:
        await service.claim(args.session_id)
        job_id = unfinished[-1]
        print(f"{args.session_id}: continuing job {job_id} where it stopped")
    else:
        job_id, plan, summary = await service.start(args.session_id)
        print_plan(plan, summary, args.session_id)
    job, exit_code = await service.run_job(job_id)
    if args.json:
        print(json.dumps(job, ensure_ascii=False, indent=2))
    else:
        for row in job["actions"]:
            print(describe_row(row))
    if job["status"] == JOB_FAILED:
        print(f"error: {job['error']}", file=sys.stderr)
    elif job["status"] == JOB_PARTIAL:
        print(f"warning: {job['error']}", file=sys.stderr)
    return exit_code


async def dry_run(service: HeatUp, session_id: str) -> int:
    """Plan and check each action over the client; nothing is joined, read or saved."""
    folder = service.account_folder(session_id)
    plan, summary = await service.plan(session_id)
    print_plan(plan, summary, session_id)
    account = await asyncio.to_thread(telegram_session.load_account, folder)
    async with telegram_session.open_client(account) as client:
        for number, action in enumerate(plan.actions, start=1):
            print(f"{number}. {describe_action(action)}: "
                  f"{await check_action(client, account, action)}")
    print("dry run: nothing was joined, read or saved")
    return EXIT_OK


async def command_history(service: HeatUp, args: argparse.Namespace) -> int:
    check_session_id(args.session_id)           # any session id, account folder or not
    history = await service.db(service.store.history, args.session_id, args.days)
    summary = summarize(history)
    if args.json:
        print(json.dumps({"session_id": args.session_id, "summary": summary,
                          "history": history}, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"{args.session_id}: {'new' if summary['is_new'] else 'returning'}, "
          f"{summary['total_actions']} actions, last activity "
          f"{summary['last_activity'] or 'never'}")
    print(f"joined: {', '.join(summary['joined_channels']) or 'nothing yet'}")
    for row in history:
        print(describe_row(row))
    return EXIT_OK


async def command_cleanup(service: HeatUp, args: argparse.Namespace) -> int:
    deleted = await service.cleanup()
    print(f"{deleted} history rows older than {service.settings.history_days} days deleted")
    return EXIT_OK


async def command_serve(service: HeatUp, args: argparse.Namespace) -> int:
    await serve(service, args.host, args.port)
    return EXIT_OK


async def check_pool(service: HeatUp, session_id: str) -> list[tuple[str, str, str]]:
    """Resolve every pool channel through the account; (username, live|dead, detail) each.

    The results are saved: plans use only the channels found live (or never checked).
    """
    folder = service.account_folder(session_id)
    account = await asyncio.to_thread(telegram_session.load_account, folder)
    results = []
    async with telegram_session.open_client(account) as client:
        for number, channel in enumerate(service.pool):
            if number:
                await service.sleep(POOL_CHECK_PAUSE_SECONDS)
            entity = await resolve_channel(client, account, channel.username)
            if isinstance(entity, str):
                results.append((channel.username, POOL_DEAD, entity))
            else:
                results.append((channel.username, POOL_LIVE, entity.title))
    await service.db(service.store.record_pool_check, session_id, results)
    return results


async def command_pool(service: HeatUp, args: argparse.Namespace) -> int:
    results = await check_pool(service, args.session_id)
    live = sum(1 for _, status, _ in results if status == POOL_LIVE)
    if args.json:
        print(json.dumps({"account": args.session_id, "live": live,
                          "dead": len(results) - live,
                          "channels": [{"username": name, "status": status, "detail": detail}
                                       for name, status, detail in results]},
                         ensure_ascii=False, indent=2))
        return EXIT_OK
    print(migrate_db.format_table(None, results))
    print(f"{live} live, {len(results) - live} dead (checked through {args.session_id}); "
          f"plans use only the live channels")
    return EXIT_OK


def days_value(text: str) -> int:
    """argparse type for --days."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_HISTORY_DAYS}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    paths = common.add_argument_group("files")
    paths.add_argument("--sessions-dir", type=Path, metavar="DIR",
                       help="account folders (default: HEATUP_SESSIONS_DIR or sessions/ next "
                            "to this script)")
    paths.add_argument("--db", type=Path, metavar="FILE",
                       help="history database (default: DATABASE_PATH or sessions.db, a "
                            "relative DATABASE_PATH being taken from this script's folder)")
    paths.add_argument("--channels", type=Path, metavar="FILE",
                       help="channel pool (default: HEATUP_CHANNELS_FILE or "
                            "channels_data.json next to this script)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug detail (also before COMMAND)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON, as the API answers")

    parser = argparse.ArgumentParser(
        description="History-aware join/read/idle sessions for the suite's Telegram accounts.",
        epilog="SESSION_ID is an account folder under sessions/. Planning uses OPENAI_API_KEY, "
               "OPENAI_BASE_URL, OPENAI_MODEL; without them the built-in planner plans.",
        parents=[migrate_db.cli_options()])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd = commands.add_parser("serve", parents=[common], help="run the HTTP API")
    network = serve_cmd.add_argument_group("network")
    network.add_argument("--host", default=DEFAULT_HOST,
                         help="address to listen on (default: %(default)s; any other than "
                              "loopback needs HEATUP_API_TOKEN)")
    network.add_argument("--port", type=int, default=DEFAULT_PORT,
                         help="port (default: %(default)s)")
    serve_cmd.set_defaults(handler=command_serve)
    warmup = commands.add_parser("warmup", parents=[common, output],
                                 help="plan and run a session for an account")
    warmup.add_argument("session_id", metavar="SESSION_ID")
    warmup.add_argument("--dry-run", action="store_true",
                        help="plan and check each action; join, read and save nothing")
    warmup.set_defaults(handler=command_warmup)
    plan = commands.add_parser("plan", parents=[common, output],
                               help="print a plan for an account; run nothing")
    plan.add_argument("session_id", metavar="SESSION_ID")
    plan.set_defaults(handler=command_plan)
    history = commands.add_parser("history", parents=[common, output],
                                  help="a session's saved actions (any session id)")
    history.add_argument("session_id", metavar="SESSION_ID")
    history.add_argument("--days", type=days_value, default=DEFAULT_HISTORY_DAYS,
                         help="how far back (default: %(default)s)")
    history.set_defaults(handler=command_history)
    pool = commands.add_parser("pool", help="the channel pool")
    pool_commands = pool.add_subparsers(dest="pool_command", required=True, metavar="COMMAND")
    pool_check = pool_commands.add_parser(
        "check", parents=[common, output],
        help="resolve every pool channel through an account; plans then skip the dead ones")
    pool_check.add_argument("session_id", metavar="ACCOUNT",
                            help="account folder under sessions/ whose client looks them up")
    pool_check.set_defaults(handler=command_pool)
    commands.add_parser("cleanup", parents=[common],
                        help="delete history older than SESSION_HISTORY_DAYS").set_defaults(
        handler=command_cleanup)
    return parser


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Open the pool and the database, run the command; failures become one stderr line."""
    try:
        pool = load_pool(settings.channels_file)
    except (PoolError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        store = HistoryStore(settings.database)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: {settings.database}: cannot use it as the history database ({exc})",
              file=sys.stderr)
        return EXIT_FAILURE
    service = HeatUp(settings, store, pool)
    try:
        return await args.handler(service, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WarmupBusy as exc:           # the README's code for a lock held elsewhere
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SESSION
    except (AccountLimited, PoolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except telegram_session.AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except errors.RPCError as exc:      # a dry run's connection refused by Telegram
        print(f"error: Telegram refused it ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:             # `| head`: migrate_db.run_main ends quietly
        raise
    except (OSError, sqlite3.Error) as exc:      # e.g. the port is taken, the database locked
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        service.close()
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    migrate_db.setup_logging(args.verbose, args.quiet,
                             LOG_FILE if args.command == "serve" else None)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    dotenv.load_dotenv(SCRIPT_DIR / ".env")
    try:
        settings = settings_from(dict(os.environ), sessions_dir=args.sessions_dir,
                                 database=args.db, channels_file=args.channels)
    except UsageError as exc:
        parser.error(str(exc))
    if args.command == "serve":
        if not 0 < args.port < 65536:
            parser.error("--port must be between 1 and 65535")
        if not is_loopback(args.host) and not settings.api_token:
            parser.error(f"refusing to listen on {args.host} without HEATUP_API_TOKEN: set a "
                         "token, or listen on 127.0.0.1")
        if settings.api_token and len(settings.api_token) < MIN_TOKEN_LENGTH:
            print(f"error: HEATUP_API_TOKEN is {len(settings.api_token)} characters; use at "
                  f"least {MIN_TOKEN_LENGTH}, e.g. one made with: {MAKE_TOKEN}", file=sys.stderr)
            return EXIT_USAGE
    return asyncio.run(run(settings, args))


if __name__ == "__main__":
    migrate_db.run_main(main)
