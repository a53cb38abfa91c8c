#!/usr/bin/env python3
"""Refresh heatup.py's channel pool (channels_data.json) from the TGStat API.

`fetch` reads TGStat's category codes (database/categories; the known codes when that
cannot be read), searches each chosen category for public channels of the given country
and language, keeps those with a username that TGStat has not flagged (red_label: fake
subscribers, black_label: fraud), and merges them into channels_data.json (entries already
in the file are kept unless --replace). `usage` shows how much of the API quota is spent.
The token comes from TGSTAT_API_TOKEN in the environment or in a .env file (the current
folder's, then the suite's); it is never written or printed anywhere, and redirects are
not followed (they would carry it to another address).

    python tgstat_fetcher.py fetch [--categories tech,news] [--country ru] [--language russian]
                                   [--limit 50] [--min-subscribers 1000]
    python tgstat_fetcher.py categories | usage

Exit codes: 0 done, 1 TGStat or the network failed (the file is left as it was),
2 usage or configuration error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import migrate_db

# aiohttp and python-dotenv load when first used, so --help answers at once
aiohttp = migrate_db.lazy_import("aiohttp")
dotenv = migrate_db.lazy_import("dotenv")

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_BASE_URL = "https://api.tgstat.ru"
DEFAULT_OUTPUT = SCRIPT_DIR / "channels_data.json"
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
DEFAULT_COUNTRY = "ru"                  # codes from /database/countries
DEFAULT_LANGUAGE = "russian"            # codes from /database/languages
REQUEST_TIMEOUT_SECONDS = 30
FLOOD_RETRIES = 3
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# TGStat category code -> the pool's category name (the spec's ten categories). TGStat's
# codes for software, humour and fashion are apps, entertainment and beauty. Codes TGStat
# does not offer are skipped; other codes asked for keep TGStat's own name.
DEFAULT_CATEGORIES = {
    "news": "News",
    "tech": "Technology",
    "apps": "Programming",
    "crypto": "Crypto",
    "business": "Business",
    "education": "Science",
    "entertainment": "Entertainment",
    "sport": "Sports",
    "music": "Music",
    "beauty": "Lifestyle",
}

# Every error code TGStat documents (api.tgstat.ru/docs/ru/errors.html), as one line an
# operator can act on.
ERROR_EXPLANATIONS = {
    "empty_token": "no token was sent; set TGSTAT_API_TOKEN in the environment or .env",
    "token_invalid": "the token is not valid; copy it again from https://tgstat.ru/my/api "
                     "into TGSTAT_API_TOKEN",
    "wrong_method": "TGStat does not know this method; check --base-url",
    "wrong_method_type": "TGStat refused the request type for this method; check --base-url",
    "flood_control_10": "too many requests; TGStat asks to wait 10 seconds",
    "flood_control_60": "too many requests; TGStat asks to wait 60 seconds",
    "no_active_subscription": "a paid TGStat API plan is needed for channel search; the "
                              "shipped channels_data.json still works without it",
    "quota_requests_reached": "the plan's monthly request quota is used up; wait for the "
                              "next period (see: tgstat_fetcher.py usage) or upgrade the plan",
    "quota_channel_reached": "the plan's monthly quota of distinct channels is used up; wait "
                             "for the next period (see: tgstat_fetcher.py usage)",
    "quota_keywords_reached": "the plan's monthly quota of distinct search keywords is used "
                              "up; search by --categories only, or wait for the next period",
    "quota_foreign_channel": "this plan only gives data on channels whose owners confirmed "
                             "them on TGStat; a paid plan is needed for other channels",
    "quota_callback_objects_reached": "the plan's quota of callback subscriptions is used up",
    "outdated_statistics": "TGStat is still updating these statistics; try again in 15 "
                           "minutes",
    "unknown_error": "TGStat failed with an unknown error; try again later",
}
FLOOD_WAIT_SECONDS = {"flood_control_10": 10, "flood_control_60": 60}
TOKEN_ERRORS = ("empty_token", "token_invalid")
RESTRICTIONS = {"red_label": "flagged red_label (fake subscribers)",
                "black_label": "flagged black_label (fraud)"}
USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,31}")
LINK_PREFIX_RE = re.compile(r"^(?:https?://)?(?:www\.)?(?:t\.me|telegram\.me)/", re.IGNORECASE)


class TGStatError(Exception):
    """TGStat answered with an error (`code` is TGStat's code, or a description)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ChannelFileError(Exception):
    """channels_data.json exists but cannot be merged into."""


# ----------------------------------------------------------------------------- TGStat client

def explain(code: str) -> str:
    """The one-line explanation of a TGStat error code."""
    if code in ERROR_EXPLANATIONS:
        return ERROR_EXPLANATIONS[code]
    if code.startswith("quota_"):
        return (f"a quota of the TGStat plan is used up ({code}); see: tgstat_fetcher.py "
                "usage")
    return f"TGStat error '{code}'"


class TGStatClient:
    """The few TGStat methods the fetcher uses, with flood-control back-off."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str, *,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 flood_retries: int = FLOOD_RETRIES) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.sleep = sleep
        self.flood_retries = flood_retries

    async def call(self, method: str, **params: Any) -> Any:
        """GET `method` and return its `response`; raises TGStatError on any failure."""
        query = {"token": self.token, **{k: v for k, v in params.items() if v is not None}}
        retries = 0
        while True:
            code, payload = await self._get(method, query)
            if code is None:
                return payload
            if code not in FLOOD_WAIT_SECONDS or retries >= self.flood_retries:
                raise TGStatError(code, f"{method}: {explain(code)}")
            retries += 1
            wait = FLOOD_WAIT_SECONDS[code] * retries
            print(f"{method}: {explain(code)}; retry {retries} of {self.flood_retries} "
                  f"in {wait} s", file=sys.stderr)
            await self.sleep(wait)

    def redact(self, text: str) -> str:
        """`text` with the token (as given or URL-encoded) replaced by '***'."""
        for form in {self.token, urllib.parse.quote(self.token, safe=""),
                     urllib.parse.quote_plus(self.token)}:
            text = text.replace(form, "***")
        return text

    async def _get(self, method: str, query: dict[str, Any]) -> tuple[str | None, Any]:
        """One request: (None, response) on success, (error code, None) on a TGStat error.

        Redirects are not followed: the token is in the query, and would go along.
        """
        url = f"{self.base_url}{method}"
        try:
            async with self.session.get(url, params=query, allow_redirects=False) as reply:
                if 300 <= reply.status < 400:
                    target = urllib.parse.urlsplit(reply.headers.get("Location", ""))
                    raise TGStatError("redirect", self.redact(
                        f"{method}: TGStat answered HTTP {reply.status}, a redirect to "
                        f"{target.scheme}://{target.netloc}{target.path} that is not "
                        "followed (it would carry the token); check --base-url"))
                try:
                    body = await reply.json(content_type=None)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise TGStatError("bad_reply", f"{method}: TGStat answered HTTP "
                                      f"{reply.status} without JSON") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise TGStatError("unreachable", self.redact(
                f"{method}: cannot reach {self.base_url} ({reason})")) from None
        if not isinstance(body, dict) or body.get("status") not in ("ok", "error"):
            raise TGStatError("bad_reply", f"{method}: unexpected answer from TGStat")
        if body["status"] == "error":
            return str(body.get("error") or "unknown_error"), None
        return None, body.get("response")

    async def categories(self) -> list[dict[str, Any]]:
        """`/database/categories`: [{"code": ..., "name": ...}, ...]."""
        response = await self.call("/database/categories")
        if not isinstance(response, list):
            raise TGStatError("bad_reply", "/database/categories: unexpected answer")
        return [c for c in response if isinstance(c, dict) and c.get("code")]

    async def search(self, category: str, *, country: str | None, language: str | None,
                     limit: int) -> list[dict[str, Any]]:
        """`/channels/search` in one category: the channel items."""
        response = await self.call("/channels/search", category=category, country=country,
                                   language=language, limit=limit)
        items = response.get("items") if isinstance(response, dict) else None
        if not isinstance(items, list):
            raise TGStatError("bad_reply", "/channels/search: unexpected answer")
        return [item for item in items if isinstance(item, dict)]

    async def usage(self) -> Any:
        """`/usage/stat`: the quota use of the token's plans."""
        return await self.call("/usage/stat")


# ----------------------------------------------------------------------------- channel entries

def normalise_username(raw: Any) -> str | None:
    """'@name', 'name', '@@name' or a t.me link -> '@name'; None if it is no public username."""
    if not isinstance(raw, str):
        return None
    name = LINK_PREFIX_RE.sub("", raw.strip()).lstrip("@").strip("/")
    return f"@{name}" if USERNAME_RE.fullmatch(name) else None


@dataclass
class CategoryReport:
    """What happened to one category's search results."""

    name: str
    fetched: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def channel_entry(item: dict[str, Any], category: str, min_subscribers: int,
                  report: CategoryReport) -> dict[str, Any] | None:
    """A pool entry from a TGStat channel item, or None (reason counted in `report`)."""
    if item.get("peer_type", "channel") != "channel":
        report.skip("not a channel")
        return None
    restrictions = item.get("tgstat_restrictions")     # [] when there are none
    if isinstance(restrictions, dict):
        for label, reason in RESTRICTIONS.items():
            if restrictions.get(label):
                report.skip(reason)
                return None
    username = normalise_username(item.get("username")) or normalise_username(item.get("link"))
    if username is None:
        report.skip("no public username")
        return None
    subscribers = item.get("participants_count")
    if not isinstance(subscribers, int) or isinstance(subscribers, bool):
        subscribers = 0
    if subscribers < min_subscribers:
        report.skip(f"under {min_subscribers} subscribers")
        return None
    title = item.get("title") if isinstance(item.get("title"), str) else ""
    return {
        "username": username,
        "description": title.strip() or username,
        "category": category,
        "subscribers": subscribers,
        "tgstat_url": f"https://t.me/{username[1:]}",
    }


def read_channel_file(path: Path) -> list[dict[str, Any]]:
    """The entries of an existing channels_data.json ([] if there is none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChannelFileError(f"{path}: cannot read it ({exc}); fix it, or pass --replace "
                               "to overwrite it") from exc
    if not isinstance(data, list):
        raise ChannelFileError(f"{path}: expected a JSON list of channels; fix it, or pass "
                               "--replace to overwrite it")
    return data


def merge_channels(existing: list[dict[str, Any]], fetched: list[dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Existing entries first (updated where fetched again), then the new ones."""
    fetched_by_key = {entry["username"].lower(): entry for entry in fetched}
    merged, seen = [], set()
    counts = {"new": 0, "updated": 0, "kept": 0}
    for entry in existing:
        key = normalise_username(entry.get("username")) if isinstance(entry, dict) else None
        key = key.lower() if key else None
        if key in fetched_by_key and key not in seen:
            merged.append({**entry, **fetched_by_key[key]})
            counts["updated"] += 1
        else:
            merged.append(entry)
            counts["kept"] += 1
        if key:
            seen.add(key)
    for key, entry in fetched_by_key.items():
        if key not in seen:
            merged.append(entry)
            counts["new"] += 1
    return merged, counts


# ----------------------------------------------------------------------------- commands

def choose_categories(offered: list[dict[str, Any]], wanted: list[str] | None
                      ) -> tuple[dict[str, str], list[str]]:
    """(code -> pool category name) to search, and the codes asked for that TGStat lacks."""
    names = {str(c["code"]): str(c.get("name") or c["code"]) for c in offered}
    codes = wanted if wanted else list(DEFAULT_CATEGORIES)
    missing = [code for code in codes if code not in names]
    chosen = {code: DEFAULT_CATEGORIES.get(code, names[code]) for code in codes
              if code in names}
    return chosen, missing


async def offered_categories(client: TGStatClient) -> list[dict[str, Any]]:
    """TGStat's categories, or the known codes when TGStat will not list them."""
    try:
        return await client.categories()
    except TGStatError as exc:
        if exc.code in TOKEN_ERRORS or exc.code in ("unreachable", "redirect"):
            raise
        print(f"note: cannot read TGStat's categories ({exc}); searching the known codes",
              file=sys.stderr)
        return [{"code": code, "name": name} for code, name in DEFAULT_CATEGORIES.items()]


async def fetch_channels(client: TGStatClient, args: argparse.Namespace
                         ) -> tuple[list[dict[str, Any]], list[CategoryReport]]:
    """Search every chosen category; the de-duplicated entries and a report per category."""
    chosen, missing = choose_categories(await offered_categories(client), args.categories)
    if args.categories and missing:
        raise TGStatError("unknown_category", f"TGStat has no categor"
                          f"{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}; "
                          "see the codes with: tgstat_fetcher.py categories")
    if missing:
        print(f"note: TGStat offers no category {', '.join(missing)}; skipped",
              file=sys.stderr)
    entries: dict[str, dict[str, Any]] = {}
    reports = []
    for code, category in chosen.items():
        report = CategoryReport(category)
        items = await client.search(code, country=args.country, language=args.language,
                                    limit=args.limit)
        for item in items:
            report.fetched += 1
            entry = channel_entry(item, category, args.min_subscribers, report)
            if entry is None:
                continue
            if entry["username"].lower() in entries:
                report.skip("duplicate")
                continue
            entries[entry["username"].lower()] = entry
            report.kept += 1
        reports.append(report)
    return list(entries.values()), reports


def print_summary(reports: list[CategoryReport]) -> None:
    """One line per category: fetched, kept, and why the rest was skipped."""
    rows = [(r.name, r.fetched, r.kept,
             ", ".join(f"{n} {reason}" for reason, n in sorted(r.skipped.items())) or "-")
            for r in reports]
    print(migrate_db.format_table(("category", "fetched", "kept", "skipped"), rows,
                                  right=(1, 2)))


async def command_fetch(client: TGStatClient, args: argparse.Namespace) -> int:
    """`fetch`: search, merge and write channels_data.json; the file is untouched on failure."""
    existing = [] if args.replace else read_channel_file(args.output)
    fetched, reports = await fetch_channels(client, args)
    print(f"TGStat channel search: country {args.country}, language {args.language}")
    print_summary(reports)
    if not fetched:
        print(f"nothing fetched; {args.output} left as it was")
        return EXIT_OK
    merged, counts = merge_channels(existing, fetched)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    migrate_db.write_atomically(args.output, json.dumps(merged, ensure_ascii=False, indent=2)
                                + "\n")
    print(f"{args.output}: {len(merged)} channels ({counts['new']} new, "
          f"{counts['updated']} updated, {counts['kept']} kept from the file)")
    return EXIT_OK


async def command_categories(client: TGStatClient, args: argparse.Namespace) -> int:
    """`categories`: TGStat's category codes and names."""
    for category in await client.categories():
        print(f"{category['code']:<16} {category.get('name', '')}")
    return EXIT_OK


async def command_usage(client: TGStatClient, args: argparse.Namespace) -> int:
    """`usage`: print /usage/stat, one plan per block."""
    usage = await client.usage()
    for plan in usage if isinstance(usage, list) else [usage]:
        if isinstance(plan, dict):
            for key, value in plan.items():
                print(f"{key}: {value}")
        else:
            print(plan)
        print()
    return EXIT_OK


def category_list(text: str) -> list[str]:
    """argparse type: 'tech, news' -> ['tech', 'news']."""
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise argparse.ArgumentTypeError("give category codes separated by commas")
    return codes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Refresh channels_data.json (heatup.py's channel pool) from the TGStat API.",
        epilog="TGSTAT_API_TOKEN comes from the environment or .env. Channel search needs a "
               "paid TGStat plan; without one the shipped channels_data.json still works.",
        parents=[migrate_db.cli_options()])
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="TGStat API address (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetch = commands.add_parser("fetch", help="search categories and merge into the pool file")
    search = fetch.add_argument_group("search")
    search.add_argument("--categories", type=category_list, metavar="CODE[,CODE...]",
                        help="TGStat category codes (default: "
                             f"{','.join(DEFAULT_CATEGORIES)})")
    search.add_argument("--country", default=DEFAULT_COUNTRY,
                        help="TGStat country code (database/countries; default: %(default)s)")
    search.add_argument("--language", default=DEFAULT_LANGUAGE,
                        help="TGStat language code (database/languages, e.g. english; "
                             "default: %(default)s)")
    search.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"channels per category, at most {MAX_LIMIT} "
                             "(default: %(default)s)")
    search.add_argument("--min-subscribers", type=int, default=0, metavar="N",
                        help="keep channels with at least N subscribers (default: %(default)s)")
    output = fetch.add_argument_group("output")
    output.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="FILE",
                        help="pool file to merge into (default: channels_data.json next to "
                             "this script)")
    output.add_argument("--replace", action="store_true",
                        help="write only the fetched channels, dropping the file's entries")
    fetch.set_defaults(handler=command_fetch)
    commands.add_parser("categories", help="list TGStat's category codes").set_defaults(
        handler=command_categories)
    commands.add_parser("usage", help="show the API quota used (/usage/stat)").set_defaults(
        handler=command_usage)
    return parser


async def run(args: argparse.Namespace, token: str) -> int:
    """Run one command with an HTTP session; TGStat failures become one stderr line."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = TGStatClient(session, args.base_url, token)
        try:
            return await args.handler(client, args)
        except TGStatError as exc:
            print(f"error: {client.redact(str(exc))}", file=sys.stderr)
            return EXIT_USAGE if exc.code == "unknown_category" else EXIT_FAILURE
        except (ChannelFileError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    migrate_db.setup_logging(args.verbose, args.quiet)
    if args.command == "fetch":
        if not 1 <= args.limit <= MAX_LIMIT:
            parser.error(f"--limit must be between 1 and {MAX_LIMIT}")
        if args.min_subscribers < 0:
            parser.error("--min-subscribers must not be negative")
    dotenv.load_dotenv(Path.cwd() / ".env")
    dotenv.load_dotenv(SCRIPT_DIR / ".env")
    token = os.environ.get("TGSTAT_API_TOKEN", "").strip()
    if not token:
        parser.error("TGSTAT_API_TOKEN is not set; put it in the environment or in .env "
                     "(get one at https://tgstat.ru/my/api)")
    return asyncio.run(run(args, token))


if __name__ == "__main__":
    migrate_db.run_main(main)
