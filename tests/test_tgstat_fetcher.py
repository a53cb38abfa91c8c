"""tgstat_fetcher.py against a fake TGStat API served by aiohttp on loopback."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import helpers
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import clean_env, python

import tgstat_fetcher

SCRIPT = Path(tgstat_fetcher.__file__)
TOKEN = "test-token-123+/="          # URL-encoded in queries

# /database/categories as TGStat answers it (codes as listed on tgstat.ru; names abridged)
CATEGORIES = [
    {"code": code, "name": name} for code, name in (
        ("blogs", "Блоги"), ("news", "Новости и СМИ"), ("entertainment", "Юмор и развлечения"),
        ("tech", "Технологии"), ("economics", "Экономика"), ("business", "Бизнес и стартапы"),
        ("crypto", "Криптовалюты"), ("travels", "Путешествия"),
        ("marketing", "Маркетинг, PR, реклама"), ("psychology", "Психология"),
        ("design", "Дизайн"), ("politics", "Политика"), ("art", "Искусство"),
        ("law", "Право"), ("education", "Образование"), ("books", "Книги"),
        ("language", "Лингвистика"), ("career", "Карьера"), ("edutainment", "Познавательное"),
        ("courses", "Курсы и гайды"), ("sport", "Спорт"), ("beauty", "Мода и красота"),
        ("medicine", "Медицина"), ("health", "Здоровье и Фитнес"),
        ("pics", "Картинки и фото"), ("apps", "Софт и приложения"),
        ("video", "Видео и фильмы"), ("music", "Музыка"), ("games", "Игры"),
        ("food", "Еда и кулинария"), ("quotes", "Цитаты"), ("handmade", "Рукоделие"),
        ("babies", "Дети и родители"), ("nature", "Природа"), ("other", "Другое"))]


def channel(n: int, username: str, title: str, subscribers: int, *, peer_type: str = "channel",
            restrictions: dict | list | None = None, link: str | None = None) -> dict:
    """A Channel object as TGStat documents it (objects/Channel)."""
    return {"id": n, "tg_id": 1000 + n, "link": link or f"t.me/{username.lstrip('@')}",
            "peer_type": peer_type, "username": username, "active_usernames": [username],
            "title": title, "about": f"about {title}",
            "image100": f"//static.tgstat.ru/channels/_100/{n}.jpg",
            "image640": f"//static.tgstat.ru/channels/_0/{n}.jpg",
            "participants_count": subscribers,
            "tgstat_restrictions": [] if restrictions is None else restrictions}


SEARCH = {
    "tech": [
        channel(1, "@habr_com", "Хабр", 120000),
        channel(2, "", "private one", 5000, link="t.me/joinchat/AAAA"),
        channel(3, "techchat", "a group", 900, peer_type="chat"),
        channel(4, "tiny_tech", "Tiny", 12),
        channel(7, "@boosted", "Boosted", 90000, restrictions={"red_label": True}),
    ],
    "news": [
        channel(5, "rt_russian", "RT на русском", 1500000),
        channel(1, "habr_com", "Хабр", 120000),
        channel(8, "@scamnews", "Scam", 50000, restrictions={"black_label": True}),
    ],
    "crypto": [
        {**channel(6, "@@forklog", "ForkLog", 200000), "subscribers_count": 1},
    ],
    "apps": [channel(9, "@apps_daily", "Apps daily", 30000)],
    "entertainment": [channel(10, "@fun_stuff", "Fun", 40000,
                              restrictions={"red_label": False, "black_label": False})],
    "beauty": [channel(11, "@style_now", "Style", 25000)],
}


class FakeTGStat:
    """TGStat's endpoints with scriptable errors; records every request's query."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.errors: list[str] = []        # error codes answered first, one per request
        self.search_error: str | None = None
        self.categories_error: str | None = None
        self.categories_list = CATEGORIES
        self.app = web.Application()
        self.app.router.add_get("/database/categories", self.categories)
        self.app.router.add_get("/channels/search", self.search)
        self.app.router.add_get("/usage/stat", self.usage)
        self.app.router.add_get("/broken/database/categories", self.broken)
        self.app.router.add_get("/looping/database/categories", self.loop)

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
        refused = self.gate(request)
        if refused:
            return refused
        if self.categories_error:
            return web.json_response({"status": "error", "error": self.categories_error})
        return web.json_response({"status": "ok", "response": self.categories_list})

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
            {"serviceKey": "stat", "title": "Stat API S", "spentChannels": "3",
             "spentRequests": "12", "spentWords": "0", "expiredAt": 1767225600}]})

    async def broken(self, request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    async def loop(self, request: web.Request) -> web.Response:
        """A misconfigured proxy: redirects to itself, token and all."""
        self.requests.append((request.path, dict(request.query)))
        raise web.HTTPFound(str(request.url))


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
    env = clean_env("TGSTAT_API_TOKEN",
                    **({"TGSTAT_API_TOKEN": token} if token is not None else {}))
    # off the event loop: the fake TGStat the script asks runs on it
    done = await asyncio.to_thread(helpers.run, python(SCRIPT, *args), cwd=tmp_path, env=env)
    return done.returncode, done.stdout, done.stderr


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
    assert lines[0] == "TGStat channel search: country ru, language russian"
    assert lines[1].split() == ["category", "fetched", "kept", "skipped"]
    tech = next(line for line in lines if line.startswith("Technology"))
    assert tech.split()[1:3] == ["5", "1"]
    assert "1 no public username" in tech and "1 not a channel" in tech
    assert "1 under 100 subscribers" in tech
    assert "1 flagged red_label (fake subscribers)" in tech
    news = next(line for line in lines if line.startswith("News"))
    assert "1 duplicate" in news and "1 flagged black_label (fraud)" in news
    assert "4 channels (2 new, 1 updated, 1 kept from the file)" in out
    assert "@boosted" not in path.read_text() and "@scamnews" not in path.read_text()
    searches = [q for p, q in tgstat.requests if p == "/channels/search"]
    assert [q["category"] for q in searches] == ["tech", "news", "crypto"]
    assert all(q["token"] == TOKEN and q["limit"] == "10" and q["country"] == "ru"
               and q["language"] == "russian" for q in searches)
    assert TOKEN not in path.read_text(encoding="utf-8") and TOKEN not in out + err


async def test_replace_drops_manual_entries(tgstat, tmp_path):
    path = manual_file(tmp_path)
    code, _, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                 "--categories", "crypto", "--replace", "--output", str(path))
    assert code == 0, err
    assert [c["username"] for c in json.loads(path.read_text())] == ["@forklog"]


async def test_default_categories_are_tgstats_codes_with_country_and_language(tgstat,
                                                                              tmp_path):
    path = tmp_path / "pool.json"
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                   "--country", "kz", "--language", "english",
                                   "--output", str(path))
    assert code == 0, err
    assert err == ""
    searches = [q for p, q in tgstat.requests if p == "/channels/search"]
    assert [q["category"] for q in searches] == [
        "news", "tech", "apps", "crypto", "business", "education", "entertainment", "sport",
        "music", "beauty"]
    assert all(q["country"] == "kz" and q["language"] == "english" for q in searches)
    by_category = {c["category"]: c["username"] for c in json.loads(path.read_text())}
    assert by_category["Programming"] == "@apps_daily"          # apps, not "software"
    assert by_category["Entertainment"] == "@fun_stuff"         # entertainment, not "humor"
    assert by_category["Lifestyle"] == "@style_now"             # beauty, not "fashion"


async def test_default_categories_skip_those_tgstat_lacks(tgstat, tmp_path):
    tgstat.categories_list = [c for c in CATEGORIES if c["code"] not in ("music", "sport")]
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                   "--output", str(tmp_path / "pool.json"))
    assert code == 0, err
    assert "note: TGStat offers no category sport, music; skipped" in err
    assert len([p for p, _ in tgstat.requests if p == "/channels/search"]) == 8


async def test_known_codes_when_the_categories_cannot_be_read(tgstat, tmp_path):
    tgstat.categories_error = "outdated_statistics"
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                   "--categories", "apps,beauty",
                                   "--output", str(tmp_path / "pool.json"))
    assert code == 0, err
    assert err.startswith("note: cannot read TGStat's categories (/database/categories: "
                          "TGStat is still updating these statistics")
    assert [q["category"] for p, q in tgstat.requests if p == "/channels/search"] == \
        ["apps", "beauty"]


@pytest.mark.parametrize("code", [c for c in sorted(tgstat_fetcher.ERROR_EXPLANATIONS)
                                  if c not in tgstat_fetcher.FLOOD_WAIT_SECONDS]
                         + ["quota_something_new", "brand_new_error"])
async def test_each_error_code_is_one_line_without_the_token(tgstat, tmp_path, code):
    tgstat.search_error = code
    code_, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                    "--categories", "tech", "--output",
                                    str(tmp_path / "pool.json"))
    assert code_ == 1
    assert err.splitlines() == [f"error: /channels/search: {tgstat_fetcher.explain(code)}"]
    assert TOKEN not in out + err and "test-token" not in out + err
    assert not (tmp_path / "pool.json").exists()
    if code == "quota_something_new":
        assert "a quota of the TGStat plan is used up (quota_something_new)" in err


async def test_a_redirect_loop_is_not_followed_and_the_token_never_shown(tgstat, tmp_path):
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url + "/looping",
                                   "categories")
    assert code == 1
    assert err.splitlines() == [
        f"error: /database/categories: TGStat answered HTTP 302, a redirect to "
        f"{tgstat.url}/looping/database/categories that is not followed (it would carry "
        "the token); check --base-url"]
    assert "test-token" not in out + err
    assert len(tgstat.requests) == 1


async def test_no_subscription_explained_and_file_untouched(tgstat, tmp_path):
    path = manual_file(tmp_path)
    before = path.read_bytes()
    tgstat.search_error = "no_active_subscription"
    code, out, err = await run_cli(tmp_path, "--base-url", tgstat.url, "fetch",
                                   "--output", str(path))
    assert code == 1
    assert err.splitlines() == [
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
    assert categories == CATEGORIES
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
