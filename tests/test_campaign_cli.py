"""campaign.py as the operator runs it: `start` with one worker process per account over
the simulated Telegram, `status`, `runs`, `stop`, Ctrl+C, a worker killed with SIGKILL in
the middle of a send, and a database left by the earlier system."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import helpers
from helpers import python, wait_until
from test_campaign import Setup, make_campaign, make_legacy_db

import campaign
import migrate_db
import telegram_sim

SCRIPT = Path(__file__).resolve().parent.parent / "campaign.py"
FAST = {"max_messages_per_hour": 1000, "max_cycles": 2, "cycle_delay_minutes": 0}


def write_config(setup: Setup, **limits: float) -> Path:
    path = setup.tmp / "config.yaml"
    lines = ["limits:"] + [f"  {key}: {value}" for key, value in {**FAST, **limits}.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def command(setup: Setup, *args: str) -> list[str]:
    return python(SCRIPT, "--db", setup.db_path, "--config", setup.tmp / "config.yaml", *args)


def cli(setup: Setup, *args: str) -> subprocess.CompletedProcess:
    return helpers.run(command(setup, *args), cwd=setup.tmp)


def run_main(setup: Setup, capsys, *args: str) -> tuple[int, str, str]:
    """A command run in this process (no Telegram needed): exit code, stdout, stderr."""
    capsys.readouterr()
    code = campaign.main(["--db", str(setup.db_path), "--config",
                          str(setup.tmp / "config.yaml"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def start_in_background(setup: Setup, *args: str) -> subprocess.Popen:
    """`start` in a process group of its own (as from a terminal), workers included; with
    exec, so that `stop` recognises it by its command line."""
    return helpers.start(command(setup, "start", *args), cwd=setup.tmp,
                         start_new_session=True, forked=False)


def successes(setup: Setup) -> int:
    return setup.conn.execute("SELECT COUNT(*) FROM task_attempts WHERE status = 'success'"
                              ).fetchone()[0]


def test_start_sends_every_cycle_from_two_account_processes(tmp_path: Path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=6)
    write_config(setup)
    result = cli(setup, "start")
    assert result.returncode == 0, result.stderr
    run_id = re.search(r"Session ID \(run_id\): ([0-9a-f-]{36})", result.stdout).group(1)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        run_id)
    assert f"run {run_id} finished" in result.stdout
    assert re.search(r"  s1: \d+ sent, 0 failed, done", result.stdout)
    assert re.search(r"  s2: \d+ sent, 0 failed, done", result.stdout)
    for chat in setup.chats:
        assert setup.messages(chat) == ["First text", "Second text"]
    rows = setup.conn.execute("SELECT * FROM task_attempts WHERE run_id = ?",
                              (run_id,)).fetchall()
    assert len(rows) == 12
    code, out, _ = run_main(setup, capsys, "status")
    assert code == 0 and "12/12 sent" in out and "blocked chats: 0" in out
    assert re.search(r"  s1: \d+/1000 in the last hour; next free slot now; this run: done", out)
    code, out, _ = run_main(setup, capsys, "runs")
    assert run_id in out and "finished" in out and "12/12 sent" in out


def test_dry_run_and_plan_send_nothing(tmp_path: Path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=3)
    write_config(setup, max_messages_per_hour=30, cycle_delay_minutes=20)
    for args in (("start", "--dry-run"), ("plan",)):
        code, out, err = run_main(setup, capsys, *args)
        assert code == 0, err
        assert "sends: 6 = 0 carried over from the last run + 3 chats x 2 cycle(s)" in out
        assert "@chat002: 2; first text: 'First text'" in out
        assert "should end in about 22 min" in out  # 20 min + half the randomness
    assert setup.conn.execute("SELECT COUNT(*) FROM campaign_runs").fetchone() == (0,)
    assert all(setup.messages(chat) == [] for chat in setup.chats)


def test_plan_estimate_matches_the_spec_example(tmp_path: Path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=0)
    now = "2026-01-01T00:00:00+00:00"
    with migrate_db.transaction(setup.conn):
        setup.conn.executemany("INSERT INTO tasks (chat_username, next_available_at, created_at) "
                               "VALUES (?, '', ?)", [(f"@chat{i:03d}", now) for i in range(100)])
    write_config(setup, max_messages_per_hour=30, cycle_delay_minutes=20)
    code, out, _ = run_main(setup, capsys, "plan")
    assert code == 0 and "sends: 200 = 0 carried over" in out
    assert "should end in about 6 h (around" in out  # 30 at once each hour
    assert "... and 50 more chats" in out


def test_second_start_while_running_is_refused(tmp_path: Path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1",), chats=3)
    write_config(setup, max_messages_per_hour=1, max_cycles=1)
    start = start_in_background(setup)
    wait_until(lambda: successes(setup) == 1, what="the first send")
    code, _, err = run_main(setup, capsys, "start")
    assert code == 1
    assert err.startswith("error: run ") and "is still running" in err
    assert len(err.strip().splitlines()) == 1
    os.killpg(start.pid, signal.SIGINT)
    start.communicate(timeout=30)


def test_start_on_a_migrated_earlier_system_database(tmp_path: Path, capsys) -> None:
    setup = make_campaign(tmp_path, ("s1", "s2"), chats=0)
    setup.conn.close()
    setup.db_path.unlink()
    chats = [f"@old{i:03d}" for i in range(4)]
    for chat in chats:
        setup.world.create_channel(chat, username=chat[1:], kind="megagroup",
                                   members=["s1", "s2"])
    make_legacy_db(setup.db_path, ["s1"], chats, templates=("Hello from the template",),
                   attempts=((1, "success", "2025-01-01 10:00:00"),))
    write_config(setup)
    # the earlier system's templates are the texts: nothing to import
    assert run_main(setup, capsys, "add-profile", str(tmp_path / "sessions" / "s1"))[0] == 0
    assert run_main(setup, capsys, "add-profile", str(tmp_path / "sessions" / "s2"))[0] == 0
    result = cli(setup, "start")
    assert result.returncode == 0, result.stderr
    assert "3 chats, 6 sends owed (0 carried over" in result.stdout
    texts = {chat: [m.message for m in setup.world.messages(chat)
                    if isinstance(m, telegram_sim.types.Message)] for chat in chats}
    assert texts["@old000"] == ["Hello from the template"] * 2  # was 'completed' before
    assert texts["@old003"] == []  # blocked stays blocked
    conn = migrate_db.connect(setup.db_path, kind="campaign")
    assert conn.execute("SELECT COUNT(*) FROM task_attempts WHERE run_id IS NULL"
                        ).fetchone() == (1,)
    code, out, _ = run_main(setup, capsys, "status")
    assert code == 0 and "@old003 (default): ChatWriteForbidden" in out
