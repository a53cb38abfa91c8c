#!/usr/bin/env python3
"""Clone a Telegram chat into another, exactly once: backfill, then follow new messages.

One account (the folder's .env) copies SOURCE_CHAT into TARGET_CHAT. Every source message
has a row in a SQLite checkpoint (table `messages`): it is claimed, its send's `random_id`
is stored before the send and reused on a retry, and it is marked done with the target
message id. A restart resumes after the last contiguous finished message, so a process
killed at any instant neither loses nor duplicates a message. Albums go as one album,
replies and forum topics are mapped, FloodWaits are slept through and the same message
sent again. clone_streaming_shared.py runs the same code for many accounts on one shared
checkpoint.

    cd sessions/session1 && python ../../clone_streaming.py [--once] [--status]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import migrate_db
import telegram_session
from migrate_db import parse_utc, transaction, utc_text

# Telethon loads when first used, so --help and usage errors answer at once
errors = migrate_db.lazy_import("telethon.errors")
events = migrate_db.lazy_import("telethon.events")
functions = migrate_db.lazy_import("telethon.functions")
types = migrate_db.lazy_import("telethon.types")
utils = migrate_db.lazy_import("telethon.utils")
psycopg = migrate_db.lazy_import("psycopg")     # only with SHARED_DB_URL=postgresql://...
if TYPE_CHECKING:
    from telethon import TelegramClient

log = logging.getLogger("clone")
UTC = timezone.utc        # datetime.UTC is Python 3.11+

# ----------------------------------------------------------------------------- settings
COPY_MODES = ("forward", "copy", "auto")
DEFAULT_COPY_MODE = "auto"
DEFAULT_CHECKPOINT_DB = "checkpoint.db"
DEFAULT_CLAIM_TIMEOUT = 300.0          # seconds without a heartbeat before a claim is stale
DEFAULT_MAX_MEDIA_MB = 2000.0          # Telegram's own upload limit
DEFAULT_PROGRESS_EVERY = 100           # messages between progress lines
DEFAULT_PROGRESS_SECONDS = 10.0        # ... or seconds, whichever comes first
ORPHAN_FACTOR = 10                     # a claim with a stored random_id: others wait longer
FORWARD_BATCH = 100                    # Telegram's limit of ids per forwardMessages
FLOOD_SLEEP_THRESHOLD = 60             # shorter FloodWaits are slept inside Telethon
DEFAULT_RECONCILE_SECONDS = 120.0      # a follow pass at least this often, events or not
IDLE_LOG_PASSES = 3                    # "following ...: up to date" every this many idle passes
AUDIT_IDS_SHOWN = 50                   # missing ids listed by --audit
LEGACY_CHECKPOINT_FILE = "checkpoint.txt"   # an earlier single-account cloner's resume id
LEGACY_IMPORT_CHUNK = 5000
LEGACY_NOTE = "cloned by an earlier clone_streaming.py (checkpoint.txt)"
EVENT_SETTLE_SECONDS = 0.5             # lets an album's items all arrive before a pass
WAIT_POLL_SECONDS = 0.02               # polling another account's claim (replies, order)
LEFTOVER_POLL_SECONDS = 0.5            # --once: polling the claims of other accounts
HISTORY_PAGE = 100                     # messages per history request (Telegram's most)
ALBUM_MAX = 10                         # items of an album at most (Telegram's limit)
# A range of source ids read in one history request: the range, ALBUM_MAX - 1 ids each side
# (the whole of every album starting in it, and whether its first album started before it),
# and one more message (whether newer messages follow).
RANGE_SIZE = HISTORY_PAGE - 2 * (ALBUM_MAX - 1) - 1
# A range's units are held a third at a time, the rest lent to accounts with nothing to read
# (a chat of one range is shared; three claims a range keep the checkpoint's cost low).
SHARE_UNITS = RANGE_SIZE // 3
RECENT_TARGET_SCAN = 200               # target messages searched after RANDOM_ID_DUPLICATE
CLOCK_SKEW_SECONDS = 60                # slack around a send in doubt (our clock vs Telegram's)
SEND_ATTEMPTS = 5                      # dropped connections per send
REFETCH_ATTEMPTS = 3                   # expired file references per message
TERMINAL = ("done", "failed", "skipped")
GENERAL_TOPIC = 1
TOPIC_MAP_FILE = "topic_map.json"
LOG_FILE = "clone.log"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}

ENV_KEYS = {
    "TG_API_ID / TG_API_HASH": "the account's API credentials (telegram_session.py)",
    "SESSION_NAME": "the account's name in the checkpoint (default: the folder's name)",
    "SOURCE_CHAT": "chat to copy: numeric id, @username or t.me link (required)",
    "TARGET_CHAT": "chat to copy into: numeric id, @username or t.me link (required)",
    "SOURCE_TOPIC": "copy only this forum topic of the source (topic id)",
    "TARGET_TOPIC": "post everything into this topic of the target (topic id)",
    "AUTO_CREATE_TOPICS": "create each source topic once in a forum target (default true)",
    "COPY_MODE": "forward | copy | auto (default auto: forward where allowed, else copy)",
    "SILENT": "true: cloned messages never notify subscribers; false: always notify "
              "(default: silent during the backfill, notifying when following)",
    "ALLOW_REUPLOAD": "true: re-upload content from chats that forbid forwarding "
                      "(only content you have the rights to; default false)",
    "MAX_MEDIA_MB": "largest media to copy; larger is marked failed "
                    f"(default {DEFAULT_MAX_MEDIA_MB:g})",
    "CHECKPOINT_DB": f"clone_streaming.py's checkpoint (default {DEFAULT_CHECKPOINT_DB} "
                     "in the folder)",
    "RECONCILE_SECONDS": "following: read the source's newest messages at least this often, "
                         "whatever the updates say (default "
                         f"{DEFAULT_RECONCILE_SECONDS:g})",
    "SYNC_EDITS / SYNC_DELETES": "true: an edited source message edits its copy, a deleted "
                                 "one deletes it, also those changed while stopped (default "
                                 "false)",
    "PROGRESS_EVERY / PROGRESS_SECONDS": "a progress line every N messages or seconds "
                                        f"(default {DEFAULT_PROGRESS_EVERY} / "
                                        f"{DEFAULT_PROGRESS_SECONDS:g})",
}


class ConfigError(ValueError):
    """A bad .env value or flag: one line saying what is wrong and how to fix it (exit 2)."""


# ----------------------------------------------------------------------------- checkpoint

def _ids_json(msg_ids: Iterable[int]) -> str:
    return json.dumps([int(i) for i in msg_ids])


def range_lo(msg_id: int) -> int:
    """The first source id of the history range holding `msg_id` (see Checkpoint)."""
    return (max(int(msg_id), 1) - 1) // RANGE_SIZE * RANGE_SIZE + 1


class CheckpointRow(NamedTuple):
    """One message's state in a checkpoint."""

    status: str
    session: str | None
    target_msg_id: int | None
    grouped_id: int | None
    error: str | None


class Checkpoint(ABC):
    """What the Cloner needs from a checkpoint: one row per source message for one target.

    An instance belongs to one session (account). `bind()` fixes the chat pair; the message
    and topic methods then work on that pair only. A session claims rows, stores each
    send's random_id durably before sending (`random_ids`), and completes, fails or gives
    them back. A claim is kept alive by `heartbeat()`; once it is older than
    `claim_timeout` another session may take it over, except that a claim whose random_id
    is stored (its send may have reached Telegram, which de-duplicates random_ids per
    account only) is left to its own session for ORPHAN_FACTOR times longer, and whoever
    takes it over then finds it `in_doubt` (search the target before sending again).
    Album members are claimed whole or not at all. The report methods (`status_tables`,
    `retry_failed`) need no pair.

    The history is read in ranges of RANGE_SIZE source ids (lo = k * RANGE_SIZE + 1): a
    session leases a range (`claim_range`), reads it, and claims the units whose lowest id
    is in it together with recording the range read (`claim(..., range_read=)`), so each
    range is read once however many sessions run. A range lease is kept alive by
    `heartbeat()` and taken over once stale, like a claim.
    """

    def __init__(self, session_name: str, *, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT
                 ) -> None:
        self.session = session_name
        self.claim_timeout = float(claim_timeout)
        self.src = self.dst = ""

    def bind(self, source_chat: str, target_chat: str, aliases: Iterable[str] = ()) -> int:
        """Work on this pair from now on; rows of earlier runs recorded under another name
        of the source (`aliases`, e.g. "@name") or with no target are filed under the pair.
        Returns how many rows were filed."""
        self.src, self.dst = str(source_chat), str(target_chat)
        return self.adopt_rows(aliases)

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    def adopt_rows(self, aliases: Iterable[str]) -> int:
        """File earlier rows under the bound pair (see `bind`); returns how many moved."""

    # ------------------------------------------------------------------ claims
    @abstractmethod
    def claim(self, msg_ids: Iterable[int], *, grouped_ids: Mapping[int, int] | None = None,
              range_read: tuple[int, bool] | None = None) -> list[int]:
        """Claim messages (rows created as needed, with their album's id); returns the ids
        this session now holds. An album is taken only if no member is held elsewhere.
        `range_read` (lo, more): in the same transaction, the leased range starting at lo
        is recorded read (`more`: newer messages follow it)."""

    @abstractmethod
    def claim_range(self, first: int, since: datetime, *, single: bool = False
                    ) -> int | None:
        """Lease the lowest range to read from the one holding source id `first` (a range
        left 'reading' by a stopped session below it first): one nobody has leased, this
        session's, or a stale lease; ranges read with newer messages after them are
        final and passed, as are those other live sessions are reading. Returns its lo, or
        None once the newest range was read at or after `since` (the history's end).
        `single`: only the range holding `first` (None if it cannot be leased)."""

    @abstractmethod
    def reading_ranges(self, up_to: int) -> list[tuple[int, bool]]:
        """(lo, stale) of the ranges other sessions are reading that start at or below
        `up_to` (their messages are not rows yet)."""

    @abstractmethod
    def release_ranges(self) -> int:
        """Give back this session's range leases (not read yet); returns how many."""

    @staticmethod
    def _pick_range(rows: list[tuple[int, str, bool, bool, bool, bool]], first_lo: int,
                    single: bool) -> tuple[int, bool] | None:
        """claim_range's choice from the pair's ranges (lo, status, mine, stale, fresh,
        more): (lo, whether it has a row), or None."""
        known = {row[0]: row[1:] for row in rows}
        left = [lo for lo, (status, mine, stale, _, _) in known.items()
                if status == "reading" and (mine or stale) and lo < first_lo]
        if left and not single:
            return min(left), True
        lo = first_lo
        while True:
            if lo not in known:
                return lo, False
            status, mine, stale, fresh, more = known[lo]
            if status == "reading" and (mine or stale) or status == "read" and not more \
                    and not fresh:
                return lo, True
            if single or status == "read" and not more:
                return None
            lo += RANGE_SIZE

    @abstractmethod
    def claim_next(self, limit: int = 1, *, up_to: int | None = None) -> list[int]:
        """Claim the oldest pending rows (whole albums); returns their ids."""

    @abstractmethod
    def owned(self) -> list[int]:
        """Ids this session holds in the pair (e.g. left over from before a crash)."""

    @abstractmethod
    def random_ids(self, msg_ids: Iterable[int]) -> dict[int, int]:
        """The random_id of each held message, new ones stored durably first (the commit
        reaches the disk before this returns); unheld ids are left out."""

    @abstractmethod
    def in_doubt(self, msg_ids: Iterable[int]) -> dict[int, tuple[datetime, datetime]]:
        """Held ids whose earlier owner (another account) stored a random_id, each with the
        time window (UTC) in which its send may have reached Telegram."""

    @abstractmethod
    def complete(self, targets: Mapping[int, int | None], *,
                 note: str | None = None) -> set[int]:
        """Record sent messages as done with their target ids, in one transaction; returns
        the ids recorded (those this session held)."""

    @abstractmethod
    def fail(self, msg_ids: Iterable[int], reason: str, *, status: str = "failed"
             ) -> set[int]:
        """Record held messages as failed (or skipped) with the reason; returns them."""

    @abstractmethod
    def give_back(self, msg_ids: Iterable[int], *, unsent: bool = False) -> int:
        """Make held messages pending for anyone. Without `unsent`, only those whose send
        never started (no random_id); with it (Telegram refused the request, nothing was
        sent) their random_ids are dropped too. Returns how many."""

    @abstractmethod
    def heartbeat(self) -> int:
        """Refresh this session's claims and range leases (every pair); returns how many
        claims."""

    @abstractmethod
    def release_stale(self) -> int:
        """Make claims whose owner stopped heart-beating pending again; returns how many."""

    # ------------------------------------------------------------------ reading
    @abstractmethod
    def resume_point(self) -> int:
        """The last source id up to which every known message is finished (0 if none)."""

    @abstractmethod
    def open_below(self, msg_id: int) -> list[tuple[int, str, str | None]]:
        """Unfinished rows older than `msg_id`: (msg_id, status, session)."""

    @abstractmethod
    def row(self, msg_id: int) -> CheckpointRow | None:
        """One message's state, or None."""

    @abstractmethod
    def with_albums(self, msg_ids: Iterable[int]) -> list[int]:
        """The ids plus every other known member of their albums, sorted."""

    @abstractmethod
    def target_ids(self) -> set[int]:
        """Target message ids already recorded for the bound target (any source)."""

    @abstractmethod
    def audit_rows(self) -> list[tuple[int, str, int | None, str | None]]:
        """(msg_id, status, target_msg_id, error) of every row of the pair, by id."""

    # ------------------------------------------------------------------ topics
    @abstractmethod
    def claim_topic(self, source_topic: int, title: str) -> tuple[int | None, int | None]:
        """Who creates a target topic: (target_topic, None) if it exists already,
        (None, random_id) if this session must create it now (random_id stored durably),
        (None, None) while another live session is creating it (ask again shortly)."""

    @abstractmethod
    def set_topic(self, source_topic: int, target_topic: int) -> bool:
        """Record the created target topic; False if another session recorded one first."""

    @abstractmethod
    def topic_rows(self) -> list[tuple[int, int, str]]:
        """(source_topic, target_topic, title) of every created topic of the pair."""

    @abstractmethod
    def mapped_topic_ids(self) -> set[int]:
        """Target topics of the bound target already mapped to some source topic."""

    # ------------------------------------------------------------------ reports
    @abstractmethod
    def status_tables(self) -> dict[str, list[tuple]]:
        """The monitoring tables of the whole checkpoint (see status_report)."""

    @abstractmethod
    def retry_failed(self) -> list[tuple[str, str, int]]:
        """Make every failed row pending again (earlier systems' too); returns
        (source_chat, target_chat, count) per pair."""


class SqliteCheckpoint(Checkpoint):
    """The checkpoint in a SQLite file (table `messages`, schema.sql). Every state change
    is one `BEGIN IMMEDIATE` transaction; commits that store a random_id are made with
    `synchronous=FULL` (fsynced before the send), the others with the suite's NORMAL."""

    def __init__(self, db_path: str | Path, session_name: str, *,
                 claim_timeout: float = DEFAULT_CLAIM_TIMEOUT) -> None:
        super().__init__(session_name, claim_timeout=claim_timeout)
        self.db_path = Path(db_path)
        self.conn = migrate_db.connect(self.db_path, kind="checkpoint")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """A transaction whose COMMIT is on disk when the block is left (WAL fsynced)."""
        self.conn.execute("PRAGMA synchronous = FULL")
        try:
            with transaction(self.conn):
                yield
        finally:
            self.conn.execute("PRAGMA synchronous = NORMAL")

    def _params(self, **extra: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {"src": self.src, "dst": self.dst, "me": self.session, "now": utc_text(now),
                "stale": utc_text(now - timedelta(seconds=self.claim_timeout)),
                "orphan": utc_text(now - timedelta(seconds=self.claim_timeout * ORPHAN_FACTOR)),
                **extra}

    _PAIR = "source_chat = :src AND target_chat = :dst"
    # A row this session may take: free, its own, or stale (see Checkpoint).
    _TAKEABLE = """(status = 'pending' OR (status = 'processing' AND (session = :me
        OR (claimed_at < :stale AND (random_id IS NULL OR claimed_at < :orphan)))))"""
    # Taking over a claim whose send started leaves the window of that send in doubt.
    _CLAIM_SET = """status = 'processing', session = :me, claimed_at = :now, error = NULL,
        doubt_seen = CASE WHEN random_id IS NOT NULL AND session IS NOT :me
                          THEN claimed_at ELSE doubt_seen END,
        random_id = CASE WHEN session = :me THEN random_id END,
        attempts = attempts + (CASE WHEN status = 'processing' AND session = :me
                                    THEN 0 ELSE 1 END)"""

    def adopt_rows(self, aliases: Iterable[str]) -> int:
        names = sorted({str(a) for a in aliases} | {self.src})
        params = self._params(names=json.dumps(names))
        with transaction(self.conn):
            return self.conn.execute(
                """UPDATE OR IGNORE messages SET source_chat = :src, target_chat = :dst
                   WHERE source_chat IN (SELECT value FROM json_each(:names))
                     AND target_chat IN ('', :dst)
                     AND NOT (source_chat = :src AND target_chat = :dst)""", params).rowcount

    def claim(self, msg_ids: Iterable[int], *, grouped_ids: Mapping[int, int] | None = None,
              range_read: tuple[int, bool] | None = None) -> list[int]:
        ids = [int(i) for i in msg_ids]
        if not ids and range_read is None:
            return []
        groups = grouped_ids or {}
        params = self._params(ids=_ids_json(ids))
        with transaction(self.conn):
            if range_read is not None:
                self.conn.execute(
                    f"""UPDATE history_ranges SET status = 'read', read_at = :now,
                            more = :more, session = NULL
                        WHERE {self._PAIR} AND lo = :lo AND session = :me""",
                    {**params, "lo": range_read[0], "more": int(range_read[1])})
            # status spelled out: an earlier system's table has no default for it
            self.conn.executemany(
                "INSERT OR IGNORE INTO messages (source_chat, target_chat, msg_id, grouped_id, "
                "status) VALUES (?, ?, ?, ?, 'pending')",
                [(self.src, self.dst, i, groups.get(i)) for i in ids])
            rows = self.conn.execute(
                f"""UPDATE messages SET {self._CLAIM_SET}
                    WHERE {self._PAIR} AND msg_id IN (SELECT value FROM json_each(:ids))
                      AND {self._TAKEABLE}
                      AND (grouped_id IS NULL OR NOT EXISTS (
                          SELECT 1 FROM messages AS m WHERE m.source_chat = :src
                            AND m.target_chat = :dst AND m.grouped_id = messages.grouped_id
                            AND m.status = 'processing' AND m.session IS NOT :me
                            AND NOT (m.claimed_at < :stale
                                     AND (m.random_id IS NULL OR m.claimed_at < :orphan))))
                    RETURNING msg_id""", params).fetchall()
        return sorted(i for (i,) in rows)

    def claim_range(self, first: int, since: datetime, *, single: bool = False
                    ) -> int | None:
        first_lo = range_lo(first)
        params = self._params(first=first_lo, since=utc_text(since))
        with transaction(self.conn):
            rows = self.conn.execute(
                f"""SELECT lo, status, session IS :me, claimed_at < :stale,
                           read_at >= :since, more FROM history_ranges
                    WHERE {self._PAIR} AND (lo >= :first OR status = 'reading')
                    ORDER BY lo""", params).fetchall()
            picked = self._pick_range([(lo, st, bool(m), bool(s), bool(f), bool(mo))
                                       for lo, st, m, s, f, mo in rows], first_lo, single)
            if picked is None:
                return None
            lo = picked[0]
            self.conn.execute(
                """INSERT INTO history_ranges (source_chat, target_chat, lo, hi, status,
                       session, claimed_at) VALUES (:src, :dst, :lo, :hi, 'reading', :me, :now)
                   ON CONFLICT (source_chat, target_chat, lo) DO UPDATE SET
                       status = 'reading', session = :me, claimed_at = :now, read_at = NULL,
                       more = 0""", {**params, "lo": lo, "hi": lo + RANGE_SIZE - 1})
        return lo

    def reading_ranges(self, up_to: int) -> list[tuple[int, bool]]:
        rows = self.conn.execute(
            f"""SELECT lo, claimed_at < :stale FROM history_ranges WHERE {self._PAIR}
                AND status = 'reading' AND session IS NOT :me AND lo <= :up_to ORDER BY lo""",
            self._params(up_to=int(up_to)))
        return [(lo, bool(stale)) for lo, stale in rows]

    def release_ranges(self) -> int:
        with transaction(self.conn):
            return self.conn.execute(
                "DELETE FROM history_ranges WHERE status = 'reading' AND session = :me",
                self._params()).rowcount

    def claim_next(self, limit: int = 1, *, up_to: int | None = None) -> list[int]:
        params = self._params(limit=int(limit),
                              up_to=up_to if up_to is not None else 2 ** 62)
        with transaction(self.conn):
            rows = self.conn.execute(
                f"""UPDATE messages SET {self._CLAIM_SET}
                    WHERE {self._PAIR} AND msg_id IN (SELECT msg_id FROM messages
                        WHERE {self._PAIR} AND status = 'pending' AND msg_id <= :up_to
                        ORDER BY msg_id LIMIT :limit)
                    RETURNING msg_id, grouped_id""", params).fetchall()
            ids = [msg_id for msg_id, _ in rows]
            for grouped_id in {g for _, g in rows if g is not None}:
                ids += [i for (i,) in self.conn.execute(
                    f"""UPDATE messages SET {self._CLAIM_SET}
                        WHERE {self._PAIR} AND status = 'pending' AND grouped_id = :group
                        RETURNING msg_id""", {**params, "group": grouped_id})]
        return sorted(ids)

    def owned(self) -> list[int]:
        rows = self.conn.execute(
            f"SELECT msg_id FROM messages WHERE {self._PAIR} AND status = 'processing' "
            "AND session = :me ORDER BY msg_id", self._params())
        return [i for (i,) in rows]

    def random_ids(self, msg_ids: Iterable[int]) -> dict[int, int]:
        params = self._params(ids=_ids_json(msg_ids))
        result, new = {}, []
        with self._durable():
            held = self.conn.execute(
                f"""SELECT msg_id, random_id FROM messages WHERE {self._PAIR}
                    AND msg_id IN (SELECT value FROM json_each(:ids))
                    AND status = 'processing' AND session = :me""", params).fetchall()
            for msg_id, stored in held:
                random_id = secrets.randbits(63) if stored is None else stored
                if stored is None:
                    new.append((random_id, params["now"], params["now"], self.src, self.dst,
                                msg_id))
                result[msg_id] = random_id
            self.conn.executemany(
                "UPDATE messages SET random_id = ?, claimed_at = ?, sent_at = ? "
                "WHERE source_chat = ? AND target_chat = ? AND msg_id = ?", new)
        return result

    def in_doubt(self, msg_ids: Iterable[int]) -> dict[int, tuple[datetime, datetime]]:
        rows = self.conn.execute(
            f"""SELECT msg_id, sent_at, doubt_seen FROM messages WHERE {self._PAIR}
                AND msg_id IN (SELECT value FROM json_each(:ids)) AND status = 'processing'
                AND session = :me AND doubt_seen IS NOT NULL""",
            self._params(ids=_ids_json(msg_ids)))
        lease = timedelta(seconds=self.claim_timeout)
        result = {}
        for msg_id, sent_at, seen_text in rows:
            seen = parse_utc(seen_text)
            result[msg_id] = (parse_utc(sent_at) if sent_at else seen - lease * ORPHAN_FACTOR,
                              seen + lease)
        return result

    def complete(self, targets: Mapping[int, int | None], *,
                 note: str | None = None) -> set[int]:
        params = self._params(ids=_ids_json(targets))
        with transaction(self.conn):
            held = {i for (i,) in self.conn.execute(
                f"""SELECT msg_id FROM messages WHERE {self._PAIR}
                    AND msg_id IN (SELECT value FROM json_each(:ids))
                    AND status = 'processing' AND session = :me""", params)}
            self.conn.executemany(
                "UPDATE messages SET status = 'done', target_msg_id = ?, processed_at = ?, "
                "error = ?, doubt_seen = NULL "
                "WHERE source_chat = ? AND target_chat = ? AND msg_id = ?",
                [(targets[i], params["now"], note, self.src, self.dst, i) for i in held])
        return held

    def fail(self, msg_ids: Iterable[int], reason: str, *, status: str = "failed"
             ) -> set[int]:
        params = self._params(ids=_ids_json(msg_ids), status=status, reason=reason)
        with transaction(self.conn):
            rows = self.conn.execute(
                f"""UPDATE messages SET status = :status, error = :reason, processed_at = :now,
                        doubt_seen = NULL
                    WHERE {self._PAIR} AND msg_id IN (SELECT value FROM json_each(:ids))
                      AND status = 'processing' AND session = :me RETURNING msg_id""",
                params).fetchall()
        return {i for (i,) in rows}

    def give_back(self, msg_ids: Iterable[int], *, unsent: bool = False) -> int:
        params = self._params(ids=_ids_json(msg_ids), unsent=int(unsent))
        with transaction(self.conn):
            return self.conn.execute(
                f"""UPDATE messages SET status = 'pending', session = NULL, claimed_at = NULL,
                        random_id = NULL, sent_at = NULL
                    WHERE {self._PAIR} AND msg_id IN (SELECT value FROM json_each(:ids))
                      AND status = 'processing' AND session = :me
                      AND (random_id IS NULL OR :unsent)""", params).rowcount

    def heartbeat(self) -> int:
        params = self._params()
        with transaction(self.conn):
            self.conn.execute("UPDATE history_ranges SET claimed_at = :now "
                              "WHERE status = 'reading' AND session = :me", params)
            return self.conn.execute(
                "UPDATE messages SET claimed_at = :now WHERE status = 'processing' "
                "AND session = :me", params).rowcount

    def release_stale(self) -> int:
        with transaction(self.conn):
            return self.conn.execute(
                """UPDATE messages SET status = 'pending', session = NULL, claimed_at = NULL,
                       doubt_seen = CASE WHEN random_id IS NOT NULL THEN claimed_at
                                         ELSE doubt_seen END,
                       random_id = NULL
                   WHERE status = 'processing' AND claimed_at < :stale
                     AND (random_id IS NULL OR claimed_at < :orphan)""",
                self._params()).rowcount

    def resume_point(self) -> int:
        first_open, last = self.conn.execute(
            f"""SELECT (SELECT MIN(msg_id) FROM messages WHERE {self._PAIR}
                        AND status IN ('pending', 'processing')),
                       (SELECT MAX(msg_id) FROM messages WHERE {self._PAIR})""",
            self._params()).fetchone()
        if first_open is not None:
            return first_open - 1
        return last or 0

    def open_below(self, msg_id: int) -> list[tuple[int, str, str | None]]:
        return self.conn.execute(
            f"""SELECT msg_id, status, session FROM messages WHERE {self._PAIR}
                AND msg_id < :id AND status NOT IN {TERMINAL} ORDER BY msg_id""",
            self._params(id=int(msg_id))).fetchall()

    def row(self, msg_id: int) -> CheckpointRow | None:
        found = self.conn.execute(
            f"SELECT status, session, target_msg_id, grouped_id, error FROM messages "
            f"WHERE {self._PAIR} AND msg_id = :id", self._params(id=int(msg_id))).fetchone()
        return CheckpointRow(*found) if found else None

    def with_albums(self, msg_ids: Iterable[int]) -> list[int]:
        rows = self.conn.execute(
            f"""SELECT value FROM json_each(:ids) UNION
                SELECT msg_id FROM messages WHERE {self._PAIR} AND grouped_id IN (
                    SELECT grouped_id FROM messages WHERE {self._PAIR}
                      AND msg_id IN (SELECT value FROM json_each(:ids))
                      AND grouped_id IS NOT NULL)""", self._params(ids=_ids_json(msg_ids)))
        return sorted(i for (i,) in rows)

    def target_ids(self) -> set[int]:
        rows = self.conn.execute(
            "SELECT target_msg_id FROM messages WHERE target_chat = :dst "
            "AND target_msg_id IS NOT NULL", self._params())
        return {i for (i,) in rows}

    def audit_rows(self) -> list[tuple[int, str, int | None, str | None]]:
        return self.conn.execute(
            f"SELECT msg_id, status, target_msg_id, error FROM messages WHERE {self._PAIR} "
            "ORDER BY msg_id", self._params()).fetchall()

    def claim_topic(self, source_topic: int, title: str) -> tuple[int | None, int | None]:
        params = self._params(topic=int(source_topic), title=title)
        with self._durable():
            row = self.conn.execute(
                """SELECT target_topic, session, claimed_at, random_id FROM topic_map
                   WHERE source_chat = :src AND source_topic = :topic AND target_chat = :dst""",
                params).fetchone()
            if row and row[0] is not None:
                return row[0], None
            if row and row[1] != self.session and row[2] >= params["stale"]:
                return None, None
            random_id = row[3] if row and row[1] == self.session and row[3] else \
                secrets.randbits(63)
            self.conn.execute(
                """INSERT INTO topic_map (source_chat, source_topic, target_chat, title,
                       session, claimed_at, random_id)
                   VALUES (:src, :topic, :dst, :title, :me, :now, :rid)
                   ON CONFLICT (source_chat, source_topic, target_chat) DO UPDATE SET
                       session = :me, claimed_at = :now, random_id = :rid, title = :title""",
                {**params, "rid": random_id})
        return None, random_id

    def set_topic(self, source_topic: int, target_topic: int) -> bool:
        with transaction(self.conn):
            row = self.conn.execute(
                """UPDATE topic_map SET target_topic = :target, created_at = :now
                   WHERE source_chat = :src AND source_topic = :topic AND target_chat = :dst
                     AND target_topic IS NULL RETURNING source_topic""",
                self._params(target=int(target_topic), topic=int(source_topic))).fetchone()
        return row is not None

    def topic_rows(self) -> list[tuple[int, int, str]]:
        return self.conn.execute(
            """SELECT source_topic, target_topic, title FROM topic_map WHERE source_chat = :src
               AND target_chat = :dst AND target_topic IS NOT NULL ORDER BY source_topic""",
            self._params()).fetchall()

    def mapped_topic_ids(self) -> set[int]:
        rows = self.conn.execute(
            "SELECT target_topic FROM topic_map WHERE target_chat = :dst "
            "AND target_topic IS NOT NULL", self._params())
        return {i for (i,) in rows}

    def status_tables(self) -> dict[str, list[tuple]]:
        query = self.conn.execute
        return {
            "pairs": query(
                """SELECT source_chat, target_chat, COUNT(*), SUM(status = 'done'),
                          SUM(status = 'processing'), SUM(status = 'pending'),
                          SUM(status = 'failed'), SUM(status = 'skipped'),
                          MAX(CASE WHEN status = 'done' THEN msg_id END),
                          MAX(CASE WHEN status = 'done' THEN processed_at END)
                   FROM messages GROUP BY source_chat, target_chat
                   ORDER BY source_chat, target_chat""").fetchall(),
            "accounts": query(
                """SELECT session, COUNT(*) FROM messages WHERE status = 'done'
                   GROUP BY session ORDER BY session""").fetchall(),
            "claims": query(
                """SELECT source_chat, target_chat, msg_id, session, claimed_at, attempts,
                          random_id IS NOT NULL FROM messages WHERE status = 'processing'
                   ORDER BY claimed_at LIMIT 50""").fetchall(),
            "recent": query(
                """SELECT source_chat, target_chat, msg_id, status, session, target_msg_id,
                          processed_at FROM messages WHERE processed_at IS NOT NULL
                   ORDER BY processed_at DESC LIMIT 10""").fetchall(),
            "reasons": query(
                """SELECT status, COALESCE(error, '(no reason recorded)'), COUNT(*)
                   FROM messages WHERE status IN ('failed', 'skipped')
                   GROUP BY status, error ORDER BY status, COUNT(*) DESC""").fetchall(),
        }

    def retry_failed(self) -> list[tuple[str, str, int]]:
        with transaction(self.conn):
            rows = self.conn.execute(
                """UPDATE messages SET status = 'pending', session = NULL, claimed_at = NULL,
                       random_id = NULL, error = NULL, processed_at = NULL
                   WHERE status = 'failed' RETURNING source_chat, target_chat""").fetchall()
        counts: dict[tuple[str, str], int] = {}
        for pair in rows:
            counts[pair] = counts.get(pair, 0) + 1
        return [(src, dst, n) for (src, dst), n in sorted(counts.items())]


class PostgresCheckpoint(Checkpoint):
    """The checkpoint in PostgreSQL (schema_pg.sql), shared by accounts on several VPSes.

    Every state change is one transaction (a single statement is one by itself: the
    connection is in autocommit). Claims lock their rows with `FOR UPDATE SKIP
    LOCKED`: rows another session is claiming at that instant are skipped, never waited
    for, and an album is taken only if every member could be locked. Times come from the
    server's clock (now()), so the VPSes' clocks do not matter for leases. As SQLite's
    NORMAL and FULL: commits run with `synchronous_commit = off` (a server crash may undo
    the last fraction of a second of them, never half of one), except those that store a
    random_id, made with `synchronous_commit = on` (on disk before the send; flushing them
    flushes every earlier commit too).
    """

    def __init__(self, url: str, session_name: str, *,
                 claim_timeout: float = DEFAULT_CLAIM_TIMEOUT) -> None:
        super().__init__(session_name, claim_timeout=claim_timeout)
        self.url = url
        self.conn = migrate_db.pg_connect(url)
        self.conn.execute("SET synchronous_commit = off")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """A transaction whose COMMIT is flushed to the server's disk when the block is left."""
        with self.conn.transaction():
            self.conn.execute("SET LOCAL synchronous_commit = on")
            yield

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "me": self.session,
                "timeout": self.claim_timeout,
                "orphan": self.claim_timeout * ORPHAN_FACTOR, **extra}

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return self.conn.execute(sql, params if params is not None else self._params()
                                 ).fetchall()

    _PAIR = "source_chat = %(src)s AND target_chat = %(dst)s"
    # The albums of %(ids)s, as an array computed once (an InitPlan) and then looked up in
    # the album index. Written as `grouped_id IN (SELECT ...)` instead, a plan made while
    # the table was nearly empty joined the two with a nested loop that read every album
    # row once per album row: 100-300 ms a call at 4,000 messages.
    _ALBUMS_OF_IDS = f"""ARRAY(SELECT grouped_id FROM messages WHERE {_PAIR}
                        AND msg_id = ANY(%(ids)s) AND grouped_id IS NOT NULL)"""
    _STALE = "claimed_at < now() - make_interval(secs => %(timeout)s)"
    _ORPHAN = "claimed_at < now() - make_interval(secs => %(orphan)s)"
    # A row this session may take: free, its own, or stale (see Checkpoint).
    _TAKEABLE = f"""(status = 'pending' OR (status = 'processing' AND (session = %(me)s
        OR ({_STALE} AND (random_id IS NULL OR {_ORPHAN})))))"""
    # Taking over a claim whose send started leaves the window of that send in doubt.
    _CLAIM_SET = """status = 'processing', session = %(me)s, claimed_at = now(), error = NULL,
        doubt_seen = CASE WHEN random_id IS NOT NULL AND session IS DISTINCT FROM %(me)s
                          THEN claimed_at ELSE doubt_seen END,
        random_id = CASE WHEN session = %(me)s THEN random_id END,
        attempts = attempts + (CASE WHEN status = 'processing' AND session = %(me)s
                                    THEN 0 ELSE 1 END)"""

    def adopt_rows(self, aliases: Iterable[str]) -> int:
        names = sorted({str(a) for a in aliases} | {self.src})
        with self.conn.transaction():
            # one row per msg_id moves; a msg_id the pair has already stays where it is
            return self.conn.execute(
                f"""UPDATE messages SET source_chat = %(src)s, target_chat = %(dst)s
                    WHERE ctid IN (SELECT DISTINCT ON (msg_id) ctid FROM messages AS m
                        WHERE source_chat = ANY(%(names)s) AND target_chat IN ('', %(dst)s)
                          AND NOT ({self._PAIR})
                          AND NOT EXISTS (SELECT 1 FROM messages AS p WHERE p.msg_id = m.msg_id
                              AND p.source_chat = %(src)s AND p.target_chat = %(dst)s)
                        ORDER BY msg_id, target_chat DESC)""",
                self._params(names=names)).rowcount

    def _lock_albums(self, groups: Iterable[int]) -> None:
        """Inside a transaction: take each album's advisory lock (ascending, so two sessions
        never wait for each other in a circle). Rows another session inserted but has not
        committed are invisible here, so without it two sessions reading neighbouring pages
        could each claim part of an album; with it, the second sees the first's claim."""
        for group in sorted(set(groups)):
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                "%(src)s || ' ' || %(dst)s || ' ' || %(group)s::text, 0))",
                self._params(group=group))

    def _claim_locked(self, ids: list[int]) -> list[int]:
        """Inside a transaction, with their albums' advisory locks held: lock the rows of
        `ids` and of their albums (skipping rows another session has locked), then claim
        the takeable ones of the albums locked whole."""
        params = self._params(ids=ids)
        rows = self._query(
            f"""SELECT msg_id, grouped_id FROM messages WHERE {self._PAIR}
                AND (msg_id = ANY(%(ids)s) OR grouped_id = ANY({self._ALBUMS_OF_IDS}))""",
            params)
        locked = {i for (i,) in self._query(
            f"""SELECT msg_id FROM messages WHERE {self._PAIR}
                AND msg_id = ANY(%(all)s) ORDER BY msg_id FOR UPDATE SKIP LOCKED""",
            self._params(all=[i for i, _ in rows]))}
        albums: dict[int, set[int]] = {}
        for msg_id, grouped_id in rows:
            if grouped_id is not None:
                albums.setdefault(grouped_id, set()).add(msg_id)
        split = {g for g, members in albums.items() if not members <= locked}
        wanted = [i for i, g in rows if i in ids and i in locked and g not in split]
        if not wanted:
            return []
        claimed = self._query(
            f"""UPDATE messages SET {self._CLAIM_SET}
                WHERE {self._PAIR} AND msg_id = ANY(%(ids)s) AND {self._TAKEABLE}
                  AND (grouped_id IS NULL OR NOT EXISTS (
                      SELECT 1 FROM messages AS m WHERE m.source_chat = %(src)s
                        AND m.target_chat = %(dst)s AND m.grouped_id = messages.grouped_id
                        AND m.status = 'processing' AND m.session IS DISTINCT FROM %(me)s
                        AND NOT (m.claimed_at < now() - make_interval(secs => %(timeout)s)
                                 AND (m.random_id IS NULL OR m.claimed_at
                                      < now() - make_interval(secs => %(orphan)s)))))
                RETURNING msg_id""", self._params(ids=wanted))
        return sorted(i for (i,) in claimed)

    def claim(self, msg_ids: Iterable[int], *, grouped_ids: Mapping[int, int] | None = None,
              range_read: tuple[int, bool] | None = None) -> list[int]:
        ids = sorted({int(i) for i in msg_ids})
        if not ids and range_read is None:
            return []
        groups = grouped_ids or {}
        with self.conn.transaction():
            if range_read is not None:
                self.conn.execute(
                    f"""UPDATE history_ranges SET status = 'read', read_at = now(),
                            more = %(more)s, session = NULL
                        WHERE {self._PAIR} AND lo = %(lo)s AND session = %(me)s""",
                    self._params(lo=range_read[0], more=bool(range_read[1])))
            if not ids:
                return []
            # in id order: two sessions inserting the same rows wait, never deadlock
            self.conn.execute(
                """INSERT INTO messages (source_chat, target_chat, msg_id, grouped_id, status)
                   SELECT %(src)s, %(dst)s, i, g, 'pending' FROM unnest(%(ids)s::bigint[],
                       %(groups)s::bigint[]) AS t(i, g) ORDER BY i
                   ON CONFLICT DO NOTHING""",
                self._params(ids=ids, groups=[groups.get(i) for i in ids]))
            self._lock_albums(g for (g,) in self._query(
                f"""SELECT DISTINCT grouped_id FROM messages WHERE {self._PAIR}
                    AND msg_id = ANY(%(ids)s) AND grouped_id IS NOT NULL""",
                self._params(ids=ids)))
            return self._claim_locked(ids)

    def claim_range(self, first: int, since: datetime, *, single: bool = False
                    ) -> int | None:
        first_lo = range_lo(first)
        params = self._params(first=first_lo, since=since)
        with self.conn.transaction():
            # one session at a time picks a range of the pair (a lease a minute or so)
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                "%(src)s || ' ' || %(dst)s || ' ranges', 0))", params)
            rows = self._query(
                f"""SELECT lo, status, session IS NOT DISTINCT FROM %(me)s,
                           COALESCE({self._STALE}, false),
                           COALESCE(read_at >= %(since)s, false), more FROM history_ranges
                    WHERE {self._PAIR} AND (lo >= %(first)s OR status = 'reading')
                    ORDER BY lo""", params)
            picked = self._pick_range(rows, first_lo, single)
            if picked is None:
                return None
            lo = picked[0]
            self.conn.execute(
                """INSERT INTO history_ranges (source_chat, target_chat, lo, hi, status,
                       session, claimed_at)
                   VALUES (%(src)s, %(dst)s, %(lo)s, %(hi)s, 'reading', %(me)s, now())
                   ON CONFLICT (source_chat, target_chat, lo) DO UPDATE SET
                       status = 'reading', session = %(me)s, claimed_at = now(),
                       read_at = NULL, more = false""",
                {**params, "lo": lo, "hi": lo + RANGE_SIZE - 1})
        return lo

    def reading_ranges(self, up_to: int) -> list[tuple[int, bool]]:
        return [(lo, bool(stale)) for lo, stale in self._query(
            f"""SELECT lo, COALESCE({self._STALE}, false) FROM history_ranges
                WHERE {self._PAIR} AND status = 'reading'
                  AND session IS DISTINCT FROM %(me)s AND lo <= %(up_to)s ORDER BY lo""",
            self._params(up_to=int(up_to)))]

    def release_ranges(self) -> int:
        return self.conn.execute(
            "DELETE FROM history_ranges WHERE status = 'reading' AND session = %(me)s",
            self._params()).rowcount

    def claim_next(self, limit: int = 1, *, up_to: int | None = None) -> list[int]:
        params = self._params(limit=int(limit),
                              up_to=up_to if up_to is not None else 2 ** 62)
        with self.conn.transaction():
            # an album is reached through its first open member only, so two sessions
            # never start on different members of one album; its other members follow
            # the candidates in a CTE: run (and locked) once, not per row of the UPDATE
            rows = self._query(
                f"""WITH picked AS (
                        SELECT msg_id FROM messages AS r WHERE {self._PAIR}
                          AND status = 'pending' AND msg_id <= %(up_to)s
                          AND (grouped_id IS NULL OR NOT EXISTS (
                              SELECT 1 FROM messages AS m WHERE m.source_chat = %(src)s
                                AND m.target_chat = %(dst)s AND m.grouped_id = r.grouped_id
                                AND m.msg_id < r.msg_id
                                AND m.status IN ('pending', 'processing')))
                        ORDER BY msg_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                    UPDATE messages SET {self._CLAIM_SET} FROM picked
                    WHERE {self._PAIR} AND messages.msg_id = picked.msg_id
                    RETURNING messages.msg_id, messages.grouped_id""", params)
            ids = [msg_id for msg_id, _ in rows]
            groups = sorted({g for _, g in rows if g is not None})
            if groups:
                self._lock_albums(groups)
                ids += [i for (i,) in self._query(
                    f"""UPDATE messages SET {self._CLAIM_SET}
                        WHERE {self._PAIR} AND status = 'pending'
                          AND grouped_id = ANY(%(groups)s) RETURNING msg_id""",
                    self._params(groups=groups))]
        return sorted(ids)

    def owned(self) -> list[int]:
        return [i for (i,) in self._query(
            f"SELECT msg_id FROM messages WHERE {self._PAIR} AND status = 'processing' "
            "AND session = %(me)s ORDER BY msg_id")]

    def random_ids(self, msg_ids: Iterable[int]) -> dict[int, int]:
        ids = [int(i) for i in msg_ids]
        with self._durable():
            # a new random_id only where none is stored; the held rows' ids come back
            rows = self._query(
                f"""UPDATE messages SET random_id = COALESCE(random_id, t.r),
                        sent_at = CASE WHEN random_id IS NULL THEN now() ELSE sent_at END,
                        claimed_at = now()
                    FROM unnest(%(ids)s::bigint[], %(rids)s::bigint[]) AS t(i, r)
                    WHERE {self._PAIR} AND msg_id = t.i AND status = 'processing'
                      AND session = %(me)s RETURNING msg_id, random_id""",
                self._params(ids=ids, rids=[secrets.randbits(63) for _ in ids]))
        return dict(rows)

    def in_doubt(self, msg_ids: Iterable[int]) -> dict[int, tuple[datetime, datetime]]:
        rows = self._query(
            f"""SELECT msg_id, sent_at, doubt_seen FROM messages WHERE {self._PAIR}
                AND msg_id = ANY(%(ids)s) AND status = 'processing' AND session = %(me)s
                AND doubt_seen IS NOT NULL""", self._params(ids=[int(i) for i in msg_ids]))
        lease = timedelta(seconds=self.claim_timeout)
        return {msg_id: (sent_at or seen - lease * ORPHAN_FACTOR, seen + lease)
                for msg_id, sent_at, seen in rows}

    def complete(self, targets: Mapping[int, int | None], *,
                 note: str | None = None) -> set[int]:
        ids = [int(i) for i in targets]
        rows = self._query(
            f"""UPDATE messages SET status = 'done', target_msg_id = t.target,
                    processed_at = now(), error = %(note)s, doubt_seen = NULL
                FROM unnest(%(ids)s::bigint[], %(targets)s::bigint[]) AS t(i, target)
                WHERE {self._PAIR} AND msg_id = t.i AND status = 'processing'
                  AND session = %(me)s RETURNING msg_id""",
            self._params(ids=ids, targets=[targets[i] for i in targets], note=note))
        return {i for (i,) in rows}

    def fail(self, msg_ids: Iterable[int], reason: str, *, status: str = "failed"
             ) -> set[int]:
        rows = self._query(
            f"""UPDATE messages SET status = %(status)s, error = %(reason)s,
                    processed_at = now(), doubt_seen = NULL
                WHERE {self._PAIR} AND msg_id = ANY(%(ids)s)
                  AND status = 'processing' AND session = %(me)s RETURNING msg_id""",
            self._params(ids=[int(i) for i in msg_ids], status=status, reason=reason))
        return {i for (i,) in rows}

    def give_back(self, msg_ids: Iterable[int], *, unsent: bool = False) -> int:
        return self.conn.execute(
            f"""UPDATE messages SET status = 'pending', session = NULL, claimed_at = NULL,
                    random_id = NULL, sent_at = NULL
                WHERE {self._PAIR} AND msg_id = ANY(%(ids)s)
                  AND status = 'processing' AND session = %(me)s
                  AND (random_id IS NULL OR %(unsent)s)""",
            self._params(ids=[int(i) for i in msg_ids], unsent=bool(unsent))).rowcount

    def heartbeat(self) -> int:
        with self.conn.transaction():
            self.conn.execute("UPDATE history_ranges SET claimed_at = now() "
                              "WHERE status = 'reading' AND session = %(me)s", self._params())
            return self.conn.execute(
                "UPDATE messages SET claimed_at = now() WHERE status = 'processing' "
                "AND session = %(me)s", self._params()).rowcount

    def release_stale(self) -> int:
        return self.conn.execute(
            f"""UPDATE messages SET status = 'pending', session = NULL, claimed_at = NULL,
                   doubt_seen = CASE WHEN random_id IS NOT NULL THEN claimed_at
                                     ELSE doubt_seen END,
                   random_id = NULL
               WHERE status = 'processing' AND {self._STALE}
                 AND (random_id IS NULL OR {self._ORPHAN})""", self._params()).rowcount

    def resume_point(self) -> int:
        first_open, last = self._query(
            f"""SELECT (SELECT MIN(msg_id) FROM messages WHERE {self._PAIR}
                        AND status NOT IN {TERMINAL}),
                       (SELECT MAX(msg_id) FROM messages WHERE {self._PAIR})""")[0]
        if first_open is not None:
            return first_open - 1
        return last or 0

    def open_below(self, msg_id: int) -> list[tuple[int, str, str | None]]:
        return self._query(
            f"""SELECT msg_id, status, session FROM messages WHERE {self._PAIR}
                AND msg_id < %(id)s AND status NOT IN {TERMINAL} ORDER BY msg_id""",
            self._params(id=int(msg_id)))

    def row(self, msg_id: int) -> CheckpointRow | None:
        found = self._query(
            f"SELECT status, session, target_msg_id, grouped_id, error FROM messages "
            f"WHERE {self._PAIR} AND msg_id = %(id)s", self._params(id=int(msg_id)))
        return CheckpointRow(*found[0]) if found else None

    def with_albums(self, msg_ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in msg_ids]
        rows = self._query(
            f"""SELECT msg_id FROM messages WHERE {self._PAIR}
                AND grouped_id = ANY({self._ALBUMS_OF_IDS})""", self._params(ids=ids))
        return sorted(set(ids) | {i for (i,) in rows})

    def target_ids(self) -> set[int]:
        return {i for (i,) in self._query(
            "SELECT target_msg_id FROM messages WHERE target_chat = %(dst)s "
            "AND target_msg_id IS NOT NULL")}

    def audit_rows(self) -> list[tuple[int, str, int | None, str | None]]:
        return self._query(
            f"SELECT msg_id, status, target_msg_id, error FROM messages WHERE {self._PAIR} "
            "ORDER BY msg_id")

    _TOPIC = ("source_chat = %(src)s AND source_topic = %(topic)s "
              "AND target_chat = %(dst)s")

    def claim_topic(self, source_topic: int, title: str) -> tuple[int | None, int | None]:
        params = self._params(topic=int(source_topic), title=title)
        with self._durable():
            self.conn.execute(
                """INSERT INTO topic_map (source_chat, source_topic, target_chat, title)
                   VALUES (%(src)s, %(topic)s, %(dst)s, %(title)s) ON CONFLICT DO NOTHING""",
                params)
            target_topic, session, live, random_id = self._query(
                f"""SELECT target_topic, session,
                           claimed_at >= now() - make_interval(secs => %(timeout)s), random_id
                    FROM topic_map WHERE {self._TOPIC} FOR UPDATE""", params)[0]
            if target_topic is not None:
                return target_topic, None
            if session is not None and session != self.session and live:
                return None, None
            if session != self.session or random_id is None:
                random_id = secrets.randbits(63)
            self.conn.execute(
                f"""UPDATE topic_map SET session = %(me)s, claimed_at = now(), random_id = %(rid)s,
                        title = %(title)s WHERE {self._TOPIC}""", {**params, "rid": random_id})
        return None, random_id

    def set_topic(self, source_topic: int, target_topic: int) -> bool:
        return bool(self._query(
            f"""UPDATE topic_map SET target_topic = %(target)s, created_at = now()
                WHERE {self._TOPIC} AND target_topic IS NULL RETURNING source_topic""",
            self._params(target=int(target_topic), topic=int(source_topic))))

    def topic_rows(self) -> list[tuple[int, int, str]]:
        return self._query(
            """SELECT source_topic, target_topic, title FROM topic_map
               WHERE source_chat = %(src)s AND target_chat = %(dst)s
                 AND target_topic IS NOT NULL ORDER BY source_topic""")

    def mapped_topic_ids(self) -> set[int]:
        return {i for (i,) in self._query(
            "SELECT target_topic FROM topic_map WHERE target_chat = %(dst)s "
            "AND target_topic IS NOT NULL")}

    def status_tables(self) -> dict[str, list[tuple]]:
        def count(status: str) -> str:
            return f"COUNT(*) FILTER (WHERE status = '{status}')"

        def query(sql: str, params: Mapping[str, Any]) -> list[tuple]:
            """Rows with times as the SQLite checkpoint stores them (UTC ISO text)."""
            return [tuple(utc_text(v) if isinstance(v, datetime) else v for v in row)
                    for row in self._query(sql, params)]
        return {
            "pairs": query(
                f"""SELECT source_chat, target_chat, COUNT(*), {count('done')},
                          {count('processing')}, {count('pending')}, {count('failed')},
                          {count('skipped')}, MAX(msg_id) FILTER (WHERE status = 'done'),
                          MAX(processed_at) FILTER (WHERE status = 'done')
                   FROM messages GROUP BY source_chat, target_chat
                   ORDER BY source_chat, target_chat""", {}),
            "accounts": query(
                """SELECT session, COUNT(*) FROM messages WHERE status = 'done'
                   GROUP BY session ORDER BY session""", {}),
            "claims": query(
                """SELECT source_chat, target_chat, msg_id, session, claimed_at, attempts,
                          (random_id IS NOT NULL)::int FROM messages
                   WHERE status = 'processing' ORDER BY claimed_at LIMIT 50""", {}),
            "recent": query(
                """SELECT source_chat, target_chat, msg_id, status, session, target_msg_id,
                          processed_at FROM messages WHERE processed_at IS NOT NULL
                   ORDER BY processed_at DESC LIMIT 10""", {}),
            "reasons": query(
                """SELECT status, COALESCE(error, '(no reason recorded)'), COUNT(*)
                   FROM messages WHERE status IN ('failed', 'skipped')
                   GROUP BY status, error ORDER BY status, COUNT(*) DESC""", {}),
        }

    def retry_failed(self) -> list[tuple[str, str, int]]:
        return self._query(
            """WITH retried AS (
                   UPDATE messages SET status = 'pending', session = NULL,
                       claimed_at = NULL, random_id = NULL, error = NULL,
                       processed_at = NULL
                   WHERE status = 'failed' RETURNING source_chat, target_chat)
               SELECT source_chat, target_chat, COUNT(*)::int FROM retried
               GROUP BY source_chat, target_chat ORDER BY source_chat, target_chat""", {})


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class Profile:
    """What distinguishes clone_streaming.py from clone_streaming_shared.py."""

    prog: str
    description: str
    db_key: str                        # the .env key naming the checkpoint
    db_default: str                    # relative to the account folder
    shared: bool


SINGLE = Profile("clone_streaming.py", "One account copies SOURCE_CHAT into TARGET_CHAT, "
                 "exactly once: backfill from the checkpoint, then follow new messages.",
                 "CHECKPOINT_DB", DEFAULT_CHECKPOINT_DB, shared=False)


@dataclass(frozen=True)
class CloneConfig:
    """Everything one cloning run needs, from the folder's .env and the flags."""

    folder: Path
    session_name: str
    source_chat: int | str
    target_chat: int | str
    source_topic: int | None
    target_topic: int | None
    auto_create_topics: bool
    copy_mode: str
    allow_reupload: bool
    max_media_bytes: int
    checkpoint_db: Path
    db_url: str | None                 # SHARED_DB_URL: the checkpoint in PostgreSQL
    claim_timeout: float
    ordered: bool
    progress_every: int
    progress_seconds: float
    once: bool
    shared: bool                       # several accounts on one checkpoint
    silent: bool | None                # None: silent during the backfill only
    reconcile_seconds: float
    sync_edits: bool
    sync_deletes: bool


def parse_chat(key: str, value: str) -> int | str:
    """A chat setting as Telethon takes it: an int id or a username (t.me links unwrapped)."""
    text = value.strip()
    hint = "a numeric id (e.g. -1001234567890), @username or https://t.me/username link"
    if not text:
        raise ConfigError(f"{key} is empty; set it to {hint}")
    if "t.me/" in text:
        path = text.split("t.me/", 1)[1].strip("/").split("/")
        if path[0] == "c" and len(path) > 1 and path[1].isdigit():
            return int(f"-100{path[1]}")
        text = path[0]
    text = text.removeprefix("@")
    if text[:1] in "-+0123456789":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not a number; set it to {hint}") from None
    if not text.replace("_", "").isalnum() or len(text) < 4:
        raise ConfigError(f"{key}={value!r} is not a chat; set it to {hint}")
    return text


def _int_setting(key: str, value: str | None, *, minimum: int = 1) -> int | None:
    if value is None or not str(value).strip():
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a whole number") from None
    if number < minimum:
        raise ConfigError(f"{key}={value!r} must be at least {minimum}")
    return number


def _float_setting(key: str, value: str | None, default: float) -> float:
    if value is None or not str(value).strip():
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"{key}={value!r} must be more than 0")
    return number


def _bool_setting(key: str, value: str | bool | None, default: bool | None) -> bool | None:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    word = value.strip().lower()
    if not word:
        return default
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{key}={value!r} is not true or false")


def make_config(account: telegram_session.Account, args: argparse.Namespace,
                profile: Profile) -> CloneConfig:
    """The run's settings: flags first, then the folder's .env, then defaults."""
    env = account.env

    def setting(flag: str, key: str) -> Any:
        value = getattr(args, flag, None)
        return value if value is not None else env.get(key)

    where = telegram_session.display_path(account.folder / ".env")
    for key in ("SOURCE_CHAT", "TARGET_CHAT"):
        if not (setting(key.lower().split("_")[0], key) or "").strip():
            raise ConfigError(f"{key} is not set in {where}; add {key}=<numeric id, "
                              "@username or t.me link> (or pass --"
                              f"{key.lower().split('_')[0]})")
    copy_mode = (setting("copy_mode", "COPY_MODE") or DEFAULT_COPY_MODE).strip().lower()
    if copy_mode not in COPY_MODES:
        raise ConfigError(f"COPY_MODE={copy_mode!r} is not one of {', '.join(COPY_MODES)}")
    db_text = setting("checkpoint_db", profile.db_key) or profile.db_default
    db_path = Path(db_text).expanduser()
    db_url = (setting("db_url", "SHARED_DB_URL") or "").strip() or None \
        if profile.shared else None
    if db_url and not migrate_db.is_postgres_url(db_url):
        raise ConfigError(f"SHARED_DB_URL={migrate_db.redact_url(db_url)!r} is not a "
                          "postgresql://user@host:5432/db URL")
    claim_timeout = _float_setting("CLAIM_TIMEOUT", setting("claim_timeout", "CLAIM_TIMEOUT"),
                                   DEFAULT_CLAIM_TIMEOUT)
    return CloneConfig(
        folder=account.folder,
        session_name=account.name,
        source_chat=parse_chat("SOURCE_CHAT", setting("source", "SOURCE_CHAT")),
        target_chat=parse_chat("TARGET_CHAT", setting("target", "TARGET_CHAT")),
        source_topic=_int_setting("SOURCE_TOPIC", setting("source_topic", "SOURCE_TOPIC")),
        target_topic=_int_setting("TARGET_TOPIC", setting("target_topic", "TARGET_TOPIC")),
        auto_create_topics=_bool_setting(
            "AUTO_CREATE_TOPICS", setting("auto_create_topics", "AUTO_CREATE_TOPICS"), True),
        copy_mode=copy_mode,
        allow_reupload=_bool_setting(
            "ALLOW_REUPLOAD", setting("allow_reupload", "ALLOW_REUPLOAD"), False),
        max_media_bytes=int(_float_setting(
            "MAX_MEDIA_MB", setting("max_media_mb", "MAX_MEDIA_MB"),
            DEFAULT_MAX_MEDIA_MB) * 1024 * 1024),
        checkpoint_db=db_path if db_path.is_absolute() else (account.folder / db_path).resolve(),
        db_url=db_url,
        claim_timeout=claim_timeout,
        ordered=_bool_setting("ORDERED", setting("ordered", "ORDERED"), False),
        progress_every=_int_setting("PROGRESS_EVERY", setting("progress_every",
                                                              "PROGRESS_EVERY"))
        or DEFAULT_PROGRESS_EVERY,
        progress_seconds=_float_setting("PROGRESS_SECONDS",
                                        setting("progress_seconds", "PROGRESS_SECONDS"),
                                        DEFAULT_PROGRESS_SECONDS),
        once=bool(getattr(args, "once", False)),
        shared=profile.shared,
        silent=_bool_setting("SILENT", setting("silent", "SILENT"), None),
        reconcile_seconds=_float_setting("RECONCILE_SECONDS",
                                         setting("reconcile_seconds", "RECONCILE_SECONDS"),
                                         DEFAULT_RECONCILE_SECONDS),
        sync_edits=bool(_bool_setting("SYNC_EDITS", setting("sync_edits", "SYNC_EDITS"),
                                      False)),
        sync_deletes=bool(_bool_setting("SYNC_DELETES", setting("sync_deletes",
                                                                "SYNC_DELETES"), False)),
    )


# ----------------------------------------------------------------------------- messages

def is_service(message: Any) -> bool:
    """Service messages (joins, pins, topic creation...) are not cloned."""
    return getattr(message, "action", None) is not None


def group_units(messages: Iterable[Any]) -> list[list[Any]]:
    """Consecutive messages grouped into sending units: an album, or one message."""
    units: list[list[Any]] = []
    for message in messages:
        grouped = getattr(message, "grouped_id", None)
        if grouped and units and getattr(units[-1][0], "grouped_id", None) == grouped:
            units[-1].append(message)
        else:
            units.append([message])
    return units


def source_reply_id(message: Any) -> int | None:
    """The source message this one replies to (not the topic it is posted in), or None."""
    header = getattr(message, "reply_to", None)
    if not isinstance(header, types.MessageReplyHeader) or not header.reply_to_msg_id:
        return None
    if header.forum_topic and header.reply_to_top_id is None:
        return None                     # a top-level post in a topic
    return header.reply_to_msg_id


def sent_message_ids(result: Any) -> dict[int, int]:
    """random_id -> new message id, from the Updates a send returned."""
    if isinstance(result, types.UpdateShortSentMessage):
        return {}
    updates = getattr(result, "updates", [])
    return {u.random_id: u.id for u in updates if isinstance(u, types.UpdateMessageID)}


def new_messages(result: Any) -> list[Any]:
    """The messages a send's Updates carry, in order."""
    return [u.message for u in getattr(result, "updates", [])
            if isinstance(u, (types.UpdateNewChannelMessage, types.UpdateNewMessage))]


def message_signature(message: Any) -> tuple:
    """What a clone of `message` looks like from outside: text and media kind."""
    media = getattr(message, "media", None)
    kind = type(media).__name__ if media and not isinstance(
        media, types.MessageMediaWebPage) else ""
    return (getattr(message, "message", "") or "", kind)


@dataclass
class Progress:
    """Counts and the periodic progress line (done, failed, rate, ETA)."""

    every: int
    seconds: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("cloned", "forwarded", "copied", "albums", "failed", "skipped", "already_sent",
         "topics_created"), 0))
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    since_line: int = 0
    top_id: int = 0
    position: int = 0

    def add(self, what: str, count: int = 1) -> None:
        """Count `count` events of kind `what`; message outcomes advance the progress line."""
        self.counts[what] += count
        if what in ("cloned", "failed", "skipped"):
            self.since_line += count
            now = time.monotonic()
            if self.since_line >= self.every or now - self.last_line >= self.seconds:
                log.info("%s", self.line())
                self.since_line, self.last_line = 0, now

    def finished(self) -> int:
        """Messages cloned, failed or skipped so far."""
        return sum(self.counts[k] for k in ("cloned", "failed", "skipped"))

    def line(self) -> str:
        """e.g. 'progress: cloned 500, failed 0, skipped 3, 41.2 msg/s, ETA 12 s'."""
        finished = self.finished()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = finished / elapsed
        left = max(self.top_id - self.position, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 and left else "-"
        return (f"progress: cloned {self.counts['cloned']}, failed {self.counts['failed']}, "
                f"skipped {self.counts['skipped']}, {rate:.1f} msg/s, "
                f"at source id {self.position} of about {self.top_id}, ETA {eta}")

    def summary(self) -> str:
        """The closing line of a run."""
        c = self.counts
        return (f"summary: cloned {c['cloned']} (forwarded {c['forwarded']}, copied "
                f"{c['copied']}, albums {c['albums']}), failed {c['failed']}, skipped "
                f"{c['skipped']}, already sent before a restart {c['already_sent']}, topics "
                f"created {c['topics_created']}, {time.monotonic() - self.started:.1f} s")


# ----------------------------------------------------------------------------- refusals
# What the cloner does when Telegram refuses a request: the policy, written once (the
# README's table is this one). The keys are Telegram's error names (digits as X).
REFUSALS: dict[str, tuple[str, str]] = {
    "FLOOD_WAIT": ("rest", "over 60 s: the wait is recorded, the claims whose request was "
                   "refused are given back (random_id cleared: nothing was sent), the "
                   "account sleeps and claims again; other accounts go on (ORDERED: the "
                   "next account takes the turn). Shorter waits are slept inside Telethon"),
    "FLOOD_PREMIUM_WAIT": ("rest", "as FLOOD_WAIT"),
    "SLOWMODE_WAIT": ("slow", "wait as told and send the same request again; from then on "
                      "one message per request"),
    "SLOWMODE_MULTI_MSGS_DISABLED": ("slow", "one message per request from then on"),
    "PEER_FLOOD": ("stop_account", "the account gives back its claims and stops with exit "
                   "5 (run.sh does not restart it), saying when to try again; nothing is "
                   "marked failed, the other accounts go on"),
    "USER_BANNED_IN_CHANNEL": ("stop_account", "as PEER_FLOOD"),
    "FILE_REFERENCE_EXPIRED": ("refetch", "fetch the message again and send it with the "
                               "fresh file reference"),
    "FILE_REFERENCE_X_EXPIRED": ("refetch", "as FILE_REFERENCE_EXPIRED (an album item)"),
    "CHAT_FORWARDS_RESTRICTED": ("protected", "the source forbids forwarding: re-upload if "
                                 "ALLOW_REUPLOAD=true, else the message is failed with the "
                                 "reason; the clone goes on"),
    "CHAT_WRITE_FORBIDDEN": ("stop_chat", "one error line naming the chat and the missing "
                             "right, exit 2 (run.sh does not restart)"),
    "CHAT_ADMIN_REQUIRED": ("stop_chat", "as CHAT_WRITE_FORBIDDEN"),
    "CHANNEL_PRIVATE": ("stop_chat", "as CHAT_WRITE_FORBIDDEN (the account left or was "
                        "removed)"),
    "CHANNEL_INVALID": ("stop_chat", "as CHAT_WRITE_FORBIDDEN"),
    "PEER_ID_INVALID": ("stop_chat", "as CHAT_WRITE_FORBIDDEN"),
    "RANDOM_ID_DUPLICATE": ("sent", "sent before a restart: the copy is found in the "
                            "target and recorded done"),
}
# Every other refusal (CHAT_SEND_MEDIA_FORBIDDEN, CHAT_SEND_STICKERS_FORBIDDEN, ... and
# whatever Telegram answers about one message) fails that message with the error name
# and the clone goes on; in a batch, the units are sent again one by one first.
OTHER_REFUSAL = ("fail", "that message is failed with the error name; the clone goes on")
EXIT_LIMITED = telegram_session.EXIT_LIMITED
MISSING_RIGHT = {"CHAT_WRITE_FORBIDDEN": "the right to post messages (be a member; in a "
                                         "channel, an admin who may post)",
                 "CHAT_ADMIN_REQUIRED": "the admin right to manage topics (or set "
                                        "AUTO_CREATE_TOPICS=false)",
                 "CHANNEL_PRIVATE": "membership (the account is not in the chat)",
                 "CHANNEL_INVALID": "access to the chat (this account cannot see it)",
                 "PEER_ID_INVALID": "access to the chat (this account cannot see it)"}
@functools.cache
def _error_names() -> dict[type, str]:
    """Telethon's error classes and Telegram's names for them (digits as X)."""
    from telethon.errors import rpcerrorlist
    names = {cls: name for name, cls in rpcerrorlist.rpc_errors_dict.items()}
    names.update({cls: re.sub(r"_?\(\\d\+\)", "_X", pattern).removesuffix("_X")
                  for pattern, cls in rpcerrorlist.rpc_errors_re})
    return names


def error_name(exc: errors.RPCError) -> str:
    """Telegram's name for a refusal, e.g. CHAT_SEND_MEDIA_FORBIDDEN (digits as X)."""
    name = _error_names().get(type(exc)) or exc.message or type(exc).__name__
    return re.sub(r"\d+", "X", name).removesuffix("_X")


def refusal(exc: errors.RPCError) -> str:
    """The policy's action for a refusal (see REFUSALS)."""
    return REFUSALS.get(error_name(exc), OTHER_REFUSAL)[0]


class SendRefused(Exception):
    """Telegram (or the cloner's limits) refused a unit for a reason that concerns only
    that unit: it is failed with `reason` (Telegram's error name where it refused)."""

    def __init__(self, reason: str, *, name: str = "") -> None:
        super().__init__(reason)
        self.name = name


class Resting(Exception):
    """A FloodWait over the threshold: recorded; the refused claims go back, then sleep."""


class StaleReference(Exception):
    """FILE_REFERENCE_EXPIRED: fetch the messages again and send once more."""


class StopRun(Exception):
    """The run cannot go on (the claims in flight are given back first): one error line
    and the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


PROTECTED_REASON = ("CHAT_FORWARDS_RESTRICTED: the source forbids forwarding and saving "
                    "(noforwards); copying it needs ALLOW_REUPLOAD=true, for content you "
                    "have the rights to")


# ----------------------------------------------------------------------------- cloner

def send_method(copy_mode: str, *, protected: bool, reply: bool, allow_reupload: bool
                ) -> str:
    """How an album or message is sent: "forward", "copy" or "refuse" (failed with the
    reason). Protected content (the chat or message forbids forwarding) is never forwarded:
    re-uploaded as a copy with ALLOW_REUPLOAD, else refused. COPY_MODE=copy copies,
    forward forwards, and auto copies what forwarding would damage: a reply (a forward
    loses the reply link), also one inside a forum topic; it forwards the rest, posts of a
    topic included (ForwardMessages names the target topic, so forwarding places them)."""
    if protected:
        return "copy" if allow_reupload else "refuse"
    if copy_mode == "copy" or copy_mode == "auto" and reply:
        return "copy"
    return "forward"


def source_topic_of(message: Any) -> int:
    """The forum topic a source message is in (General is 1)."""
    header = getattr(message, "reply_to", None)
    if isinstance(header, types.MessageReplyHeader) and header.forum_topic:
        return header.reply_to_top_id or header.reply_to_msg_id
    return GENERAL_TOPIC


class Topics:
    """The forum topics of a clone: the target topic each message goes to, each source
    topic created in the target exactly once across accounts (the checkpoint's topic_map
    says who creates it), and topic_map.json for people. Requests go through the
    cloner's send() (the refusal policy)."""

    def __init__(self, cloner: Cloner) -> None:
        self.cloner = cloner
        self.config, self.checkpoint, self.progress = \
            cloner.config, cloner.checkpoint, cloner.progress
        self.source, self.target, self.src, self.dst = \
            cloner.source, cloner.target, cloner.src, cloner.dst
        # source topics are created in the target (AUTO_CREATE_TOPICS, forum to forum)
        self.created = cloner.source_forum and cloner.target_forum and \
            bool(cloner.config.auto_create_topics)
        self.titles: dict[int, str] = {}        # source topic -> title
        self.cache: dict[int, int] = {}         # source topic -> target topic

    async def target_topic_for(self, message: Any) -> int | None:
        """The target topic a message goes to (None: the chat itself / General)."""
        if self.config.target_topic:
            return self.config.target_topic
        if not self.created:
            return None
        topic = source_topic_of(message)
        return None if topic == GENERAL_TOPIC else await self.topic_in_target(topic)

    async def topic_in_target(self, topic: int) -> int:
        """The target topic for a source topic, created exactly once across accounts."""
        while topic not in self.cache:
            if topic not in self.titles:
                self.titles.update(
                    {t: f.title for t, f in (await self.list_topics(self.source)).items()})
            title = self.titles.get(topic, f"Topic {topic}")
            existing, random_id = self.checkpoint.claim_topic(topic, title)
            if existing is not None:
                self.cache[topic] = existing
            elif random_id is None:
                await asyncio.sleep(WAIT_POLL_SECONDS)     # another account is creating it
            else:
                created = await self.create_topic(title, random_id)
                if self.checkpoint.set_topic(topic, created):
                    self.progress.add("topics_created")
                    log.info("created target topic %d %r for source topic %d", created, title,
                             topic)
                self.write_topic_map()
        return self.cache[topic]

    async def create_topic(self, title: str, random_id: int) -> int:
        """Create a target topic, or adopt an unmapped one with the same title (created
        before a crash, by this account or one that stopped, or by the operator)."""
        adopted = await self.unmapped_topic(title)
        if adopted is not None:
            return adopted
        try:
            result = await self.cloner.send_holding_nothing(
                functions.messages.CreateForumTopicRequest(
                    peer=self.target, title=title, random_id=random_id),
                "messages.CreateForumTopic")
        except errors.RandomIdDuplicateError:
            adopted = await self.unmapped_topic(title)
            if adopted is None:
                raise
            return adopted
        created = sent_message_ids(result).get(random_id)
        return created if created is not None else new_messages(result)[0].id

    async def unmapped_topic(self, title: str) -> int | None:
        mapped = self.checkpoint.mapped_topic_ids()
        for topic_id, topic in sorted((await self.list_topics(self.target)).items()):
            if topic.title == title and topic_id not in mapped | {GENERAL_TOPIC}:
                return topic_id
        return None

    async def list_topics(self, peer: Any) -> dict[int, Any]:
        """Every topic of a forum, page by page as Telegram pages them: the next page starts
        after the last topic's top message (its date and id) and the topic's id."""
        topics: dict[int, Any] = {}
        offset_date, offset_id, offset_topic = None, 0, 0
        while True:
            page = await self.cloner.send(functions.messages.GetForumTopicsRequest(
                peer=peer, offset_date=offset_date, offset_id=offset_id,
                offset_topic=offset_topic, limit=FORWARD_BATCH), "messages.GetForumTopics")
            before = len(topics)
            topics.update({t.id: t for t in page.topics if isinstance(t, types.ForumTopic)})
            if not page.topics or len(topics) == before or len(topics) >= page.count:
                return topics
            last = page.topics[-1]
            offset_topic = last.id
            offset_id = getattr(last, "top_message", 0)
            top = next((m for m in page.messages if m.id == offset_id), None)
            offset_date = top.date if top is not None else getattr(last, "date", None)

    def write_topic_map(self) -> None:
        """topic_map.json in the account folder, for people (the database is the truth)."""
        rows = self.checkpoint.topic_rows()
        migrate_db.write_atomically(self.config.folder / TOPIC_MAP_FILE, json.dumps({
            "source_chat": self.src, "target_chat": self.dst,
            "map": {str(s): t for s, t, _ in rows},
            "names": {str(s): title for s, _, title in rows}}, indent=2, ensure_ascii=False)
            + "\n")


class Cloner:
    """Copies one source chat into one target chat through a checkpoint."""

    def __init__(self, client: TelegramClient, account: telegram_session.Account,
                 checkpoint: Checkpoint, config: CloneConfig, source: Any, target: Any,
                 temp_dir: Path) -> None:
        self.client, self.account, self.checkpoint, self.config = \
            client, account, checkpoint, config
        self.source, self.target = utils.get_input_peer(source), utils.get_input_peer(target)
        self.src, self.dst = str(utils.get_peer_id(source)), str(utils.get_peer_id(target))
        self.source_forum = bool(getattr(source, "forum", False))
        self.target_forum = bool(getattr(target, "forum", False))
        self.source_protected = bool(getattr(source, "noforwards", False))
        self.source_basic = isinstance(source, types.Chat)
        self.target_basic = isinstance(target, types.Chat)
        username = getattr(source, "username", None)
        self.source_aliases = {str(config.source_chat), str(source.id),
                               *((username, f"@{username}") if username else ())}
        self.temp_dir = temp_dir
        self.progress = Progress(config.progress_every, config.progress_seconds)
        # units queued for forwarding, per target topic (a topic's units keep their order)
        self.batches: dict[int | None, list[list[Any]]] = {}
        self.last_seen = 0
        self.deferred: list[list[Any]] = []     # replies to messages others hold (copying)
        self.new_messages = asyncio.Event()
        self.changed: set[int] = set()     # source ids edited or deleted (SYNC_*)
        self.one_at_a_time = False          # slow mode in the target: one message a request
        self.silent = config.silent is not False        # SILENT: default on in backfill
        self.topics = Topics(self)

    # ------------------------------------------------------------------ the run

    def prepare(self) -> None:
        """Check the chats against the settings and bind the checkpoint to the pair (rows
        of earlier runs filed under it; an earlier single-account checkpoint.txt honoured)."""
        if self.config.source_topic and not self.source_forum:
            raise ConfigError(f"SOURCE_TOPIC={self.config.source_topic} but the source is "
                              "not a forum; remove SOURCE_TOPIC")
        if self.config.target_topic and not self.target_forum:
            raise ConfigError(f"TARGET_TOPIC={self.config.target_topic} but the target is "
                              "not a forum; remove TARGET_TOPIC")
        for key, is_basic in (("SOURCE_CHAT", self.source_basic),
                              ("TARGET_CHAT", self.target_basic)):
            if is_basic and self.config.shared:
                raise ConfigError(
                    f"{key}={getattr(self.config, key.lower())} is a basic group: its message "
                    "ids differ from account to account, so accounts cannot share one "
                    "checkpoint for it; clone it with one account (clone_streaming.py), or "
                    "make it a supergroup")
        moved = self.checkpoint.bind(self.src, self.dst, self.source_aliases)
        if moved:
            log.info("%d checkpoint rows of an earlier run filed under %s", moved, self.src)
        self.honour_checkpoint_txt()

    def honour_checkpoint_txt(self) -> None:
        """An earlier clone_streaming.py kept its resume point as one message id in
        checkpoint.txt: on the pair's first run, everything up to it is recorded done."""
        path = self.config.folder / LEGACY_CHECKPOINT_FILE
        if not path.is_file() or self.checkpoint.resume_point() or self.checkpoint.owned():
            return
        text = path.read_text(encoding="utf-8").strip()
        if not text.isdigit():
            raise ConfigError(f"{path} holds {text[:40]!r}, not a message id; fix or remove it")
        last = int(text)
        for start in range(1, last + 1, LEGACY_IMPORT_CHUNK):
            ids = self.checkpoint.claim(range(start, min(start + LEGACY_IMPORT_CHUNK, last + 1)))
            self.checkpoint.complete(dict.fromkeys(ids), note=LEGACY_NOTE)
        log.info("source messages up to %d were cloned by an earlier clone_streaming.py "
                 "(%s): recorded done, not sent again", last, path.name)

    async def run(self) -> None:
        """Backfill (resuming from the checkpoint), then follow until stopped (or --once).

        Following reads the source from the checkpoint's resume point on every new-message
        event and at least every RECONCILE_SECONDS whatever the events (what lost updates
        missed is caught there), logging an idle line every IDLE_LOG_PASSES idle passes.
        With SYNC_EDITS/SYNC_DELETES, edits and deletions are followed too: every copy is
        checked against its source at the start (what changed while stopped), then the
        ones the events name."""
        self.prepare()
        heartbeat = asyncio.create_task(self.keep_claims_alive())
        try:
            if self.topics.created:
                self.topics.titles = {t: topic.title for t, topic in
                                      (await self.topics.list_topics(self.source)).items()}
                self.topics.write_topic_map()
            await self.process_ids(self.checkpoint.owned())   # left by a crash
            await self.backfill()
            if self.config.sync_edits or self.config.sync_deletes:
                await self.sync_changes(None)
            if self.config.once:
                return
            self.client.add_event_handler(self.on_new_message,
                                          events.NewMessage(chats=self.source))
            if self.config.sync_edits:
                self.client.add_event_handler(self.on_changed,
                                              events.MessageEdited(chats=self.source))
            if self.config.sync_deletes:
                self.client.add_event_handler(self.on_changed,
                                              events.MessageDeleted(chats=self.source))
            self.silent = self.config.silent is True
            log.info("backfill done (%s); following new messages", self.progress.line())
            idle_passes = 0
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.new_messages.wait(),
                                           self.config.reconcile_seconds)
                await asyncio.sleep(EVENT_SETTLE_SECONDS)
                self.new_messages.clear()
                finished = self.progress.finished()
                await self.backfill()
                if self.changed:
                    changed, self.changed = self.changed, set()
                    await self.sync_changes(changed)
                idle_passes = 0 if self.progress.finished() != finished else idle_passes + 1
                if idle_passes and idle_passes % IDLE_LOG_PASSES == 0:
                    log.info("following %s: up to date, newest %d", self.config.source_chat,
                             max(self.last_seen, self.checkpoint.resume_point()))
        finally:
            heartbeat.cancel()
            self.checkpoint.release_ranges()
            released = self.checkpoint.give_back(self.checkpoint.owned())
            if released:
                log.info("gave back %d claimed messages not yet sent", released)

    async def on_new_message(self, event: events.NewMessage.Event) -> None:
        """A new source message: wake the follow loop (it reads from the checkpoint)."""
        self.new_messages.set()

    async def on_changed(self, event: Any) -> None:
        """A source message edited or deleted: its copy is synced by the follow loop."""
        ids = getattr(event, "deleted_ids", None) or [event.message.id]
        self.changed.update(ids)
        self.new_messages.set()

    async def send_holding_nothing(self, request: Any, what: str) -> Any:
        """send() for a request that holds no claims: a long FloodWait is slept through and
        the request sent again."""
        while True:
            try:
                return await self.send(request, what)
            except Resting:
                await telegram_session.wait_if_limited(self.account)

    async def sync_changes(self, msg_ids: set[int] | None) -> None:
        """Make the copies of these source messages (None: of every cloned one) match their
        source: SYNC_EDITS edits a copy whose text or entities differ (forwarded copies
        cannot be edited), SYNC_DELETES deletes a copy whose source is gone."""
        done = sorted((msg_id, target) for msg_id, status, target, _ in
                      self.checkpoint.audit_rows() if status == "done" and target
                      and (msg_ids is None or msg_id in msg_ids))
        edited, deleted = 0, []
        for start in range(0, len(done), FORWARD_BATCH):
            chunk = done[start:start + FORWARD_BATCH]
            sources = await telegram_session.call_with_flood_wait(
                self.account, lambda c=chunk: self.client.get_messages(
                    self.source, ids=[s for s, _ in c]), request="channels.GetMessages")
            copies = await telegram_session.call_with_flood_wait(
                self.account, lambda c=chunk: self.client.get_messages(
                    self.target, ids=[t for _, t in c]), request="channels.GetMessages")
            for source, copy, (_, target) in zip(sources, copies, chunk, strict=True):
                if copy is None or isinstance(copy, types.MessageEmpty):
                    continue
                if source is None or isinstance(source, types.MessageEmpty):
                    if self.config.sync_deletes:
                        deleted.append(target)
                elif self.config.sync_edits and copy.fwd_from is None and \
                        (copy.message, copy.entities) != (source.message, source.entities):
                    try:
                        await self.send_holding_nothing(functions.messages.EditMessageRequest(
                            peer=self.target, id=target, message=source.message or "",
                            entities=source.entities), "messages.EditMessage")
                        edited += 1
                    except SendRefused as exc:
                        log.warning("the copy %d of source message %d was not edited: %s",
                                    target, source.id, exc)
        for start in range(0, len(deleted), FORWARD_BATCH):
            chunk = deleted[start:start + FORWARD_BATCH]
            await self.send_holding_nothing(functions.channels.DeleteMessagesRequest(
                channel=self.target, id=chunk) if not self.target_basic else
                functions.messages.DeleteMessagesRequest(id=chunk, revoke=True),
                "channels.DeleteMessages")
        if edited or deleted:
            log.info("synced with the source: %d copies edited, %d deleted", edited,
                     len(deleted))

    async def keep_claims_alive(self) -> None:
        """Heartbeat this session's claims and release other sessions' stale ones."""
        interval = max(1.0, min(self.config.claim_timeout / 3, 60.0))
        while True:
            await asyncio.sleep(interval)
            try:
                self.checkpoint.heartbeat()
                released = self.checkpoint.release_stale()
            except sqlite3.OperationalError as exc:     # busy for 30 s: next time, not never
                log.warning("checkpoint heartbeat failed (%s); trying again in %.0f s",
                            exc, interval)
                continue
            if released:
                log.warning("released %d stale claims of stopped accounts", released)

    async def backfill(self) -> None:
        """Clone every message after the checkpoint's resume point, then the leftovers.

        A FloodWait while reading history is recorded and slept through, and reading starts
        again from the checkpoint (nothing already done is read twice).
        """
        while True:
            try:
                await self.read_history()
            except (errors.FloodWaitError, errors.FloodPremiumWaitError) as exc:
                telegram_session.record_wait(self.account, exc.seconds,
                                             request="messages.GetHistory")
                if self.config.shared:
                    self.give_back_batch()          # others go on while this one sleeps
                await telegram_session.wait_if_limited(self.account)
                continue
            await self.flush()
            await self.take_leftovers()
            if self.config.once:        # the backfill is complete when every message is
                await self.wait_for_ranges(2 ** 62)
                await self.settle([i for i, _, _ in self.checkpoint.open_below(2 ** 62)],
                                  poll=LEFTOVER_POLL_SECONDS)
            return

    async def take_leftovers(self) -> None:
        """Clone the known messages that nobody holds any more (given back, or left by an
        account that stopped), and the replies deferred while others held their message.
        Claims of live accounts are theirs to finish: waiting for them would let one
        account's FloodWait stop the others."""
        await self.come_back(wait=True)
        await self.process_ids(self.checkpoint.owned())
        while held := self.checkpoint.claim_next(SHARE_UNITS):
            await self.process_ids(held)

    async def read_history(self) -> None:
        """Read the source after the resume point range by range (RANGE_SIZE ids, one
        request each, see Checkpoint), each range leased so no other account reads it;
        ends at the newest range read since this pass started."""
        since = datetime.now(UTC)
        while (lo := self.checkpoint.claim_range(self.checkpoint.resume_point() + 1,
                                                 since)) is not None:
            await self.read_range(lo)

    async def read_range(self, lo: int) -> None:
        """Read a leased range with ALBUM_MAX - 1 ids either side and one message more, claim
        the units whose lowest id is in it (an album belongs to the range holding its
        first item) and record the range read, in one transaction; then clone them,
        SHARE_UNITS at a time: the rest is lent to accounts with nothing to read (they take
        it with claim_next) and taken back chunk by chunk where nobody did."""
        hi = lo + RANGE_SIZE - 1
        page = await self.read_from(max(lo - ALBUM_MAX + 1, 1))
        edge = hi + ALBUM_MAX - 1
        grouped = group_units(m for m in page if m.id <= edge)
        units = [u for u in grouped if lo <= u[0].id <= hi]
        # newer messages follow: a unit starting after the range, or a page too full to tell
        more = len(page) == HISTORY_PAGE or any(m.id > edge for m in page) \
            or any(u[0].id > hi for u in grouped)
        held = set(self.checkpoint.claim(
            [m.id for u in units for m in u], range_read=(lo, more),
            grouped_ids={m.id: m.grouped_id for u in units for m in u
                         if getattr(m, "grouped_id", None)}))
        if units:
            self.last_seen = max(self.last_seen, units[-1][-1].id)
        lent = [m.id for u in units[SHARE_UNITS:] for m in u if m.id in held]
        if lent:
            self.checkpoint.give_back(lent)
        for start in range(0, len(units), SHARE_UNITS):
            chunk = units[start:start + SHARE_UNITS]
            if start:
                held = set(self.checkpoint.claim([m.id for u in chunk for m in u]))
            for unit in chunk:
                if mine := [m for m in unit if m.id in held]:
                    await self.clone_unit(mine)
        await self.come_back(wait=False)

    async def read_from(self, first: int) -> list[Any]:
        """The HISTORY_PAGE source messages from id `first` up, oldest first, in exactly
        one messages.getHistory (Telethon's iter_messages asks once more after a short
        page, which would double the requests for the newest range)."""
        result = await self.client(functions.messages.GetHistoryRequest(
            peer=self.source, offset_id=first, offset_date=None, add_offset=-HISTORY_PAGE,
            limit=HISTORY_PAGE, max_id=0, min_id=0, hash=0))
        self.progress.top_id = max(self.progress.top_id, getattr(result, "count", 0) or 0)
        entities = {utils.get_peer_id(x): x for x in (*result.users, *result.chats)}
        page = sorted((m for m in result.messages if not isinstance(m, types.MessageEmpty)
                       and m.id >= first), key=lambda m: m.id)
        for message in page:        # what iter_messages does to each message it returns
            message._finish_init(self.client, entities, self.source)
        return page

    async def wait_for_ranges(self, up_to: int) -> None:
        """Wait until no other account is reading a range starting at or below `up_to`
        (its messages are not in the checkpoint yet); a range left by an account that
        stopped is read here."""
        delay = WAIT_POLL_SECONDS
        while ranges := self.checkpoint.reading_ranges(up_to):
            for lo, stale in ranges:
                if stale and self.checkpoint.claim_range(lo, datetime.now(UTC),
                                                         single=True) == lo:
                    await self.read_range(lo)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LEFTOVER_POLL_SECONDS)

    async def process_ids(self, msg_ids: list[int]) -> None:
        """Fetch messages by id (claimed already, or to be claimed) and clone them; an
        album cut by the edge of a fetched chunk waits for the rest of it."""
        carried: list[Any] = []
        for start in range(0, len(msg_ids), FORWARD_BATCH):
            chunk = msg_ids[start:start + FORWARD_BATCH]
            found = await telegram_session.call_with_flood_wait(
                self.account, lambda c=chunk: self.client.get_messages(self.source, ids=c),
                request="channels.GetMessages")
            for msg_id, message in zip(chunk, found, strict=True):
                if message is None and self.checkpoint.claim([msg_id]):
                    self.fail([msg_id], "the message is no longer in the source")
            units = group_units([*carried, *(m for m in found if m is not None)])
            carried = units.pop() if units and start + FORWARD_BATCH < len(msg_ids) \
                and getattr(units[-1][0], "grouped_id", None) else []
            for unit in units:
                await self.handle(unit)
        await self.flush()

    async def settle(self, msg_ids: list[int], *, poll: float = WAIT_POLL_SECONDS) -> None:
        """Wait until these (known) messages are finished, cloning the ones nobody holds
        (given back, or left by an account that stopped: see Checkpoint), looking after
        `poll` seconds, twice as long each time nothing changed (up to
        LEFTOVER_POLL_SECONDS: a long wait for another account costs few queries)."""
        wanted, me, delay = set(msg_ids), self.checkpoint.session, poll
        while wanted:
            if len(wanted) == 1:        # one query either way; this one reads one row
                rows = [(i, row.status, row.session) for i in wanted
                        if (row := self.checkpoint.row(i)) is not None]
            else:
                rows = [r for r in self.checkpoint.open_below(max(wanted) + 1) if r[0] in wanted]
            open_rows = [r for r in rows if r[1] not in TERMINAL]
            if not open_rows:
                return
            # free or this account's own (stale claims of others come free through
            # release_stale, which every account's heartbeat runs)
            free = [i for i, status, session in open_rows
                    if status == "pending" or session == me]
            held = self.checkpoint.claim(self.checkpoint.with_albums(free)) if free else []
            if held:
                await self.process_ids(held)
                delay = poll
                continue
            await asyncio.sleep(delay)
            delay = min(max(delay, poll) * 2, max(poll, LEFTOVER_POLL_SECONDS))

    # ------------------------------------------------------------------ one unit

    async def handle(self, unit: list[Any]) -> None:
        """Claim a unit (album or message) and clone it."""
        self.last_seen = max(self.last_seen, unit[-1].id)
        held = set(self.checkpoint.claim([m.id for m in unit], grouped_ids={
            m.id: m.grouped_id for m in unit if getattr(m, "grouped_id", None)}))
        unit = [m for m in unit if m.id in held]
        if unit:
            await self.clone_unit(unit, deferrable=False)

    async def clone_unit(self, unit: list[Any], *, deferrable: bool = True) -> None:
        """Clone a claimed unit, skip it, or queue it to forward. A copied reply whose
        message another account holds is deferred (`deferrable`: read in a range, not
        ORDERED): this account goes on with its range and comes back to it."""
        self.progress.position = max(self.progress.position, unit[-1].id)
        first = unit[0]
        if is_service(first):
            if isinstance(first.action, types.MessageActionTopicCreate):
                self.topics.titles[first.id] = first.action.title
            self.checkpoint.fail([m.id for m in unit], "service message "
                                 f"({type(first.action).__name__})", status="skipped")
            self.progress.add("skipped", len(unit))
            return
        if self.config.source_topic and source_topic_of(first) != self.config.source_topic:
            self.checkpoint.fail([m.id for m in unit], "outside SOURCE_TOPIC",
                                 status="skipped")
            self.progress.add("skipped", len(unit))
            return
        topic = await self.topics.target_topic_for(first)
        protected = self.source_protected or any(getattr(m, "noforwards", False) for m in unit)
        method = self.send_method(first, protected)
        if method == "forward":
            batch = self.batches.setdefault(topic, [])
            if sum(map(len, batch)) + len(unit) > FORWARD_BATCH:
                await self.flush_topic(topic)
            self.batches.setdefault(topic, []).append(unit)
            # ORDERED: a batch could pass another account's older message
            if self.config.ordered or self.one_at_a_time:
                await self.flush()
        elif method == "copy" and deferrable and not self.config.ordered \
                and self.held_elsewhere(first):
            self.deferred.append(unit)
        else:
            await self.flush()
            await self.copy_unit(unit, topic, protected)

    def held_elsewhere(self, message: Any) -> bool:
        """Whether the message this one replies to is being cloned by another account (its
        claim, or a range it is reading)."""
        reply_id = source_reply_id(message)
        if reply_id is None:
            return False
        row = self.checkpoint.row(reply_id)
        if row is None:
            return bool(self.checkpoint.reading_ranges(reply_id))
        return row.status == "processing" and row.session != self.checkpoint.session

    async def come_back(self, *, wait: bool) -> None:
        """Clone the deferred replies whose message is no longer held elsewhere (`wait`:
        all of them, waiting where needed)."""
        deferred, self.deferred = self.deferred, []
        owned = set(self.checkpoint.owned()) if deferred else set()
        for unit in sorted(deferred, key=lambda u: u[0].id):    # older first: no circles
            if not all(m.id in owned for m in unit):
                continue                # cloned meanwhile (it was the message of a reply)
            if wait or not self.held_elsewhere(unit[0]):
                await self.clone_unit(unit, deferrable=False)
            else:
                self.deferred.append(unit)

    def send_method(self, message: Any, protected: bool) -> str:
        """send_method() for a unit starting with this message under this run's settings."""
        return send_method(self.config.copy_mode, protected=protected,
                           reply=source_reply_id(message) is not None,
                           allow_reupload=bool(self.config.allow_reupload))

    def fail(self, msg_ids: list[int], reason: str) -> None:
        """Mark messages failed with the reason (they stay visible in --status)."""
        failed = len(self.checkpoint.fail(msg_ids, reason))
        if failed:
            log.warning("source messages %s failed: %s", ", ".join(map(str, msg_ids)), reason)
            self.progress.add("failed", failed)

    def record(self, unit: list[Any], targets: Mapping[int, int | None], how: str) -> None:
        """Mark a sent unit done with the target ids (where known) and count it."""
        found = {i: t for i, t in targets.items() if t is not None}
        done = self.checkpoint.complete(found)
        unknown = {i: None for i in targets.keys() - found.keys()}
        if unknown:
            done |= self.checkpoint.complete(
                unknown, note="sent before a restart (RANDOM_ID_DUPLICATE); its target id "
                              f"was not among the last {RECENT_TARGET_SCAN} target messages")
        if done:
            self.progress.add(how, len(done))
            if len(unit) > 1:
                self.progress.add("albums")
            self.progress.add("cloned", len(done))

    async def send(self, request: Any, what: str) -> Any:
        """One request, following the refusal policy (REFUSALS): slow mode is waited out
        and a dropped connection ridden out, sending the same request (same random_ids)
        again; everything else becomes the exception its caller acts on: Resting,
        StaleReference, SendRefused, StopRun, or the error itself (RANDOM_ID_DUPLICATE,
        CHAT_FORWARDS_RESTRICTED)."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            await telegram_session.wait_if_limited(self.account)
            try:
                return await self.client(request)
            except ConnectionError as exc:
                if attempt == SEND_ATTEMPTS:
                    raise
                log.warning("connection lost during %s (%s); sending again", what, exc)
                await asyncio.sleep(attempt)
                if not self.client.is_connected():
                    await self.client.connect()
                continue
            except errors.RPCError as exc:
                action, name = refusal(exc), error_name(exc)
                if action == "slow":
                    self.one_at_a_time = True
                    seconds = getattr(exc, "seconds", 0)
                    if name == "SLOWMODE_MULTI_MSGS_DISABLED":
                        raise SendRefused(name, name=name) from None
                    log.info("slow mode in the target: waiting %s s, then sending one "
                             "message per request", seconds)
                    await asyncio.sleep(seconds)
                    continue
                if action == "rest":
                    telegram_session.record_wait(self.account, exc.seconds, request=what)
                    raise Resting(name) from None
                if action == "refetch":
                    raise StaleReference(name) from None
                if action == "stop_account":
                    until = telegram_session.record_wait(
                        self.account, telegram_session.PEER_FLOOD_PAUSE_SECONDS,
                        kind="peer_flood", request=what)
                    raise StopRun(
                        f"Telegram limited account {self.account.name} ({name}); it gives "
                        "back its messages and stops (the other accounts go on); try again "
                        f"after {telegram_session.format_time(until)}, and check its limits "
                        "with @SpamBot", EXIT_LIMITED) from None
                if action == "stop_chat":
                    raise StopRun(
                        f"account {self.account.name} may not do {what} in TARGET_CHAT="
                        f"{self.config.target_chat} ({name}): it needs "
                        f"{MISSING_RIGHT[name]}", telegram_session.EXIT_USAGE) from None
                if action in ("sent", "protected"):
                    raise
                raise SendRefused(name, name=name) from None
        raise AssertionError("unreachable")

    async def sent_or_given_back(self, units: list[list[Any]], sending: Any) -> Any:
        """Await a send of these units; on Resting or StopRun their claims go back
        (nothing was sent) before the exception goes on."""
        try:
            return await sending
        except (Resting, StopRun):
            self.checkpoint.give_back([m.id for u in units for m in u], unsent=True)
            raise

    async def rest_and_retry(self, units: list[list[Any]]) -> None:
        """After a long FloodWait: with other accounts (shared), every claim not being sent
        goes back first, so they go on; sleep it out, then clone whatever of these units
        nobody else took meanwhile."""
        if self.config.shared:
            self.give_back_batch()
        await telegram_session.wait_if_limited(self.account)
        await self.process_ids([m.id for u in units for m in u])

    async def already_sent(self, units: list[list[Any]], how: str, *,
                           forwarded: bool) -> list[list[Any]]:
        """Units whose send may have reached Telegram from another account (in doubt after
        a takeover) are looked for in the target and recorded done if found; returns the
        units still to send."""
        doubt = self.checkpoint.in_doubt([m.id for u in units for m in u])
        if not doubt:
            return units
        rest = []
        for unit in units:
            if not any(m.id in doubt for m in unit):
                rest.append(unit)
                continue
            window = (min(doubt[m.id][0] for m in unit if m.id in doubt),
                      max(doubt[m.id][1] for m in unit if m.id in doubt))
            found = await self.find_sent(unit, forwarded=forwarded, window=window)
            if all(found.values()):
                log.info("source messages %s were sent by an account that stopped; found "
                         "in the target, recorded", [m.id for m in unit])
                self.progress.add("already_sent", len(unit))
                self.record(unit, found, how)
            else:
                rest.append(unit)
        return rest

    # ------------------------------------------------------------------ forwarding

    async def flush(self) -> None:
        """Forward every topic's queued units."""
        for topic in list(self.batches):
            await self.flush_topic(topic)

    async def flush_topic(self, topic: int | None) -> None:
        """Forward a topic's queued units (up to 100 ids) in one request."""
        units = self.batches.pop(topic, [])
        if units:
            await self.forward_units(units, topic)

    def give_back_batch(self) -> None:
        """Before a long sleep: give back every claim whose send has not started (the
        units queued for forwarding or deferred, the rest of the range) and the range
        leases, so other accounts take them."""
        self.batches, self.deferred = {}, []
        self.checkpoint.release_ranges()
        self.checkpoint.give_back(self.checkpoint.owned())

    async def forward_units(self, units: list[list[Any]], topic: int | None) -> None:
        if self.config.ordered:
            await self.wait_turn(units[0][0].id)
        units = await self.already_sent(units, "forwarded", forwarded=True)
        random_ids = self.checkpoint.random_ids([m.id for u in units for m in u])
        units = [u for u in units if all(m.id in random_ids for m in u)]
        ids = [m.id for unit in units for m in unit]
        if not ids:
            return
        try:
            result = await self.sent_or_given_back(units, self.send(
                functions.messages.ForwardMessagesRequest(
                    from_peer=self.source, id=ids, random_id=[random_ids[i] for i in ids],
                    to_peer=self.target, top_msg_id=topic, silent=self.silent),
                "messages.ForwardMessages"))
        except Resting:
            await self.rest_and_retry(units)
            return
        except errors.ChatForwardsRestrictedError:
            self.source_protected = True        # turned protected: copy (re-upload) or fail
            for unit in units:
                await self.copy_unit(unit, topic, protected=True)
            return
        except (errors.RandomIdDuplicateError, SendRefused) as exc:
            if len(units) > 1:          # which ones: sent before a restart, or refused?
                for unit in units:
                    await self.forward_units([unit], topic)
                return
            if isinstance(exc, SendRefused):
                self.fail(ids, str(exc))
                return
            self.progress.add("already_sent", len(ids))
            self.record(units[0], await self.find_sent(units[0], forwarded=True), "forwarded")
            return
        sent = sent_message_ids(result)
        for unit in units:
            targets = {m.id: sent.get(random_ids[m.id]) for m in unit}
            missing = [i for i, t in targets.items() if t is None]
            if missing:
                self.fail(missing, "not forwarded: the message is no longer in the source")
            self.record(unit, {i: t for i, t in targets.items() if t is not None}, "forwarded")

    # ------------------------------------------------------------------ copying

    async def copy_unit(self, unit: list[Any], topic: int | None, protected: bool) -> None:
        """Re-create a message or album without the forward header (captions, entities,
        replies kept); media by reference, or downloaded and re-uploaded where protected.
        An expired file reference is fetched again (REFETCH_ATTEMPTS times)."""
        ids = [m.id for m in unit]
        if self.send_method(unit[0], protected) == "refuse":
            self.fail(ids, PROTECTED_REASON)
            return
        reply_to = await self.reply_header(unit[0], topic)
        if self.config.ordered:
            await self.wait_turn(ids[0])
        if not await self.already_sent([unit], "copied", forwarded=False):
            return
        for attempt in range(1, REFETCH_ATTEMPTS + 1):
            try:
                media = [await self.input_media(m, reupload=protected, album=len(unit) > 1)
                         for m in unit]
                random_ids = self.checkpoint.random_ids(ids)
                if len(random_ids) < len(ids):
                    log.warning("source messages %s were taken over by another account", ids)
                    return
                result = await self.sent_or_given_back([unit], self.send(
                    self.copy_request(unit, media, random_ids, reply_to),
                    "messages.SendMultiMedia" if len(unit) > 1 else "messages.SendMessage"))
            except StaleReference as exc:
                if attempt == REFETCH_ATTEMPTS:
                    self.fail(ids, str(exc))
                    return
                log.info("file reference of source messages %s expired; fetching them "
                         "again", ids)
                unit = await self.refetch(unit)
                if not unit:
                    return
                continue
            except Resting:
                await self.rest_and_retry([unit])
                return
            except errors.ChatForwardsRestrictedError:
                if protected:
                    self.fail(ids, PROTECTED_REASON)
                    return
                self.source_protected = True    # turned protected mid-run
                await self.copy_unit(unit, topic, protected=True)
                return
            except errors.RandomIdDuplicateError:
                self.progress.add("already_sent", len(ids))
                self.record(unit, await self.find_sent(unit, forwarded=False), "copied")
                return
            except SendRefused as exc:
                self.fail(ids, str(exc))
                return
            sent = sent_message_ids(result)
            self.record(unit, {m.id: sent.get(random_ids[m.id]) for m in unit}, "copied")
            return

    async def refetch(self, unit: list[Any]) -> list[Any]:
        """The unit's messages read again from the source (fresh file references); the
        ones gone from the source are failed."""
        ids = [m.id for m in unit]
        found = await telegram_session.call_with_flood_wait(
            self.account, lambda: self.client.get_messages(self.source, ids=ids),
            request="channels.GetMessages")
        gone = [i for i, m in zip(ids, found, strict=True) if m is None]
        if gone:
            self.fail(ids, "the message is no longer in the source")
            return []
        return list(found)

    def copy_request(self, unit: list[Any], media: list[Any], random_ids: Mapping[int, int],
                     reply_to: Any) -> Any:
        """The raw send request for a unit, carrying the stored random_ids."""
        if len(unit) > 1:
            return functions.messages.SendMultiMediaRequest(
                peer=self.target, reply_to=reply_to, silent=self.silent, multi_media=[
                    types.InputSingleMedia(media=item, message=m.message or "",
                                           random_id=random_ids[m.id], entities=m.entities)
                    for m, item in zip(unit, media, strict=True)])
        message, item = unit[0], media[0]
        if item is None:
            return functions.messages.SendMessageRequest(
                peer=self.target, message=message.message or "", entities=message.entities,
                random_id=random_ids[message.id], reply_to=reply_to, silent=self.silent,
                no_webpage=not isinstance(message.media, types.MessageMediaWebPage))
        return functions.messages.SendMediaRequest(
            peer=self.target, media=item, message=message.message or "",
            entities=message.entities, random_id=random_ids[message.id], reply_to=reply_to,
            silent=self.silent)

    async def input_media(self, message: Any, *, reupload: bool, album: bool) -> Any:
        """The InputMedia to send for a message's media (None for text)."""
        media = message.media
        if media is None or isinstance(media, types.MessageMediaWebPage):
            return None
        kind = type(media).__name__.removeprefix("MessageMedia").lower()
        if not isinstance(media, (types.MessageMediaPhoto, types.MessageMediaDocument)):
            if reupload:
                raise SendRefused(f"{kind} media cannot be re-uploaded")
            try:
                return utils.get_input_media(media)
            except TypeError:
                raise SendRefused(f"{kind} media cannot be copied") from None
        size = media.document.size if isinstance(media, types.MessageMediaDocument) else max(
            (getattr(s, "size", 0) for s in getattr(media.photo, "sizes", [])), default=0)
        if size > self.config.max_media_bytes:
            log.info("source message %d: media of %.1f MB", message.id, size / 2 ** 20)
            raise SendRefused("media over MAX_MEDIA_MB")
        if not reupload:
            return utils.get_input_media(media)
        uploaded = await self.reupload(message)
        if isinstance(media, types.MessageMediaPhoto):
            item = types.InputMediaUploadedPhoto(file=uploaded)
        else:
            item = types.InputMediaUploadedDocument(
                file=uploaded, mime_type=media.document.mime_type,
                attributes=media.document.attributes)
        if not album:
            return item
        stored = await self.send(functions.messages.UploadMediaRequest(
            peer=self.target, media=item), "messages.UploadMedia")
        return utils.get_input_media(stored)

    async def reupload(self, message: Any) -> Any:
        """Download a message's media into a unique temporary folder and upload it."""
        folder = self.temp_dir / uuid.uuid4().hex
        folder.mkdir()
        try:
            path = await telegram_session.call_with_flood_wait(
                self.account, lambda: self.client.download_media(message, file=str(folder)),
                request="upload.GetFile")
            if path is None:
                raise SendRefused("the media could not be downloaded")
            return await telegram_session.call_with_flood_wait(
                self.account, lambda: self.client.upload_file(path),
                request="upload.SaveFilePart")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def reply_header(self, message: Any, topic: int | None) -> Any:
        """Where the copy goes: a reply to the clone of the replied-to message, the topic."""
        reply_id = source_reply_id(message)
        mapped = await self.target_of(reply_id) if reply_id else None
        if mapped:
            return types.InputReplyToMessage(reply_to_msg_id=mapped, top_msg_id=topic)
        if topic:
            return types.InputReplyToMessage(reply_to_msg_id=topic, top_msg_id=topic)
        return None

    async def target_of(self, msg_id: int) -> int | None:
        """The target id of a cloned source message, cloning it first if nobody holds it
        and waiting while another account reads or sends it (an account that rests gives
        its claims back, so the wait is short): a reply never loses its link to a message
        that is cloned. None if that message failed or is not in the checkpoint."""
        if self.checkpoint.row(msg_id) is None:
            await self.wait_for_ranges(msg_id)
        await self.settle([msg_id])
        row = self.checkpoint.row(msg_id)
        return row[2] if row is not None and row[0] == "done" else None

    async def wait_turn(self, msg_id: int) -> None:
        """ORDERED: wait until every older source message is read and finished."""
        await self.wait_for_ranges(msg_id)
        while open_rows := self.checkpoint.open_below(msg_id):
            await self.settle([i for i, _, _ in open_rows])

    async def find_sent(self, unit: list[Any], *, forwarded: bool,
                        window: tuple[datetime, datetime] | None = None
                        ) -> dict[int, int | None]:
        """Target ids of a unit sent before, among the target messages not recorded for any
        source message that look like it: this account's last RECENT_TARGET_SCAN
        (RANDOM_ID_DUPLICATE), or anyone's posted within `window` (UTC; another account's
        send in doubt after a takeover; CLOCK_SKEW_SECONDS of slack each side)."""
        known = self.checkpoint.target_ids()
        if window is None:
            recent = await telegram_session.call_with_flood_wait(
                self.account, lambda: self.client.get_messages(self.target,
                                                               limit=RECENT_TARGET_SCAN),
                request="messages.GetHistory")
            candidates = [m for m in recent if m.out and m.id not in known]
        else:
            skew = timedelta(seconds=CLOCK_SKEW_SECONDS)
            candidates = []
            async for m in self.client.iter_messages(self.target, offset_date=window[1] + skew,
                                                     wait_time=0):
                if m.date < window[0] - skew:
                    break
                if m.id not in known:
                    candidates.append(m)
        def same(candidate: Any, message: Any) -> bool:
            if forwarded and (candidate.fwd_from is None
                              or candidate.fwd_from.date != message.date):
                return False
            return message_signature(candidate) == message_signature(message)

        # an album's copy is a whole album of the same length and look, a message's copy
        # is not an album item (album items often look alike: photos without captions)
        copies: dict[int | None, list[Any]] = {}
        for candidate in candidates:
            key = getattr(candidate, "grouped_id", None) or -candidate.id
            copies.setdefault(key, []).append(candidate)
        for members in copies.values():
            members.sort(key=lambda m: m.id)
            if len(members) == len(unit) and all(map(same, members, unit)) and (
                    len(unit) > 1 or not getattr(members[0], "grouped_id", None)):
                return {m.id: c.id for m, c in zip(unit, members, strict=True)}
        return dict.fromkeys((m.id for m in unit), None)

    # ------------------------------------------------------------------ audit

    async def audit(self) -> tuple[str, int]:
        """Every source message of the pair against the checkpoint and the target: the
        report and how many are missing (no finished row, or a copy gone from the target)."""
        source_ids = [m.id async for m in self.client.iter_messages(
            self.source, reverse=True, wait_time=0)]
        in_target = {m.id async for m in self.client.iter_messages(self.target, wait_time=0)}
        rows = {msg_id: (status, target, error)
                for msg_id, status, target, error in self.checkpoint.audit_rows()}
        cloned, unknown_copy, missing = 0, 0, []
        reasons: dict[tuple[str, str], int] = {}
        for msg_id in source_ids:
            status, target, error = rows.get(msg_id, (None, None, None))
            if status == "done" and target is None:
                unknown_copy += 1
            elif status == "done" and target in in_target:
                cloned += 1
            elif status in ("failed", "skipped"):
                key = (status, error or "(no reason recorded)")
                reasons[key] = reasons.get(key, 0) + 1
            else:
                missing.append(msg_id)
        lines = [f"audit of {self.config.source_chat} ({self.src}) -> "
                 f"{self.config.target_chat} ({self.dst}): {len(source_ids)} source messages",
                 f"cloned   {cloned + unknown_copy}"
                 + (f" ({unknown_copy} without a recorded target id: {LEGACY_NOTE}, or "
                    "sent before a restart)" if unknown_copy else "")]
        for status in ("failed", "skipped"):
            total = sum(n for (s, _), n in reasons.items() if s == status)
            lines.append(f"{status:<8} {total}")
            lines += [f"  {n:>6}  {why}" for (s, why), n in sorted(
                reasons.items(), key=lambda item: -item[1]) if s == status]
        lines.append(f"missing  {len(missing)}")
        if missing:
            shown = ", ".join(map(str, missing[:AUDIT_IDS_SHOWN]))
            more = f" and {len(missing) - AUDIT_IDS_SHOWN} more" \
                if len(missing) > AUDIT_IDS_SHOWN else ""
            lines.append(f"  source ids (not cloned, or the copy is gone from the target): "
                         f"{shown}{more}")
        return "\n".join(lines), len(missing)


# ----------------------------------------------------------------------------- status

def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> str:
    """A titled table; (none) under the header when it has no rows."""
    return "\n".join([title, migrate_db.format_table(header, rows)] + ([] if rows else ["(none)"]))


def status_report(checkpoint: Checkpoint) -> str:
    """The spec's monitoring queries as tables: per chat pair and status, done per account,
    the claims in progress, the last messages processed, failures counted by reason."""
    tables = checkpoint.status_tables()
    return "\n\n".join([
        _table("messages per pair", ("source_chat", "target_chat", "total", "done",
                                      "processing", "pending", "failed", "skipped",
                                      "last done id", "last done at"), tables["pairs"]),
        _table("done per account", ("session", "done"), tables["accounts"]),
        _table("in progress (claims)", ("source_chat", "target_chat", "msg_id", "session",
                                         "claimed_at", "attempts", "send started"),
               tables["claims"]),
        _table("last processed", ("source_chat", "target_chat", "msg_id", "status",
                                  "session", "target_msg_id", "processed_at"),
               tables["recent"]),
        _table("why not cloned (by reason)", ("status", "reason", "count"),
               tables["reasons"])])


def open_checkpoint(config: CloneConfig) -> Checkpoint:
    """The run's checkpoint: PostgreSQL when SHARED_DB_URL is set, else the SQLite file."""
    if config.db_url:
        return PostgresCheckpoint(config.db_url, config.session_name,
                                  claim_timeout=config.claim_timeout)
    return SqliteCheckpoint(config.checkpoint_db, config.session_name,
                            claim_timeout=config.claim_timeout)


def checkpoint_name(config: CloneConfig) -> str:
    """The checkpoint as logs and messages name it (a URL without its password)."""
    return migrate_db.redact_url(config.db_url) if config.db_url else str(config.checkpoint_db)


def offline_command(args: argparse.Namespace, config: CloneConfig) -> str:
    """--status or --retry-failed: the checkpoint only, no Telegram; returns the output."""
    path = config.checkpoint_db
    if not config.db_url and not path.is_file():
        return f"{path}: no checkpoint yet (nothing cloned)"
    checkpoint = open_checkpoint(config)
    try:
        if args.status:
            return f"checkpoint {checkpoint_name(config)}\n\n{status_report(checkpoint)}"
        pairs = checkpoint.retry_failed()
    finally:
        checkpoint.close()
    lines = [f"{n} failed messages of {src} -> {dst or '(no target recorded)'} are pending "
             "again" for src, dst, n in pairs]
    return "\n".join(lines or ["no failed messages"])


# ----------------------------------------------------------------------------- running

async def resolve_chat(client: TelegramClient, account: telegram_session.Account, key: str,
                       value: int | str) -> Any:
    """The chat a SOURCE_CHAT/TARGET_CHAT value names; ConfigError if the account cannot
    see one. A long FloodWait (ResolveUsername has tight limits) is recorded and slept
    through, as for every other request."""
    lookup_errors = (ValueError, errors.UsernameNotOccupiedError, errors.UsernameInvalidError,
                     errors.ChannelPrivateError, errors.ChannelInvalidError,
                     errors.PeerIdInvalidError)

    async def lookup() -> Any:
        with contextlib.suppress(*lookup_errors):
            return await telegram_session.call_with_flood_wait(
                account, lambda: client.get_entity(value))
        return None

    entity = await lookup()
    if entity is None and isinstance(value, int):
        # ids are known only once seen: load the dialogs
        await telegram_session.call_with_flood_wait(account, client.get_dialogs)
        entity = await lookup()
    if entity is None:
        raise ConfigError(f"{key}={value}: this account sees no such chat; check the id or "
                          "username, and that the account has joined it")
    if not isinstance(entity, (types.Channel, types.Chat)):
        raise ConfigError(f"{key}={value} is a user, not a chat; give a channel or group")
    return entity


def media_temp_dir(account: telegram_session.Account) -> Path:
    """A new per-process folder for media on its way through, named after the account.

    Called with the account's folder lock held: folders left under the same name by an
    earlier process of this account (killed before cleaning up) are removed first.
    """
    tag = hashlib.sha1(str(account.folder).encode()).hexdigest()[:8]
    prefix = f"clone-{account.name}-{tag}-"
    for leftover in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextlib.asynccontextmanager
async def open_cloner(account: telegram_session.Account,
                      config: CloneConfig) -> AsyncIterator[Cloner]:
    """The account's client and checkpoint, the chats resolved: a Cloner for the pair."""
    checkpoint = open_checkpoint(config)
    try:
        # a backfill-only run (--once) listens to nothing: Telegram pushes it no updates
        # (every request in invokeWithoutUpdates), not the other accounts' posts either
        async with telegram_session.open_client(
                account, flood_sleep_threshold=FLOOD_SLEEP_THRESHOLD,
                receive_updates=not config.once) as client:
            source = await resolve_chat(client, account, "SOURCE_CHAT", config.source_chat)
            target = await resolve_chat(client, account, "TARGET_CHAT", config.target_chat)
            temp_dir = media_temp_dir(account)
            try:
                yield Cloner(client, account, checkpoint, config, source, target, temp_dir)
            finally:
                shutil.rmtree(temp_dir, ignore_errors=True)
    finally:
        checkpoint.close()


async def clone(account: telegram_session.Account, config: CloneConfig,
                metrics: migrate_db.MetricsFile | None = None) -> Progress:
    """Open the account, resolve the chats and run the cloner; returns its counts."""
    async with open_cloner(account, config) as cloner:
        log.info("account %s: cloning %s into %s (mode %s%s), checkpoint %s",
                 account.name, cloner.src, cloner.dst, config.copy_mode,
                 ", ordered" if config.ordered else "", checkpoint_name(config))
        writer = asyncio.create_task(write_metrics_every(cloner, account, metrics)) \
            if metrics is not None and metrics.path else None
        try:
            await cloner.run()
        finally:
            if writer is not None:
                writer.cancel()
                write_metrics(cloner, account, metrics)
            log.info("%s", cloner.progress.summary())
        return cloner.progress


async def audit(account: telegram_session.Account, config: CloneConfig) -> int:
    """--audit: print the pair's audit; returns 1 if anything is missing, else 0."""
    async with open_cloner(account, config) as cloner:
        cloner.prepare()
        text, missing = await cloner.audit()
    print(text)
    return telegram_session.EXIT_FAILURE if missing else telegram_session.EXIT_OK


def build_parser(profile: Profile) -> argparse.ArgumentParser:
    """The command line; every .env key has a flag that overrides it."""
    keys = dict(ENV_KEYS)
    if profile.shared:
        del keys["CHECKPOINT_DB"]
        keys["SHARED_DB_PATH"] = f"the shared checkpoint (default {profile.db_default}, " \
                                 "relative to the folder)"
        keys["SHARED_DB_URL"] = "postgresql://user@host:5432/db: keep the shared checkpoint " \
                                "in PostgreSQL instead (accounts on several VPSes); the " \
                                "password may come from PGPASSWORD or ~/.pgpass"
        keys["CLAIM_TIMEOUT"] = "seconds without a heartbeat before another account takes " \
                                f"a claim over (default {DEFAULT_CLAIM_TIMEOUT:g})"
        keys["ORDERED"] = "true: accounts send in source order (default false)"
    epilog = ".env keys (in the account folder; flags override them):\n" + "\n".join(
        f"  {key:<34} {text}" for key, text in keys.items()) + \
        "\n\nexit codes: 0 done, 1 runtime failure, 2 bad flag or .env value, " \
        "3 log in again, 4 session file or lock, 5 Telegram limited the account, 130 Ctrl+C"
    parser = argparse.ArgumentParser(prog=profile.prog, description=profile.description,
                                     epilog=epilog, parents=[migrate_db.cli_options()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to clone")
    what.add_argument("--source", metavar="CHAT", help="SOURCE_CHAT")
    what.add_argument("--target", metavar="CHAT", help="TARGET_CHAT")
    what.add_argument("--source-topic", metavar="ID", help="SOURCE_TOPIC")
    what.add_argument("--target-topic", metavar="ID", help="TARGET_TOPIC")
    what.add_argument("--auto-create-topics", action=argparse.BooleanOptionalAction,
                      help="AUTO_CREATE_TOPICS")
    how = parser.add_argument_group("how")
    how.add_argument("--copy-mode", choices=COPY_MODES, help="COPY_MODE")
    how.add_argument("--allow-reupload", action=argparse.BooleanOptionalAction,
                     help="ALLOW_REUPLOAD")
    how.add_argument("--silent", action=argparse.BooleanOptionalAction, help="SILENT")
    how.add_argument("--max-media-mb", metavar="MB", help="MAX_MEDIA_MB")
    state = parser.add_argument_group("checkpoint")
    state.add_argument("--checkpoint-db", metavar="FILE", help=profile.db_key)
    if profile.shared:
        state.add_argument("--db-url", metavar="URL", help="SHARED_DB_URL")
        state.add_argument("--claim-timeout", metavar="SECONDS", help="CLAIM_TIMEOUT")
        state.add_argument("--ordered", action=argparse.BooleanOptionalAction, help="ORDERED")
    run = parser.add_argument_group("running")
    run.add_argument("--session-dir", metavar="FOLDER", type=Path,
                     help="the account folder (default: the current folder)")
    run.add_argument("--once", action="store_true",
                     help="stop after the backfill instead of following new messages")
    run.add_argument("--status", action="store_true",
                     help="print the checkpoint's state per chat pair, failures by reason, "
                          "and exit (no Telegram)")
    run.add_argument("--audit", action="store_true",
                     help="compare the source's ids with the target's for the pair: cloned, "
                          "failed (why), skipped (why), missing; exit 1 if anything is "
                          "missing")
    run.add_argument("--retry-failed", action="store_true",
                     help="make every failed message pending again (the next run clones it) "
                          "and exit (no Telegram)")
    run.add_argument("--reconcile-seconds", metavar="SECONDS", help="RECONCILE_SECONDS")
    how.add_argument("--sync-edits", action=argparse.BooleanOptionalAction, help="SYNC_EDITS")
    how.add_argument("--sync-deletes", action=argparse.BooleanOptionalAction,
                     help="SYNC_DELETES")
    run.add_argument("--progress-every", metavar="N", help="PROGRESS_EVERY")
    run.add_argument("--metrics-file", metavar="PATH", type=Path,
                     help="METRICS_FILE: Prometheus text rewritten every "
                          f"{migrate_db.METRICS_SECONDS:g} s (node_exporter textfile)")
    run.add_argument("--progress-seconds", metavar="SECONDS", help="PROGRESS_SECONDS")
    return parser


def setup_logging(folder: Path, args: argparse.Namespace) -> None:
    """Log lines to the console and to clone.log in the account folder (migrate_db's)."""
    migrate_db.setup_logging(args.verbose, args.quiet, folder / LOG_FILE)
    log.setLevel(logging.DEBUG)             # a failure's traceback goes to clone.log only


def write_metrics(cloner: Cloner, account: telegram_session.Account,
                  metrics: migrate_db.MetricsFile) -> None:
    """--metrics-file: the pair's messages by status and this process's sends."""
    pair = next((row for row in cloner.checkpoint.status_tables()["pairs"]
                 if row[:2] == (cloner.src, cloner.dst)), None)
    counts = dict(zip(("done", "processing", "pending", "failed", "skipped"),
                      pair[3:8] if pair else (0,) * 5, strict=True))
    waits, wait_seconds = telegram_session.wait_totals([account])
    try:
        metrics.write(migrate_db.suite_metrics(
            "clone", counts, cloner.progress.counts["cloned"], waits, wait_seconds,
            pair[9] if pair else None))
    except OSError as exc:
        log.warning("metrics file %s not written (%s); trying again", metrics.path, exc)


async def write_metrics_every(cloner: Cloner, account: telegram_session.Account,
                              metrics: migrate_db.MetricsFile) -> None:
    """write_metrics every METRICS_SECONDS until cancelled."""
    while True:
        write_metrics(cloner, account, metrics)
        await asyncio.sleep(metrics.every)


def main(argv: list[str] | None = None, profile: Profile = SINGLE) -> int:
    """Parse the command line, then clone or print the status; returns the exit code."""
    parser = build_parser(profile)
    args = parser.parse_args(argv)
    folder = (args.session_dir or Path.cwd()).expanduser()
    try:
        account = telegram_session.load_account(folder)
        config = make_config(account, args, profile)
    except (telegram_session.AccountConfigError, ConfigError) as exc:
        parser.error(str(exc))
    if args.status or args.retry_failed:
        try:
            print(offline_command(args, config))
        except (OSError, sqlite3.Error, psycopg.Error) as exc:
            print(f"error: checkpoint {checkpoint_name(config)}: "
                  f"{migrate_db.error_line(exc)}", file=sys.stderr)
            return telegram_session.EXIT_FAILURE
        return telegram_session.EXIT_OK
    try:
        setup_logging(account.folder, args)
        if args.audit:
            return asyncio.run(audit(account, config))
        metrics = migrate_db.MetricsFile(args.metrics_file or account.env.get("METRICS_FILE"))
        asyncio.run(clone(account, config, metrics))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return telegram_session.EXIT_USAGE
    except telegram_session.AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StopRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except errors.PeerFloodError:
        print(f"error: Telegram limited account {account.name} (PEER_FLOOD); it rests "
              "24 h (see telegram_session.py status) and the other accounts go on",
              file=sys.stderr)
        return EXIT_LIMITED
    except errors.RPCError as exc:
        log.debug("details of the failure", exc_info=True)     # clone.log only
        name = error_name(exc)
        if refusal(exc) == "stop_chat":         # no restart loop: a chat must be fixed
            print(f"error: account {account.name}: Telegram refused {name}: it needs "
                  f"{MISSING_RIGHT[name]} in SOURCE_CHAT={config.source_chat} or "
                  f"TARGET_CHAT={config.target_chat}", file=sys.stderr)
            return telegram_session.EXIT_USAGE
        print(f"error: account {account.name}: Telegram refused {name}: {exc}",
              file=sys.stderr)
        return telegram_session.EXIT_FAILURE
    except (OSError, sqlite3.Error, psycopg.Error) as exc:
        log.debug("details of the failure", exc_info=True)     # clone.log only
        print(f"error: account {account.name}: {type(exc).__name__}: "
              f"{migrate_db.error_line(exc)}", file=sys.stderr)
        return telegram_session.EXIT_FAILURE
    return telegram_session.EXIT_OK


if __name__ == "__main__":
    migrate_db.run_main(main)
