"""heatup.py without Telegram: channel pool, history store, planners, the HTTP API's guards.

The LLM is a real OpenAI-compatible HTTP server on loopback (aiohttp), called through the
real `openai` client; the API is a real aiohttp server on loopback called with aiohttp.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import helpers
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import clean_env, python

import heatup

UTC = timezone.utc        # datetime.UTC is Python 3.11+

SCRIPT = Path(heatup.__file__)
SHIPPED_POOL = SCRIPT.with_name("channels_data.json")
SPEC_CATEGORIES = {"News", "Technology", "Programming", "Crypto", "Business", "Science",
                   "Entertainment", "Sports", "Music", "Lifestyle"}


# ----------------------------------------------------------------------------- fixtures

class FakeLLM:
    """/v1/chat/completions answering with `content`, an HTTP error, or too slowly."""

    def __init__(self) -> None:
        self.content = ""
        self.status = 200
        self.delay = 0.0
        self.requests: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.complete)

    async def complete(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}},
                                     status=self.status)
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
            "model": self.requests[-1]["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.content}}]})


@pytest.fixture
async def llm():
    fake = FakeLLM()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.base_url = str(server.make_url("/v1"))
    yield fake
    await server.close()


def pool_file(tmp_path: Path) -> Path:
    path = tmp_path / "channels.json"
    path.write_text(json.dumps([
        {"username": "@durov", "description": "Durov's Channel", "category": "Technology",
         "subscribers": 1, "tgstat_url": "https://t.me/durov"},
        {"username": "@telegram", "description": "Telegram News", "category": "News",
         "subscribers": 1, "tgstat_url": "https://t.me/telegram"},
        {"username": "@habr_com", "description": "Хабр", "category": "Programming",
         "subscribers": 1, "tgstat_url": "https://t.me/habr_com"},
        {"username": "@forklog", "description": "ForkLog", "category": "Crypto",
         "subscribers": 1, "tgstat_url": "https://t.me/forklog"},
    ], ensure_ascii=False))
    return path


def make_settings(tmp_path: Path, **overrides) -> heatup.Settings:
    sessions = tmp_path / "sessions"
    for name in ("acc1", "acc2"):
        (sessions / name).mkdir(parents=True, exist_ok=True)
        (sessions / name / ".env").write_text("TG_API_ID=1\nTG_API_HASH=x\n")
    (sessions / "shared").mkdir(exist_ok=True)
    values = {"sessions_dir": sessions, "database": tmp_path / "shared" / "heatup.db",
              "channels_file": pool_file(tmp_path), "time_scale": 0.0}
    return heatup.Settings(**{**values, **overrides})


@pytest.fixture
def service(tmp_path):
    settings = make_settings(tmp_path)
    store = heatup.HistoryStore(settings.database)
    yield heatup.HeatUp(settings, store, heatup.load_pool(settings.channels_file))
    store.close()


# ----------------------------------------------------------------------------- channel pool

def test_shipped_pool_is_valid_and_covers_the_spec_categories(caplog):
    raw = json.loads(SHIPPED_POOL.read_text(encoding="utf-8"))
    with caplog.at_level(logging.WARNING):
        pool = heatup.load_pool(SHIPPED_POOL)
    assert not caplog.records                          # no entry skipped
    assert len(pool) == len(raw) >= 30
    assert {c.category for c in pool} == SPEC_CATEGORIES
    for entry in raw:
        assert set(entry) == {"username", "description", "category", "subscribers",
                              "tgstat_url"}
        assert entry["username"].count("@") == 1 and entry["username"].startswith("@")
        assert entry["tgstat_url"] == f"https://t.me/{entry['username'][1:]}"


def test_malformed_entries_reported_with_index_and_skipped(tmp_path, caplog):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps([
        {"username": "@durov", "category": "Technology"},
        {"category": "News"},
        "just text",
        {"username": "@no", "category": "News"},
        {"username": "telegram", "category": "News", "subscribers": -1},
        {"username": "@@telegram", "category": "News", "subscribers": 5},
        {"username": "@Durov", "category": "News"},
    ]))
    with caplog.at_level(logging.WARNING):
        pool = heatup.load_pool(path)
    assert [c.username for c in pool] == ["@durov", "@telegram"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("entry 1 skipped: no username" in m for m in messages)
    assert any("entry 2 skipped: not an object" in m for m in messages)
    assert any("entry 3 skipped" in m and "not a public Telegram username" in m
               for m in messages)
    assert any("entry 4 skipped: subscribers" in m for m in messages)
    assert any("entry 6 skipped: @Durov is listed twice" in m for m in messages)


def test_missing_pool_file_gives_the_verified_fallback(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        pool = heatup.load_pool(tmp_path / "nope.json")
    assert [c.username for c in pool] == ["@durov", "@telegram"]
    assert "using the fallback pool" in caplog.text


@pytest.mark.parametrize("text", ["{\"username\": \"@durov\"}", "[{", "[]"])
def test_malformed_pool_file_is_an_error(tmp_path, text):
    path = tmp_path / "pool.json"
    path.write_text(text)
    with pytest.raises(heatup.PoolError, match="pool.json"):
        heatup.load_pool(path)


# ----------------------------------------------------------------------------- history store

def earlier_rows(conn, session_id: str, rows: list[tuple[str, dict, timedelta]]) -> None:
    """Rows as the earlier service wrote them: its own action_data, CURRENT_TIMESTAMP text."""
    now = datetime.now(UTC)
    with heatup.transaction(conn):
        for action_type, data, age in rows:
            conn.execute("INSERT INTO session_history (session_id, action_type, action_data, "
                         "timestamp) VALUES (?, ?, ?, ?)",
                         (session_id, action_type, json.dumps(data),
                          (now - age).strftime("%Y-%m-%d %H:%M:%S")))


def test_history_newest_first_with_the_summary_over_the_days_window(tmp_path):
    store = heatup.HistoryStore(tmp_path / "h.db")
    earlier_rows(store.conn, "session_abc123", [
        ("join_channel", {"channel_username": "@durov"}, timedelta(days=40)),
        ("join_channel", {"channel_username": "@telegram"}, timedelta(days=3)),
        ("read_messages", {"channel_username": "@telegram", "duration_seconds": 10},
         timedelta(hours=40)),
        ("idle", {"duration_seconds": 30}, timedelta(hours=20)),
    ])
    store.conn.execute("INSERT INTO session_history (session_id, action_type, action_data) "
                       "VALUES ('session_abc123', 'idle', '{}')")      # DEFAULT timestamp
    store.record("session_abc123", "join_channel",
                 {"channel_username": "@forklog", "status": "failed", "reason": "private"})
    for n in range(4):
        store.record("other", "idle", {"duration": n})

    history = store.history("session_abc123", 30)
    assert [(r["action_type"], r["action_data"].get("channel_username")) for r in history] == [
        ("join_channel", "@forklog"), ("idle", None), ("idle", None),
        ("read_messages", "@telegram"), ("join_channel", "@telegram")]
    stamps = [r["timestamp"] for r in history]
    assert stamps[0].endswith("+00:00") and "T" in stamps[0]        # the suite's own rows
    assert all(len(s) == 19 and s[10] == " " for s in stamps[1:])   # as the earlier service
    assert history[-1]["action_data"] == {"channel_username": "@telegram"}

    summary = store.summary("session_abc123", 30)
    assert summary["is_new"] is False
    assert summary["total_actions"] == 4                     # the failed join not counted
    assert summary["joined_channels"] == ["@telegram"]      # @durov is outside 30 days
    assert summary["last_activity"] == stamps[0]
    assert summary["recent_actions"] == history[:5]

    assert [r["action_type"] for r in store.history("session_abc123", 2)] == \
        ["join_channel", "idle", "idle", "read_messages"]
    window = store.summary("session_abc123", 2)
    assert window["total_actions"] == 3 and window["joined_channels"] == []
    assert store.summary("session_abc123", 50)["joined_channels"] == ["@durov", "@telegram"]
    assert store.summary("nobody", 30)["is_new"] is True

    assert store.cleanup(30) == 1
    assert len(store.history("session_abc123", 3650)) == 5
    store.close()


def test_cleanup_command_deletes_expired_rows(tmp_path, run_main):
    settings = make_settings(tmp_path)
    store = heatup.HistoryStore(settings.database)
    with heatup.transaction(store.conn):
        store.conn.execute("INSERT INTO session_history (session_id, action_type, timestamp) "
                           "VALUES ('acc1', 'idle', '2020-01-01T00:00:00+00:00')")
    store.record("acc1", "idle", {"duration": 5})
    store.close()
    code, out, err = run_main("cleanup", env={"SESSION_HISTORY_DAYS": "7"}, settings=settings)
    assert code == 0, err
    assert "1 history rows older than 7 days deleted" in out
    conn = sqlite3.connect(settings.database)
    assert conn.execute("SELECT COUNT(*) FROM session_history").fetchone()[0] == 1
    conn.close()


# ----------------------------------------------------------------------------- planning

def returning_summary() -> dict:
    return {"is_new": False, "total_actions": 15,
            "joined_channels": ["@durov", "@telegram"],
            "last_activity": (datetime.now(UTC) - timedelta(days=2, hours=1)).strftime(
                "%Y-%m-%dT%H:%M:%S"), "recent_actions": []}


NEW_SUMMARY = {"is_new": True, "total_actions": 0, "joined_channels": [],
               "last_activity": None, "recent_actions": []}


async def test_llm_good_plan_used_with_the_new_user_prompt(tmp_path, llm):
    llm.content = json.dumps({"actions": [
        {"type": "join_channel", "channel": "@habr_com"},
        {"type": "read_messages", "channel": "@habr_com", "duration": 12},
        {"type": "idle", "duration": 40},
    ]})
    settings = make_settings(tmp_path, openai_api_key="sk-test", openai_base_url=llm.base_url,
                             openai_model="local-model")
    pool = heatup.load_pool(settings.channels_file)
    plan = await heatup.make_plan(settings, "acc1", NEW_SUMMARY, pool)
    assert plan.planner == "llm:local-model" and plan.note is None
    assert plan.actions == [{"type": "join_channel", "channel": "@habr_com"},
                            {"type": "read_messages", "channel": "@habr_com", "duration": 12},
                            {"type": "idle", "duration": 40}]
    request = llm.requests[0]
    assert request["model"] == "local-model"
    assert request["messages"][0]["content"] == heatup.NEW_USER_PROMPT
    assert "- @forklog (Crypto): ForkLog" in request["messages"][1]["content"]


async def test_returning_user_prompt_built_from_history(tmp_path, llm, service):
    service.store.record("acc1", "join_channel", {"channel_username": "@durov",
                                                  "status": "done"})
    service.store.record("acc1", "read_messages", {"channel_username": "@durov",
                                                   "status": "done"})
    service.store.record("acc1", "join_channel", {"channel_username": "@forklog",
                                                  "status": "skipped"})
    service.store.record("acc1", "join_channel", {"channel_username": "@telegram",
                                                  "status": "failed", "reason": "x"})
    llm.content = "not json at all"
    settings = make_settings(tmp_path, openai_base_url=llm.base_url)
    summary = service.store.summary("acc1", 30)
    await heatup.make_plan(settings, "acc1", summary, service.pool)
    assert llm.requests[0]["messages"][0]["content"] == (
        "You are simulating a returning Telegram user who is coming back online.\n\n"
        "Previous activity summary:\n"
        "- Last active: just now\n"
        "- Total previous actions: 3\n"
        "- Previously joined channels: @durov, @forklog\n\n"
        "You're back for another session and should continue natural, varied behavior.")
    prompt = heatup.persona_prompt(returning_summary(), datetime.now(UTC))
    assert "- Last active: 2 days ago" in prompt and "- Total previous actions: 15" in prompt


async def test_llm_answer_repaired_filtered_and_clamped(tmp_path, llm):
    llm.content = "Sure! Here is the plan:\n```json\n" + json.dumps([
        {"action": "join", "channel": "habr_com"},
        {"type": "join_channel", "channel": "@not_in_pool"},
        {"type": "send_message", "channel": "@durov"},
        {"type": "read_messages", "channel": "@HABR_COM", "duration": 500},
        {"type": "idle", "duration": 1},
        {"type": "idle", "seconds": "long"},
        {"type": "join_channel", "channel": "@habr_com"},
        {"type": "read_messages", "channel": "@durov", "duration": 4},
        {"type": "read_messages", "channel": "@durov", "duration": 5},
        {"type": "read_messages", "channel": "@telegram", "duration": 6},
        {"type": "idle", "duration": 7},
    ]) + "\n```\nEnjoy!"
    settings = make_settings(tmp_path, openai_api_key="sk-test", openai_base_url=llm.base_url)
    plan = await heatup.make_plan(settings, "acc1", NEW_SUMMARY,
                                  heatup.load_pool(settings.channels_file))
    assert plan.planner.startswith("llm:")
    assert plan.actions == [
        {"type": "join_channel", "channel": "@habr_com"},
        {"type": "read_messages", "channel": "@habr_com", "duration": 30},
        {"type": "idle", "duration": 5},
        {"type": "idle", "duration": 30},
        {"type": "read_messages", "channel": "@durov", "duration": 4},
        {"type": "read_messages", "channel": "@durov", "duration": 5},
        {"type": "read_messages", "channel": "@telegram", "duration": 6},
    ]
    assert "channel '@not_in_pool' is not in the pool" in plan.note
    assert "unknown action 'send_message'" in plan.note
    assert "duration 500 clamped to 30 s" in plan.note
    assert "joins @habr_com twice" in plan.note
    assert "1 actions over 7 dropped" in plan.note


@pytest.mark.parametrize("case, expected", [
    ("garbage", "LLM plan unusable: the answer holds no JSON list of actions"),
    ("too_few", "LLM plan unusable: only 1 usable actions (at least 3 needed)"),
    ("timeout", "LLM plan unusable: no answer within 0.3 s"),
    ("http_500", "LLM plan unusable: the endpoint answered HTTP 500"),
    ("unreachable", "LLM plan unusable: APIConnectionError"),
])
async def test_unusable_llm_falls_back_to_the_offline_planner(tmp_path, llm, case, expected):
    llm.content = {"garbage": "I would love to help!",
                   "too_few": json.dumps([{"type": "idle", "duration": 9},
                                          {"type": "join_channel", "channel": "@x"}])
                   }.get(case, "[]")
    llm.delay = 2.0 if case == "timeout" else 0.0
    llm.status = 500 if case == "http_500" else 200
    base_url = "http://127.0.0.1:9/v1" if case == "unreachable" else llm.base_url
    settings = make_settings(tmp_path, openai_api_key="sk-test", openai_base_url=base_url,
                             llm_timeout=0.3)
    pool = heatup.load_pool(settings.channels_file)
    plan = await heatup.make_plan(settings, "acc1", NEW_SUMMARY, pool)
    assert plan.planner == "offline"
    assert plan.note.startswith(expected)
    assert plan.actions == heatup.offline_plan("acc1", NEW_SUMMARY, pool)
    assert len(llm.requests) == (0 if case == "unreachable" else 1)    # no retries


def test_offline_planner_is_seeded_varied_and_history_aware(tmp_path):
    pool = heatup.load_pool(SHIPPED_POOL)
    usernames = {c.username for c in pool}
    plans = [heatup.offline_plan(f"acc{i}", NEW_SUMMARY, pool) for i in range(20)]
    assert plans[0] == heatup.offline_plan("acc0", NEW_SUMMARY, pool)     # reproducible
    assert len({json.dumps(p) for p in plans}) == 20                       # varied
    for plan in plans:
        assert heatup.MIN_ACTIONS <= len(plan) <= heatup.MAX_ACTIONS
        assert plan[0]["type"] == "join_channel"
        assert all(a.get("channel", "@durov") in usernames for a in plan)
        for a in plan:
            if "duration" in a:
                low, high = heatup.DURATION_LIMITS[a["type"]]
                assert low <= a["duration"] <= high
        pairs = zip(plan, plan[1:], strict=False)
        assert all(not (a["type"] == b["type"] == "idle") for a, b in pairs)
    summary = returning_summary()
    returning = [heatup.offline_plan(f"acc{i}", summary, pool) for i in range(20)]
    joins = [a["channel"] for p in returning for a in p if a["type"] == "join_channel"]
    reads = [a["channel"] for p in returning for a in p if a["type"] == "read_messages"]
    assert not set(joins) & {"@durov", "@telegram"}                  # never joined twice
    assert {"@durov", "@telegram"} & set(reads)                      # earlier channels read
    assert all(p[0]["type"] == "read_messages" and p[0]["channel"] in ("@durov", "@telegram")
               for p in returning)                             # catching up comes first


async def test_no_llm_configured_says_so(tmp_path):
    settings = make_settings(tmp_path)
    plan = await heatup.make_plan(settings, "acc1", NEW_SUMMARY,
                                  heatup.load_pool(settings.channels_file))
    assert plan.planner == "offline"
    assert plan.note == "no OPENAI_API_KEY or OPENAI_BASE_URL set"


# ----------------------------------------------------------------------------- HTTP API guards

@pytest.fixture
async def api(service):
    server = TestServer(heatup.build_app(service), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(str(server.make_url(""))) as http:
        yield http
    await server.close()


async def test_history_endpoint(api, service):
    service.store.record("acc1", "join_channel", {"channel_username": "@durov",
                                                  "status": "done"})
    async with api.get("/sessions/acc1/history?days=30") as reply:
        assert reply.status == 200
        body = await reply.json()
    assert body["session_id"] == "acc1"
    assert body["summary"]["is_new"] is False
    assert body["summary"]["joined_channels"] == ["@durov"]
    assert body["history"][0]["action_data"] == {"channel_username": "@durov",
                                                 "status": "done"}
    async with api.get("/sessions/acc1/history", params={"days": "0"}) as reply:
        assert (await reply.json())["history"] == []
    # FastAPI's 422, as the earlier service answered a bad `days`
    for days, kind in (("abc", "int_parsing"), ("1.5", "int_parsing"), ("", "int_parsing"),
                       ("-1", "greater_than_equal"), ("3651", "less_than_equal")):
        async with api.get("/sessions/acc1/history", params={"days": days}) as reply:
            assert reply.status == 422
            (detail,) = (await reply.json())["detail"]
        assert detail["type"] == kind and detail["loc"] == ["query", "days"]
        assert detail["input"] == days and detail["msg"].startswith("Input should be")


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/warmup/nobody", 404),
    ("POST", "/warmup-sync/nobody", 404),
    ("GET", "/sessions/nobody/history", 200),       # any valid session id has a history
    ("POST", "/warmup/shared", 404),                  # a folder, but not an account
    ("POST", "/warmup/" + "a" * 65, 400),
    ("POST", "/warmup/bad.name", 400),
    ("POST", "/warmup/..%2F..%2Fetc", 400),
    ("GET", "/sessions/..%2Facc1/history", 400),
    ("GET", "/sessions/%2E%2E/history", 404),         # the client normalises it too
    ("POST", "/warmup/../acc1", 404),                 # normalised by the client
    ("GET", "/jobs/../../etc/passwd", 404),
    ("GET", "/jobs/0123456789abcdef0123456789abcdef", 404),
    ("GET", "/nowhere", 404),
])
async def test_bad_paths(api, method, path, status):
    async with api.request(method, path) as reply:
        assert reply.status == status
        assert reply.content_type == "application/json"
        if status != 200:
            body = await reply.json()
            assert body["detail"] and body["error"] == body["detail"]


async def test_bodies_over_the_limit_are_refused(api):
    json_type = {"Content-Type": "application/json"}
    async with api.post("/warmup/acc1", data=b"x" * 5000, headers=json_type) as reply:
        assert reply.status == 413
        assert "over 4096 bytes" in (await reply.json())["error"]

    async def chunks():
        for _ in range(10):
            yield b"y" * 1000

    async with api.post("/warmup/acc1", data=chunks(), headers=json_type) as reply:
        assert reply.status == 413


async def test_health(api):
    async with api.get("/health") as reply:
        assert reply.status == 200
        assert await reply.json() == {"status": "healthy", "telegram_client": True,
                                      "llm_agent": False, "database": "ok", "pool_size": 4,
                                      "planner": "offline", "warming_up": []}


async def test_token_required_when_set(tmp_path):
    settings = make_settings(tmp_path, api_token="s3cret")
    store = heatup.HistoryStore(settings.database)
    service = heatup.HeatUp(settings, store, heatup.load_pool(settings.channels_file))
    server = TestServer(heatup.build_app(service), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "s3cret"}):
                for method, path in (("GET", "/health"), ("POST", "/warmup/acc1"),
                                     ("GET", "/sessions/acc1/history"), ("GET", "/nowhere")):
                    async with http.request(method, path, headers=headers) as reply:
                        assert reply.status == 401
                        assert reply.headers["WWW-Authenticate"] == "Bearer"
            async with http.get("/health", headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
    finally:
        await server.close()
        store.close()


# ----------------------------------------------------------------------------- command line

def cli_env(settings: heatup.Settings, env: dict | None = None) -> dict[str, str]:
    return clean_env("OPENAI_", "HEATUP_", "SESSION_HISTORY", "DATABASE_", **{
        "HEATUP_SESSIONS_DIR": str(settings.sessions_dir), "DATABASE_PATH": str(settings.database),
        "HEATUP_CHANNELS_FILE": str(settings.channels_file), **(env or {})})


def run_cli(tmp_path: Path, settings: heatup.Settings, *args: str, env: dict | None = None):
    """The script as a real process."""
    return helpers.run(python(SCRIPT, *args), cwd=tmp_path, env=cli_env(settings, env))


def call_main(monkeypatch, capsys, env: dict[str, str], args) -> tuple[int, str, str]:
    """heatup.main in this process with exactly `env` as the environment (faster than a
    process); (exit code, stdout, stderr)."""
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        code = heatup.main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run_main(monkeypatch, capsys, tmp_path):
    """heatup.main in this process; (exit code, stdout, stderr)."""
    def run(*args: str, env: dict | None = None, settings: heatup.Settings | None = None):
        full_env = cli_env(settings or make_settings(tmp_path), env)
        return call_main(monkeypatch, capsys, full_env, args)
    return run


def test_cli_plan_and_history(tmp_path, run_main):
    settings = make_settings(tmp_path)
    result = run_cli(tmp_path, settings, "plan", "acc1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "acc1: new account"
    assert lines[1] == "planner: offline (no OPENAI_API_KEY or OPENAI_BASE_URL set)"
    assert lines[2].startswith("1. join_channel @")
    code, out, _ = run_main("plan", "acc1", "--json")
    body = json.loads(out)
    assert body["planner"] == "offline" and body["is_new"] is True
    assert 3 <= len(body["plan"]) <= 7
    code, out, _ = run_main("history", "acc1", "--days", "5")
    assert code == 0
    assert out.splitlines()[0] == "acc1: new, 0 actions, last activity never"



def test_cli_db_flag_is_relative_to_the_working_directory(tmp_path):
    settings = make_settings(tmp_path)
    result = run_cli(tmp_path, settings, "history", "acc1", "--db", "mine.db")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mine.db").is_file()
    (tmp_path / "notes.db").write_bytes(b"not a database" * 50)
    before = (tmp_path / "notes.db").read_bytes()
    result = run_cli(tmp_path, settings, "history", "acc1", "--db", "notes.db")
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: notes.db: cannot use it as the history database "
                                     "(file is not a database)")
    assert (tmp_path / "notes.db").read_bytes() == before

@pytest.mark.parametrize("args, env, expected", [
    (["plan", "../acc1"], {}, "invalid session id '../acc1'"),
    (["plan", "nobody"], {}, "no account folder 'nobody'"),
    (["history", "acc1", "--days", "0"], {}, "must be a whole number from 1 to 3650"),
    (["serve", "--host", "0.0.0.0"], {}, "refusing to listen on 0.0.0.0 without "
                                         "HEATUP_API_TOKEN"),
    (["serve", "--port", "70000"], {}, "--port must be between 1 and 65535"),
    (["cleanup"], {"SESSION_HISTORY_DAYS": "soon"}, "SESSION_HISTORY_DAYS='soon' is not a "
                                                    "number"),
    (["cleanup"], {"HEATUP_TIME_SCALE": "-1"}, "HEATUP_TIME_SCALE=-1 must be at least 0"),
])
def test_cli_usage_errors_exit_2(run_main, args, env, expected):
    code, _, err = run_main(*args, env=env)
    assert code == 2
    assert expected in err and "Traceback" not in err


def test_cli_malformed_pool_is_one_line_exit_1(tmp_path, run_main):
    settings = make_settings(tmp_path)
    settings.channels_file.write_text("{oops")
    code, _, err = run_main("plan", "acc1", settings=settings)
    assert code == 1
    assert err.startswith("error: ") and "cannot read the channel pool" in err
    assert len(err.strip().splitlines()) == 1


def test_relative_database_path_is_taken_from_the_suite_folder(tmp_path):
    settings = heatup.settings_from({"DATABASE_PATH": "x/h.db"})
    assert settings.database == SCRIPT.parent / "x" / "h.db"
    assert heatup.settings_from({}).database == SCRIPT.parent / "sessions.db"
    assert heatup.settings_from({"DATABASE_PATH": str(tmp_path / "a.db")}).database == \
        tmp_path / "a.db"


def test_a_new_job_supersedes_one_left_running(tmp_path):
    store = heatup.HistoryStore(tmp_path / "h.db")
    plan = heatup.Plan([{"type": "idle", "duration": 5}] * 3, "offline")
    first = store.create_job("acc1", plan)
    other = store.create_job("acc2", plan)
    second = store.create_job("acc1", plan)
    assert store.job(first)["status"] == "failed"
    assert store.job(first)["error"] == f"interrupted, then superseded by job {second}"
    assert store.unfinished_jobs() == [other, second]
    assert store.unfinished_jobs("acc1") == [second]
    store.close()


async def test_a_pool_found_all_dead_is_503_and_no_plan(api, service):
    service.store.record_pool_check("acc2", [(c.username, heatup.POOL_DEAD, "gone")
                                             for c in service.pool])
    async with api.post("/warmup-sync/acc1") as reply:
        assert reply.status == 503
        assert "all 4 channels of the pool were found dead" in (await reply.json())["detail"]
    assert service.busy == set()
    service.store.record_pool_check("acc2", [("@durov", heatup.POOL_LIVE, "Durov")])
    plan, _ = await service.plan("acc1")
    assert {a.get("channel") for a in plan.actions} <= {"@durov", None}
