"""heatup.py executing warmups over the simulated Telegram (telegram_sim.py).

Real Telethon clients, opened through telegram_session.open_client, on a simulated world
whose channels match the pool; joins and read marks are checked in the world itself. The
HTTP API is a real aiohttp server on loopback, the LLM a real OpenAI-compatible one.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
from pathlib import Path

import aiohttp
import helpers
import pytest
import test_heatup
from aiohttp.test_utils import TestServer
from helpers import clean_env, python, wait_until, wait_until_async
from test_heatup import call_main

import heatup
import telegram_session

SCRIPT = Path(heatup.__file__)
WORLD_CHANNELS = {"durov": 4, "telegram": 3, "habr_com": 5, "forklog": 2}
POOL = [{"username": f"@{name}", "description": name, "category": "News", "subscribers": 1,
         "tgstat_url": f"https://t.me/{name}"} for name in [*WORLD_CHANNELS, "ghost_channel"]]


@pytest.fixture
def world(sim_world, sim_account_folder, tmp_path):
    """A world with the pool's channels (posts in each); acc1 and acc2 already in @telegram."""
    sim_world.add_account("publisher")
    for name, posts in WORLD_CHANNELS.items():
        chan = sim_world.create_channel(name.title(), username=name, owner="publisher")
        for number in range(posts):
            sim_world.post(chan, f"{name} post {number}", by="publisher")
    for account in ("acc1", "acc2"):
        sim_account_folder(account)
        sim_world.join(account, "@telegram")
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    return sim_world


def membership(world, account: str) -> dict[str, int]:
    """{channel username: read_max_id} of the account's channels, from the world's file."""
    conn = sqlite3.connect(world.path)
    rows = conn.execute(
        "SELECT c.username, p.read_max_id FROM participants p JOIN channels c USING "
        "(channel_id) JOIN accounts a ON a.user_id = p.user_id WHERE a.name = ?", (account,))
    result = dict(rows.fetchall())
    conn.close()
    return result


def last_post_id(world, username: str) -> int:
    return max(m.id for m in world.messages(f"@{username}"))


llm = test_heatup.llm  # the fake OpenAI-compatible server fixture, shared


def settings_for(tmp_path: Path, **overrides) -> heatup.Settings:
    values = {"sessions_dir": tmp_path / "sessions", "database": tmp_path / "heatup.db",
              "channels_file": tmp_path / "pool.json", "time_scale": 0.0}
    return heatup.Settings(**{**values, **overrides})


@pytest.fixture
async def api(world, tmp_path, llm):
    """(http session, service) for a heat-up API on loopback, planning with the fake LLM."""
    settings = settings_for(tmp_path, openai_api_key="sk-test", openai_base_url=llm.base_url)
    store = heatup.HistoryStore(settings.database)
    service = heatup.HeatUp(settings, store, heatup.load_pool(settings.channels_file))
    server = TestServer(heatup.build_app(service), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(str(server.make_url(""))) as http:
        yield http, service
    await server.close()
    store.close()


def llm_plan(*actions: dict) -> str:
    return json.dumps({"actions": list(actions)})


async def wait_for_job(http: aiohttp.ClientSession, job_id: str) -> dict:
    """The job, asked of the API until it is no longer running."""
    async def finished() -> dict | None:
        async with http.get(f"/jobs/{job_id}") as reply:
            job = await reply.json()
        return job if job["status"] != "running" else None
    return await wait_until_async(finished, what=f"job {job_id} to finish")


async def test_warmup_sync_joins_reads_and_saves_each_action(api, world, llm):
    http, service = api
    llm.content = llm_plan(
        {"type": "join_channel", "channel": "@durov"},
        {"type": "read_messages", "channel": "@durov", "duration": 5},
        {"type": "join_channel", "channel": "@telegram"},          # already a member
        {"type": "join_channel", "channel": "@ghost_channel"},     # in the pool, not on Telegram
        {"type": "read_messages", "channel": "@habr_com", "duration": 3},
        {"type": "idle", "duration": 9})
    assert "durov" not in membership(world, "acc1")
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 200, await reply.text()
        body = await reply.json()
    assert body["status"] == "completed" and body["job_status"] == "partial"
    assert body["message"] == "Warmup completed: 5/6 actions successful"
    assert body["planner"] == "llm:gpt-4o-mini" and body["is_new"] is True
    summary = body["execution_summary"]
    assert (summary["total_actions"], summary["successful_actions"],
            summary["failed_actions"]) == (6, 5, 1)
    assert summary["errors"] == [{"step": 4, "action": "join_channel", "error":
                                  "@ghost_channel does not exist (unknown username)"}]
    assert summary["joined_channels"] == ["@durov", "@telegram"]     # already a member
    assert [r["success"] for r in summary["results"]] == [True, True, True, False, True, True]
    results = [(row["action_type"], row["action_data"].get("channel_username"),
                row["action_data"]["status"]) for row in body["actions"]]
    assert results == [("join_channel", "@durov", "done"),
                       ("read_messages", "@durov", "done"),
                       ("join_channel", "@telegram", "skipped"),
                       ("join_channel", "@ghost_channel", "failed"),
                       ("read_messages", "@habr_com", "done"),
                       ("idle", None, "done")]
    assert body["actions"][3]["action_data"]["reason"] == \
        "@ghost_channel does not exist (unknown username)"
    assert body["actions"][1]["action_data"]["messages_read"] == 5    # 4 posts + service msg
    # in the world: joined @durov, its messages marked read; @telegram untouched
    members = membership(world, "acc1")
    assert members["durov"] == last_post_id(world, "durov")
    assert members["telegram"] == 0 and "habr_com" not in members
    assert membership(world, "acc2") == {"telegram": 0}

    async with http.get("/sessions/acc1/history", params={"days": "30"}) as reply:
        history = await reply.json()
    assert history["summary"]["joined_channels"] == ["@durov", "@telegram"]
    assert history["summary"]["total_actions"] == 5
    assert [row["id"] for row in history["history"]] == \
        [row["id"] for row in reversed(body["actions"])]            # newest first


async def test_background_warmup_409_then_returning_plan_names_earlier_channels(api, world,
                                                                                 llm):
    http, service = api
    service.settings = settings_for(service.settings.sessions_dir.parent,
                                    openai_base_url=llm.base_url, time_scale=0.01)
    llm.content = llm_plan({"type": "join_channel", "channel": "@habr_com"},
                           {"type": "idle", "duration": 60},
                           {"type": "read_messages", "channel": "@habr_com", "duration": 3})
    async with http.post("/warmup/acc1") as reply:
        assert reply.status == 200
        started = await reply.json()
    assert started["status"] == "started" and started["job_status"] == "running"
    assert started["message"] == "Warmup initiated with 3 actions"
    assert started["execution_summary"] is None
    assert started["action_plan"][0] == {"action": "join_channel", "channel_username":
                                         "@habr_com", "duration_seconds": 0, "reason": ""}
    assert started["plan"][0]["channel"] == "@habr_com"
    async with http.post("/warmup/acc1") as reply:
        assert reply.status == 409
        assert "already warming up" in (await reply.json())["error"]
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 409
    async with http.get("/health") as reply:
        assert (await reply.json())["warming_up"] == ["acc1"]
    service.settings = settings_for(service.settings.sessions_dir.parent,
                                    openai_base_url=llm.base_url)        # no more pauses
    job = await wait_for_job(http, started["job_id"])
    assert job["status"] == "done"
    assert [row["action_data"]["status"] for row in job["actions"]] == ["done"] * 3
    assert membership(world, "acc1")["habr_com"] == last_post_id(world, "habr_com")

    llm.content = "no plan today"            # the offline planner takes over, from history
    async with http.post("/warmup/acc1") as reply:
        assert reply.status == 200
        second = await reply.json()
    assert second["is_new"] is False and second["planner"] == "offline"
    assert second["planner_note"].startswith("LLM plan unusable")
    prompt = llm.requests[-1]["messages"][0]["content"]
    assert "returning Telegram user" in prompt
    assert "- Total previous actions: 3" in prompt
    assert "- Previously joined channels: @habr_com" in prompt
    await wait_for_job(http, second["job_id"])


async def test_account_in_use_by_another_client_is_409(api, tmp_path):
    http, _ = api
    async with telegram_session.open_client(tmp_path / "sessions" / "acc2"), \
            http.post("/warmup/acc2") as reply:
        assert reply.status == 409
        assert f"in use by pid {os.getpid()}" in (await reply.json())["error"]


async def test_channels_too_much_stops_joins_and_private_is_reported(api, world, llm):
    http, _ = api
    world.inject_fault("CHANNEL_PRIVATE", request="JoinChannel", account="acc1", times=1)
    world.inject_fault("CHANNELS_TOO_MUCH", request="JoinChannel", account="acc1", after=1)
    llm.content = llm_plan({"type": "join_channel", "channel": "@durov"},
                           {"type": "join_channel", "channel": "@habr_com"},
                           {"type": "join_channel", "channel": "@forklog"},
                           {"type": "read_messages", "channel": "@telegram", "duration": 3})
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 200
        body = await reply.json()
    assert body["job_status"] == "partial"
    data = [row["action_data"] for row in body["actions"]]
    assert [d["status"] for d in data] == ["failed", "failed", "failed", "done"]
    assert data[0]["reason"] == "@durov is private or unavailable (CHANNEL_PRIVATE)"
    assert data[1]["reason"].startswith("CHANNELS_TOO_MUCH")
    assert data[2]["reason"] == heatup.JOINS_REFUSED_REASON
    assert [e["step"] for e in body["execution_summary"]["errors"]] == [1, 2, 3]
    assert membership(world, "acc1") == {"telegram": last_post_id(world, "telegram")}


async def test_peer_flood_stops_the_job_and_the_account_rests(api, world, llm, tmp_path):
    http, _ = api
    world.inject_fault("PEER_FLOOD", request="JoinChannel", account="acc1")
    llm.content = llm_plan({"type": "read_messages", "channel": "@telegram", "duration": 3},
                           {"type": "join_channel", "channel": "@durov"},
                           {"type": "join_channel", "channel": "@forklog"})
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 500
        body = await reply.json()
    assert body["job_status"] == "failed"
    assert body["detail"] == f"Warmup failed: {heatup.PEER_FLOOD_REASON}"
    assert [(row["action_type"], row["action_data"]["status"]) for row in body["actions"]] \
        == [("read_messages", "done"), ("join_channel", "failed")]
    assert body["actions"][1]["action_data"]["reason"] == heatup.PEER_FLOOD_REASON
    assert body["execution_summary"]["errors"] == [
        {"step": 2, "action": "join_channel", "error": heatup.PEER_FLOOD_REASON},
        {"step": 3, "action": "join_channel", "error": f"not run: {heatup.PEER_FLOOD_REASON}"}]
    async with http.post("/warmup/acc1") as reply:
        assert reply.status == 429
        assert int(reply.headers["Retry-After"]) > 3600
        assert "peer flood" in (await reply.json())["error"]


async def test_flood_wait_is_obeyed_through_the_registry(api, world, llm):
    http, _ = api
    world.inject_fault("FLOOD_WAIT", seconds=1, request="JoinChannel", account="acc1",
                       times=1)
    llm.content = llm_plan({"type": "join_channel", "channel": "@durov"},
                           {"type": "idle", "duration": 5}, {"type": "idle", "duration": 5})
    async with http.post("/warmup-sync/acc1") as reply:
        body = await reply.json()
    assert body["actions"][0]["action_data"]["status"] == "done"
    assert "durov" in membership(world, "acc1")


def cli_env(tmp_path: Path, scale: str = "0") -> dict[str, str]:
    env = clean_env("OPENAI_", "HEATUP_")
    env.update(HEATUP_SESSIONS_DIR=str(tmp_path / "sessions"), HEATUP_TIME_SCALE=scale,
               DATABASE_PATH=str(tmp_path / "heatup.db"),
               HEATUP_CHANNELS_FILE=str(tmp_path / "pool.json"))
    return env


@pytest.fixture
def run_main(monkeypatch, capsys, tmp_path):
    """heatup.main in this process; (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        return call_main(monkeypatch, capsys, cli_env(tmp_path), args)
    return run


def test_cli_dry_run_changes_nothing(world, tmp_path, run_main):
    code, out, err = run_main("warmup", "acc1", "--dry-run")
    assert code == 0, err
    assert "dry run: nothing was joined, read or saved" in out
    assert any(line.endswith(": would join") for line in out.splitlines())
    assert membership(world, "acc1") == {"telegram": 0}
    conn = sqlite3.connect(tmp_path / "heatup.db")
    assert conn.execute("SELECT COUNT(*) FROM session_history").fetchone()[0] == 0
    conn.close()


def test_killed_warmup_continues_where_it_stopped(world, tmp_path, run_main):
    """kill -9 during an idle; the next `warmup` runs only the steps not yet saved."""
    store = heatup.HistoryStore(tmp_path / "heatup.db")
    plan = heatup.Plan([{"type": "join_channel", "channel": "@durov"},
                        {"type": "idle", "duration": 60},
                        {"type": "read_messages", "channel": "@durov", "duration": 3},
                        {"type": "join_channel", "channel": "@forklog"}], "offline")
    job_id = store.create_job("acc1", plan)
    proc = helpers.start(python(SCRIPT, "warmup", "acc1"), cwd=tmp_path,
                         env=cli_env(tmp_path, scale="1"))
    wait_until(lambda: store.job_actions(job_id), what="the first step saved")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [r["action_data"]["step"] for r in store.job_actions(job_id)] == [0]
    assert store.job(job_id)["status"] == "running"

    code, out, err = run_main("warmup", "acc1")
    assert code == 0, err
    assert f"acc1: continuing job {job_id} where it stopped" in out
    job = store.job(job_id)
    assert job["status"] == "done"
    assert [r["action_data"]["step"] for r in job["actions"]] == [0, 1, 2, 3]
    assert set(membership(world, "acc1")) == {"telegram", "durov", "forklog"}
    assert membership(world, "acc1")["durov"] == last_post_id(world, "durov")
    store.close()


def test_cli_warmup_then_history(world, tmp_path, run_main):
    code, out, err = run_main("warmup", "acc2")
    assert code == 0, err
    assert out.startswith("acc2: new account\nplanner: offline")
    code, out, err = run_main("history", "acc2", "--json")
    body = json.loads(out)
    assert body["summary"]["is_new"] is False
    for channel in body["summary"]["joined_channels"]:
        assert channel[1:] in membership(world, "acc2")


def test_cli_unauthorised_account_exits_3(world, tmp_path):
    world.revoke_session("acc1")
    result = helpers.run(python(SCRIPT, "warmup", "acc1"), cwd=tmp_path, env=cli_env(tmp_path))
    code, err = result.returncode, result.stderr
    assert code == 3
    assert "error: account acc1" in err and "log in again" in err


async def test_other_refusals_fail_the_action_and_revoked_session_fails_the_job(api, world,
                                                                              llm):
    http, _ = api
    world.inject_fault("CHANNEL_INVALID", request="GetHistory", account="acc1", times=1)
    world.inject_fault("CHAT_RESTRICTED", code=400, request="ReadHistory", account="acc1",
                       times=1)
    llm.content = llm_plan({"type": "read_messages", "channel": "@durov", "duration": 3},
                           {"type": "read_messages", "channel": "@telegram", "duration": 3},
                           {"type": "idle", "duration": 5})
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 500                  # no join or read succeeded
        body = await reply.json()
    assert body["job_status"] == "failed"
    assert body["detail"].startswith("Warmup failed: no action succeeded: step 1 "
                                     "read_messages: @durov is private")
    data = [row["action_data"] for row in body["actions"]]
    assert [d["status"] for d in data] == ["failed", "failed", "done"]
    assert data[0]["reason"] == "@durov is private or unavailable (CHANNEL_PRIVATE)"
    assert data[1]["reason"].startswith("Telegram refused it (ChatRestrictedError: ")

    world.inject_fault("AUTH_KEY_UNREGISTERED", request="JoinChannel", account="acc1")
    llm.content = llm_plan({"type": "idle", "duration": 5},
                           {"type": "join_channel", "channel": "@forklog"},
                           {"type": "idle", "duration": 5})
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 500
        body = await reply.json()
    assert "AUTH_KEY_UNREGISTERED" in body["detail"] and "log in again" in body["detail"]
    assert [row["action_type"] for row in body["actions"]] == ["idle"]



async def test_session_used_elsewhere_fails_the_job(api, world, llm):
    http, _ = api
    world.inject_fault("AUTH_KEY_DUPLICATED", code=406, request="JoinChannel", account="acc1")
    llm.content = llm_plan({"type": "idle", "duration": 5},
                           {"type": "join_channel", "channel": "@forklog"},
                           {"type": "idle", "duration": 5})
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 500
        body = await reply.json()
    assert "AUTH_KEY_DUPLICATED" in body["detail"]
    assert [row["action_type"] for row in body["actions"]] == ["idle"]

async def test_serve_resumes_a_job_left_running_at_start(world, tmp_path):
    settings = settings_for(tmp_path)
    store = heatup.HistoryStore(settings.database)
    plan = heatup.Plan([{"type": "join_channel", "channel": "@forklog"},
                        {"type": "read_messages", "channel": "@forklog", "duration": 3},
                        {"type": "idle", "duration": 5}], "offline")
    job_id = store.create_job("acc2", plan)
    store.record("acc2", "join_channel", {"channel_username": "@forklog", "status": "done",
                                          "job_id": job_id, "step": 0})
    service = heatup.HeatUp(settings, store, heatup.load_pool(settings.channels_file))
    server = TestServer(heatup.build_app(service), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            job = await wait_for_job(http, job_id)
    finally:
        await server.close()
    assert job["status"] == "done"
    assert [r["action_data"]["step"] for r in job["actions"]] == [0, 1, 2]
    # step 0 was saved before the stop and not run again: the world never saw that join
    assert "forklog" not in membership(world, "acc2")
    store.close()


def test_pool_check_marks_the_missing_channel_dead_and_plans_skip_it(world, tmp_path,
                                                                      run_main):
    code, out, err = run_main("pool", "check", "acc1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == ("4 live, 1 dead (checked through acc1); plans use only the live "
                         "channels")
    assert lines[:-1] == [
        "@durov          live  Durov",
        "@telegram       live  Telegram",
        "@habr_com       live  Habr_Com",
        "@forklog        live  Forklog",
        "@ghost_channel  dead  @ghost_channel does not exist (unknown username)"]
    store = heatup.HistoryStore(tmp_path / "heatup.db")
    assert store.dead_channels() == {
        "@ghost_channel": "@ghost_channel does not exist (unknown username)"}
    settings = settings_for(tmp_path)
    service = heatup.HeatUp(settings, store, heatup.load_pool(settings.channels_file))

    async def plans() -> list[heatup.Plan]:
        return [(await service.plan(f"account{n}"))[0] for n in range(15)]

    planned = {a.get("channel") for plan in asyncio.run(plans()) for a in plan.actions}
    assert planned - {None} == {f"@{name}" for name in WORLD_CHANNELS}
    # an LLM naming the dead channel has that action dropped like any unknown channel
    actions, repairs = heatup.repair_actions(
        [{"type": "join_channel", "channel": "@ghost_channel"}, {"type": "idle"},
         {"type": "join_channel", "channel": "@durov"}, {"type": "idle"}],
        asyncio.run(service.live_pool()))
    assert repairs[0] == "action 1: dropped (channel '@ghost_channel' is not in the pool)"
    service.close()

    world.create_channel("Ghost", username="ghost_channel", owner="publisher")  # it appears
    code, out, _ = run_main("pool", "check", "acc1", "--json")
    assert json.loads(out)["dead"] == 0 and store.dead_channels() == {}
    store.close()


async def test_metrics_count_jobs_actions_planners_and_waiting_accounts(api, world, llm):
    http, _ = api
    llm.content = llm_plan({"type": "join_channel", "channel": "@durov"},
                           {"type": "join_channel", "channel": "@ghost_channel"},
                           {"type": "read_messages", "channel": "@durov", "duration": 3})
    async with http.post("/warmup-sync/acc1") as reply:
        assert reply.status == 200
    world.inject_fault("PEER_FLOOD", request="JoinChannel", account="acc2")
    llm.content = "nothing usable"
    async with http.post("/warmup-sync/acc2") as reply:
        assert reply.status == 500
    async with http.get("/metrics") as reply:
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await reply.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) heatup_\w+ .+", line)
            continue
        name, value = line.rsplit(" ", 1)
        assert re.fullmatch(r'heatup_\w+(\{(\w+="[^"]*",?)+\})?', name), line
        samples[name] = float(value)
    assert samples['heatup_jobs_total{outcome="partial"}'] == 1
    assert samples['heatup_jobs_total{outcome="failed"}'] == 1
    assert samples['heatup_jobs_total{outcome="done"}'] == 0
    assert samples['heatup_actions_total{action="join_channel",result="done"}'] == 1
    assert samples['heatup_actions_total{action="join_channel",result="failed"}'] >= 2
    assert samples['heatup_actions_total{action="read_messages",result="done"}'] >= 1
    assert samples['heatup_plans_total{planner="llm"}'] == 1
    assert samples['heatup_plans_total{planner="offline"}'] == 1
    assert samples["heatup_llm_request_duration_seconds_count"] == 2
    assert samples['heatup_llm_request_duration_seconds_bucket{le="+Inf"}'] == 2
    assert samples["heatup_llm_request_duration_seconds_sum"] > 0
    assert samples["heatup_accounts_waiting"] == 1                  # acc2 rests after PEER_FLOOD
    assert samples["heatup_accounts_warming_up"] == 0
    assert samples['heatup_pool_channels{state="live"}'] == 5
