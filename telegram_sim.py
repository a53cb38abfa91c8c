#!/usr/bin/env python3
"""A simulated Telegram that runs below real Telethon clients, shared by OS processes.

`attach(client, world_path)` replaces a `TelegramClient`'s sender with `SimulatedSender`:
requests are served from a world kept in one SQLite file that several processes share, and
results, refusals (with Telegram's code and message, so Telethon raises its named errors)
and updates come back as Telegram would send them. `World` is the operator's Python API to
shape a world; the command line (`python telegram_sim.py COMMAND --help`) does the same from
a shell.

docs/SIMULATOR.md is the manual: a first world in Python, what is modelled (every behaviour
is on in a new world) with the source each follows, the settings (Python API and CLI), the
requests answered and what is not modelled.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import hashlib
import hmac
import inspect
import json
import logging
import math
import mimetypes
import os
import re
import secrets
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import migrate_db
from migrate_db import is_sqlite_file, open_database, transaction, utc_text

if TYPE_CHECKING:
    from telethon import TelegramClient
    from telethon.crypto import AuthKey
    from telethon.tl import TLObject

# Telethon takes ~0.5 s to import: it loads when the simulator first needs it, not for
# --help or a usage error (issue 15)
crypto = migrate_db.lazy_import("telethon.crypto")
errors = migrate_db.lazy_import("telethon.errors")
extensions = migrate_db.lazy_import("telethon.extensions")
functions = migrate_db.lazy_import("telethon.tl.functions")
markdown = migrate_db.lazy_import("telethon.extensions.markdown")
sessions = migrate_db.lazy_import("telethon.sessions")
types = migrate_db.lazy_import("telethon.tl.types")

# ----------------------------------------------------------------------------- settings

DC_ID = 2                       # every account, file and session lives on this DC
SIM_IP = "127.0.0.1"
SIM_PORT = 443
POLL_SECONDS = 0.1              # how often a sender looks for other processes' messages
HISTORY_PAGE_MAX = 100          # Telegram's page size for history requests
ALBUM_MAX = 10
FORWARD_MAX = 100
GENERAL_TOPIC_ID = 1
CHANNEL_ID_BASE = 1_500_000_000   # channels, megagroups, forums: 1500000001, ...
GROUP_ID_BASE = 700_000_000       # basic groups: 700000001, ...
DEFAULT_LOGIN_CODE = "12345"
RANDOM_ID_MODES = ("original", "error")
CHAT_KINDS = ("channel", "megagroup", "forum", "group")     # group: a basic group (Chat)
DEFAULT_PHOTO_SIZE = (800, 600)
PHOTO_SIZE_TYPES = (("s", 100), ("m", 320), ("x", 800), ("y", 1280), ("w", 2560))
SIM_API_ID = 2040               # any api id works on the simulator
RATE_WINDOW_SECONDS = 60.0
NAMED_FAULTS = {                # fault name -> (RPC code, error message template)
    "FLOOD_WAIT": (420, "FLOOD_WAIT_{seconds}"),
    "SLOWMODE_WAIT": (420, "SLOWMODE_WAIT_{seconds}"),
    "PEER_FLOOD": (400, "PEER_FLOOD"),
    "AUTH_KEY_UNREGISTERED": (401, "AUTH_KEY_UNREGISTERED"),
    "RANDOM_ID_DUPLICATE": (500, "RANDOM_ID_DUPLICATE"),
}
DISCONNECT = "DISCONNECT"
LOSE_UPDATES = "LOSE_UPDATES"
CAPTION_MAX = 1024              # help.getConfig caption_length_max
TEXT_MAX = 4096                 # help.getConfig message_length_max

# World settings (meta table): name -> default. Every behaviour is on in a new world.
WORLD_SETTINGS = {
    "random_id_mode": "original",       # or "error" (RANDOM_ID_DUPLICATE)
    "random_id_memory": 0,              # seconds a random_id is remembered; 0: forever
    "file_reference_lifetime": 3600,    # seconds of world time; 0: never expires
    "rate_limits": 1,                   # token buckets per account and method on/off
    "clock_offset": 0.0,                # world time = real time + this (advance_clock)
    "clock_frozen": 0.0,                # if set: the real time the world clock stopped at
}
# Token buckets: name -> (burst, refill per second). Sources in docs/SIMULATOR.md.
DEFAULT_RATE_LIMITS = {
    "send_chat": (20, 1.0),             # messages into one chat
    "send": (30, 1.0),                  # messages into any chat
    "history": (30, 1.0),               # history/replies/messages reads
    "resolve": (30, 0.5),               # contacts.ResolveUsername
    "topic_create": (10, 0.1),          # messages.CreateForumTopic
    "join": (20, 1 / 60),               # channels.JoinChannel
}
DEFAULT_ADMIN_RIGHTS = ("change_info", "post_messages", "edit_messages", "delete_messages",
                        "ban_users", "invite_users", "pin_messages", "manage_topics")
MEDIA_RIGHTS = {                # banned right of a kind of media -> the error it raises
    "send_photos": "CHAT_SEND_PHOTOS_FORBIDDEN", "send_videos": "CHAT_SEND_VIDEOS_FORBIDDEN",
    "send_roundvideos": "CHAT_SEND_ROUNDVIDEOS_FORBIDDEN",
    "send_audios": "CHAT_SEND_AUDIOS_FORBIDDEN", "send_voices": "CHAT_SEND_VOICES_FORBIDDEN",
    "send_docs": "CHAT_SEND_DOCS_FORBIDDEN", "send_stickers": "CHAT_SEND_STICKERS_FORBIDDEN",
    "send_gifs": "CHAT_SEND_GIFS_FORBIDDEN", "send_plain": "CHAT_SEND_PLAIN_FORBIDDEN",
}

_VECTOR = 0x1CB5C415
_BOOL_TRUE = 0x997275B5
_BOOL_FALSE = 0xBC799737

log = logging.getLogger("telegram_sim")

WORLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    user_id     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    phone       TEXT UNIQUE,
    first_name  TEXT NOT NULL,
    last_name   TEXT,
    username    TEXT UNIQUE COLLATE NOCASE,
    access_hash INTEGER NOT NULL,
    restricted  INTEGER NOT NULL DEFAULT 0,
    limited     INTEGER NOT NULL DEFAULT 0,
    rate_limits INTEGER NOT NULL DEFAULT 1,
    pts         INTEGER NOT NULL DEFAULT 1,
    box_top     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    user_id    INTEGER NOT NULL,
    box_id     INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    pts        INTEGER NOT NULL,
    PRIMARY KEY (user_id, box_id),
    UNIQUE (user_id, channel_id, message_id)
);
CREATE TABLE IF NOT EXISTS auth_keys (
    key_id     TEXT PRIMARY KEY,
    user_id    INTEGER,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS login_codes (
    phone      TEXT PRIMARY KEY,
    code_hash  TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    channel_id       INTEGER PRIMARY KEY,
    access_hash      INTEGER NOT NULL,
    title            TEXT NOT NULL,
    username         TEXT UNIQUE COLLATE NOCASE,
    kind             TEXT NOT NULL,
    noforwards       INTEGER NOT NULL DEFAULT 0,
    slowmode_seconds INTEGER NOT NULL DEFAULT 0,
    default_banned   TEXT NOT NULL DEFAULT '[]',
    creator_id       INTEGER,
    pts              INTEGER NOT NULL DEFAULT 0,
    top_id           INTEGER NOT NULL DEFAULT 0,
    date             INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    channel_id  INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    role        TEXT NOT NULL DEFAULT 'member',
    read_max_id INTEGER NOT NULL DEFAULT 0,
    admin_rights  TEXT,
    banned_rights TEXT NOT NULL DEFAULT '[]',
    last_sent   INTEGER,
    joined_at   TEXT NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE TABLE IF NOT EXISTS messages (
    channel_id  INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    date        INTEGER NOT NULL,
    sender_id   INTEGER,
    topic_id    INTEGER,
    grouped_id  INTEGER,
    reply_to_id INTEGER,
    is_service  INTEGER NOT NULL DEFAULT 0,
    noforwards  INTEGER NOT NULL DEFAULT 0,
    pts         INTEGER NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (channel_id, id)
);
CREATE TABLE IF NOT EXISTS topics (
    channel_id INTEGER NOT NULL,
    topic_id   INTEGER NOT NULL,
    title      TEXT NOT NULL,
    icon_color INTEGER NOT NULL,
    creator_id INTEGER,
    date       INTEGER NOT NULL,
    closed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, topic_id)
);
CREATE TABLE IF NOT EXISTS random_ids (
    channel_id INTEGER NOT NULL,
    sender_id  INTEGER NOT NULL,
    random_id  INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    date       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, sender_id, random_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL,
    pts        INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    origin     TEXT,
    kind       TEXT NOT NULL DEFAULT 'new',
    deleted    TEXT,
    date       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS media (
    media_id       INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    access_hash    INTEGER NOT NULL,
    file_reference BLOB NOT NULL,
    channel_id     INTEGER,
    body           BLOB NOT NULL,
    data           BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_parts (
    user_id INTEGER NOT NULL,
    file_id INTEGER NOT NULL,
    part    INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (user_id, file_id, part)
);
CREATE TABLE IF NOT EXISTS faults (
    fault_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    error           TEXT NOT NULL,
    code            INTEGER NOT NULL,
    seconds         INTEGER,
    account         TEXT,
    request         TEXT,
    after           INTEGER NOT NULL DEFAULT 0,
    times           INTEGER,
    rate_per_minute INTEGER,
    executed        INTEGER NOT NULL DEFAULT 0,
    seen            INTEGER NOT NULL DEFAULT 0,
    fired           INTEGER NOT NULL DEFAULT 0,
    passed_at       TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    account TEXT NOT NULL,
    request TEXT NOT NULL,
    count   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, request)
);
CREATE TABLE IF NOT EXISTS buckets (
    account TEXT NOT NULL,
    bucket  TEXT NOT NULL,
    tokens  REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (account, bucket)
);
CREATE INDEX IF NOT EXISTS idx_messages_topic ON messages(channel_id, topic_id, id);
CREATE INDEX IF NOT EXISTS idx_messages_reply ON messages(channel_id, reply_to_id);
CREATE INDEX IF NOT EXISTS idx_events_channel_pts ON events(channel_id, pts);
CREATE INDEX IF NOT EXISTS idx_participants_user ON participants(user_id);
"""


class SimulatorError(Exception):
    """A bad use of the World API (unknown account or chat, wrong kind of chat, ...)."""


class RpcFailure(Exception):
    """What the simulated server answers instead of a result: an RPC error."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class ConnectionDropped(Exception):
    """The DISCONNECT fault: the connection is lost while the request is in flight."""


# ----------------------------------------------------------------------------- TL helpers

def _dt(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _ts(value: datetime.datetime | None) -> int:
    return int(value.timestamp()) if value else 0


def _random_long() -> int:
    return secrets.randbits(62) + 1


def _serialize_result(result: Any) -> bytes:
    """The bytes Telegram would send back for `result` (TL object, bool or vector)."""
    if isinstance(result, bool):
        return struct.pack("<I", _BOOL_TRUE if result else _BOOL_FALSE)
    if isinstance(result, list):
        return struct.pack("<Ii", _VECTOR, len(result)) + b"".join(
            _serialize_result(item) for item in result)
    return bytes(result)


def _parse(blob: bytes) -> Any:
    with extensions.BinaryReader(blob) as reader:
        return reader.tgread_object()


def _key_id(auth_key: AuthKey) -> str:
    return f"{auth_key.key_id:016x}"


def _normalise_phone(phone: str | None) -> str | None:
    return re.sub(r"\D", "", phone) if phone else None


def _unwrap(request: TLObject) -> tuple[TLObject, bool]:
    """The query inside invokeWithLayer/initConnection/invokeWithoutUpdates wrappers, and
    whether serving it subscribes the connection to updates: it does unless wrapped in
    invokeWithoutUpdates (Telethon's receive_updates=False wraps every request so)."""
    wrappers = (functions.InvokeWithLayerRequest, functions.InitConnectionRequest,
                functions.InvokeWithoutUpdatesRequest, functions.InvokeAfterMsgRequest)
    subscribes = True
    while isinstance(request, wrappers):
        subscribes = subscribes and not isinstance(request, functions.InvokeWithoutUpdatesRequest)
        request = request.query
    return request, subscribes


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG or GIF, else a fixed size (photos are not decoded)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    return DEFAULT_PHOTO_SIZE


def _photo_sizes(data: bytes) -> list[TLObject]:
    """Telegram's sizes of a photo: a stripped preview ("i"), then s 100, m 320, x 800,
    y 1280, w 2560 px on the longer side, those smaller than the original plus the
    original; every size downloads the same bytes (no recompression)."""
    width, height = _image_size(data)
    sizes: list[TLObject] = [types.PhotoStrippedSize(type="i", bytes=b"\x01\x28\x28")]
    for kind, side in PHOTO_SIZE_TYPES:
        scale = min(1.0, side / max(width, height, 1))
        sizes.append(types.PhotoSize(type=kind, w=max(1, round(width * scale)),
                                     h=max(1, round(height * scale)), size=len(data)))
        if scale == 1.0:
            break
    return sizes


@functools.cache
def admin_rights() -> tuple[str, ...]:
    """Telegram's admin right names (ChatAdminRights' fields)."""
    return tuple(inspect.signature(types.ChatAdminRights).parameters)


@functools.cache
def banned_rights() -> tuple[str, ...]:
    """Telegram's banned right names (ChatBannedRights' fields but until_date)."""
    return tuple(name for name in inspect.signature(types.ChatBannedRights).parameters
                 if name != "until_date")


def _rights_list(rights: Iterable[str], known: tuple[str, ...]) -> list[str]:
    """Right names checked against `known` (admin_rights() or banned_rights()), sorted."""
    listed = sorted(set(rights))
    unknown = [r for r in listed if r not in known]
    if unknown:
        raise SimulatorError(f"unknown right(s) {', '.join(unknown)}; known: "
                             f"{', '.join(known)}")
    return listed


def _request_spends(request: TLObject) -> list[tuple[str, str, int]]:
    """(bucket, bucket key, tokens) a request takes from the account's token buckets."""
    kind = type(request)
    answer = handlers().get(kind)
    bucket = answer.bucket if answer is not None else None
    if bucket is None:
        return []
    if bucket != "send":
        return [(bucket, bucket, 1)]
    if kind is functions.messages.SendMultiMediaRequest:
        count = len(request.multi_media)
    elif kind is functions.messages.ForwardMessagesRequest:
        count = len(request.id)
    else:
        count = 1
    peer = request.to_peer if kind is functions.messages.ForwardMessagesRequest \
        else request.peer
    chat = getattr(peer, "channel_id", None) or getattr(peer, "chat_id", None) \
        or getattr(peer, "user_id", None)
    return [("send_chat", f"send_chat:{chat}", count), ("send", "send", count)]


def _banned_rights(rights: Iterable[str]) -> types.ChatBannedRights:
    return types.ChatBannedRights(until_date=_dt(0), **{r: True for r in rights})


def _media_right(media: TLObject | None) -> str:
    """The banned right that forbids sending this MessageMedia (None: plain text)."""
    if media is None:
        return "send_plain"
    if isinstance(media, types.MessageMediaPhoto):
        return "send_photos"
    attributes = getattr(getattr(media, "document", None), "attributes", None) or []
    for attribute in attributes:
        if isinstance(attribute, types.DocumentAttributeSticker):
            return "send_stickers"
        if isinstance(attribute, types.DocumentAttributeAnimated):
            return "send_gifs"
    for attribute in attributes:
        if isinstance(attribute, types.DocumentAttributeVideo):
            return "send_roundvideos" if attribute.round_message else "send_videos"
        if isinstance(attribute, types.DocumentAttributeAudio):
            return "send_voices" if attribute.voice else "send_audios"
    return "send_docs"


# ----------------------------------------------------------------------------- the server

class Server:
    """The simulated Telegram's logic over one connection to the world database.

    Used by World (the Python API) and by each SimulatedSender, from one thread at a time.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- lookups ------------------------------------------------------------------------

    def meta(self, key: str, default: str) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def setting(self, name: str) -> Any:
        """A world setting (WORLD_SETTINGS), typed as its default."""
        default = WORLD_SETTINGS[name]
        return type(default)(self.meta(name, str(default)))

    def now(self) -> int:
        """World time: real time plus the world's clock offset (World.advance_clock)."""
        return int(self.clock())

    def clock(self) -> float:
        frozen = self.setting("clock_frozen")
        return (frozen or time.time()) + self.setting("clock_offset")

    # -- rate limits --------------------------------------------------------------------

    def rate_limit(self, bucket: str) -> tuple[int, float]:
        """(burst, refill per second) of a token bucket in this world."""
        stored = self.meta(f"rate_limit:{bucket}", "")
        if not stored:
            return DEFAULT_RATE_LIMITS[bucket]
        burst, rate = stored.split("/")
        return int(burst), float(rate)

    def check_budget(self, user_id: int, request: TLObject) -> None:
        """PEER_FLOOD for a limited account's sends and joins; FLOOD_WAIT_X once a token
        bucket of the request (its Answer's) is empty. A bucket may go into debt
        (a forward of 50 messages takes 50 tokens); a request needs one token left."""
        spends = _request_spends(request)
        if not spends:
            return
        account = self.account_row(user_id)
        if account["limited"] and handlers()[type(request)].limited:
            raise RpcFailure(400, "PEER_FLOOD")
        if not self.setting("rate_limits") or not account["rate_limits"]:
            return
        now = self.clock()
        updates = []
        for bucket, key, amount in spends:
            burst, rate = self.rate_limit(bucket)
            row = self.conn.execute(
                "SELECT tokens, updated FROM buckets WHERE account = ? AND bucket = ?",
                (account["name"], key)).fetchone()
            tokens = float(burst) if row is None else \
                min(float(burst), row["tokens"] + max(0.0, now - row["updated"]) * rate)
            if tokens < 1:
                raise RpcFailure(420, f"FLOOD_WAIT_{math.ceil((1 - tokens) / rate)}")
            updates.append((key, tokens - amount))
        for key, tokens in updates:
            self.conn.execute(
                "INSERT OR REPLACE INTO buckets (account, bucket, tokens, updated) "
                "VALUES (?, ?, ?, ?)", (account["name"], key, tokens, now))

    def is_world(self) -> bool:
        """Whether the database is a simulated world (and not some other SQLite file)."""
        has_meta = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return bool(has_meta) and self.meta("created_at", "") != ""

    def account_row(self, user_id: int) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM accounts WHERE user_id = ?", (user_id,)).fetchone()

    def channel_row(self, channel_id: int) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM channels WHERE channel_id = ?", (channel_id,)).fetchone()

    def participant(self, channel_id: int, user_id: int | None) -> sqlite3.Row | None:
        if user_id is None:
            return None
        return self.conn.execute(
            "SELECT * FROM participants WHERE channel_id = ? AND user_id = ?",
            (channel_id, user_id)).fetchone()

    def user_for_key(self, key_id: str) -> int | None:
        row = self.conn.execute(
            "SELECT user_id FROM auth_keys WHERE key_id = ? AND revoked_at IS NULL",
            (key_id,)).fetchone()
        return row[0] if row else None

    def account_name(self, user_id: int | None) -> str:
        if user_id is None:
            return ""
        row = self.account_row(user_id)
        return row["name"] if row else ""

    # -- TL builders --------------------------------------------------------------------

    def tl_user(self, row: sqlite3.Row, viewer: int | None) -> types.User:
        is_self = row["user_id"] == viewer
        return types.User(
            id=row["user_id"], is_self=is_self, access_hash=row["access_hash"],
            first_name=row["first_name"], last_name=row["last_name"],
            username=row["username"], phone=row["phone"] if is_self else None,
            status=types.UserStatusRecently())

    def tl_users(self, user_ids: Iterable[int | None], viewer: int | None) -> list[types.User]:
        wanted = {uid for uid in user_ids if uid}
        if viewer:
            wanted.add(viewer)
        rows = [self.account_row(uid) for uid in sorted(wanted)]
        return [self.tl_user(row, viewer) for row in rows if row]

    def rights(self, channel: sqlite3.Row,
               part: sqlite3.Row | None) -> tuple[set[str] | None, set[str]]:
        """(admin rights, or None for a non-admin; banned rights) of a chat participant.
        Admins are not subject to banned rights; the creator has every admin right."""
        if part is not None and part["role"] == "creator":
            return set(admin_rights()), set()
        if part is not None and part["role"] == "admin":
            stored = part["admin_rights"]
            return set(json.loads(stored) if stored else DEFAULT_ADMIN_RIGHTS), set()
        banned = set(json.loads(channel["default_banned"]))
        if part is not None:
            banned |= set(json.loads(part["banned_rights"]))
        return None, banned

    def tl_channel(self, row: sqlite3.Row, viewer: int | None) -> TLObject:
        """The chat as the viewer sees it: a Channel, or a Chat for a basic group."""
        part = self.participant(row["channel_id"], viewer)
        if row["kind"] == "group":
            return self.tl_chat(row, part)
        count = self.conn.execute(
            "SELECT COUNT(*) FROM participants WHERE channel_id = ?",
            (row["channel_id"],)).fetchone()[0]
        admin_rights, _ = self.rights(row, part)
        admin = types.ChatAdminRights(**{r: True for r in admin_rights}) \
            if admin_rights is not None else None
        own = set(json.loads(part["banned_rights"])) if part is not None else set()
        default = json.loads(row["default_banned"])
        megagroup = row["kind"] != "channel"
        return types.Channel(
            id=row["channel_id"], title=row["title"], photo=types.ChatPhotoEmpty(),
            date=_dt(row["date"]), creator=part is not None and part["role"] == "creator",
            left=part is None,
            broadcast=row["kind"] == "channel", megagroup=row["kind"] != "channel",
            forum=row["kind"] == "forum", noforwards=bool(row["noforwards"]),
            slowmode_enabled=bool(row["slowmode_seconds"]),
            access_hash=row["access_hash"], username=row["username"],
            admin_rights=admin, participants_count=count,
            banned_rights=_banned_rights(own) if own and admin is None else None,
            default_banned_rights=_banned_rights(default) if megagroup else None)

    def tl_chat(self, row: sqlite3.Row, part: sqlite3.Row | None) -> types.Chat:
        count = self.conn.execute("SELECT COUNT(*) FROM participants WHERE channel_id = ?",
                                  (row["channel_id"],)).fetchone()[0]
        admin_rights, _ = self.rights(row, part)
        return types.Chat(
            id=row["channel_id"], title=row["title"], photo=types.ChatPhotoEmpty(),
            participants_count=count, date=_dt(row["date"]), version=1,
            creator=part is not None and part["role"] == "creator", left=part is None,
            noforwards=bool(row["noforwards"]),
            admin_rights=types.ChatAdminRights(**{r: True for r in admin_rights})
            if admin_rights is not None else None,
            default_banned_rights=_banned_rights(json.loads(row["default_banned"])))

    def message_for(self, row: sqlite3.Row, viewer: int | None) -> TLObject:
        """The stored message as the viewer sees it (in a basic group: with the viewer's
        own message ids; the World API, viewer None, sees the group's internal ids)."""
        message = _parse(row["body"])
        message.out = bool(viewer) and row["sender_id"] == viewer
        self.refresh_reference(getattr(message, "media", None))
        if isinstance(message.peer_id, types.PeerChat) and viewer:
            message.id = self.box_id(viewer, row["channel_id"], row["id"]) or 0
            reply = getattr(message, "reply_to", None)
            if reply is not None:
                reply.reply_to_msg_id = self.box_id(viewer, row["channel_id"],
                                                    reply.reply_to_msg_id) or 0
        return message

    # -- basic groups: message ids and pts per receiving account ------------------------

    def box_id(self, user_id: int, chat_id: int, message_id: int) -> int | None:
        """The account's own id of a basic group's message."""
        row = self.conn.execute(
            "SELECT box_id FROM inbox WHERE user_id = ? AND channel_id = ? AND message_id = ?",
            (user_id, chat_id, message_id)).fetchone()
        return row[0] if row else None

    def group_message_id(self, user_id: int, chat_id: int, box_id: int) -> int | None:
        """The group's internal id of the account's message `box_id` in that group."""
        row = self.conn.execute(
            "SELECT message_id FROM inbox WHERE user_id = ? AND box_id = ? "
            "AND channel_id = ?", (user_id, box_id, chat_id)).fetchone()
        return row[0] if row else None

    def deliver_to_boxes(self, chat_id: int, message_id: int) -> None:
        """Give each member of a basic group the message under its own next id and pts."""
        members = self.conn.execute(
            "SELECT user_id FROM participants WHERE channel_id = ? AND role != 'banned'",
            (chat_id,)).fetchall()
        for (user_id,) in members:
            self.conn.execute("UPDATE accounts SET box_top = box_top + 1, pts = pts + 1 "
                              "WHERE user_id = ?", (user_id,))
            box, pts = self.conn.execute("SELECT box_top, pts FROM accounts WHERE user_id = ?",
                                         (user_id,)).fetchone()
            self.conn.execute(
                "INSERT INTO inbox (user_id, box_id, channel_id, message_id, pts) "
                "VALUES (?, ?, ?, ?, ?)", (user_id, box, chat_id, message_id, pts))

    def box_update(self, user_id: int, row: sqlite3.Row) -> TLObject:
        """UpdateNewMessage of a basic group's message for one member (its pts)."""
        pts = self.conn.execute(
            "SELECT pts FROM inbox WHERE user_id = ? AND channel_id = ? AND message_id = ?",
            (user_id, row["channel_id"], row["id"])).fetchone()[0]
        return types.UpdateNewMessage(message=self.message_for(row, user_id), pts=pts,
                                      pts_count=1)

    def account_pts(self, user_id: int) -> int:
        return self.conn.execute("SELECT pts FROM accounts WHERE user_id = ?",
                                 (user_id,)).fetchone()[0]

    # -- file references ----------------------------------------------------------------

    def file_reference(self, media_id: int) -> bytes:
        """The reference served now: issued at the start of the current half-lifetime, so
        it stays valid between half a lifetime and a lifetime of world time."""
        lifetime = self.setting("file_reference_lifetime")
        step = max(lifetime // 2, 1)
        issued = self.now() // step * step if lifetime else 0
        return struct.pack(">q", issued) + self._reference_tag(media_id, issued)

    def _reference_tag(self, media_id: int, issued: int) -> bytes:
        secret = self.meta("secret", "").encode()
        return hmac.new(secret, f"{media_id}:{issued}".encode(), hashlib.sha256).digest()[:12]

    def check_reference(self, media_id: int, reference: bytes) -> None:
        """FILE_REFERENCE_EXPIRED once a reference is older than the world's lifetime."""
        if len(reference) != 20 or not hmac.compare_digest(
                reference[8:], self._reference_tag(media_id, struct.unpack(">q",
                                                                           reference[:8])[0])):
            raise RpcFailure(400, "FILE_REFERENCE_INVALID" if reference
                             else "FILE_REFERENCE_EMPTY")
        issued = struct.unpack(">q", reference[:8])[0]
        lifetime = self.setting("file_reference_lifetime")
        if lifetime and self.now() >= issued + lifetime:
            raise RpcFailure(400, "FILE_REFERENCE_EXPIRED")

    def refresh_reference(self, media: TLObject | None) -> None:
        """Give a message's photo or document the reference served now."""
        body = getattr(media, "photo", None) or getattr(media, "document", None)
        if isinstance(body, (types.Photo, types.Document)):
            body.file_reference = self.file_reference(body.id)

    def envelope(self, channel_row: sqlite3.Row, messages: list[sqlite3.Row],
                 viewer: int | None) -> tuple[list[types.Channel], list[types.User]]:
        """The chats and users a result mentioning these messages carries."""
        senders = [m["sender_id"] for m in messages]
        return [self.tl_channel(channel_row, viewer)], self.tl_users(senders, viewer)

    # -- access -------------------------------------------------------------------------

    def resolve_channel(self, peer: TLObject, viewer: int | None, *,
                        write: bool = False) -> sqlite3.Row:
        """The channel row an input peer/channel names, checked for the viewer's access."""
        if isinstance(peer, (types.InputPeerChannel, types.InputChannel)):
            row = self.channel_row(peer.channel_id)
            if row is None or row["access_hash"] != peer.access_hash:
                raise RpcFailure(400, "CHANNEL_INVALID")
        elif isinstance(peer, types.InputPeerChat):
            row = self.channel_row(peer.chat_id)
            if row is None or row["kind"] != "group" \
                    or self.participant(peer.chat_id, viewer) is None:
                raise RpcFailure(400, "CHAT_ID_INVALID")
        elif isinstance(peer, (types.InputPeerEmpty, types.InputChannelEmpty)):
            raise RpcFailure(400, "CHANNEL_INVALID")
        else:
            raise RpcFailure(400, "PEER_ID_INVALID")
        part = self.participant(row["channel_id"], viewer)
        if part is None and row["username"] is None:
            raise RpcFailure(400, "CHANNEL_PRIVATE")
        if part is not None and part["role"] == "banned":
            raise RpcFailure(400, "USER_BANNED_IN_CHANNEL" if write else "CHANNEL_PRIVATE")
        if write:
            self.check_can_write(row, part, viewer)
        return row

    def check_can_write(self, row: sqlite3.Row, part: sqlite3.Row | None,
                        viewer: int | None) -> None:
        """Refuse a write into the chat: a restricted account, a non-member, a broadcast
        channel without post_messages, a member without send_messages."""
        account = self.account_row(viewer) if viewer else None
        if account is not None and account["restricted"]:
            raise RpcFailure(400, "USER_BANNED_IN_CHANNEL")
        if part is None:
            raise RpcFailure(403, "CHAT_WRITE_FORBIDDEN")
        admin, banned = self.rights(row, part)
        if row["kind"] == "channel":
            if admin is None or "post_messages" not in admin:
                raise RpcFailure(403, "CHAT_WRITE_FORBIDDEN")
        elif "send_messages" in banned:
            raise RpcFailure(403, "CHAT_WRITE_FORBIDDEN")

    def check_send(self, channel: sqlite3.Row, viewer: int, contents: list,
                   topic: int | None) -> None:
        """Refuse sending these messages (the MessageMedia or None of each) for a missing
        media right, a closed topic or slow mode; else record the send for slow mode."""
        part = self.participant(channel["channel_id"], viewer)
        admin, banned = self.rights(channel, part)
        if admin is None:
            for media in contents:
                if media is not None and "send_media" in banned:
                    raise RpcFailure(403, "CHAT_SEND_MEDIA_FORBIDDEN")
                right = _media_right(media)
                if right in banned:
                    raise RpcFailure(403, MEDIA_RIGHTS[right])
        if topic and topic != GENERAL_TOPIC_ID and (admin is None
                                                     or "manage_topics" not in admin):
            closed = self.conn.execute(
                "SELECT closed FROM topics WHERE channel_id = ? AND topic_id = ?",
                (channel["channel_id"], topic)).fetchone()
            if closed is not None and closed[0]:
                raise RpcFailure(400, "TOPIC_CLOSED")
        slowmode = channel["slowmode_seconds"]
        if not slowmode or admin is not None or part is None:
            return
        now = self.now()
        if part["last_sent"] is not None and now - part["last_sent"] < slowmode:
            raise RpcFailure(420, f"SLOWMODE_WAIT_{slowmode - (now - part['last_sent'])}")
        if len(contents) > 1:
            raise RpcFailure(400, "SLOWMODE_MULTI_MSGS_DISABLED")
        self.conn.execute("UPDATE participants SET last_sent = ? WHERE channel_id = ? "
                          "AND user_id = ?", (now, channel["channel_id"], viewer))

    # -- writing messages ---------------------------------------------------------------

    def reply_header(self, channel: sqlite3.Row, reply_to_msg_id: int | None,
                     top_msg_id: int | None) -> tuple[types.MessageReplyHeader | None,
                                                      int | None]:
        """(reply header, topic id) for a message sent with these reply settings."""
        cid = channel["channel_id"]
        forum = channel["kind"] == "forum"
        if top_msg_id and forum and top_msg_id != GENERAL_TOPIC_ID \
                and not self.topic_exists(cid, top_msg_id):
            raise RpcFailure(400, "TOPIC_ID_INVALID")
        if not reply_to_msg_id:
            if forum and top_msg_id and top_msg_id != GENERAL_TOPIC_ID:
                return types.MessageReplyHeader(forum_topic=True,
                                                reply_to_msg_id=top_msg_id), top_msg_id
            return None, GENERAL_TOPIC_ID if forum else None
        target = self.conn.execute(
            "SELECT topic_id FROM messages WHERE channel_id = ? AND id = ?",
            (cid, reply_to_msg_id)).fetchone()
        if target is None:
            raise RpcFailure(400, "REPLY_TO_INVALID")
        if not forum:
            return types.MessageReplyHeader(reply_to_msg_id=reply_to_msg_id), None
        if self.topic_exists(cid, reply_to_msg_id):
            return types.MessageReplyHeader(forum_topic=True,
                                            reply_to_msg_id=reply_to_msg_id), reply_to_msg_id
        topic = target["topic_id"] or GENERAL_TOPIC_ID
        if topic == GENERAL_TOPIC_ID:
            return types.MessageReplyHeader(reply_to_msg_id=reply_to_msg_id), topic
        return types.MessageReplyHeader(forum_topic=True, reply_to_msg_id=reply_to_msg_id,
                                        reply_to_top_id=topic), topic

    def topic_exists(self, channel_id: int, topic_id: int) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM topics WHERE channel_id = ? AND topic_id = ?",
            (channel_id, topic_id)).fetchone() is not None

    def store_message(self, channel: sqlite3.Row, sender_id: int | None, *,
                      text: str = "", entities: list | None = None,
                      media: TLObject | None = None, reply: tuple | None = None,
                      grouped_id: int | None = None, fwd_from: TLObject | None = None,
                      action: TLObject | None = None, origin: str | None = None,
                      noforwards: bool = False, silent: bool = False) -> tuple[TLObject, int]:
        """Insert a new message (inside the caller's transaction); returns (message, pts).
        `silent` is the send's flag, kept on the message as Telegram does."""
        cid = channel["channel_id"]
        row = self.conn.execute("SELECT pts, top_id FROM channels WHERE channel_id = ?",
                                (cid,)).fetchone()
        pts, msg_id = row[0] + 1, row[1] + 1      # ids of deleted messages are not reused
        now = self.now()
        header, topic = reply if reply else (None, None)
        broadcast = channel["kind"] == "channel"
        peer = types.PeerChat(cid) if channel["kind"] == "group" else types.PeerChannel(cid)
        common = dict(id=msg_id, peer_id=peer, date=_dt(now),
                      out=False, post=broadcast,
                      from_id=None if broadcast or sender_id is None
                      else types.PeerUser(sender_id),
                      reply_to=header)
        if action is not None:
            message = types.MessageService(action=action, **common)
        else:
            message = types.Message(
                message=text, media=media, entities=entities or None, fwd_from=fwd_from,
                grouped_id=grouped_id, noforwards=noforwards or bool(channel["noforwards"]),
                silent=silent or None, views=1 if broadcast else None,
                forwards=0 if broadcast else None, **common)
        self.conn.execute(
            "INSERT INTO messages (channel_id, id, date, sender_id, topic_id, grouped_id, "
            "reply_to_id, is_service, noforwards, pts, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cid, msg_id, now, sender_id, topic, grouped_id,
             header.reply_to_msg_id if header else None, int(action is not None),
             int(bool(getattr(message, "noforwards", False))), pts, bytes(message)))
        self.conn.execute("UPDATE channels SET pts = ?, top_id = ? WHERE channel_id = ?",
                          (pts, msg_id, cid))
        body = getattr(media, "photo", None) or getattr(media, "document", None)
        if body is not None:        # the chat a photo or document was first posted in
            self.conn.execute("UPDATE media SET channel_id = ? WHERE media_id = ? "
                              "AND channel_id IS NULL", (cid, body.id))
        self.conn.execute(
            "INSERT INTO events (channel_id, pts, message_id, origin, date) "
            "VALUES (?, ?, ?, ?, ?)", (cid, pts, msg_id, origin, now))
        if channel["kind"] == "group":
            self.deliver_to_boxes(cid, msg_id)
        return message, pts

    def check_random_id(self, channel_id: int, sender_id: int,
                        random_id: int | None) -> int | None:
        """The message id already sent with this random_id, raising in mode "error"."""
        if not random_id:
            return None
        row = self.conn.execute(
            "SELECT message_id, date FROM random_ids WHERE channel_id = ? AND sender_id = ? "
            "AND random_id = ?", (channel_id, sender_id, random_id)).fetchone()
        memory = self.setting("random_id_memory")
        if row is None or memory and self.now() - row["date"] > memory:
            return None
        if self.meta("random_id_mode", "original") == "error":
            raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
        return row[0]

    def remember_random_id(self, channel_id: int, sender_id: int, random_id: int | None,
                           message_id: int) -> None:
        if random_id:
            self.conn.execute(
                "INSERT OR REPLACE INTO random_ids (channel_id, sender_id, random_id, "
                "message_id, date) VALUES (?, ?, ?, ?, ?)",
                (channel_id, sender_id, random_id, message_id, self.now()))

    def sent_updates(self, channel: sqlite3.Row, sent: list[tuple[int | None, int]],
                     viewer: int) -> types.Updates:
        """The Updates a send returns: UpdateMessageID + UpdateNewChannelMessage each."""
        cid = channel["channel_id"]
        updates: list[TLObject] = []
        rows = []
        group = channel["kind"] == "group"
        for random_id, msg_id in sent:
            row = self.conn.execute(
                "SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                (cid, msg_id)).fetchone()
            rows.append(row)
            if random_id:
                seen_id = self.box_id(viewer, cid, msg_id) if group else msg_id
                updates.append(types.UpdateMessageID(id=seen_id, random_id=random_id))
        for row in rows:
            updates.append(self.box_update(viewer, row) if group else
                           types.UpdateNewChannelMessage(
                               message=self.message_for(row, viewer), pts=row["pts"],
                               pts_count=1))
        chats, users = self.envelope(channel, rows, viewer)
        return types.Updates(updates=updates, users=users, chats=chats,
                             date=_dt(self.now()), seq=0)

    def edit_message(self, channel: sqlite3.Row, row: sqlite3.Row, *, text: str | None,
                     entities: list | None, media: TLObject | None,
                     origin: str | None) -> int:
        """Change a message's text/entities/media (edit_date set); returns the event pts."""
        message = _parse(row["body"])
        if media is not None:
            message.media = media
        if text is not None:
            message.message, message.entities = text, entities or None
        limit, error = (CAPTION_MAX, "MEDIA_CAPTION_TOO_LONG") if message.media \
            else (TEXT_MAX, "MESSAGE_TOO_LONG")
        if len(message.message) > limit:
            raise RpcFailure(400, error)
        if bytes(message) == bytes(_parse(row["body"])):
            raise RpcFailure(400, "MESSAGE_NOT_MODIFIED")
        message.edit_date = _dt(self.now())
        self.conn.execute("UPDATE messages SET body = ? WHERE channel_id = ? AND id = ?",
                          (bytes(message), channel["channel_id"], row["id"]))
        return self.log_event(channel, "edit", row["id"], 1, origin)

    def delete_messages(self, channel: sqlite3.Row, ids: list[int],
                        origin: str | None) -> tuple[int, int]:
        """Delete these (existing) messages; returns (pts, pts_count) of the event."""
        if not ids:
            return channel["pts"], 0
        marks = ",".join("?" * len(ids))
        self.conn.execute(f"DELETE FROM messages WHERE channel_id = ? AND id IN ({marks})",
                          (channel["channel_id"], *ids))
        return self.log_event(channel, "delete", 0, len(ids), origin, ids), len(ids)

    def log_event(self, channel: sqlite3.Row, kind: str, message_id: int, pts_count: int,
                  origin: str | None, deleted: list[int] | None = None) -> int:
        """Advance the chat's pts by pts_count for an edit or deletion; returns the pts."""
        pts = self.conn.execute("SELECT pts FROM channels WHERE channel_id = ?",
                                (channel["channel_id"],)).fetchone()[0] + pts_count
        self.conn.execute("UPDATE channels SET pts = ? WHERE channel_id = ?",
                          (pts, channel["channel_id"]))
        self.conn.execute(
            "INSERT INTO events (channel_id, pts, message_id, origin, kind, deleted, date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (channel["channel_id"], pts, message_id, origin,
                                             kind, json.dumps(deleted) if deleted else None,
                                             self.now()))
        return pts

    def event_update(self, event: sqlite3.Row,
                     viewer: int | None) -> tuple[TLObject, sqlite3.Row | None]:
        """(the Update an event stands for, the message row it carries). A new or edited
        message deleted since comes as its deletion, so the pts sequence has no hole."""
        cid = event["channel_id"]
        if event["kind"] == "delete":
            ids = json.loads(event["deleted"])
            return types.UpdateDeleteChannelMessages(
                channel_id=cid, messages=ids, pts=event["pts"], pts_count=len(ids)), None
        message = self.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                                    (cid, event["message_id"])).fetchone()
        if message is None:
            return types.UpdateDeleteChannelMessages(
                channel_id=cid, messages=[event["message_id"]], pts=event["pts"],
                pts_count=1), None
        kind = types.UpdateEditChannelMessage if event["kind"] == "edit" \
            else types.UpdateNewChannelMessage
        return kind(message=self.message_for(message, viewer), pts=event["pts"],
                    pts_count=1), message

    # -- media --------------------------------------------------------------------------

    def store_media(self, kind: str, data: bytes, *, mime_type: str = "",
                    attributes: list | None = None) -> TLObject:
        """Keep uploaded bytes as a Photo or Document; returns the MessageMedia."""
        media_id, access_hash = _random_long(), _random_long()
        file_reference = self.file_reference(media_id)
        now = _dt(self.now())
        if kind == "photo":
            body: TLObject = types.Photo(
                id=media_id, access_hash=access_hash, file_reference=file_reference,
                date=now, dc_id=DC_ID, sizes=_photo_sizes(data))
        else:
            body = types.Document(
                id=media_id, access_hash=access_hash, file_reference=file_reference,
                date=now, mime_type=mime_type or "application/octet-stream",
                size=len(data), dc_id=DC_ID, attributes=attributes or [])
        self.conn.execute(
            "INSERT INTO media (media_id, kind, access_hash, file_reference, body, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (media_id, kind, access_hash, file_reference, bytes(body), data))
        return self.media_wrapper(body)

    @staticmethod
    def media_wrapper(body: TLObject) -> TLObject:
        if isinstance(body, types.Photo):
            return types.MessageMediaPhoto(photo=body)
        return types.MessageMediaDocument(document=body)

    def stored_media(self, media: TLObject) -> TLObject:
        """The MessageMedia an InputPhoto/InputDocument sent by reference stands for:
        refused from a chat with protected content, or with an expired reference."""
        row = self.conn.execute(
            "SELECT m.body, m.access_hash, c.noforwards FROM media m LEFT JOIN channels c "
            "ON c.channel_id = m.channel_id WHERE m.media_id = ?", (media.id,)).fetchone()
        if row is None or row["access_hash"] != media.access_hash:
            raise RpcFailure(400, "MEDIA_INVALID")
        if row["noforwards"]:
            raise RpcFailure(400, "CHAT_FORWARDS_RESTRICTED")
        self.check_reference(media.id, media.file_reference)
        wrapper = self.media_wrapper(_parse(row["body"]))
        self.refresh_reference(wrapper)
        return wrapper

    def assemble_upload(self, user_id: int, input_file: TLObject) -> bytes:
        rows = self.conn.execute(
            "SELECT part, data FROM upload_parts WHERE user_id = ? AND file_id = ? "
            "ORDER BY part", (user_id, input_file.id)).fetchall()
        have = {row["part"]: row["data"] for row in rows}
        for part in range(input_file.parts):
            if part not in have:
                raise RpcFailure(400, f"FILE_PART_{part}_MISSING")
        self.conn.execute("DELETE FROM upload_parts WHERE user_id = ? AND file_id = ?",
                          (user_id, input_file.id))
        return b"".join(have[part] for part in range(input_file.parts))

    def input_media(self, user_id: int, media: TLObject) -> TLObject:
        """The MessageMedia an InputMedia of a send stands for (uploaded or existing)."""
        if isinstance(media, types.InputMediaUploadedPhoto):
            return self.store_media("photo", self.assemble_upload(user_id, media.file))
        if isinstance(media, types.InputMediaUploadedDocument):
            if media.thumb is not None:
                self.assemble_upload(user_id, media.thumb)     # thumbnails are not kept
            return self.store_media("document", self.assemble_upload(user_id, media.file),
                                    mime_type=media.mime_type, attributes=media.attributes)
        if isinstance(media, types.InputMediaPhoto) \
                and isinstance(media.id, types.InputPhoto):
            return self.stored_media(media.id)
        if isinstance(media, types.InputMediaDocument) \
                and isinstance(media.id, types.InputDocument):
            return self.stored_media(media.id)
        raise RpcFailure(400, "MEDIA_INVALID")

    # -- reading ------------------------------------------------------------------------

    def history_page(self, channel_id: int, where: str, params: tuple, *, offset_id: int,
                     offset_date: int, add_offset: int, limit: int, max_id: int,
                     min_id: int) -> list[sqlite3.Row]:
        """Telegram's history paging: newest first, exclusive offset_id/min_id/max_id."""
        limit = max(0, min(limit or HISTORY_PAGE_MAX, HISTORY_PAGE_MAX))
        clauses = ["channel_id = ?", where]
        args: list[Any] = [channel_id, *params]
        if min_id:
            clauses.append("id > ?")
            args.append(min_id)
        if max_id:
            clauses.append("id < ?")
            args.append(max_id)
        base = " AND ".join(clauses)
        if offset_id:
            skipped = self.conn.execute(
                f"SELECT COUNT(*) FROM messages WHERE {base} AND id >= ?",
                (*args, offset_id)).fetchone()[0]
        elif offset_date:
            skipped = self.conn.execute(
                f"SELECT COUNT(*) FROM messages WHERE {base} AND date >= ?",
                (*args, offset_date)).fetchone()[0]
        else:
            skipped = 0
        start = skipped + add_offset
        end = start + limit
        start = max(start, 0)
        if end <= start:
            return []
        return self.conn.execute(
            f"SELECT * FROM messages WHERE {base} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*args, end - start, start)).fetchall()

    def channel_messages(self, channel: sqlite3.Row, rows: list[sqlite3.Row], count: int,
                         viewer: int | None) -> types.messages.ChannelMessages:
        chats, users = self.envelope(channel, rows, viewer)
        return types.messages.ChannelMessages(
            pts=channel["pts"], count=count,
            messages=[self.message_for(row, viewer) for row in rows],
            topics=[], chats=chats, users=users)

    def tl_topic(self, channel: sqlite3.Row, row: sqlite3.Row,
                 viewer: int | None) -> types.ForumTopic:
        """A row of all_topics as a ForumTopic."""
        cid = channel["channel_id"]
        return types.ForumTopic(
            id=row["topic_id"], date=_dt(row["date"]), peer=types.PeerChannel(cid),
            title=row["title"], icon_color=row["icon_color"], top_message=row["top_id"],
            closed=bool(row["closed"]),
            read_inbox_max_id=0, read_outbox_max_id=0, unread_count=0,
            unread_mentions_count=0, unread_reactions_count=0, unread_poll_votes_count=0,
            from_id=types.PeerUser(row["creator_id"] or 0),
            notify_settings=types.PeerNotifySettings(),
            my=bool(viewer) and row["creator_id"] == viewer)

    def all_topics(self, channel: sqlite3.Row) -> list[sqlite3.Row]:
        """The forum's topics (General, id 1, included) as Telegram lists them: by last
        activity, i.e. the date and id of each topic's newest message (top_date, top_id),
        newest first, then by topic id."""
        return self.conn.execute(
            "SELECT t.*, COALESCE(m.id, t.topic_id) AS top_id, "
            "COALESCE(m.date, t.date) AS top_date FROM ("
            "  SELECT topic_id, title, icon_color, creator_id, date, closed FROM topics "
            "  WHERE channel_id = :c UNION ALL "
            "  SELECT :general, 'General', 0, creator_id, date, 0 FROM channels "
            "  WHERE channel_id = :c) t "
            "LEFT JOIN messages m ON m.channel_id = :c AND m.id = (SELECT MAX(id) "
            "  FROM messages WHERE channel_id = :c AND topic_id = t.topic_id) "
            "ORDER BY top_date DESC, top_id DESC, t.topic_id DESC",
            {"c": channel["channel_id"], "general": GENERAL_TOPIC_ID}).fetchall()

    # -- updates across processes -------------------------------------------------------

    def lose_update(self, user_id: int) -> bool:
        """Whether a LOSE_UPDATES fault swallows the next update pushed to this user."""
        with transaction(self.conn):
            return _matching_fault(self.conn, self.account_name(user_id), None) is not None

    def last_event(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    def new_events(self, user_id: int, after: int, origin: str) -> tuple[int, bytes | None]:
        """(new cursor, serialised Updates or None) for the user's chats after `after`."""
        # The cursor first, then events up to it: one committed in between waits for the
        # next poll. Writers are serialised, so seq order is commit order.
        cursor = self.conn.execute(
            "SELECT COALESCE(MAX(seq), ?) FROM events", (after,)).fetchone()[0]
        rows = self.conn.execute(
            "SELECT e.* FROM events e "
            "JOIN participants p ON p.channel_id = e.channel_id AND p.user_id = ? "
            "WHERE e.seq > ? AND e.seq <= ? AND p.role != 'banned' ORDER BY e.seq",
            (user_id, after, cursor)).fetchall()
        updates, chats, users = [], {}, set()
        may_lose = rows and self.conn.execute(
            "SELECT 1 FROM faults WHERE error = ? LIMIT 1", (LOSE_UPDATES,)).fetchone()
        for row in rows:
            if row["origin"] == origin:
                continue        # this sender's own sends came back as its results
            if may_lose and self.lose_update(user_id):
                continue
            channel = self.channel_row(row["channel_id"])
            if channel["kind"] == "group":
                message = self.conn.execute(
                    "SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                    (row["channel_id"], row["message_id"])).fetchone()
                update = self.box_update(user_id, message)
            else:
                update, message = self.event_update(row, user_id)
            channel = self.channel_row(row["channel_id"])
            chats[channel["channel_id"]] = self.tl_channel(channel, user_id)
            if message is not None:
                users.add(message["sender_id"])
            updates.append(update)
        if not updates:
            return cursor, None
        result = types.Updates(updates=updates, users=self.tl_users(users, user_id),
                               chats=list(chats.values()), date=_dt(self.now()), seq=0)
        return cursor, bytes(result)


# ----------------------------------------------------------------------------- handlers
# One function per request type, called inside a BEGIN IMMEDIATE transaction with the
# Server, the authorised user id (None if the auth key is not logged in) and the request.
# Each returns the TL result or raises RpcFailure. `@answers(...)` above each handler names
# the requests it answers, the token bucket they spend and whether they work logged out.

class Context:
    """Who is asking: the server, the user behind the auth key, the sender's origin tag."""

    def __init__(self, server: Server, user_id: int | None, key_id: str, origin: str):
        self.server = server
        self.conn = server.conn
        self.user_id = user_id
        self.key_id = key_id
        self.origin = origin


@dataclass(frozen=True)
class Answer:
    """How the simulator answers one request type."""

    handler: Callable[[Context, TLObject], Any]
    bucket: str | None          # the token bucket it spends ("send" also spends "send_chat")
    limited: bool               # refused (PEER_FLOOD) to a PeerFlood-limited account
    logged_out: bool            # answered to an auth key that is not logged in


ANSWERS: dict[str, Answer] = {}     # "messages.SendMessageRequest" -> its Answer


def answers(*requests: str, bucket: str | None = None, limited: bool = False,
            logged_out: bool = False) -> Callable:
    """Register the decorated handler as the answer to `requests`, named as under
    telethon.tl.functions (Telethon loads only when a request is first served)."""
    def register(handler: Callable[[Context, TLObject], Any]) -> Callable:
        for name in requests:
            ANSWERS[name] = Answer(handler, bucket, limited, logged_out)
        return handler
    return register


@answers("help.GetConfigRequest", logged_out=True)
def h_get_config(ctx: Context, request: TLObject) -> TLObject:
    now = ctx.server.now()
    return types.Config(
        date=_dt(now), expires=_dt(now + 3600), test_mode=False, this_dc=DC_ID,
        dc_options=[types.DcOption(id=DC_ID, ip_address=SIM_IP, port=SIM_PORT)],
        dc_txt_domain_name="simulated", chat_size_max=200, megagroup_size_max=200000,
        forwarded_count_max=FORWARD_MAX, online_update_period_ms=210000,
        offline_blur_timeout_ms=5000, offline_idle_timeout_ms=30000,
        online_cloud_timeout_ms=300000, notify_cloud_delay_ms=30000,
        notify_default_delay_ms=1500, push_chat_period_ms=60000, push_chat_limit=2,
        edit_time_limit=172800, revoke_time_limit=2147483647,
        revoke_pm_time_limit=2147483647, rating_e_decay=2419200, stickers_recent_limit=200,
        channels_read_media_period=604800, call_receive_timeout_ms=20000,
        call_ring_timeout_ms=90000, call_connect_timeout_ms=30000,
        call_packet_timeout_ms=10000, me_url_prefix="https://t.me/",
        caption_length_max=1024, message_length_max=4096, webfile_dc_id=DC_ID)


@answers("help.GetNearestDcRequest", logged_out=True)
def h_nearest_dc(ctx: Context, request: TLObject) -> TLObject:
    return types.NearestDc(country="ZZ", this_dc=DC_ID, nearest_dc=DC_ID)


@answers("PingRequest", logged_out=True)
def h_ping(ctx: Context, request: TLObject) -> TLObject:
    return types.Pong(msg_id=0, ping_id=request.ping_id)


@answers("auth.SendCodeRequest", logged_out=True)
def h_send_code(ctx: Context, request: TLObject) -> TLObject:
    phone = _normalise_phone(request.phone_number)
    if not phone:
        raise RpcFailure(400, "PHONE_NUMBER_INVALID")
    code_hash = secrets.token_hex(8)
    ctx.conn.execute(
        "INSERT INTO login_codes (phone, code_hash, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT(phone) DO UPDATE SET code_hash = excluded.code_hash, "
        "created_at = excluded.created_at", (phone, code_hash, utc_text()))
    code = ctx.server.meta("login_code", DEFAULT_LOGIN_CODE)
    return types.auth.SentCode(type=types.auth.SentCodeTypeApp(length=len(code)),
                               phone_code_hash=code_hash)


@answers("auth.SignInRequest", logged_out=True)
def h_sign_in(ctx: Context, request: TLObject) -> TLObject:
    phone = _normalise_phone(request.phone_number)
    row = ctx.conn.execute("SELECT code_hash FROM login_codes WHERE phone = ?",
                           (phone,)).fetchone()
    if row is None or row[0] != request.phone_code_hash:
        raise RpcFailure(400, "PHONE_CODE_EXPIRED")
    if request.phone_code != ctx.server.meta("login_code", DEFAULT_LOGIN_CODE):
        raise RpcFailure(400, "PHONE_CODE_INVALID")
    account = ctx.conn.execute("SELECT * FROM accounts WHERE phone = ?", (phone,)).fetchone()
    if account is None:
        raise RpcFailure(400, "PHONE_NUMBER_UNOCCUPIED")
    ctx.conn.execute("DELETE FROM login_codes WHERE phone = ?", (phone,))
    ctx.conn.execute(
        "INSERT INTO auth_keys (key_id, user_id, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT(key_id) DO UPDATE SET user_id = excluded.user_id, revoked_at = NULL",
        (ctx.key_id, account["user_id"], utc_text()))
    return types.auth.Authorization(user=ctx.server.tl_user(account, account["user_id"]))


@answers("auth.LogOutRequest")
def h_log_out(ctx: Context, request: TLObject) -> TLObject:
    ctx.conn.execute("UPDATE auth_keys SET revoked_at = ? WHERE key_id = ?",
                     (utc_text(), ctx.key_id))
    return types.auth.LoggedOut()


@answers("updates.GetStateRequest")
def h_get_state(ctx: Context, request: TLObject) -> TLObject:
    return types.updates.State(pts=ctx.server.account_pts(ctx.user_id), qts=0,
                               date=_dt(ctx.server.now()), seq=0, unread_count=0)


@answers("updates.GetDifferenceRequest")
def h_get_difference(ctx: Context, request: TLObject) -> TLObject:
    """Basic groups' messages after the account's `pts` as new_messages; the user's
    channels with news (messages, edits, deletions) since `date` as UpdateChannelTooLong,
    to be fetched with GetChannelDifference."""
    server, viewer = ctx.server, ctx.user_id
    now = _dt(server.now())
    channels = ctx.conn.execute(
        "SELECT c.* FROM channels c JOIN participants p ON p.channel_id = c.channel_id "
        "WHERE p.user_id = ? AND p.role != 'banned' AND c.kind != 'group' AND EXISTS ("
        "SELECT 1 FROM events e WHERE e.channel_id = c.channel_id AND e.date >= ?) "
        "ORDER BY c.channel_id", (viewer, _ts(request.date))).fetchall()
    boxed = ctx.conn.execute(
        "SELECT m.* FROM inbox i JOIN messages m ON m.channel_id = i.channel_id "
        "AND m.id = i.message_id WHERE i.user_id = ? AND i.pts > ? ORDER BY i.pts",
        (viewer, request.pts)).fetchall()
    if not channels and not boxed:
        return types.updates.DifferenceEmpty(date=now, seq=0)
    groups = {m["channel_id"] for m in boxed}
    chats = [server.tl_channel(c, viewer) for c in channels] + [
        server.tl_channel(server.channel_row(g), viewer) for g in sorted(groups)]
    return types.updates.Difference(
        new_messages=[server.message_for(m, viewer) for m in boxed],
        new_encrypted_messages=[],
        other_updates=[types.UpdateChannelTooLong(channel_id=c["channel_id"], pts=c["pts"])
                       for c in channels],
        chats=chats, users=server.tl_users([m["sender_id"] for m in boxed], viewer),
        state=types.updates.State(pts=server.account_pts(viewer), qts=0, date=now, seq=0,
                                  unread_count=0))


@answers("updates.GetChannelDifferenceRequest")
def h_get_channel_difference(ctx: Context, request: TLObject) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.channel, viewer)
    limit = max(1, min(request.limit or HISTORY_PAGE_MAX, 1000))
    events = ctx.conn.execute(
        "SELECT * FROM events WHERE channel_id = ? AND pts > ? ORDER BY pts LIMIT ?",
        (channel["channel_id"], request.pts, limit)).fetchall()
    if not events:
        return types.updates.ChannelDifferenceEmpty(pts=channel["pts"], final=True,
                                                    timeout=30)
    new_messages, other_updates, rows = [], [], []
    for event in events:
        update, message = server.event_update(event, viewer)
        if message is not None:
            rows.append(message)
        if isinstance(update, types.UpdateNewChannelMessage):
            new_messages.append(update.message)
        else:
            other_updates.append(update)
    chats, users = server.envelope(channel, rows, viewer)
    return types.updates.ChannelDifference(
        pts=events[-1]["pts"], new_messages=new_messages, other_updates=other_updates,
        chats=chats, users=users, final=events[-1]["pts"] == channel["pts"], timeout=30)


def _input_user_id(ctx: Context, user: TLObject) -> int | None:
    if isinstance(user, (types.InputUserSelf, types.InputPeerSelf)):
        return ctx.user_id
    if isinstance(user, (types.InputUser, types.InputPeerUser)):
        row = ctx.server.account_row(user.user_id)
        if row is not None and row["access_hash"] == user.access_hash:
            return user.user_id
    return None


@answers("users.GetUsersRequest")
def h_get_users(ctx: Context, request: TLObject) -> list:
    found = []
    for user in request.id:
        user_id = _input_user_id(ctx, user)
        row = ctx.server.account_row(user_id) if user_id else None
        if row is not None:
            found.append(ctx.server.tl_user(row, ctx.user_id))
    return found


@answers("users.GetFullUserRequest")
def h_get_full_user(ctx: Context, request: TLObject) -> TLObject:
    user_id = _input_user_id(ctx, request.id)
    if user_id is None:
        raise RpcFailure(400, "USER_ID_INVALID")
    user = ctx.server.tl_user(ctx.server.account_row(user_id), ctx.user_id)
    full = types.UserFull(id=user_id, settings=types.PeerSettings(),
                          notify_settings=types.PeerNotifySettings(), common_chats_count=0)
    return types.users.UserFull(full_user=full, chats=[], users=[user])


@answers("contacts.ResolveUsernameRequest", bucket="resolve")
def h_resolve_username(ctx: Context, request: TLObject) -> TLObject:
    name = request.username.lstrip("@")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{3,31}", name):
        raise RpcFailure(400, "USERNAME_INVALID")
    server = ctx.server
    user = ctx.conn.execute("SELECT * FROM accounts WHERE username = ?", (name,)).fetchone()
    if user is not None:
        return types.contacts.ResolvedPeer(
            peer=types.PeerUser(user["user_id"]), chats=[],
            users=server.tl_users([user["user_id"]], ctx.user_id))
    chan = ctx.conn.execute("SELECT * FROM channels WHERE username = ?", (name,)).fetchone()
    if chan is None:
        raise RpcFailure(400, "USERNAME_NOT_OCCUPIED")
    return types.contacts.ResolvedPeer(
        peer=types.PeerChannel(chan["channel_id"]),
        chats=[server.tl_channel(chan, ctx.user_id)], users=[])


@answers("channels.GetChannelsRequest")
def h_get_channels(ctx: Context, request: TLObject) -> TLObject:
    chats = []
    for channel in request.id:
        row = ctx.server.resolve_channel(channel, ctx.user_id)
        chats.append(ctx.server.tl_channel(row, ctx.user_id))
    return types.messages.Chats(chats=chats)


@answers("messages.GetChatsRequest")
def h_get_chats(ctx: Context, request: TLObject) -> TLObject:
    """Basic groups by id (those the account is in)."""
    chats = []
    for chat_id in request.id:
        row = ctx.server.resolve_channel(types.InputPeerChat(chat_id), ctx.user_id)
        chats.append(ctx.server.tl_channel(row, ctx.user_id))
    return types.messages.Chats(chats=chats)


@answers("channels.GetFullChannelRequest")
def h_get_full_channel(ctx: Context, request: TLObject) -> TLObject:
    server = ctx.server
    row = server.resolve_channel(request.channel, ctx.user_id)
    part = server.participant(row["channel_id"], ctx.user_id)
    count = ctx.conn.execute("SELECT COUNT(*) FROM participants WHERE channel_id = ?",
                             (row["channel_id"],)).fetchone()[0]
    full = types.ChannelFull(
        id=row["channel_id"], about="", read_inbox_max_id=part["read_max_id"] if part else 0,
        read_outbox_max_id=0, unread_count=0, chat_photo=types.PhotoEmpty(id=0),
        notify_settings=types.PeerNotifySettings(), bot_info=[], pts=row["pts"],
        participants_count=count, slowmode_seconds=row["slowmode_seconds"] or None)
    return types.messages.ChatFull(full_chat=full, chats=[server.tl_channel(row, ctx.user_id)],
                                   users=[])


@answers("channels.JoinChannelRequest", bucket="join", limited=True)
def h_join_channel(ctx: Context, request: TLObject) -> TLObject:
    server = ctx.server
    row = server.resolve_channel(request.channel, ctx.user_id)
    part = server.participant(row["channel_id"], ctx.user_id)
    if part is not None:
        raise RpcFailure(400, "USER_ALREADY_PARTICIPANT")
    ctx.conn.execute("INSERT INTO participants (channel_id, user_id, role, joined_at) "
                     "VALUES (?, ?, 'member', ?)", (row["channel_id"], ctx.user_id, utc_text()))
    return types.Updates(updates=[types.UpdateChannel(channel_id=row["channel_id"])],
                         users=[], chats=[server.tl_channel(row, ctx.user_id)],
                         date=_dt(ctx.server.now()), seq=0)


@answers("channels.LeaveChannelRequest")
def h_leave_channel(ctx: Context, request: TLObject) -> TLObject:
    server = ctx.server
    row = server.resolve_channel(request.channel, ctx.user_id)
    if server.participant(row["channel_id"], ctx.user_id) is None:
        raise RpcFailure(400, "USER_NOT_PARTICIPANT")
    ctx.conn.execute("DELETE FROM participants WHERE channel_id = ? AND user_id = ?",
                     (row["channel_id"], ctx.user_id))
    return types.Updates(updates=[types.UpdateChannel(channel_id=row["channel_id"])],
                         users=[], chats=[server.tl_channel(row, ctx.user_id)],
                         date=_dt(ctx.server.now()), seq=0)


@answers("channels.ReadHistoryRequest")
def h_channels_read_history(ctx: Context, request: TLObject) -> bool:
    row = ctx.server.resolve_channel(request.channel, ctx.user_id)
    ctx.conn.execute(
        "UPDATE participants SET read_max_id = MAX(read_max_id, ?) "
        "WHERE channel_id = ? AND user_id = ?",
        (request.max_id or _max_message_id(ctx, row["channel_id"]), row["channel_id"],
         ctx.user_id))
    return True


def _max_message_id(ctx: Context, channel_id: int) -> int:
    return ctx.conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages WHERE channel_id = ?",
                            (channel_id,)).fetchone()[0]


@answers("messages.ReadHistoryRequest")
def h_messages_read_history(ctx: Context, request: TLObject) -> TLObject:
    if isinstance(request.peer, types.InputPeerChannel):
        raise RpcFailure(400, "PEER_ID_INVALID")
    if isinstance(request.peer, types.InputPeerChat):
        group = ctx.server.resolve_channel(request.peer, ctx.user_id)
        ctx.conn.execute("UPDATE participants SET read_max_id = MAX(read_max_id, ?) "
                         "WHERE channel_id = ? AND user_id = ?",
                         (request.max_id, group["channel_id"], ctx.user_id))
    return types.messages.AffectedMessages(pts=ctx.server.account_pts(ctx.user_id),
                                           pts_count=0)


def _history_args(request: TLObject) -> dict:
    return dict(offset_id=request.offset_id, offset_date=_ts(request.offset_date),
                add_offset=request.add_offset, limit=request.limit,
                max_id=request.max_id, min_id=request.min_id)


def _group_history(ctx: Context, group: sqlite3.Row, request: TLObject) -> TLObject:
    """A basic group's history in the viewer's own ids, Telegram's paging (newest first,
    exclusive offset_id/min_id/max_id, add_offset)."""
    server, viewer = ctx.server, ctx.user_id
    boxes = [(r[0], r[1]) for r in ctx.conn.execute(
        "SELECT i.box_id, m.date FROM inbox i JOIN messages m ON m.channel_id = i.channel_id"
        " AND m.id = i.message_id WHERE i.user_id = ? AND i.channel_id = ? "
        "AND (? = 0 OR i.box_id > ?) AND (? = 0 OR i.box_id < ?) ORDER BY i.box_id DESC",
        (viewer, group["channel_id"], request.min_id, request.min_id, request.max_id,
         request.max_id))]
    if request.offset_id:
        skipped = sum(1 for box, _ in boxes if box >= request.offset_id)
    elif _ts(request.offset_date):
        skipped = sum(1 for _, date in boxes if date >= _ts(request.offset_date))
    else:
        skipped = 0
    limit = max(0, min(request.limit or HISTORY_PAGE_MAX, HISTORY_PAGE_MAX))
    start = max(skipped + request.add_offset, 0)
    page = boxes[start:max(start, skipped + request.add_offset + limit)]
    rows = [ctx.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                             (group["channel_id"], server.group_message_id(
                                 viewer, group["channel_id"], box))).fetchone()
            for box, _ in page]
    chats, users = server.envelope(group, rows, viewer)
    return types.messages.MessagesSlice(
        count=len(boxes), messages=[server.message_for(r, viewer) for r in rows],
        topics=[], chats=chats, users=users)


@answers("messages.GetHistoryRequest", bucket="history")
def h_get_history(ctx: Context, request: TLObject) -> TLObject:
    server = ctx.server
    channel = server.resolve_channel(request.peer, ctx.user_id)
    if channel["kind"] == "group":
        return _group_history(ctx, channel, request)
    cid = channel["channel_id"]
    rows = server.history_page(cid, "1", (), **_history_args(request))
    count = ctx.conn.execute("SELECT COUNT(*) FROM messages WHERE channel_id = ?",
                             (cid,)).fetchone()[0]
    return server.channel_messages(channel, rows, count, ctx.user_id)


@answers("messages.GetRepliesRequest", bucket="history")
def h_get_replies(ctx: Context, request: TLObject) -> TLObject:
    server = ctx.server
    channel = server.resolve_channel(request.peer, ctx.user_id)
    cid, thread = channel["channel_id"], request.msg_id
    if channel["kind"] == "forum" and (thread == GENERAL_TOPIC_ID
                                        or server.topic_exists(cid, thread)):
        where, params = "topic_id = ?", (thread,)
    else:
        if ctx.conn.execute("SELECT 1 FROM messages WHERE channel_id = ? AND id = ?",
                            (cid, thread)).fetchone() is None:
            raise RpcFailure(400, "MSG_ID_INVALID")
        where, params = "reply_to_id = ?", (thread,)
    rows = server.history_page(cid, where, params, **_history_args(request))
    count = ctx.conn.execute(f"SELECT COUNT(*) FROM messages WHERE channel_id = ? AND {where}",
                             (cid, *params)).fetchone()[0]
    return server.channel_messages(channel, rows, count, ctx.user_id)


def _message_ids(ids: list) -> list[int]:
    result = []
    for item in ids:
        if isinstance(item, types.InputMessageID):
            result.append(item.id)
        elif isinstance(item, int):
            result.append(item)
        else:
            raise RpcFailure(400, "MESSAGE_ID_INVALID")
    return result


@answers("channels.GetMessagesRequest", bucket="history")
def h_channels_get_messages(ctx: Context, request: TLObject) -> TLObject:
    server = ctx.server
    channel = server.resolve_channel(request.channel, ctx.user_id)
    ids = _message_ids(request.id)
    if not ids:
        raise RpcFailure(400, "MESSAGE_IDS_EMPTY")
    found, messages = [], []
    for msg_id in ids:
        row = ctx.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                               (channel["channel_id"], msg_id)).fetchone()
        if row is None:
            messages.append(types.MessageEmpty(id=msg_id,
                                               peer_id=types.PeerChannel(channel["channel_id"])))
        else:
            found.append(row)
            messages.append(server.message_for(row, ctx.user_id))
    chats, users = server.envelope(channel, found, ctx.user_id)
    return types.messages.ChannelMessages(pts=channel["pts"], count=len(messages),
                                          messages=messages, topics=[], chats=chats,
                                          users=users)


@answers("messages.GetMessagesRequest", bucket="history")
def h_messages_get_messages(ctx: Context, request: TLObject) -> TLObject:
    """Messages by the account's own ids (basic groups; private chats are not modelled)."""
    server, viewer = ctx.server, ctx.user_id
    messages, rows, groups = [], [], {}
    for box in _message_ids(request.id):
        found = ctx.conn.execute(
            "SELECT m.* FROM inbox i JOIN messages m ON m.channel_id = i.channel_id "
            "AND m.id = i.message_id WHERE i.user_id = ? AND i.box_id = ?",
            (viewer, box)).fetchone()
        if found is None:
            messages.append(types.MessageEmpty(id=box))
            continue
        rows.append(found)
        messages.append(server.message_for(found, viewer))
        groups[found["channel_id"]] = server.tl_channel(
            server.channel_row(found["channel_id"]), viewer)
    return types.messages.Messages(
        messages=messages, topics=[], chats=list(groups.values()),
        users=server.tl_users([r["sender_id"] for r in rows], viewer))


def _reply_target(request: TLObject) -> tuple[int | None, int | None]:
    reply = getattr(request, "reply_to", None)
    if isinstance(reply, types.InputReplyToMessage):
        return reply.reply_to_msg_id, reply.top_msg_id
    return None, None


def _reply(server: Server, channel: sqlite3.Row, viewer: int, request: TLObject) -> tuple:
    """(reply header, topic) of a send; in a basic group the reply names the sender's own
    message id."""
    reply_to, top = _reply_target(request)
    if reply_to and channel["kind"] == "group":
        reply_to = server.group_message_id(viewer, channel["channel_id"], reply_to) or -1
    return server.reply_header(channel, reply_to, top)


def _send_one(ctx: Context, request: TLObject, *, text: str, entities: list | None,
              media_of: Any) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.peer, viewer, write=True)
    cid = channel["channel_id"]
    original = server.check_random_id(cid, viewer, request.random_id)
    if original is not None:
        return server.sent_updates(channel, [(request.random_id, original)], viewer)
    reply = _reply(server, channel, viewer, request)
    media = media_of() if media_of else None
    server.check_send(channel, viewer, [media], reply[1])
    message, _ = server.store_message(channel, viewer, text=text, entities=entities,
                                      media=media, reply=reply, origin=ctx.origin,
                                      noforwards=bool(request.noforwards),
                                      silent=bool(request.silent))
    server.remember_random_id(cid, viewer, request.random_id, message.id)
    return server.sent_updates(channel, [(request.random_id, message.id)], viewer)


@answers("messages.SendMessageRequest", bucket="send", limited=True)
def h_send_message(ctx: Context, request: TLObject) -> TLObject:
    if not request.message.strip():
        raise RpcFailure(400, "MESSAGE_EMPTY")
    if len(request.message) > TEXT_MAX:
        raise RpcFailure(400, "MESSAGE_TOO_LONG")
    return _send_one(ctx, request, text=request.message, entities=request.entities,
                     media_of=None)


@answers("messages.SendMediaRequest", bucket="send", limited=True)
def h_send_media(ctx: Context, request: TLObject) -> TLObject:
    if len(request.message) > CAPTION_MAX:
        raise RpcFailure(400, "MEDIA_CAPTION_TOO_LONG")
    return _send_one(ctx, request, text=request.message, entities=request.entities,
                     media_of=lambda: ctx.server.input_media(ctx.user_id, request.media))


@answers("messages.UploadMediaRequest")
def h_upload_media(ctx: Context, request: TLObject) -> TLObject:
    ctx.server.resolve_channel(request.peer, ctx.user_id, write=True)
    return ctx.server.input_media(ctx.user_id, request.media)


@answers("messages.SendMultiMediaRequest", bucket="send", limited=True)
def h_send_multi_media(ctx: Context, request: TLObject) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    items = request.multi_media
    if not items:
        raise RpcFailure(400, "MEDIA_EMPTY")
    if len(items) > ALBUM_MAX:
        raise RpcFailure(400, "MULTI_MEDIA_TOO_LONG")
    if any(len(item.message) > CAPTION_MAX for item in items):
        raise RpcFailure(400, "MEDIA_CAPTION_TOO_LONG")
    channel = server.resolve_channel(request.peer, viewer, write=True)
    cid = channel["channel_id"]
    reply = _reply(server, channel, viewer, request)
    grouped_id = _random_long()
    pending = []                        # (item, id sent before or None, media)
    for index, item in enumerate(items):
        original = server.check_random_id(cid, viewer, item.random_id)
        try:
            media = server.input_media(viewer, item.media) if original is None else None
        except RpcFailure as failure:       # Telegram names the album item that failed
            if failure.message == "FILE_REFERENCE_EXPIRED":
                raise RpcFailure(400, f"FILE_REFERENCE_{index}_EXPIRED") from None
            raise
        pending.append((item, original, media))
    server.check_send(channel, viewer, [m for _, o, m in pending if o is None], reply[1])
    sent = []
    for item, original, media in pending:
        if original is not None:
            sent.append((item.random_id, original))
            continue
        message, _ = server.store_message(
            channel, viewer, text=item.message, entities=item.entities, media=media,
            reply=reply, grouped_id=grouped_id, origin=ctx.origin,
            noforwards=bool(request.noforwards), silent=bool(request.silent))
        server.remember_random_id(cid, viewer, item.random_id, message.id)
        sent.append((item.random_id, message.id))
    return server.sent_updates(channel, sent, viewer)


@answers("messages.ForwardMessagesRequest", bucket="send", limited=True)
def h_forward_messages(ctx: Context, request: TLObject) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    if not request.id:
        raise RpcFailure(400, "MESSAGE_IDS_EMPTY")
    if len(request.id) > FORWARD_MAX:
        raise RpcFailure(400, "MESSAGE_IDS_TOO_MUCH")
    if request.random_id is None or len(request.random_id) != len(request.id):
        raise RpcFailure(400, "RANDOM_ID_INVALID")
    source = server.resolve_channel(request.from_peer, viewer)
    target = server.resolve_channel(request.to_peer, viewer, write=True)
    if "group" in (source["kind"], target["kind"]):
        raise RpcFailure(400, "SIMULATOR_UNSUPPORTED_BASIC_GROUP_FORWARD")
    sid, tid = source["channel_id"], target["channel_id"]
    reply_msg, top = _reply_target(request)
    reply = server.reply_header(target, reply_msg, request.top_msg_id or top)
    rows = []
    for msg_id, random_id in zip(request.id, request.random_id, strict=True):
        row = ctx.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                               (sid, msg_id)).fetchone()
        if row is not None and not row["is_service"]:     # missing ids are skipped
            rows.append((row, random_id))
    if source["noforwards"] or any(row["noforwards"] for row, _ in rows):
        raise RpcFailure(400, "CHAT_FORWARDS_RESTRICTED")
    server.check_send(target, viewer, [_parse(row["body"]).media for row, _ in rows], reply[1])
    groups: dict[int, int] = {}
    sent = []
    for row, random_id in rows:
        original = server.check_random_id(tid, viewer, random_id)
        if original is not None:
            sent.append((random_id, original))
            continue
        src = _parse(row["body"])
        grouped = groups.setdefault(row["grouped_id"], _random_long()) \
            if row["grouped_id"] else None
        text, entities = src.message, src.entities
        if request.drop_author:
            fwd = None
            if request.drop_media_captions and src.media:
                text, entities = "", None
        else:
            fwd = src.fwd_from or types.MessageFwdHeader(
                date=src.date, from_id=src.from_id or types.PeerChannel(sid),
                channel_post=src.id if source["kind"] == "channel" else None)
        message, _ = server.store_message(
            target, viewer, text=text, entities=entities, media=src.media, reply=reply,
            grouped_id=grouped, fwd_from=fwd, origin=ctx.origin,
            noforwards=bool(request.noforwards), silent=bool(request.silent))
        server.remember_random_id(tid, viewer, random_id, message.id)
        sent.append((random_id, message.id))
    return server.sent_updates(target, sent, viewer)


EDIT_TIME_LIMIT = 172800       # help.getConfig edit_time_limit: 48 h to edit one's message


def _channel_message(ctx: Context, channel: sqlite3.Row, msg_id: int) -> sqlite3.Row:
    row = ctx.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                           (channel["channel_id"], msg_id)).fetchone()
    if row is None:
        raise RpcFailure(400, "MESSAGE_ID_INVALID")
    return row


def _check_not_restricted(ctx: Context) -> None:
    if ctx.server.account_row(ctx.user_id)["restricted"]:
        raise RpcFailure(400, "USER_BANNED_IN_CHANNEL")


@answers("messages.EditMessageRequest")
def h_edit_message(ctx: Context, request: TLObject) -> TLObject:
    """Own messages (48 h, unless a broadcast admin with edit_messages); in a broadcast
    channel, any post with edit_messages. Others: MESSAGE_AUTHOR_REQUIRED."""
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.peer, viewer)
    if channel["kind"] == "group":
        raise RpcFailure(400, "SIMULATOR_UNSUPPORTED_BASIC_GROUP_EDIT")
    _check_not_restricted(ctx)
    row = _channel_message(ctx, channel, request.id)
    if row["is_service"]:
        raise RpcFailure(400, "MESSAGE_ID_INVALID")
    admin, _ = server.rights(channel, server.participant(channel["channel_id"], viewer))
    broadcast = channel["kind"] == "channel"
    editor = broadcast and admin is not None and "edit_messages" in admin
    own = row["sender_id"] == viewer and (not broadcast or admin is not None
                                          and "post_messages" in admin)
    if not (own or editor):
        raise RpcFailure(403, "MESSAGE_AUTHOR_REQUIRED")
    if not editor and server.now() - row["date"] > EDIT_TIME_LIMIT:
        raise RpcFailure(400, "MESSAGE_EDIT_TIME_EXPIRED")
    media = server.input_media(viewer, request.media) if request.media else None
    pts = server.edit_message(channel, row, text=request.message, entities=request.entities,
                              media=media, origin=ctx.origin)
    edited = _channel_message(ctx, channel, request.id)
    chats, users = server.envelope(channel, [edited], viewer)
    return types.Updates(updates=[types.UpdateEditChannelMessage(
        message=server.message_for(edited, viewer), pts=pts, pts_count=1)],
        users=users, chats=chats, date=_dt(server.now()), seq=0)


@answers("channels.DeleteMessagesRequest")
def h_channels_delete_messages(ctx: Context, request: TLObject) -> TLObject:
    """Own messages (in a broadcast channel: with post_messages), anyone's with the
    delete_messages admin right, else MESSAGE_DELETE_FORBIDDEN; unknown ids are skipped."""
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.channel, viewer)
    admin, _ = server.rights(channel, server.participant(channel["channel_id"], viewer))
    moderator = admin is not None and "delete_messages" in admin
    author_may = channel["kind"] != "channel" or admin is not None \
        and "post_messages" in admin
    ids = []
    for msg_id in dict.fromkeys(request.id):
        row = ctx.conn.execute("SELECT sender_id FROM messages WHERE channel_id = ? "
                               "AND id = ?", (channel["channel_id"], msg_id)).fetchone()
        if row is None:
            continue
        if not (moderator or row["sender_id"] == viewer and author_may):
            raise RpcFailure(403, "MESSAGE_DELETE_FORBIDDEN")
        ids.append(msg_id)
    pts, count = server.delete_messages(channel, ids, ctx.origin)
    return types.messages.AffectedMessages(pts=pts, pts_count=count)


@answers("messages.DeleteMessagesRequest")
def h_messages_delete_messages(ctx: Context, request: TLObject) -> TLObject:
    """Deleting in basic groups and private chats is not modelled: nothing is deleted."""
    return types.messages.AffectedMessages(pts=ctx.server.account_pts(ctx.user_id),
                                           pts_count=0)


def _topic_manager(ctx: Context, channel: sqlite3.Row, topic: int) -> sqlite3.Row:
    """The topic row, if the viewer may manage it (manage_topics, or its creator)."""
    row = ctx.conn.execute("SELECT * FROM topics WHERE channel_id = ? AND topic_id = ?",
                           (channel["channel_id"], topic)).fetchone()
    if row is None:
        raise RpcFailure(400, "TOPIC_ID_INVALID")
    admin, _ = ctx.server.rights(channel, ctx.server.participant(channel["channel_id"],
                                                                 ctx.user_id))
    if row["creator_id"] != ctx.user_id and (admin is None or "manage_topics" not in admin):
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    return row


@answers("messages.EditForumTopicRequest")
def h_edit_forum_topic(ctx: Context, request: TLObject) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.peer, viewer)
    _check_not_restricted(ctx)
    _topic_manager(ctx, channel, request.topic_id)
    msg_id = _edit_topic(server, channel, request.topic_id, viewer, ctx.origin,
                         title=request.title, closed=request.closed)
    return server.sent_updates(channel, [(None, msg_id)], viewer)


def _edit_topic(server: Server, channel: sqlite3.Row, topic: int, by: int | None,
                origin: str | None, *, title: str | None = None,
                closed: bool | None = None) -> int:
    """Rename, close or reopen a topic with its MessageActionTopicEdit; returns its id."""
    if title is not None and not title.strip():
        raise RpcFailure(400, "TOPIC_TITLE_EMPTY")
    if title is not None:
        server.conn.execute("UPDATE topics SET title = ? WHERE channel_id = ? AND "
                            "topic_id = ?", (title, channel["channel_id"], topic))
    if closed is not None:
        server.conn.execute("UPDATE topics SET closed = ? WHERE channel_id = ? AND "
                            "topic_id = ?", (int(closed), channel["channel_id"], topic))
    reply = server.reply_header(channel, None, topic)
    message, _ = server.store_message(
        channel, by, action=types.MessageActionTopicEdit(title=title, closed=closed),
        reply=reply, origin=origin)
    return message.id


@answers("messages.DeleteTopicHistoryRequest")
def h_delete_topic_history(ctx: Context, request: TLObject) -> TLObject:
    """Delete a topic with all its messages (delete_messages admin right, or the
    creator of the topic)."""
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.peer, viewer)
    if request.top_msg_id == GENERAL_TOPIC_ID:
        raise RpcFailure(400, "TOPIC_ID_INVALID")
    row = _topic_manager(ctx, channel, request.top_msg_id)
    admin, _ = server.rights(channel, server.participant(channel["channel_id"], viewer))
    if row["creator_id"] != viewer and "delete_messages" not in (admin or set()):
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    pts, count = _delete_topic(server, channel, request.top_msg_id, ctx.origin)
    return types.messages.AffectedHistory(pts=pts, pts_count=count, offset=0)


def _delete_topic(server: Server, channel: sqlite3.Row, topic: int,
                  origin: str | None) -> tuple[int, int]:
    ids = [r[0] for r in server.conn.execute(
        "SELECT id FROM messages WHERE channel_id = ? AND topic_id = ? ORDER BY id",
        (channel["channel_id"], topic))]
    server.conn.execute("DELETE FROM topics WHERE channel_id = ? AND topic_id = ?",
                        (channel["channel_id"], topic))
    return server.delete_messages(channel, ids, origin)


@answers("messages.CreateForumTopicRequest", bucket="topic_create")
def h_create_forum_topic(ctx: Context, request: TLObject) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    channel = server.resolve_channel(request.peer, viewer, write=True)
    if channel["kind"] != "forum":
        raise RpcFailure(400, "CHANNEL_FORUM_MISSING")
    admin, banned = server.rights(channel, server.participant(channel["channel_id"], viewer))
    may_create = "manage_topics" in admin if admin is not None \
        else "manage_topics" not in banned
    if not may_create:
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    if not request.title.strip():
        raise RpcFailure(400, "TOPIC_TITLE_EMPTY")
    cid = channel["channel_id"]
    original = server.check_random_id(cid, viewer, request.random_id)
    if original is not None:
        return server.sent_updates(channel, [(request.random_id, original)], viewer)
    topic_id = _create_topic(server, channel, request.title, request.icon_color, viewer,
                             ctx.origin)
    server.remember_random_id(cid, viewer, request.random_id, topic_id)
    return server.sent_updates(channel, [(request.random_id, topic_id)], viewer)


def _create_topic(server: Server, channel: sqlite3.Row, title: str, icon_color: int | None,
                  creator: int | None, origin: str | None) -> int:
    color = icon_color if icon_color is not None else 0x6FB9F0
    action = types.MessageActionTopicCreate(title=title, icon_color=color)
    message, _ = server.store_message(channel, creator, action=action, origin=origin)
    server.conn.execute("UPDATE messages SET topic_id = ? WHERE channel_id = ? AND id = ?",
                        (message.id, channel["channel_id"], message.id))
    server.conn.execute(
        "INSERT INTO topics (channel_id, topic_id, title, icon_color, creator_id, date) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (channel["channel_id"], message.id, title, color, creator, server.now()))
    return message.id


def _forum_topics(ctx: Context, channel: sqlite3.Row, rows: list[sqlite3.Row],
                  count: int) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    topics = [server.tl_topic(channel, row, viewer) for row in rows]
    tops = [ctx.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                             (channel["channel_id"], t.top_message)).fetchone()
            for t in topics]
    tops = [row for row in tops if row is not None]
    chats, users = server.envelope(channel, tops, viewer)
    return types.messages.ForumTopics(
        count=count, topics=topics, messages=[server.message_for(r, viewer) for r in tops],
        chats=chats, users=users, pts=channel["pts"], order_by_create_date=False)


@answers("messages.GetForumTopicsRequest")
def h_get_forum_topics(ctx: Context, request: TLObject) -> TLObject:
    """By last activity (Server.all_topics); the next page starts after the topic whose
    (top message date, top message id, topic id) are offset_date, offset_id,
    offset_topic: those of the last topic of the previous page."""
    channel = ctx.server.resolve_channel(request.peer, ctx.user_id)
    if channel["kind"] != "forum":
        raise RpcFailure(400, "CHANNEL_FORUM_MISSING")
    rows = ctx.server.all_topics(channel)
    if request.q:
        rows = [r for r in rows if request.q.lower() in r["title"].lower()]
    count = len(rows)
    if request.offset_date or request.offset_id or request.offset_topic:
        never = 2 ** 62
        offset = (_ts(request.offset_date) or never, request.offset_id or never,
                  request.offset_topic or never)
        rows = [r for r in rows if (r["top_date"], r["top_id"], r["topic_id"]) < offset]
    limit = max(1, min(request.limit or HISTORY_PAGE_MAX, HISTORY_PAGE_MAX))
    return _forum_topics(ctx, channel, rows[:limit], count)


@answers("messages.GetForumTopicsByIDRequest")
def h_get_forum_topics_by_id(ctx: Context, request: TLObject) -> TLObject:
    channel = ctx.server.resolve_channel(request.peer, ctx.user_id)
    if channel["kind"] != "forum":
        raise RpcFailure(400, "CHANNEL_FORUM_MISSING")
    by_id = {r["topic_id"]: r for r in ctx.server.all_topics(channel)}
    rows = [by_id[t] for t in request.topics if t in by_id]
    return _forum_topics(ctx, channel, rows, len(rows))


@answers("messages.GetDialogsRequest")
def h_get_dialogs(ctx: Context, request: TLObject) -> TLObject:
    server, viewer = ctx.server, ctx.user_id
    channels = ctx.conn.execute(
        "SELECT c.* FROM channels c JOIN participants p ON p.channel_id = c.channel_id "
        "WHERE p.user_id = ? AND p.role != 'banned'", (viewer,)).fetchall()
    dialogs, messages, chats, users = [], [], [], set()
    tops = []
    for channel in channels:
        top = ctx.conn.execute(
            "SELECT m.* FROM messages m WHERE m.channel_id = ? AND (? != 'group' OR EXISTS ("
            "SELECT 1 FROM inbox i WHERE i.user_id = ? AND i.channel_id = m.channel_id "
            "AND i.message_id = m.id)) ORDER BY m.id DESC LIMIT 1",
            (channel["channel_id"], channel["kind"], viewer)).fetchone()
        tops.append((top["date"] if top else channel["date"], channel, top))
    tops.sort(key=lambda item: item[0], reverse=True)
    for _, channel, top in tops:
        part = server.participant(channel["channel_id"], viewer)
        group = channel["kind"] == "group"
        top_id = (server.message_for(top, viewer).id if group else top["id"]) if top else 0
        dialogs.append(types.Dialog(
            peer=types.PeerChat(channel["channel_id"]) if group
            else types.PeerChannel(channel["channel_id"]), top_message=top_id,
            read_inbox_max_id=part["read_max_id"], read_outbox_max_id=top_id,
            unread_count=max(0, top_id - part["read_max_id"]), unread_mentions_count=0,
            unread_reactions_count=0, unread_poll_votes_count=0,
            notify_settings=types.PeerNotifySettings(),
            pts=None if group else channel["pts"]))
        chats.append(server.tl_channel(channel, viewer))
        if top is not None:
            messages.append(server.message_for(top, viewer))
            users.add(top["sender_id"])
    return types.messages.Dialogs(dialogs=dialogs, messages=messages, chats=chats,
                                  users=server.tl_users(users, viewer))


@answers("upload.SaveFilePartRequest", "upload.SaveBigFilePartRequest")
def h_save_file_part(ctx: Context, request: TLObject) -> bool:
    ctx.conn.execute(
        "INSERT OR REPLACE INTO upload_parts (user_id, file_id, part, data) "
        "VALUES (?, ?, ?, ?)", (ctx.user_id, request.file_id, request.file_part,
                                request.bytes))
    return True


@answers("upload.GetFileRequest")
def h_get_file(ctx: Context, request: TLObject) -> TLObject:
    location = request.location
    if not isinstance(location, (types.InputPhotoFileLocation,
                                 types.InputDocumentFileLocation)):
        raise RpcFailure(400, "LOCATION_INVALID")
    row = ctx.conn.execute("SELECT * FROM media WHERE media_id = ?",
                           (location.id,)).fetchone()
    if row is None or row["access_hash"] != location.access_hash:
        raise RpcFailure(400, "LOCATION_INVALID")
    ctx.server.check_reference(location.id, location.file_reference)
    if request.offset < 0 or request.limit <= 0:
        raise RpcFailure(400, "LIMIT_INVALID")
    chunk = bytes(row["data"][request.offset:request.offset + request.limit])
    return types.upload.File(type=types.storage.FileUnknown(), mtime=0, bytes=chunk)


@functools.cache
def handlers() -> dict[type, Answer]:
    """Request class -> how the simulator answers it (Telethon's classes, looked up on first
    use from the names the handlers are registered under)."""
    return {functools.reduce(getattr, name.split("."), functions): answer
            for name, answer in ANSWERS.items()}


def answered_requests() -> list[str]:
    """Every request type the simulator answers, e.g. "channels.GetMessagesRequest"."""
    return sorted(ANSWERS)


# ----------------------------------------------------------------------------- faults

def _matching_fault(conn: sqlite3.Connection, account: str,
                    request_name: str | None) -> Any:
    """Count this request (or, with request_name None, this update) against every matching
    fault; the one that fires, if any."""
    if request_name is None:
        rows = conn.execute(
            "SELECT * FROM faults WHERE error = ? AND (account IS NULL OR account = ?) "
            "ORDER BY fault_id", (LOSE_UPDATES, account)).fetchall()
    else:
        rows = conn.execute(
            "SELECT * FROM faults WHERE error != ? AND (account IS NULL OR account = ?) "
            "AND (request IS NULL OR request = ?) ORDER BY fault_id",
            (LOSE_UPDATES, account, request_name)).fetchall()
    now = time.time()
    firing = None
    for row in rows:
        seen = row["seen"] + 1
        spent = row["times"] is not None and row["fired"] >= row["times"]
        passed = [t for t in json.loads(row["passed_at"]) if now - t < RATE_WINDOW_SECONDS]
        if row["rate_per_minute"] is not None:
            fires = not spent and len(passed) >= row["rate_per_minute"]
        else:
            fires = not spent and seen > row["after"]
        if fires and firing is None:
            firing = row
            conn.execute("UPDATE faults SET seen = ?, fired = fired + 1, passed_at = ? "
                         "WHERE fault_id = ?", (seen, json.dumps(passed), row["fault_id"]))
        else:
            passed.append(now)
            conn.execute("UPDATE faults SET seen = ?, passed_at = ? WHERE fault_id = ?",
                         (seen, json.dumps(passed[-1000:]), row["fault_id"]))
    if firing is not None and firing["rate_per_minute"] is not None \
            and firing["seconds"] is None:
        passed = [t for t in json.loads(firing["passed_at"])
                  if now - t < RATE_WINDOW_SECONDS]
        wait = int(RATE_WINDOW_SECONDS - (now - min(passed))) + 1 if passed else 1
        return {**dict(firing), "seconds": wait}
    return firing


def _fault_failure(fault: Any) -> RpcFailure:
    name = fault["error"]
    template = NAMED_FAULTS.get(name, (fault["code"], name))[1]
    return RpcFailure(fault["code"], template.format(seconds=fault["seconds"] or 0))


# ----------------------------------------------------------------------------- the sender

class SimulatedSender:
    """Stands in for Telethon's MTProtoSender: requests go to the world database.

    Requests are handled in order on one worker thread (so SQLite waits never block the
    event loop); a poll task brings other processes' messages in as updates.
    """

    def __init__(self, client: TelegramClient, world_path: str | Path):
        self.auth_key = client.session.auth_key or crypto.AuthKey(None)
        self._world_path = Path(world_path).resolve()
        self._updates_queue = client._updates_queue
        self._connection = None
        self._user_connected = False
        self._disconnected_future: asyncio.Future | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._server: Server | None = None
        self._queue: asyncio.Queue | None = None
        self._tasks: set[asyncio.Task] = set()     # the connection's: cancelled on disconnect
        self._closing: asyncio.Task | None = None   # closing a connection given up
        self._origin = secrets.token_hex(8)
        self._cursor: int | None = None
        self._subscribed = False    # to updates: by a request not in invokeWithoutUpdates
        self._auto_reconnect = client._auto_reconnect
        self._retries = client._connection_retries
        self._retry_delay = client._retry_delay
        self._auto_reconnect_callback = client._handle_auto_reconnect

    # -- what TelegramClient uses ---------------------------------------------------------

    async def connect(self, connection: Any) -> bool:
        if self._user_connected:
            return False
        if not self._world_path.is_file():
            raise ConnectionError(f"simulated world {self._world_path} does not exist; "
                                  f"create it with: python telegram_sim.py init WORLD")
        if self.auth_key.key is None:
            self.auth_key.key = os.urandom(256)
        loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="telegram_sim")
        try:
            self._server = await loop.run_in_executor(self._executor, self._open_server)
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise ConnectionError(f"simulated world {self._world_path} cannot be used: "
                                  f"{exc}") from None
        self._connection = connection
        self._queue = asyncio.Queue()
        self._disconnected_future = loop.create_future()
        self._user_connected = True
        self._start(self._work_loop())
        self._start(self._poll_loop())
        return True

    def is_connected(self) -> bool:
        return self._user_connected

    def _transport_connected(self) -> bool:
        return self._user_connected

    def _keepalive_ping(self, rnd_id: int) -> None:
        """Pings have no use here: the simulated connection does not idle out."""

    async def disconnect(self) -> None:
        await self._shutdown(None)

    @property
    def disconnected(self) -> asyncio.Future:
        if self._disconnected_future is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return asyncio.shield(self._disconnected_future)

    def send(self, request: Any, ordered: bool = False) -> Any:
        if not self._user_connected:
            raise ConnectionError("Cannot send requests while disconnected")
        if isinstance(request, list):
            return [self.send(item) for item in request]
        wire = bytes(request)           # as the real sender: a bad request fails here
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, wire, future))
        return future

    # -- internals ------------------------------------------------------------------------

    def _start(self, coroutine: Any) -> None:
        """Run `coroutine` as a task of this connection: referenced until it ends, cancelled
        and awaited when the connection closes."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _open_server(self) -> Server:
        conn = open_database(self._world_path)
        conn.row_factory = sqlite3.Row
        try:
            server = Server(conn)
            if not server.is_world():
                raise sqlite3.DatabaseError("not a simulated world (no world tables)")
            with transaction(conn):
                conn.execute("INSERT OR IGNORE INTO auth_keys (key_id, user_id, created_at) "
                             "VALUES (?, NULL, ?)", (_key_id(self.auth_key), utc_text()))
        except sqlite3.Error:
            conn.close()
            raise
        return server

    async def _work_loop(self) -> None:
        while True:
            request, wire, future = await self._queue.get()
            if not await self._serve(request, wire, future):
                return

    async def _serve(self, request: TLObject, wire: bytes, future: asyncio.Future) -> bool:
        """Answer one request into its future; False once the connection is lost for good.

        A dropped connection is handled as Telethon's own sender does: with auto_reconnect
        it reconnects after retry_delay and sends the same request again (same random_id),
        up to connection_retries drops in a row; then the call fails with ConnectionError
        and the client is disconnected.
        """
        loop = asyncio.get_running_loop()
        drops = 0
        while not future.cancelled():
            try:
                body = await loop.run_in_executor(self._executor, self._handle, wire)
                with extensions.BinaryReader(body) as reader:
                    result = request.read_result(reader)
            except sqlite3.Error as exc:
                log.warning("simulated Telegram: world storage failed on %s: %s",
                            type(request).__name__, exc)
                failure = RpcFailure(500, "SIMULATOR_STORAGE_ERROR")
                if not future.done():
                    future.set_exception(errors.rpc_message_to_error(
                        types.RpcError(failure.code, failure.message), request))
                return True
            except RpcFailure as failure:
                error = errors.rpc_message_to_error(types.RpcError(failure.code, failure.message),
                                             request)
                if not future.done():
                    future.set_exception(error)
                return True
            except ConnectionDropped as dropped:
                drops += 1
                if self._auto_reconnect and drops <= self._retries:
                    log.info("%s; reconnecting (attempt %d)", dropped, drops)
                    await asyncio.sleep(self._retry_delay)
                    self._start(self._auto_reconnect_callback())
                    continue
                error = ConnectionError(f"{dropped}; gave up after {drops} drop(s)")
                self._user_connected = False        # at once, as the caller sees the error
                if not future.done():
                    future.set_exception(error)
                self._closing = loop.create_task(self._cleanup(self._detach(), error))
                return False
            except Exception as exc:    # a simulator bug must reach the caller, not hang it
                log.exception("simulated Telegram failed on %s", type(request).__name__)
                if not future.done():
                    future.set_exception(exc)
                return True
            self._store_own_updates(result)
            if not future.done():
                future.set_result(result)
            return True
        return True

    def _store_own_updates(self, result: Any) -> None:
        if isinstance(result, (types.Updates, types.UpdatesCombined, types.UpdateShort)):
            result._self_outgoing = True
            self._updates_queue.put_nowait(result)

    def _handle(self, wire: bytes) -> bytes:
        """Serve one serialised request (worker thread); returns the serialised result."""
        server = self._server
        conn = server.conn
        inner, subscribes = _unwrap(_parse(wire))
        self._subscribed = self._subscribed or subscribes
        name = type(inner).__name__
        key_id = _key_id(self.auth_key)
        with transaction(conn):
            user_id = server.user_for_key(key_id)
            account = server.account_name(user_id)
            conn.execute(
                "INSERT INTO counters (account, request, count) VALUES (?, ?, 1) "
                "ON CONFLICT(account, request) DO UPDATE SET count = count + 1",
                (account, name))
            fault = _matching_fault(conn, account, name)
        if fault is not None and fault["error"] == DISCONNECT:
            if fault["executed"]:
                self._execute(inner, user_id, key_id)
            raise ConnectionDropped(f"simulated connection drop during {name}")
        if fault is not None:
            raise _fault_failure(fault)
        return _serialize_result(self._execute(inner, user_id, key_id))

    def _execute(self, inner: TLObject, user_id: int | None, key_id: str) -> Any:
        answer = handlers().get(type(inner))
        if answer is None:
            log.warning("simulated Telegram does not answer %s", type(inner).__name__)
            raise RpcFailure(400, f"SIMULATOR_UNSUPPORTED_{type(inner).__name__.upper()}")
        if user_id is None and not answer.logged_out:
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        with transaction(self._server.conn):
            if user_id is not None:
                self._server.check_budget(user_id, inner)
            return answer.handler(Context(self._server, user_id, key_id, self._origin), inner)

    def _poll(self) -> bytes | None:
        if not self._subscribed:
            return None
        server = self._server
        user_id = server.user_for_key(_key_id(self.auth_key))
        if self._cursor is None or user_id is None:
            self._cursor = server.last_event()
            return None
        self._cursor, updates = server.new_events(user_id, self._cursor, self._origin)
        return updates

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._user_connected:
            try:
                body = await loop.run_in_executor(self._executor, self._poll)
            except sqlite3.Error as exc:
                log.warning("simulated Telegram: polling the world failed: %s", exc)
                body = None
            if body is not None:
                self._updates_queue.put_nowait(_parse(body))
            await asyncio.sleep(POLL_SECONDS)

    async def _shutdown(self, error: Exception | None) -> None:
        await self._cleanup(self._detach(), error)
        closing, self._closing = self._closing, None
        if closing is not None:         # a connection given up may still be closing
            await closing

    def _detach(self) -> tuple:
        """Mark disconnected and take the connection's state, so a new connect() is clean."""
        self._user_connected = False
        state = (list(self._tasks), self._queue, self._executor, self._server,
                 self._disconnected_future)
        self._tasks, self._queue, self._executor, self._server = set(), None, None, None
        return state

    @staticmethod
    async def _cleanup(state: tuple, error: Exception | None) -> None:
        """Stop the tasks, fail what is pending, close the world connection."""
        tasks, queue, executor, server, closed = state
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        while queue is not None and not queue.empty():
            _, _, future = queue.get_nowait()
            if not future.done():
                future.set_exception(error or ConnectionError("disconnected"))
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, server.conn.close)
            executor.shutdown(wait=False)
        if closed is not None and not closed.done():
            if error:
                closed.set_exception(error)
                closed.exception()          # retrieved: no "exception never retrieved"
            else:
                closed.set_result(None)


def attach(client: TelegramClient, world_path: str | Path) -> None:
    """Put `client` on the simulated world at `world_path` (call before `connect()`)."""
    client._sender = SimulatedSender(client, world_path)


# ----------------------------------------------------------------------------- the world API

class World:
    """The simulated Telegram's state in one SQLite file, with a Python API to shape it."""

    def __init__(self, path: str | Path):
        """Open the world at `path`, making it (empty, random_id mode "original") if new."""
        self.path = Path(path).resolve()
        self.conn = open_database(self.path)
        self.conn.row_factory = sqlite3.Row
        self._apply_schema()
        self.server = Server(self.conn)

    def _apply_schema(self) -> None:
        """Make the tables, and give a world made by an earlier version the columns added
        since (every added column has a default)."""
        statements = [s.strip() for s in WORLD_SCHEMA.split(";") if s.strip()]
        reference = sqlite3.connect(":memory:")
        try:
            reference.executescript(WORLD_SCHEMA)
            wanted = {table: reference.execute(f"PRAGMA table_info({table})").fetchall()
                      for (table,) in reference.execute(
                          "SELECT name FROM sqlite_master WHERE type = 'table' "
                          "AND name NOT LIKE 'sqlite_%'")}
        finally:
            reference.close()
        with transaction(self.conn):
            for statement in statements:
                self.conn.execute(statement)
            for table, columns in wanted.items():
                have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                for _, name, kind, not_null, default, _ in columns:
                    if name not in have:
                        self.conn.execute(
                            f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
                            f"{' NOT NULL' if not_null else ''}"
                            f"{f' DEFAULT {default}' if default is not None else ''}")
            self.conn.execute("INSERT OR IGNORE INTO meta (key, value) "
                              "VALUES ('random_id_mode', 'original')")
            self.conn.execute("INSERT OR IGNORE INTO meta (key, value) "
                              "VALUES ('created_at', ?)", (utc_text(),))
            self.conn.execute("INSERT OR IGNORE INTO meta (key, value) "
                              "VALUES ('secret', ?)", (secrets.token_hex(16),))

    @classmethod
    def create(cls, path: str | Path, *, random_id_mode: str = "original") -> World:
        """A new, empty world at `path` (refuses to overwrite an existing file)."""
        if random_id_mode not in RANDOM_ID_MODES:
            raise SimulatorError(f"random_id_mode must be one of {', '.join(RANDOM_ID_MODES)}")
        if Path(path).exists():
            raise SimulatorError(f"{path} already exists; pick another path or delete it")
        world = cls(path)
        with transaction(world.conn):
            world.conn.execute("UPDATE meta SET value = ? WHERE key = 'random_id_mode'",
                               (random_id_mode,))
        return world

    @classmethod
    def open(cls, path: str | Path) -> World:
        """An existing world."""
        if not Path(path).is_file():
            raise SimulatorError(f"{path}: no such world; create it with "
                                 f"`python telegram_sim.py init {path}`")
        if not is_sqlite_file(path):
            raise SimulatorError(f"{path} is not a simulated world (not SQLite)")
        probe = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            is_world = Server(probe).is_world()
        finally:
            probe.close()
        if not is_world:
            raise SimulatorError(f"{path} is not a simulated world (no world tables)")
        return cls(path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- world settings and clock --------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Change world settings (WORLD_SETTINGS names except clock_*), e.g.
        configure(rate_limits=False, file_reference_lifetime=600, random_id_memory=86400)."""
        for name, value in settings.items():
            if name not in WORLD_SETTINGS or name.startswith("clock_"):
                known = ", ".join(n for n in WORLD_SETTINGS if not n.startswith("clock_"))
                raise SimulatorError(f"unknown world setting {name!r}; known: {known}")
            if name == "random_id_mode":
                if value not in RANDOM_ID_MODES:
                    raise SimulatorError(f"random_id_mode must be one of "
                                         f"{', '.join(RANDOM_ID_MODES)}")
            elif int(value) < 0:
                raise SimulatorError(f"{name} must be >= 0")
        with transaction(self.conn):
            for name, value in settings.items():
                self._set_meta(name, value if name == "random_id_mode" else int(value))

    def settings(self) -> dict:
        """The world settings and rate limits in force."""
        values = {name: self.server.setting(name) for name in WORLD_SETTINGS}
        values["rate_limit_budgets"] = {name: self.server.rate_limit(name)
                                        for name in DEFAULT_RATE_LIMITS}
        return values

    def set_rate_limit(self, bucket: str, burst: int, per_second: float) -> None:
        """One token bucket's budget: `burst` requests at once, refilled at `per_second`."""
        if bucket not in DEFAULT_RATE_LIMITS:
            raise SimulatorError(f"unknown rate limit {bucket!r}; known: "
                                 f"{', '.join(DEFAULT_RATE_LIMITS)}")
        if burst < 1 or per_second <= 0:
            raise SimulatorError("a rate limit needs burst >= 1 and per_second > 0")
        with transaction(self.conn):
            self._set_meta(f"rate_limit:{bucket}", f"{burst}/{per_second!r}")

    def now(self) -> int:
        """World time (Unix seconds)."""
        return self.server.now()

    def advance_clock(self, seconds: float) -> int:
        """Move world time forward (file references age, token buckets refill, slow mode
        passes) without sleeping; returns the new world time."""
        if seconds < 0:
            raise SimulatorError("the world clock only moves forward")
        with transaction(self.conn):
            self._set_meta("clock_offset", self.server.setting("clock_offset") + seconds)
        return self.server.now()

    def freeze_clock(self, frozen: bool = True) -> None:
        """Stop world time (tests that need exact waits), or let it run on from where it
        stopped."""
        with transaction(self.conn):
            stopped_at = self.server.setting("clock_frozen")
            if frozen and not stopped_at:
                self._set_meta("clock_frozen", time.time())
            elif not frozen and stopped_at:
                self._set_meta("clock_offset", self.server.setting("clock_offset")
                               + stopped_at - time.time())
                self._set_meta("clock_frozen", 0.0)

    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                          (key, str(value)))

    # -- accounts -------------------------------------------------------------------------

    def add_account(self, name: str, *, phone: str | None = None,
                    first_name: str | None = None, username: str | None = None) -> int:
        """A new account; returns its user id."""
        with transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise SimulatorError(f"account {name!r} already exists")
            self._check_username_free(username)
            user_id = 1_000_000 + self.conn.execute(
                "SELECT COUNT(*) FROM accounts").fetchone()[0] + 1
            phone = _normalise_phone(phone) or f"1555{user_id % 10_000_000:07d}"
            self.conn.execute(
                "INSERT INTO accounts (user_id, name, phone, first_name, username, "
                "access_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, name, phone, first_name or name, username, _random_long(),
                 utc_text()))
        return user_id

    def _check_username_free(self, username: str | None) -> None:
        if username is None:
            return
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{3,31}", username):
            raise SimulatorError(f"invalid username {username!r}: 4-32 letters, digits or _")
        taken = self.conn.execute(
            "SELECT 1 FROM accounts WHERE username = ? UNION "
            "SELECT 1 FROM channels WHERE username = ?", (username, username)).fetchone()
        if taken:
            raise SimulatorError(f"username {username!r} is taken")

    def set_account(self, name: str, *, restricted: bool | None = None,
                    limited: bool | None = None, rate_limits: bool | None = None) -> None:
        """Mark an account restricted by Telegram (USER_BANNED_IN_CHANNEL on every write
        to a group or channel), limited (PEER_FLOOD on sends and joins), or exempt from
        the world's rate limits (rate_limits=False)."""
        user_id = self.account_id(name)
        changes = {"restricted": restricted, "limited": limited, "rate_limits": rate_limits}
        with transaction(self.conn):
            for column, value in changes.items():
                if value is not None:
                    self.conn.execute(f"UPDATE accounts SET {column} = ? WHERE user_id = ?",
                                      (int(value), user_id))

    def account_id(self, name: str) -> int:
        row = self.conn.execute("SELECT user_id FROM accounts WHERE name = ?",
                                (name,)).fetchone()
        if row is None:
            raise SimulatorError(f"no account {name!r} in {self.path}")
        return row[0]

    def accounts(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT a.*, (SELECT COUNT(*) FROM auth_keys k WHERE k.user_id = a.user_id "
            "AND k.revoked_at IS NULL) AS sessions FROM accounts a ORDER BY user_id")
        keys = ("user_id", "name", "phone", "username", "sessions", "restricted", "limited",
                "rate_limits")
        return [{k: row[k] for k in keys} for row in rows]

    def make_session_folder(self, folder: str | Path, account_name: str, *,
                            extra_env: dict | None = None) -> Path:
        """An account folder: `.env` and an authorised `<SESSION_NAME>.session` (0600)."""
        folder = Path(folder)
        user_id = self.account_id(account_name)
        session_name = folder.name
        env_path = folder / ".env"
        session_path = folder / f"{session_name}.session"
        for existing in (env_path, session_path):
            if existing.exists():
                raise SimulatorError(f"{existing} exists; refusing to overwrite an account "
                                     f"folder (use an empty folder)")
        folder.mkdir(parents=True, exist_ok=True)
        phone = self.conn.execute("SELECT phone FROM accounts WHERE user_id = ?",
                                  (user_id,)).fetchone()[0]
        env = {"TG_API_ID": str(SIM_API_ID), "TG_API_HASH": secrets.token_hex(16),
               "TG_PHONE": f"+{phone}", "SESSION_NAME": session_name,
               "TELEGRAM_SIMULATOR": str(self.path), **(extra_env or {})}
        migrate_db.write_atomically(env_path, "".join(f"{k}={v}\n" for k, v in env.items()),
                                    mode=0o600)
        auth_key = crypto.AuthKey(os.urandom(256))
        session = sessions.SQLiteSession(str(folder / session_name))
        session.set_dc(DC_ID, SIM_IP, SIM_PORT)
        session.auth_key = auth_key
        session.save()
        session.close()
        session_path.chmod(0o600)
        with transaction(self.conn):
            self.conn.execute("INSERT INTO auth_keys (key_id, user_id, created_at) "
                              "VALUES (?, ?, ?)", (_key_id(auth_key), user_id, utc_text()))
        return folder

    def revoke_session(self, account_name: str) -> int:
        """Revoke every session of the account (AUTH_KEY_UNREGISTERED); returns how many."""
        user_id = self.account_id(account_name)
        with transaction(self.conn):
            return self.conn.execute(
                "UPDATE auth_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                (utc_text(), user_id)).rowcount

    def set_login_code(self, code: str) -> None:
        """The code auth.SignIn accepts for every phone (default 12345)."""
        with transaction(self.conn):
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) "
                              "VALUES ('login_code', ?)", (code,))

    # -- chats ----------------------------------------------------------------------------

    def create_channel(self, title: str, *, username: str | None = None,
                       kind: str = "channel", owner: str | None = None,
                       members: Iterable[str] = (), admins: Iterable[str] = (),
                       noforwards: bool = False, slowmode_seconds: int = 0,
                       default_banned: Iterable[str] = ()) -> int:
        """A channel, megagroup or forum (with service message id 1); returns its id.
        `default_banned`: rights members do not have (banned_rights() names)."""
        if kind not in CHAT_KINDS:
            raise SimulatorError(f"kind must be one of {', '.join(CHAT_KINDS)}")
        default_banned = _rights_list(default_banned, banned_rights())
        owner_id = self.account_id(owner) if owner else None
        member_ids = [self.account_id(m) for m in members]
        admin_ids = [self.account_id(a) for a in admins]
        with transaction(self.conn):
            self._check_username_free(username)
            if kind == "group" and username:
                raise SimulatorError("a basic group has no username")
            channel_id = (GROUP_ID_BASE if kind == "group" else CHANNEL_ID_BASE) \
                + self.conn.execute("SELECT COUNT(*) FROM channels").fetchone()[0] + 1
            self.conn.execute(
                "INSERT INTO channels (channel_id, access_hash, title, username, kind, "
                "noforwards, slowmode_seconds, default_banned, creator_id, date) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (channel_id, _random_long(), title, username, kind, int(noforwards),
                 slowmode_seconds, json.dumps(default_banned), owner_id, self.server.now()))
            roles = [(owner_id, "creator")] if owner_id else []
            roles += [(a, "admin") for a in admin_ids if a != owner_id]
            roles += [(m, "member") for m in member_ids if m != owner_id
                      and m not in admin_ids]
            for user_id, role in roles:
                self.conn.execute("INSERT INTO participants (channel_id, user_id, role, "
                                  "joined_at) VALUES (?, ?, ?, ?)",
                                  (channel_id, user_id, role, utc_text()))
            channel = self.server.channel_row(channel_id)
            self.server.store_message(
                channel, owner_id, action=types.MessageActionChannelCreate(title=title),
                reply=(None, GENERAL_TOPIC_ID if kind == "forum" else None), origin="world")
        return channel_id

    def chat_id(self, chat: int | str) -> int:
        """A chat's id from its id, "@username"/"username" or exact title."""
        if isinstance(chat, int) or (isinstance(chat, str) and chat.lstrip("-").isdigit()):
            number = int(chat)
            if number < -1_000_000_000_000:
                number = -number - 1_000_000_000_000     # the -100... form Telethon prints
            elif number < 0:
                number = -number                         # a basic group's -id
            row = self.conn.execute("SELECT channel_id FROM channels WHERE channel_id = ?",
                                    (number,)).fetchone()
        else:
            name = chat.lstrip("@")
            row = self.conn.execute(
                "SELECT channel_id FROM channels WHERE username = ? OR title = ? "
                "ORDER BY username IS NULL LIMIT 1", (name, chat)).fetchone()
        if row is None:
            raise SimulatorError(f"no chat {chat!r} in {self.path}")
        return row[0]

    def peer_id(self, chat: int | str) -> int:
        """The chat's marked id as Telethon uses it (-100... for channels, -id for basic
        groups): what clients should be given."""
        chat_id = self.chat_id(chat)
        if self.server.channel_row(chat_id)["kind"] == "group":
            return -chat_id
        return -1_000_000_000_000 - chat_id

    def channels(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.channel_id = c.channel_id) "
            "AS messages, (SELECT COUNT(*) FROM participants p "
            "WHERE p.channel_id = c.channel_id) AS members FROM channels c "
            "ORDER BY channel_id")
        keys = ("channel_id", "title", "username", "kind", "noforwards", "members",
                "messages")
        return [{k: row[k] for k in keys} for row in rows]

    def join(self, account_name: str, chat: int | str, *, role: str = "member") -> None:
        user_id, channel_id = self.account_id(account_name), self.chat_id(chat)
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO participants (channel_id, user_id, role, joined_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(channel_id, user_id) "
                "DO UPDATE SET role = excluded.role",
                (channel_id, user_id, role, utc_text()))

    def leave(self, account_name: str, chat: int | str) -> None:
        user_id, channel_id = self.account_id(account_name), self.chat_id(chat)
        with transaction(self.conn):
            self.conn.execute("DELETE FROM participants WHERE channel_id = ? AND user_id = ?",
                              (channel_id, user_id))

    def members(self, chat: int | str) -> dict[str, str]:
        """The chat's members: account name -> role (creator, admin, member, banned)."""
        rows = self.conn.execute(
            "SELECT a.name, p.role FROM participants p JOIN accounts a USING (user_id) "
            "WHERE p.channel_id = ? ORDER BY a.user_id", (self.chat_id(chat),))
        return {name: role for name, role in rows}

    def read_max_id(self, account_name: str, chat: int | str) -> int:
        """Up to which message id the account marked the chat read (0: never)."""
        row = self.conn.execute(
            "SELECT read_max_id FROM participants WHERE channel_id = ? AND user_id = ?",
            (self.chat_id(chat), self.account_id(account_name))).fetchone()
        return row[0] if row else 0

    def set_noforwards(self, chat: int | str, noforwards: bool = True) -> None:
        """Protected content on or off (takes effect on the next request of any client)."""
        self.set_chat(chat, noforwards=noforwards)

    def set_chat(self, chat: int | str, *, noforwards: bool | None = None,
                 slowmode_seconds: int | None = None,
                 default_banned: Iterable[str] | None = None) -> None:
        """Change a chat's protected content, slow mode or default banned rights."""
        channel_id = self.chat_id(chat)
        changes: dict[str, Any] = {}
        if noforwards is not None:
            changes["noforwards"] = int(noforwards)
        if slowmode_seconds is not None:
            if slowmode_seconds < 0:
                raise SimulatorError("slowmode_seconds must be >= 0")
            changes["slowmode_seconds"] = slowmode_seconds
        if default_banned is not None:
            changes["default_banned"] = json.dumps(_rights_list(default_banned,
                                                                banned_rights()))
        with transaction(self.conn):
            for column, value in changes.items():
                self.conn.execute(f"UPDATE channels SET {column} = ? WHERE channel_id = ?",
                                  (value, channel_id))

    def chat_settings(self, chat: int | str) -> dict:
        """A chat's kind, protected content, slow mode and default banned rights."""
        row = self.server.channel_row(self.chat_id(chat))
        return {"kind": row["kind"], "noforwards": bool(row["noforwards"]),
                "slowmode_seconds": row["slowmode_seconds"],
                "default_banned": json.loads(row["default_banned"])}

    def set_admin(self, account_name: str, chat: int | str,
                  rights: Iterable[str] | None = None) -> None:
        """Make the account an admin of the chat with these admin rights (admin_rights()
        names; None: DEFAULT_ADMIN_RIGHTS), joining it if needed."""
        listed = _rights_list(DEFAULT_ADMIN_RIGHTS if rights is None else rights,
                              admin_rights())
        self.join(account_name, chat, role="admin")
        self._set_participant(account_name, chat, admin_rights=json.dumps(listed))

    def restrict(self, account_name: str, chat: int | str, banned: Iterable[str]) -> None:
        """The member's own banned rights in the chat, on top of the chat's default ones
        (an empty list lifts them; an admin becomes a member)."""
        listed = _rights_list(banned, banned_rights())
        user_id, channel_id = self.account_id(account_name), self.chat_id(chat)
        if self.server.participant(channel_id, user_id) is None:
            self.join(account_name, chat)
        self._set_participant(account_name, chat, banned_rights=json.dumps(listed),
                              role="member", admin_rights=None)

    def _set_participant(self, account_name: str, chat: int | str, **columns: Any) -> None:
        user_id, channel_id = self.account_id(account_name), self.chat_id(chat)
        with transaction(self.conn):
            for column, value in columns.items():
                self.conn.execute(f"UPDATE participants SET {column} = ? "
                                  "WHERE channel_id = ? AND user_id = ?",
                                  (value, channel_id, user_id))

    def member_rights(self, account_name: str, chat: int | str) -> dict:
        """{"role", "admin_rights" (None for a non-admin), "banned_rights" (effective)}."""
        channel = self.server.channel_row(self.chat_id(chat))
        part = self.server.participant(channel["channel_id"], self.account_id(account_name))
        admin, banned = self.server.rights(channel, part)
        return {"role": part["role"] if part else None,
                "admin_rights": sorted(admin) if admin is not None else None,
                "banned_rights": sorted(banned)}

    def create_topic(self, chat: int | str, title: str, *, by: str | None = None,
                     icon_color: int | None = None) -> int:
        """A forum topic made by `by` (default: the chat's creator); returns its id (the
        id of its service message)."""
        with transaction(self.conn):
            channel, creator = self._poster(chat, by)
            if channel["kind"] != "forum":
                raise SimulatorError(f"{chat!r} is not a forum")
            return _create_topic(self.server, channel, title, icon_color, creator, "world")

    def set_topic(self, chat: int | str, topic: int, *, closed: bool) -> None:
        """Close or reopen a forum topic (members get TOPIC_CLOSED in a closed one)."""
        with transaction(self.conn):
            channel = self._topic_chat(chat, topic)
            _edit_topic(self.server, channel, topic, channel["creator_id"], "world",
                        closed=closed)

    def delete_topic(self, chat: int | str, topic: int) -> None:
        """Delete a forum topic and its messages (clients get UpdateDeleteChannelMessages)."""
        with transaction(self.conn):
            _delete_topic(self.server, self._topic_chat(chat, topic), topic, "world")

    def _topic_chat(self, chat: int | str, topic: int) -> sqlite3.Row:
        channel = self.server.channel_row(self.chat_id(chat))
        if not self.server.topic_exists(channel["channel_id"], topic):
            raise SimulatorError(f"no topic {topic} in {chat!r}")
        return channel

    def edit(self, chat: int | str, message_id: int, text: str, *,
             parse_mode: str | None = None) -> None:
        """Edit a message's text (or caption) as its author would; clients get
        UpdateEditChannelMessage."""
        text, entities = self._parsed(text, parse_mode, None)
        with transaction(self.conn):
            channel = self.server.channel_row(self.chat_id(chat))
            row = self.conn.execute("SELECT * FROM messages WHERE channel_id = ? AND id = ?",
                                    (channel["channel_id"], message_id)).fetchone()
            if row is None or row["is_service"]:
                raise SimulatorError(f"no message {message_id} to edit in {chat!r}")
            try:
                self.server.edit_message(channel, row, text=text, entities=entities,
                                         media=None, origin="world")
            except RpcFailure as failure:
                raise SimulatorError(f"cannot edit: {failure.message}") from None

    def delete(self, chat: int | str, message_ids: Iterable[int]) -> int:
        """Delete messages (missing ids skipped); clients get UpdateDeleteChannelMessages.
        Returns how many were deleted."""
        with transaction(self.conn):
            channel = self.server.channel_row(self.chat_id(chat))
            ids = [i for i in dict.fromkeys(message_ids) if self.conn.execute(
                "SELECT 1 FROM messages WHERE channel_id = ? AND id = ?",
                (channel["channel_id"], i)).fetchone()]
            return self.server.delete_messages(channel, ids, "world")[1]

    def topics(self, chat: int | str) -> list[dict]:
        channel = self.server.channel_row(self.chat_id(chat))
        return [{"topic_id": r["topic_id"], "title": r["title"]}
                for r in sorted(self.server.all_topics(channel), key=lambda r: r["topic_id"])]

    # -- posting --------------------------------------------------------------------------

    def _media_from(self, file: bytes | str | Path, file_name: str | None,
                    force_document: bool) -> TLObject:
        data = file if isinstance(file, bytes) else Path(file).read_bytes()
        name = file_name or ("file" if isinstance(file, bytes) else Path(file).name)
        is_image = data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" \
            or data[:6] in (b"GIF87a", b"GIF89a")
        if is_image and not force_document:
            return self.server.store_media("photo", data)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self.server.store_media(
            "document", data, mime_type=mime,
            attributes=[types.DocumentAttributeFilename(file_name=name)])

    def _poster(self, chat: int | str, by: str | None) -> tuple[sqlite3.Row, int | None]:
        channel = self.server.channel_row(self.chat_id(chat))
        if by is None:
            return channel, channel["creator_id"]
        return channel, self.account_id(by)

    def post(self, chat: int | str, text: str = "", *, by: str | None = None,
             entities: list | None = None, parse_mode: str | None = None,
             file: bytes | str | Path | None = None, file_name: str | None = None,
             force_document: bool = False, reply_to: int | None = None,
             topic: int | None = None) -> int:
        """Post a message as `by` (default: the chat's creator); returns its id."""
        text, entities = self._parsed(text, parse_mode, entities)
        with transaction(self.conn):
            channel, sender = self._poster(chat, by)
            reply = self._reply(channel, reply_to, topic)
            media = self._media_from(file, file_name, force_document) if file else None
            message, _ = self.server.store_message(channel, sender, text=text,
                                                   entities=entities, media=media,
                                                   reply=reply, origin="world")
        return message.id

    @staticmethod
    def _parsed(text: str, parse_mode: str | None,
                entities: list | None) -> tuple[str, list | None]:
        if parse_mode in ("md", "markdown"):
            return markdown.parse(text)
        if parse_mode is not None:
            raise SimulatorError("parse_mode must be 'md' or None")
        return text, entities

    def _reply(self, channel: sqlite3.Row, reply_to: int | None,
               topic: int | None) -> tuple:
        try:
            return self.server.reply_header(channel, reply_to, topic)
        except RpcFailure as failure:
            raise SimulatorError(f"cannot post there: {failure.message}") from None

    def post_album(self, chat: int | str, files: list, *, captions: list | None = None,
                   by: str | None = None, reply_to: int | None = None,
                   topic: int | None = None) -> list[int]:
        """Post 2-10 files as one album (one grouped_id); returns the ids."""
        if not 1 <= len(files) <= ALBUM_MAX:
            raise SimulatorError(f"an album has 1 to {ALBUM_MAX} files")
        captions = list(captions or [])
        grouped_id = _random_long()
        ids = []
        with transaction(self.conn):
            channel, sender = self._poster(chat, by)
            reply = self._reply(channel, reply_to, topic)
            for index, file in enumerate(files):
                media = self._media_from(file, None, False)
                caption = captions[index] if index < len(captions) else ""
                message, _ = self.server.store_message(
                    channel, sender, text=caption, media=media, reply=reply,
                    grouped_id=grouped_id, origin="world")
                ids.append(message.id)
        return ids

    def messages(self, chat: int | str, *, viewer: str | None = None) -> list[TLObject]:
        """Every message of the chat in id order, as TL objects (as `viewer` sees them)."""
        channel_id = self.chat_id(chat)
        viewer_id = self.account_id(viewer) if viewer else None
        rows = self.conn.execute("SELECT * FROM messages WHERE channel_id = ? ORDER BY id",
                                 (channel_id,)).fetchall()
        return [self.server.message_for(row, viewer_id) for row in rows]

    def media_bytes(self, message: TLObject) -> bytes | None:
        """The stored bytes of a message's photo or document."""
        body = getattr(message.media, "photo", None) or getattr(message.media, "document", None)
        if body is None:
            return None
        row = self.conn.execute("SELECT data FROM media WHERE media_id = ?",
                                (body.id,)).fetchone()
        return bytes(row[0]) if row else None

    # -- faults and counters --------------------------------------------------------------

    def inject_fault(self, error: str, *, seconds: int | None = None,
                     account: str | None = None, request: str | None = None,
                     after: int = 0, times: int | None = None,
                     rate_per_minute: int | None = None, code: int | None = None,
                     executed: bool = False) -> int:
        """Make matching requests fail (see the module docstring); returns the fault id."""
        error = error.upper()
        if error in ("FLOOD_WAIT", "SLOWMODE_WAIT") and seconds is None \
                and rate_per_minute is None:
            raise SimulatorError(f"{error} needs seconds")
        if seconds is not None and seconds < 0 or after < 0 \
                or times is not None and times < 1 \
                or rate_per_minute is not None and rate_per_minute < 0:
            raise SimulatorError("seconds/after must be >= 0, times >= 1, rate >= 0")
        if error == LOSE_UPDATES and request is not None:
            raise SimulatorError("LOSE_UPDATES applies to updates, not to a request type")
        if account is not None:
            self.account_id(account)
        if request is not None and not request.endswith("Request"):
            request += "Request"
        known = sorted({name.rsplit(".", 1)[-1] for name in ANSWERS})
        if request is not None and request not in known:
            raise SimulatorError(f"unknown request type {request!r}; answered: "
                                 f"{', '.join(known)}")
        default_code = NAMED_FAULTS.get(error, (400, ""))[0]
        with transaction(self.conn):
            return self.conn.execute(
                "INSERT INTO faults (error, code, seconds, account, request, after, times, "
                "rate_per_minute, executed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (error, code or default_code, seconds, account, request, after, times,
                 rate_per_minute, int(executed), utc_text())).lastrowid

    def faults(self) -> list[dict]:
        keys = ("fault_id", "error", "code", "seconds", "account", "request", "after",
                "times", "rate_per_minute", "executed", "seen", "fired")
        return [{k: row[k] for k in keys}
                for row in self.conn.execute("SELECT * FROM faults ORDER BY fault_id")]

    def clear_faults(self, fault_id: int | None = None) -> int:
        with transaction(self.conn):
            if fault_id is None:
                return self.conn.execute("DELETE FROM faults").rowcount
            return self.conn.execute("DELETE FROM faults WHERE fault_id = ?",
                                     (fault_id,)).rowcount

    def counters(self, account: str | None = None) -> dict[str, int]:
        """Requests served, by request type name (one account's, or everyone's summed)."""
        if account is None:
            rows = self.conn.execute(
                "SELECT request, SUM(count) FROM counters GROUP BY request ORDER BY request")
        else:
            rows = self.conn.execute(
                "SELECT request, count FROM counters WHERE account = ? ORDER BY request",
                (account,))
        return {request: count for request, count in rows}

    def reset_counters(self) -> None:
        with transaction(self.conn):
            self.conn.execute("DELETE FROM counters")


# ----------------------------------------------------------------------------- demo world

DEMO_ACCOUNTS = ("session1", "session2")
_DEMO_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73"
    "0000001649444154789c63f8cfc0f09f81e13f03c37f0600fe1f03fd8e3fcc2e"
    "0000000049454e44ae426082")


def build_demo(world: World, sessions_dir: Path) -> dict:
    """Two accounts with folders, a source forum with everything (where session2, a
    member, may not send media), an empty target forum (session2 an admin)."""
    for index, name in enumerate(DEMO_ACCOUNTS, start=1):
        world.add_account(name, phone=f"+1555000000{index}", username=f"demo_user{index}")
        world.make_session_folder(sessions_dir / name, name)
    source = world.create_channel("Demo source", username="demo_source", kind="forum",
                                  owner="session1", members=["session2"],
                                  default_banned=["send_media"])
    world.post(source, "Welcome to the **demo** source, see [the docs](https://t.me/)",
               parse_mode="md")
    first = world.post(source, "A photo with a caption", file=_DEMO_PNG)
    world.post(source, "A document", file=b"%PDF-1.4 demo\n", file_name="report.pdf")
    world.post_album(source, [_DEMO_PNG, _DEMO_PNG, _DEMO_PNG],
                     captions=["album 1/3", "album 2/3", "album 3/3"])
    world.post(source, "A reply to the photo", reply_to=first, by="session2")
    news = world.create_topic(source, "News", by="session1")
    talk = world.create_topic(source, "Talk", by="session1")
    news_post = world.post(source, "First news item", topic=news)
    world.post(source, "A reply inside News", reply_to=news_post, by="session2")
    world.post_album(source, [_DEMO_PNG, _DEMO_PNG], captions=["talk album", ""], topic=talk)
    world.post(source, "__Italic__ in Talk", parse_mode="md", topic=talk)
    target = world.create_channel("Demo target", username="demo_target", kind="forum",
                                  owner="session1", admins=["session2"])
    return {"source": source, "target": target}


# ----------------------------------------------------------------------------- command line

def _media_kind(message: TLObject) -> str:
    media = getattr(message, "media", None)
    if isinstance(media, types.MessageMediaPhoto):
        return "photo"
    if isinstance(media, types.MessageMediaDocument):
        return f"document {media.document.mime_type}"
    if isinstance(message, types.MessageService):
        return f"service {type(message.action).__name__.removeprefix('MessageAction')}"
    return "-"


def show_line(message: TLObject, topic: int | None) -> str:
    """One line of `show`: id, date, topic, reply-to, grouped_id, media kind, text (as
    markdown, so formatting shows)."""
    reply = getattr(message, "reply_to", None)
    reply_to = reply.reply_to_msg_id if reply else None
    text = markdown.unparse(getattr(message, "message", "") or "",
                            getattr(message, "entities", None) or [])
    action = getattr(message, "action", None)
    if isinstance(action, types.MessageActionTopicCreate):
        text = action.title
    fields = [f"{message.id:>5}", message.date.strftime("%Y-%m-%d %H:%M:%S"),
              f"topic={topic if topic is not None else '-'}",
              f"reply_to={reply_to or '-'}",
              f"group={getattr(message, 'grouped_id', None) or '-'}",
              _media_kind(message)]
    return "  ".join(fields) + "  " + text.replace("\n", "\\n")


def _cmd_init(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sessions_dir = args.sessions_dir or args.world.resolve().with_name(
        f"{args.world.stem}-sessions")
    if args.demo:
        for name in DEMO_ACCOUNTS:
            for existing in (sessions_dir / name / ".env",
                             sessions_dir / name / f"{name}.session"):
                if existing.exists():
                    parser.error(f"{existing} exists; the demo does not overwrite account "
                                 f"folders (choose another --sessions-dir)")
    try:
        world = World.create(args.world, random_id_mode=args.random_id_mode)
    except SimulatorError as exc:
        parser.error(str(exc))
    with world:
        print(f"created simulated world {world.path} (random_id mode {args.random_id_mode})")
        if args.demo:
            chats = build_demo(world, sessions_dir)
            print(f"demo accounts session1, session2: folders under {sessions_dir}")
            print(f"demo source forum @demo_source (id {chats['source']}), "
                  f"empty target forum @demo_target (id {chats['target']})")
    return 0


def _cmd_show(args: argparse.Namespace, world: World) -> int:
    channel_id = world.chat_id(args.chat)
    rows = world.conn.execute("SELECT id, topic_id FROM messages WHERE channel_id = ? "
                              "ORDER BY id", (channel_id,)).fetchall()
    topics = {row["id"]: row["topic_id"] for row in rows}
    info = world.server.channel_row(channel_id)
    print(f"{info['title']} (@{info['username'] or '-'}, {info['kind']}, id {channel_id}"
          f"{', noforwards' if info['noforwards'] else ''}): {len(rows)} messages")
    messages = world.messages(channel_id)
    for message in messages[-args.limit:] if args.limit else messages:
        print(show_line(message, topics[message.id]))
    return 0


def _print_table(rows: list[dict]) -> None:
    print(migrate_db.format_table(list(rows[0]), [list(row.values()) for row in rows],
                                  missing="-") if rows else "(none)")


def _switch(value: str | None) -> bool | None:
    return None if value is None else value == "on"


def _names(text: str | None) -> list[str]:
    """A comma-separated list ("" or "none": empty)."""
    if text is None or text.strip().lower() in ("", "none"):
        return []
    return [item.strip() for item in text.split(",") if item.strip()]


def _cmd_add_account(args: argparse.Namespace, world: World) -> int:
    user_id = world.add_account(args.name, phone=args.phone, username=args.username)
    phone = next(a["phone"] for a in world.accounts() if a["user_id"] == user_id)
    print(f"account {args.name}: user id {user_id}, phone +{phone}, login code "
          f"{world.server.meta('login_code', DEFAULT_LOGIN_CODE)}")
    if args.folder:
        world.make_session_folder(args.folder, args.name)
        print(f"authorised folder {args.folder} (.env and {args.folder.name}.session)")
    return 0


def _cmd_account(args: argparse.Namespace, world: World) -> int:
    world.set_account(args.name, restricted=_switch(args.restricted),
                      limited=_switch(args.limited), rate_limits=_switch(args.rate_limits))
    _print_table([a for a in world.accounts() if a["name"] == args.name])
    return 0


def _cmd_login_code(args: argparse.Namespace, world: World) -> int:
    if args.code:
        world.set_login_code(args.code)
    print(f"login code: {world.server.meta('login_code', DEFAULT_LOGIN_CODE)}")
    return 0


def _cmd_add_chat(args: argparse.Namespace, world: World) -> int:
    chat = world.create_channel(
        args.title, username=args.username, kind=args.kind, owner=args.owner,
        members=_names(args.members), admins=_names(args.admins),
        noforwards=args.noforwards, slowmode_seconds=args.slowmode,
        default_banned=_names(args.default_banned))
    print(f"{args.kind} {args.title!r} id {chat} (clients: {world.peer_id(chat)}"
          f"{', @' + args.username if args.username else ''})")
    return 0


def _cmd_chat(args: argparse.Namespace, world: World) -> int:
    world.set_chat(args.chat, noforwards=_switch(args.noforwards),
                   slowmode_seconds=args.slowmode,
                   default_banned=None if args.default_banned is None
                   else _names(args.default_banned))
    for name in args.join or []:
        world.join(name, args.chat)
    for spec in args.admin or []:
        name, _, rights = spec.partition(":")
        world.set_admin(name, args.chat, _names(rights) if rights else None)
    for spec in args.restrict or []:
        name, _, rights = spec.partition(":")
        world.restrict(name, args.chat, _names(rights))
    for name in args.leave or []:
        world.leave(name, args.chat)
    print(json.dumps(world.chat_settings(args.chat)))
    _print_table([{"account": name, **world.member_rights(name, args.chat)}
                  for name in world.members(args.chat)])
    return 0


def _cmd_topic(args: argparse.Namespace, world: World) -> int:
    if args.create:
        topic = world.create_topic(args.chat, args.create, by=args.by)
        print(f"topic {args.create!r} id {topic}")
    elif args.close or args.reopen:
        world.set_topic(args.chat, args.close or args.reopen, closed=bool(args.close))
    elif args.delete:
        world.delete_topic(args.chat, args.delete)
    _print_table(world.topics(args.chat))
    return 0


def _topic_id(world: World, chat: str, topic: str | None) -> int | None:
    """A topic named by id or exact title."""
    if topic is None or topic.isdigit():
        return int(topic) if topic else None
    for row in world.topics(chat):
        if row["title"] == topic:
            return row["topic_id"]
    raise SimulatorError(f"no topic {topic!r} in {chat!r}")


def _cmd_post(args: argparse.Namespace, world: World) -> int:
    topic = _topic_id(world, args.chat, args.topic)
    files = args.file or []
    if len(files) > 1:
        ids = world.post_album(args.chat, files, captions=[args.text or ""], by=args.by,
                               reply_to=args.reply_to, topic=topic)
    else:
        ids = [world.post(args.chat, args.text or "", by=args.by,
                          parse_mode="md" if args.md else None,
                          file=files[0] if files else None, reply_to=args.reply_to,
                          topic=topic)]
    print("posted " + " ".join(map(str, ids)))
    return 0


def _cmd_settings(args: argparse.Namespace, world: World) -> int:
    changes = {name: value for name, value in (
        ("rate_limits", _switch(args.rate_limits)),
        ("file_reference_lifetime", args.file_reference_lifetime),
        ("random_id_memory", args.random_id_memory),
        ("random_id_mode", args.random_id_mode)) if value is not None}
    if changes:
        world.configure(**changes)
    for spec in args.rate_limit or []:
        match = re.fullmatch(r"(\w+)=(\d+)/([\d.]+)", spec)
        if match is None:
            raise SimulatorError(f"--rate-limit {spec!r}: use BUCKET=BURST/PER_SECOND, "
                                 f"e.g. send_chat=20/1")
        world.set_rate_limit(match[1], int(match[2]), float(match[3]))
    print(json.dumps(world.settings(), indent=2))
    return 0


def _cmd_clock(args: argparse.Namespace, world: World) -> int:
    if args.advance:
        world.advance_clock(args.advance)
    print(f"world time {world.now()} ({_dt(world.now()):%Y-%m-%d %H:%M:%S} UTC)")
    return 0


def _cmd_accounts(args: argparse.Namespace, world: World) -> int:
    _print_table(world.accounts())
    return 0


def _cmd_channels(args: argparse.Namespace, world: World) -> int:
    _print_table(world.channels())
    return 0


def _cmd_counters(args: argparse.Namespace, world: World) -> int:
    if args.reset:
        world.reset_counters()
    _print_table([{"request": k, "count": v} for k, v in world.counters(args.account).items()])
    return 0


def _cmd_revoke(args: argparse.Namespace, world: World) -> int:
    print(f"{world.revoke_session(args.account)} session(s) revoked")
    return 0


def _cmd_edit(args: argparse.Namespace, world: World) -> int:
    world.edit(args.chat, args.message_id, args.text, parse_mode="md" if args.md else None)
    print(f"edited {args.message_id}")
    return 0


def _cmd_delete(args: argparse.Namespace, world: World) -> int:
    print(f"{world.delete(args.chat, args.message_ids)} message(s) deleted")
    return 0


def _cmd_faults_add(args: argparse.Namespace, world: World) -> int:
    fault_id = world.inject_fault(
        args.error, seconds=args.seconds, account=args.account, request=args.request,
        after=args.after, times=args.times, rate_per_minute=args.rate,
        code=args.code, executed=args.executed)
    print(f"fault {fault_id} added")
    return 0


def _cmd_faults_clear(args: argparse.Namespace, world: World) -> int:
    print(f"{world.clear_faults(args.fault_id)} fault(s) removed")
    return 0


def _cmd_faults_list(args: argparse.Namespace, world: World) -> int:
    _print_table(world.faults())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=Path(__file__).name,
        description="A simulated Telegram under real Telethon clients, in one SQLite file "
                    "shared by processes (rehearsals and tests; no account at risk).",
        epilog="Accounts use it when their .env sets TELEGRAM_SIMULATOR=WORLD.",
        parents=[migrate_db.cli_options()])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="create a world")
    init.add_argument("world", type=Path, metavar="WORLD")
    init.add_argument("--demo", action="store_true",
                      help="two accounts with folders, a demo source forum, a target forum")
    init.add_argument("--sessions-dir", type=Path, metavar="DIR",
                      help="where --demo makes the account folders "
                           "(default: WORLD's folder/<WORLD name>-sessions)")
    init.add_argument("--random-id-mode", choices=RANDOM_ID_MODES, default="original",
                      help="a reused random_id returns the original message (observed) or "
                           "fails with RANDOM_ID_DUPLICATE (documented); default %(default)s")
    show = commands.add_parser("show", help="print a chat's messages in order")
    show.add_argument("world", type=Path, metavar="WORLD")
    show.add_argument("chat", metavar="CHAT", help="chat id, @username or title")
    show.add_argument("--limit", type=int, default=0, help="only the last N messages")
    show.set_defaults(handler=_cmd_show)
    for name, handler, text in (("accounts", _cmd_accounts, "list accounts"),
                                ("channels", _cmd_channels, "list chats")):
        listing = commands.add_parser(name, help=text)
        listing.add_argument("world", type=Path, metavar="WORLD")
        listing.set_defaults(handler=handler)
    counters = commands.add_parser("counters", help="requests served, by type")
    counters.add_argument("world", type=Path, metavar="WORLD")
    counters.add_argument("--account", help="only this account's")
    counters.add_argument("--reset", action="store_true", help="set every counter to zero")
    counters.set_defaults(handler=_cmd_counters)
    revoke = commands.add_parser("revoke", help="revoke an account's sessions")
    revoke.add_argument("world", type=Path, metavar="WORLD")
    revoke.add_argument("account", metavar="ACCOUNT")
    revoke.set_defaults(handler=_cmd_revoke)
    faults = commands.add_parser("faults", help="list, add or clear injected faults")
    faults.add_argument("world", type=Path, metavar="WORLD")
    actions = faults.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="list faults").set_defaults(handler=_cmd_faults_list)
    clear = actions.add_parser("clear", help="remove one fault, or all")
    clear.add_argument("fault_id", type=int, nargs="?", metavar="ID")
    clear.set_defaults(handler=_cmd_faults_clear)
    add = actions.add_parser("add", help="add a fault")
    add.set_defaults(handler=_cmd_faults_add)
    what = add.add_argument_group("what fails")
    what.add_argument("--error", required=True,
                      help="FLOOD_WAIT, SLOWMODE_WAIT, PEER_FLOOD, AUTH_KEY_UNREGISTERED, "
                           "RANDOM_ID_DUPLICATE, DISCONNECT, LOSE_UPDATES or any RPC error "
                           "name")
    what.add_argument("--seconds", type=int, help="wait for FLOOD_WAIT/SLOWMODE_WAIT")
    what.add_argument("--code", type=int, help="RPC code for other error names (400)")
    what.add_argument("--executed", action="store_true",
                      help="DISCONNECT after the request took effect")
    where = add.add_argument_group("which requests")
    where.add_argument("--account", help="only this account (default: every account)")
    where.add_argument("--request", help="only this request type, e.g. SendMessageRequest")
    when = add.add_argument_group("when")
    when.add_argument("--after", type=int, default=0, help="let N requests through first")
    when.add_argument("--times", type=int, help="fire N times (default: always)")
    when.add_argument("--rate", type=int, metavar="R",
                      help="fire once R requests passed in the last minute")
    _add_world_commands(commands)
    return parser


def _add_world_commands(commands: Any) -> None:
    """The commands that shape a world as an operator would (accounts, chats, posts)."""
    on_off = dict(choices=("on", "off"))
    add = commands.add_parser("add-account", help="add an account (phone, login code)")
    add.add_argument("world", type=Path, metavar="WORLD")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--phone", help="e.g. +15550001001 (default: one is made up)")
    add.add_argument("--username", help="the account's @username")
    add.add_argument("--folder", type=Path, metavar="DIR",
                     help="also make an authorised account folder (.env, .session) here; "
                          "without it, log in with telegram_session.py auth and the code")
    add.set_defaults(handler=_cmd_add_account)
    account = commands.add_parser("account", help="restrict, limit or exempt an account")
    account.add_argument("world", type=Path, metavar="WORLD")
    account.add_argument("name", metavar="NAME")
    account.add_argument("--restricted", **on_off,
                         help="USER_BANNED_IN_CHANNEL on every write to groups/channels")
    account.add_argument("--limited", **on_off, help="PEER_FLOOD on sends and joins")
    account.add_argument("--rate-limits", **on_off, help="the world's budgets apply to it")
    account.set_defaults(handler=_cmd_account)
    code = commands.add_parser("login-code", help="show or set the login code")
    code.add_argument("world", type=Path, metavar="WORLD")
    code.add_argument("code", nargs="?", metavar="CODE")
    code.set_defaults(handler=_cmd_login_code)
    chat = commands.add_parser("add-chat", help="add a channel, megagroup or forum")
    chat.add_argument("world", type=Path, metavar="WORLD")
    chat.add_argument("title", metavar="TITLE")
    chat.add_argument("--username", help="public @username (else private)")
    chat.add_argument("--kind", choices=CHAT_KINDS, default="megagroup")
    chat.add_argument("--owner", metavar="ACCOUNT", help="the creator")
    chat.add_argument("--members", metavar="A,B", help="member accounts")
    chat.add_argument("--admins", metavar="A,B", help="admins (default admin rights)")
    chat.add_argument("--slowmode", type=int, default=0, metavar="SECONDS")
    chat.add_argument("--noforwards", action="store_true", help="protected content")
    chat.add_argument("--default-banned", metavar="R,R",
                      help="rights members lack, e.g. send_media,manage_topics")
    chat.set_defaults(handler=_cmd_add_chat)
    edit_chat = commands.add_parser("chat", help="change a chat's settings and members")
    edit_chat.add_argument("world", type=Path, metavar="WORLD")
    edit_chat.add_argument("chat", metavar="CHAT", help="chat id, @username or title")
    edit_chat.add_argument("--slowmode", type=int, metavar="SECONDS")
    edit_chat.add_argument("--noforwards", **on_off, help="protected content")
    edit_chat.add_argument("--default-banned", metavar="R,R",
                           help="rights members lack (none: lift them)")
    edit_chat.add_argument("--join", action="append", metavar="ACCOUNT")
    edit_chat.add_argument("--leave", action="append", metavar="ACCOUNT")
    edit_chat.add_argument("--admin", action="append", metavar="ACCOUNT[:R,R]",
                           help="make an admin (with these admin rights)")
    edit_chat.add_argument("--restrict", action="append", metavar="ACCOUNT:R,R",
                           help="a member's own banned rights (ACCOUNT:none lifts them)")
    edit_chat.set_defaults(handler=_cmd_chat)
    topic = commands.add_parser("topic", help="create, close, reopen or delete a topic")
    topic.add_argument("world", type=Path, metavar="WORLD")
    topic.add_argument("chat", metavar="CHAT")
    which = topic.add_mutually_exclusive_group()
    which.add_argument("--create", metavar="TITLE")
    which.add_argument("--close", type=int, metavar="ID")
    which.add_argument("--reopen", type=int, metavar="ID")
    which.add_argument("--delete", type=int, metavar="ID")
    topic.add_argument("--by", metavar="ACCOUNT", help="creator (default: the chat's)")
    topic.set_defaults(handler=_cmd_topic)
    post = commands.add_parser("post", help="post a message, a file or an album")
    post.add_argument("world", type=Path, metavar="WORLD")
    post.add_argument("chat", metavar="CHAT")
    post.add_argument("text", nargs="?", metavar="TEXT", help="text or caption")
    post.add_argument("--file", action="append", type=Path, metavar="PATH",
                      help="attach a file; twice or more: an album")
    post.add_argument("--md", action="store_true", help="TEXT is markdown")
    post.add_argument("--by", metavar="ACCOUNT", help="sender (default: the creator)")
    post.add_argument("--topic", metavar="ID|TITLE")
    post.add_argument("--reply-to", type=int, metavar="ID")
    post.set_defaults(handler=_cmd_post)
    edit = commands.add_parser("edit", help="edit a message's text")
    edit.add_argument("world", type=Path, metavar="WORLD")
    edit.add_argument("chat", metavar="CHAT")
    edit.add_argument("message_id", type=int, metavar="ID")
    edit.add_argument("text", metavar="TEXT")
    edit.add_argument("--md", action="store_true", help="TEXT is markdown")
    edit.set_defaults(handler=_cmd_edit)
    delete = commands.add_parser("delete", help="delete messages")
    delete.add_argument("world", type=Path, metavar="WORLD")
    delete.add_argument("chat", metavar="CHAT")
    delete.add_argument("message_ids", type=int, nargs="+", metavar="ID")
    delete.set_defaults(handler=_cmd_delete)
    settings = commands.add_parser("settings", help="show or change world settings")
    settings.add_argument("world", type=Path, metavar="WORLD")
    settings.add_argument("--rate-limits", **on_off, help="token buckets on or off")
    settings.add_argument("--rate-limit", action="append", metavar="BUCKET=BURST/PER_S",
                          help=f"one budget; buckets: {', '.join(DEFAULT_RATE_LIMITS)}")
    settings.add_argument("--file-reference-lifetime", type=int, metavar="SECONDS",
                          help="0: never expire")
    settings.add_argument("--random-id-memory", type=int, metavar="SECONDS",
                          help="0: forever")
    settings.add_argument("--random-id-mode", choices=RANDOM_ID_MODES)
    settings.set_defaults(handler=_cmd_settings)
    clock = commands.add_parser("clock", help="show or advance world time")
    clock.add_argument("world", type=Path, metavar="WORLD")
    clock.add_argument("--advance", type=float, metavar="SECONDS")
    clock.set_defaults(handler=_cmd_clock)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    migrate_db.setup_logging(args.verbose, args.quiet)
    if args.command == "init":
        return _cmd_init(args, parser)
    try:
        world = World.open(args.world)
    except SimulatorError as exc:
        parser.error(str(exc))
    with world:
        try:
            return args.handler(args, world)
        except SimulatorError as exc:
            parser.error(str(exc))


def _cli() -> int:
    """main() with a database or file failure as one error line."""
    try:
        return main()
    except BrokenPipeError:
        raise
    except (sqlite3.Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    migrate_db.run_main(_cli)
