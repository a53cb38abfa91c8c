"""heatup.py's HTTP API as its clients see it.

A client written for the earlier Heat Up service (its endpoints and JSON as NOTES.md
records them) against `heatup.py serve` as a real process on the simulated Telegram; the
browser guards (cross-site, DNS rebinding, form bodies); the health check while another
process holds the database's write lock; /metrics behind the same auth.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import aiohttp
import helpers
import pytest
from aiohttp.test_utils import TestServer
from helpers import python, wait_until_async
from test_heatup import make_settings
from test_heatup_telegram import (  # noqa: F401  (the world fixture)
    WORLD_CHANNELS,
    cli_env,
    wait_for_job,
    world,
)

import heatup

SCRIPT = Path(heatup.__file__)
ACTIONS = {"join_channel", "read_messages", "idle"}
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


# ----------------------------------------------------------------------------- the earlier client

class EarlierClient:
    """What a client of the earlier Heat Up service relied on, checked like its models."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def call(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        async with self.http.request(method, path, **kwargs) as reply:
            assert reply.content_type == "application/json"
            return reply.status, await reply.json()

    @staticmethod
    def check_plan(plan: list) -> None:
        assert isinstance(plan, list) and plan
        for item in plan:
            assert item["action"] in ACTIONS
            assert item["channel_username"] is None or item["channel_username"].startswith("@")
            assert (item["channel_username"] is None) == (item["action"] == "idle")
            assert isinstance(item["duration_seconds"], int)
            assert isinstance(item["reason"], str)

    @staticmethod
    def check_summary(summary: dict) -> None:
        assert {"total_actions", "successful_actions", "failed_actions", "results", "errors",
                "joined_channels"} <= set(summary)
        assert summary["successful_actions"] + summary["failed_actions"] == \
            summary["total_actions"] == len(summary["results"])
        for number, result in enumerate(summary["results"], start=1):
            assert result["step"] == number and result["action"] in ACTIONS
            assert isinstance(result["result"], str) and isinstance(result["success"], bool)
        assert [e["step"] for e in summary["errors"]] == \
            [r["step"] for r in summary["results"] if not r["success"]]
        assert all(isinstance(e["error"], str) for e in summary["errors"])

    async def warmup(self, session_id: str, body: dict | None = None) -> dict:
        status, answer = await self.call("POST", f"/warmup/{session_id}", json=body)
        assert status == 200, answer
        assert answer["session_id"] == session_id and answer["status"] == "started"
        count = int(re.fullmatch(r"Warmup initiated with (\d+) actions",
                                 answer["message"]).group(1))
        self.check_plan(answer["action_plan"])
        assert len(answer["action_plan"]) == count and answer["execution_summary"] is None
        return answer

    async def warmup_sync(self, session_id: str, body: dict | None = None) -> dict:
        status, answer = await self.call("POST", f"/warmup-sync/{session_id}", json=body)
        assert status == 200, answer
        assert answer["session_id"] == session_id and answer["status"] == "completed"
        self.check_plan(answer["action_plan"])
        self.check_summary(answer["execution_summary"])
        done = answer["execution_summary"]
        assert answer["message"] == (f"Warmup completed: {done['successful_actions']}/"
                                     f"{done['total_actions']} actions successful")
        return answer

    async def history(self, session_id: str, days: int = 30) -> dict:
        status, answer = await self.call("GET", f"/sessions/{session_id}/history",
                                         params={"days": str(days)})
        assert status == 200, answer
        assert answer["session_id"] == session_id
        summary = answer["summary"]
        assert {"is_new", "total_actions", "joined_channels", "last_activity",
                "recent_actions"} <= set(summary)
        for row in answer["history"]:
            assert set(row) == {"id", "session_id", "action_type", "action_data", "timestamp"}
            assert row["session_id"] == session_id and isinstance(row["action_data"], dict)
        stamps = [datetime.fromisoformat(r["timestamp"]) for r in answer["history"]]
        assert stamps == sorted(stamps, reverse=True)                   # newest first
        assert summary["recent_actions"] == answer["history"][:len(summary["recent_actions"])]
        return answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def served(world, tmp_path):  # noqa: F811  (the world fixture, imported)
    """`heatup.py serve` as a real process on the simulated world; its base URL."""
    (tmp_path / "pool.json").write_text(json.dumps([     # only channels that exist
        {"username": f"@{name}", "description": name, "category": "News", "subscribers": 1}
        for name in WORLD_CHANNELS]))
    port = free_port()
    proc = helpers.start(python(SCRIPT, "serve", "--port", str(port)), cwd=tmp_path,
                         env=cli_env(tmp_path), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(url) as http:
        async def answering() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                async with http.get("/"):
                    return True
            except aiohttp.ClientConnectionError:
                return False
        await wait_until_async(answering, what="heatup.py serve to answer")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


async def test_a_client_of_the_earlier_service_works_against_serve(served, tmp_path):
    async with aiohttp.ClientSession(served) as http:
        client = EarlierClient(http)
        assert await client.call("GET", "/") == (200, {"service": "Heat Up",
                                                       "status": "running",
                                                       "version": "1.0.0"})
        status, health = await client.call("GET", "/health")
        assert status == 200 and health["status"] == "healthy"
        assert health["telegram_client"] is True and health["llm_agent"] is False

        started = await client.warmup("acc1")                       # no body, as curl -X POST
        job = await wait_for_job(http, started["job_id"])           # the suite's addition
        assert job["status"] == "done" and job["plan"] == started["plan"]
        assert [a["action"] for a in started["action_plan"]] == [a["type"] for a in job["plan"]]

        done = await client.warmup_sync("acc2", {"telegram_api_base_url": "http://127.0.0.1:9",
                                                 "telegram_api_key": "earlier-key"})
        summary = done["execution_summary"]
        assert summary["failed_actions"] == 0 and summary["errors"] == []
        joined = [a["channel_username"] for a in done["action_plan"]
                  if a["action"] == "join_channel"]
        assert summary["joined_channels"] == joined and done["job_status"] == "done"

        history = await client.history("acc2")
        assert len(history["history"]) == summary["total_actions"]
        assert history["summary"]["is_new"] is False
        assert history["summary"]["joined_channels"] == joined
        assert history["summary"]["last_activity"] == history["history"][0]["timestamp"]
        assert [r["action_type"] for r in reversed(history["history"])] == \
            [a["action"] for a in done["action_plan"]]

        stranger = await client.history("session_abc123")          # no account folder
        assert stranger["history"] == [] and stranger["summary"]["is_new"] is True

        status, answer = await client.call("GET", "/sessions/acc1/history",
                                           params={"days": "thirty"})
        assert status == 422 and answer["detail"][0]["loc"] == ["query", "days"]
        status, answer = await client.call("POST", "/warmup/bad.id")
        assert status == 400 and "invalid session id" in answer["detail"]
        status, answer = await client.call("POST", "/warmup/session_abc123")
        assert status == 404
        assert str(tmp_path / "sessions" / "session_abc123") in answer["detail"]
        status, answer = await client.call("POST", "/warmup/acc1", data="days=1",
                                           headers={"Content-Type": "text/plain"})
        assert status == 415


# ----------------------------------------------------------------------------- guards

@pytest.fixture
async def api_for(tmp_path):
    """Factory: an in-process API (no Telegram needed) with the given settings overrides."""
    servers = []

    async def start(**overrides) -> tuple[str, heatup.HeatUp]:
        settings = make_settings(tmp_path, **overrides)
        service = heatup.HeatUp(settings, heatup.HistoryStore(settings.database),
                                heatup.load_pool(settings.channels_file))
        server = TestServer(heatup.build_app(service), host="127.0.0.1")
        await server.start_server()
        servers.append((server, service))
        return str(server.make_url("")).rstrip("/"), service

    yield start
    for server, service in servers:
        await server.close()
        service.close()
        service.store.close()


async def status_of(url: str, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession(url) as http, \
            http.request(method, path, **kwargs) as reply:
        return reply.status, await reply.json()


@pytest.mark.parametrize("host, allowed", [
    ("localhost", True), ("localhost:8080", True), ("127.0.0.1:8080", True),
    ("127.1.2.3", True), ("[::1]:8080", True), ("LOCALHOST.", True),
    ("evil.example", False), ("localhost.evil.example", False), ("127.0.0.1.nip.io", False),
    ("[::ffff:1.2.3.4]:80", False), ("", False),
])
async def test_without_a_token_only_loopback_host_names_are_served(api_for, host, allowed):
    url, _ = await api_for()
    status, body = await status_of(url, "GET", "/health", headers={"Host": host})
    if allowed:
        assert status == 200
    else:
        assert status == 403 and "only loopback names" in body["detail"]


async def test_cross_site_and_form_requests_are_refused(api_for):
    url, _ = await api_for()
    own = url
    for origin in ("http://evil.example", "null", "http://localhost:1"):
        status, body = await status_of(url, "POST", "/warmup/nobody",
                                       headers={"Origin": origin})
        assert status == 403 and "cross-site request" in body["detail"]
    for kind in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "text/plain"):
        status, body = await status_of(url, "POST", "/warmup-sync/nobody", data=b"a=1",
                                       headers={"Content-Type": kind})
        assert status == 415 and "as JSON" in body["detail"]
    # what the API's own clients send goes through (to the 404 of an unknown account)
    for kwargs in ({}, {"json": {}}, {"headers": {"Origin": own}}):
        status, body = await status_of(url, "POST", "/warmup/nobody", **kwargs)
        assert status == 404, body
    status, body = await status_of(url, "POST", "/warmup/nobody", data=b"[1",
                                   headers={"Content-Type": "application/json"})
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"
    # reading is not state-changing: a page may not read the answer anyway (no CORS)
    status, _ = await status_of(url, "GET", "/health", headers={"Origin": "http://evil.example"})
    assert status == 200


async def test_with_a_token_any_host_but_every_request_authorised(api_for):
    token = "t" * 40
    url, _ = await api_for(api_token=token)
    for path in ("/health", "/metrics", "/"):
        status, body = await status_of(url, "GET", path, headers={"Host": "heatup.example"})
        assert status == 401 and body["detail"].startswith("missing or wrong token")
    async with aiohttp.ClientSession(url) as http, \
            http.get("/metrics", headers={"Host": "heatup.example",
                                          "Authorization": f"Bearer {token}"}) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == heatup.METRICS_CONTENT_TYPE


async def test_health_answers_while_another_process_locks_the_database(api_for, tmp_path):
    url, service = await api_for()
    locker = helpers.start([sys.executable, "-c", LOCKER, service.settings.database],
                           stdin=subprocess.PIPE, text=False)
    try:
        assert locker.stdout.readline() == b"locked\n"
        async with aiohttp.ClientSession(url) as http:
            # a warmup must save its job: it waits for the lock, off the event loop
            waiting = asyncio.create_task(http.post("/warmup/acc1"))
            async with http.get("/health") as reply:
                assert reply.status == 503
                health = await reply.json()
            assert health["status"] == "unhealthy"
            assert "database is locked" in health["database"]
            assert str(service.settings.database) in health["database"]
            async with http.get("/") as reply:
                assert reply.status == 200
            assert not waiting.done()
            locker.stdin.write(b"go\n")
            locker.stdin.close()
            reply = await asyncio.wait_for(waiting, 60)
            assert reply.status == 200 and (await reply.json())["status"] == "started"
            reply.release()
            async with http.get("/health") as reply:
                assert reply.status == 200 and (await reply.json())["database"] == "ok"
    finally:
        locker.kill()
        locker.wait()


def test_a_short_token_is_refused_at_start_with_how_to_make_one(tmp_path):
    settings = make_settings(tmp_path)
    env = cli_env(tmp_path)
    env.update(HEATUP_SESSIONS_DIR=str(settings.sessions_dir),
               HEATUP_CHANNELS_FILE=str(settings.channels_file), HEATUP_API_TOKEN="x" * 31)
    result = helpers.run(python(SCRIPT, "serve"), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: HEATUP_API_TOKEN is 31 characters; use at least 32, e.g. one made with: "
        "python -c \"import secrets; print(secrets.token_urlsafe(32))\""]
