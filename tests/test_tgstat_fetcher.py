"""tgstat_fetcher.py against a fake TGStat API served by aiohttp on loopback."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import tgstat_fetcher

SCRIPT = Path(tgstat_fetcher.__file__)
TOKEN = "test-token-123"

CATEGORIES = [
    {"code": "tech", "name": "Технологии"},
    {"code": "news", "name": "Новости и СМИ"},
    {"code": "crypto", "name": "Криптовалюты"},
    {"code": "blogs", "name": "Блоги"},
]
SEARCH = {
    "tech": [
        {"id": 1, "peer_type": "channel", "username": "@habr_com", "title": "Хабр",
         "link": "t.me/habr_com", "participants_count": 120000},
        {"id": 2, "peer_type": "channel", "username": "", "title": "private one",
         "link": "t.me/joinchat/AAAA", "participants_count": 5000},
        {"id": 3, "peer_type": "chat", "username": "techchat", "title": "a group",
         "participants_count": 900},
        {"id": 4, "peer_type": "channel", "username": "tiny_tech", "title": "Tiny",
         "participants_count": 12},
    ],
    "news": [
        {"id": 5, "peer_type": "channel", "username": "rt_russian", "title": "RT на русском",
         "participants_count": 1500000},
        {"id": 1, "peer_type": "channel", "username": "habr_com", "title": "Хабр",
         "participants_count": 120000},
    ],
    "crypto": [
        {"id": 6, "peer_type": "channel", "username": "@@forklog", "title": "ForkLog",
         "participants_count": 200000, "subscribers_count": 1},
    ],
}


class FakeTGStat:
    """TGStat's endpoints with scriptable errors; records every request's query."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.errors: list[str] = []        # error codes answered first, one per request
        self.search_error: str | None = None
        self.app = web.Application()
        self.app.router.add_get("/database/categories", self.categories)
        self.app.router.add_get("/channels/search", self.search)
        self.app.router.add_get("/usage/stat", self.usage)
        self.app.router.add_get("/broken/database/categories", self.broken)

    def gate(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        if self.errors:
            return web.json_response({"status": "error", "error": self.errors.pop(0)})
        token = request.query.get("token", "")
        if not token:
            return web.json_response({"status": "error", "error": "empty_token"})
        if token != TOKEN:
            return web.json_response({"status": "error", "error": "token_invalid"})
        return None

    async def categories(self, request: web.Request) -> web.Response:
        return self.gate(request) or web.json_response({"status": "ok",
                                                        "response": CATEGORIES})

    async def search(self, request: web.Request) -> web.Response:
        refused = self.gate(request)
        if refused:
            return refused
        if self.search_error:
            return web.json_response({"status": "error", "error": self.search_error})
        limit = int(request.query["limit"])
        items = SEARCH.get(request.query["category"], [])[:limit]
        return web.json_response({"status": "ok", "response": {"count": len(items),
                                                                "items": items}})

    async def usage(self, request: web.Request) -> web.Response:
        return self.gate(request) or web.json_response({"status": "ok", "response": [
            {"serviceKey": "stat", "title": "Stat API S", "spentRequests": "12",
             "expiredAt": 1767225600}]})

    async def broken(self, request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")


@pytest.fixture
async def tgstat():
    fake = FakeTGStat()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


async def run_cli(tmp_path: Path, *args: str, token: str | None = TOKEN
                  ) -> tuple[int, str, str]:
    """Run the script as a real process from tmp_path; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "TGSTAT_API_TOKEN"}
    if token is not None:
        env["TGSTAT_API_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def manual_file(tmp_path: Path) -> Path:
    path = tmp_path / "channels_data.json"
    path.write_text(json.dumps([
        {"username": "@durov", "description": "Durov's Channel", "category": "News",
         "subscribers": 1, "tgstat_url": "https://t.me/durov"},
        {"username": "@habr_com", "description": "old text", "category": "Technology",
         "subscribers": 10, "tgstat_url": "https://t.me/habr_com"},
    ], ensure_ascii=False), encoding="utf-8")
    return path


async def test_fetch_merges_normalises_and_summarises(tgstat, tmp_path):
    path = manual_file(tmp_path)
    code, out, err = await run_cli(
        tmp_path, "--base-url", tgstat.url, "fetch", "--categories", "tech,news,crypto",
        "--limit", "10", "--min-subscribers", "100", "--country", "ru",
        "--output", str(path))
    assert code == 0, err
    channels = json.loads(path.read_text(encoding="utf-8"))
    by_name = {c["username"]: c for c in channels}
    assert list(by_name) == ["@durov", "@habr_com", "@rt_russian", "@forklog"]
    assert by_name["@durov"]["subscribers"] == 1                  # manual entry kept as is
    assert by_name["@habr_com"] == {"username": "@habr_com", "description": "Хабр",
                                    "category": "Technology", "subscribers": 120000,
                                    "tgstat_url": "https://t.me/habr_com"}
    assert by_name["@forklog"]["subscribers"] == 200000          # participants_count read
    assert by_name["@rt_russian"]["category"] == "News"
    lines = out.splitlines()
    assert lines[0].split() == ["category", "fetched", "kept", "skipped"]
    tech = next(line for line in lines if line.startswith("Technology"))
    assert "4" in tech.split()[1] and tech.split()[2] == "1"
    assert "1 no public username" in tech and "1 not a channel" in tech
    assert "1 under 100 subscribers" in tech
    assert "1 duplicate" in next(line for line in lines if line.startswith("News"))
    assert "4 channels (2 new, 1 updated, 1 kept from the file)" in out
    searches = [q for p, q in tgstat.requests if p == "/channels/search"]
    assert [q["category"] for q in searches] == ["tech", "news", "crypto"]
    assert all(q["token"] == TOKEN and q["limit"] == "10" and q["country"] == "ru"
               for q in searches)
    assert TOKEN not in path.read_text(encoding="utf-8")


async def test_replace_drops_manual_entries(tgstat, tmp_path):
    path = manual_file(tmp_path)
    code, _, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                 "--categories", "crypto", "--replace", "--output", str(path))
    assert code == 0, err
    assert [c["username"] for c in json.loads(path.read_text())] == ["@forklog"]


async def test_default_categories_skip_those_tgstat_lacks(tgstat, tmp_path):
    path = tmp_path / "pool.json"
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                   "--output", str(path))
    assert code == 0, err
    assert "note: TGStat offers no category software, business, education" in err
    assert [q["category"] for p, q in tgstat.requests if p == "/channels/search"] == [
        "news", "tech", "crypto"]
    assert len(json.loads(path.read_text())) == 4


async def test_no_subscription_explained_and_file_untouched(tgstat, tmp_path):
    path = manual_file(tmp_path)
    before = path.read_bytes()
    tgstat.search_error = "no_active_subscription"
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                   "--output", str(path))
    assert code == 1
    assert err.strip().splitlines()[1:] == [
        "error: /channels/search: a paid TGStat API plan is needed for channel search; "
        "the shipped channels_data.json still works without it"]
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]                     # no temp file left behind


@pytest.mark.parametrize("code", sorted(tgstat_fetcher.ERROR_EXPLANATIONS))
def test_every_documented_error_code_has_its_own_explanation(code):
    assert tgstat_fetcher.explain(code) != f"TGStat error '{code}'"


@pytest.mark.parametrize("token, expected", [
    ("wrong", "the token is not valid"),
    (None, "TGSTAT_API_TOKEN is not set"),
])
async def test_token_problems(tgstat, tmp_path, token, expected):
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "usage", token=token)
    assert code == (1 if token else 2)
    assert expected in err and "Traceback" not in err


async def test_token_read_from_dotenv_in_current_folder(tgstat, tmp_path):
    (tmp_path / ".env").write_text(f"TGSTAT_API_TOKEN={TOKEN}\n")
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "usage", token=None)
    assert code == 0, err
    assert "spentRequests: 12" in out and "title: Stat API S" in out


async def test_flood_control_backs_off_then_succeeds(tgstat):
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    tgstat.errors = ["flood_control_10", "flood_control_60"]
    async with aiohttp.ClientSession() as session:
        client = tgstat_fetcher.TGStatClient(session, tgstat.url, TOKEN, sleep=record)
        categories = await client.categories()
    assert [c["code"] for c in categories] == ["tech", "news", "crypto", "blogs"]
    assert waits == [10, 120]
    assert len(tgstat.requests) == 3


async def test_flood_control_gives_up_after_bounded_retries(tgstat):
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    tgstat.errors = ["flood_control_10"] * 10
    async with aiohttp.ClientSession() as session:
        client = tgstat_fetcher.TGStatClient(session, tgstat.url, TOKEN, sleep=record)
        with pytest.raises(tgstat_fetcher.TGStatError, match="wait 10 seconds"):
            await client.categories()
    assert waits == [10, 20, 30]
    assert len(tgstat.requests) == 4


async def test_malformed_existing_file_is_not_overwritten(tgstat, tmp_path):
    path = tmp_path / "channels_data.json"
    path.write_text("[{\"username\": ")
    code, _, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                 "--output", str(path))
    assert code == 1
    assert "cannot read it" in err and "--replace" in err and len(err.splitlines()) == 1
    assert path.read_text() == "[{\"username\": "


@pytest.mark.parametrize("args, expected", [
    (["fetch", "--limit", "101"], "--limit must be between 1 and 100"),
    (["fetch", "--min-subscribers", "-5"], "--min-subscribers must not be negative"),
    (["fetch", "--categories", " , "], "give category codes"),
])
async def test_usage_errors_exit_2(tmp_path, args, expected):
    code, _, err = await run_cli(tmp_path, *args)
    assert code == 2 and expected in err


async def test_unknown_category_is_a_usage_error(tgstat, tmp_path):
    code, _, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                 "--categories", "tech,cooking", "--output",
                                 str(tmp_path / "p.json"))
    assert code == 2
    assert "TGStat has no category cooking" in err
    assert not (tmp_path / "p.json").exists()


async def test_unreachable_and_non_json_answers(tgstat, tmp_path):
    code, _, err = await run_cli(tmp_path, "--base-url", "http://127.0.0.1:9", "categories")
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = await run_cli(tmp_path, "--base-url", tgstat.url + "/broken", "categories")
    assert code == 1 and "HTTP 502 without JSON" in err


def test_normalise_username():
    normalise = tgstat_fetcher.normalise_username
    assert normalise("@@durov") == "@durov"
    assert normalise("https://t.me/durov") == "@durov"
    assert normalise(" telegram ") == "@telegram"
    assert normalise("t.me/joinchat/AAAAA") is None
    assert normalise("") is None and normalise(None) is None and normalise("a b") is None
