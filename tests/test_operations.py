"""Running for months: one CLI convention per script (--version, -v/-q, a closed pipe),
SIGTERM/SIGHUP to the long-running scripts alone and under run.sh (screen included), UTC
log lines stored once, metrics files, and migrate_db's checks (issue 15)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import clean_env, python, wait_until

import migrate_db
from telegram_sim import World

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["campaign.py", "clone_streaming.py", "clone_streaming_shared.py", "heatup.py",
           "migrate_db.py", "rehearse.py", "telegram_session.py", "telegram_sim.py",
           "tgstat_fetcher.py", "vibedialer.py"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z ")


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def script_env(**extra: str) -> dict[str, str]:
    """No chat, simulator, log-capture or metrics settings inherited."""
    return clean_env("SOURCE_CHAT", "TARGET_CHAT", "TELEGRAM_SIMULATOR",
                     migrate_db.LOG_CAPTURED_ENV, "METRICS_FILE", **extra)


# ----------------------------------------------------------------------------- CLI convention

@pytest.mark.parametrize("script", SCRIPTS)
def test_version_and_quiet_at_top_level(script: str) -> None:
    result = helpers.run(python(script, "-q", "--version"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{script} {migrate_db.SUITE_VERSION}"
    both = helpers.run(python(script, "-v", "-q", "--version"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_into_a_closed_pipe_ends_quietly(script: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)                       # like `| head` that has already gone
    try:
        result = helpers.run(python(script, "-v", "--help"), stdout=write_end,
                             stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert result.returncode == 0
    assert result.stderr == ""


HEAVY_MODULES = ("telethon", "numpy", "aiohttp", "rich", "yaml", "openai", "psycopg",
                 "serial", "dotenv")
HELP_PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({path!r}, run_name="__main__")
except SystemExit:
    pass
print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_loads_no_heavy_library(script: str) -> None:
    """--help answers at once: Telethon, numpy, aiohttp, rich, ... load when first used."""
    probe = HELP_PROBE.format(script=script, path=str(ROOT / script), heavy=HEAVY_MODULES)
    result = helpers.run([sys.executable, "-c", probe], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_a_long_listing_cut_by_head_ends_quietly(tmp_path: Path) -> None:
    dialer = helpers.start(python("vibedialer.py", "dial", "555-234", "--storage",
                                  "dry-run", "--no-interactive", "--yes"),
                           cwd=tmp_path, text=False)
    head = [dialer.stdout.readline() for _ in range(3)]
    dialer.stdout.close()
    err = dialer.stderr.read().decode()
    assert dialer.wait(timeout=helpers.TIMEOUT) == 0
    assert all(head) and "Broken pipe" not in err and "Traceback" not in err


# ----------------------------------------------------------------------------- logs

LOGGING_SCRIPT = """
import logging, sys
sys.path.insert(0, {root!r})
import migrate_db
migrate_db.setup_logging(log_file="app.log")
for n in range({lines}):
    logging.getLogger("app").info("line %d of the script", n)
print("a printed summary line", flush=True)
"""


def test_log_lines_are_utc_iso_with_zone_0600_and_rotate_by_size(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(LOGGING_SCRIPT.format(root=str(ROOT), lines=40))
    result = helpers.run(python(tmp_path / "app.py"), cwd=tmp_path,
                         env=script_env(LOG_MAX_BYTES="1000", LOG_BACKUPS="2"))
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in tmp_path.glob("app.log*"))
    assert files == ["app.log", "app.log.1", "app.log.2"]        # rotated, two kept
    for name in files:
        path = tmp_path / name
        assert path.stat().st_mode & 0o777 == 0o600
        assert 0 < path.stat().st_size <= 1000
        lines = path.read_text().splitlines()
        assert lines and all(LOG_LINE.match(line) for line in lines), lines[:3]
    assert "line 39 of the script" in (tmp_path / "app.log").read_text()
    assert all(LOG_LINE.match(line) for line in result.stderr.splitlines())


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A suite folder whose scripts are this checkout's, with .venv/bin/python."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / ".venv").symlink_to(Path(sys.prefix))
    for path in [*ROOT.glob("*.py"), ROOT / "schema.sql"]:
        (suite / path.name).symlink_to(path)
    return suite


def account_folder(suite: Path, env: str) -> Path:
    folder = suite / "sessions" / "acc"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "sessions" / "session1" / "run.sh", folder / "run.sh")
    (folder / ".env").write_text(env)
    return folder


def run_sh(folder: Path) -> subprocess.Popen:
    """run.sh started in a folder; killed with its script after the test if still running."""
    return helpers.start(["bash", "run.sh"], cwd=folder, env=script_env(),
                         start_new_session=True)


def test_under_run_sh_each_line_is_stored_once_in_run_log(suite: Path) -> None:
    (suite / "app.py").write_text(LOGGING_SCRIPT.format(root=str(ROOT), lines=3))
    folder = account_folder(suite, "RUN_SCRIPT=app.py\n")
    process = run_sh(folder)
    out, err = process.communicate(timeout=helpers.TIMEOUT)
    assert process.returncode == 0, err
    log = (folder / "run.log").read_text()
    assert not (folder / "app.log").exists()          # the script's own file is not written
    assert log.count("line 2 of the script") == 1
    assert all(LOG_LINE.match(line) for line in log.splitlines()), log
    assert re.search(r"Z a printed summary line$", log, re.M)     # stamped by the writer
    assert "app.py finished cleanly" in log
    assert (folder / "run.log").stat().st_mode & 0o777 == 0o600
    assert "line 2 of the script" in out                # the terminal sees everything too


# ----------------------------------------------------------------------------- signals

LONG_SCRIPT = """
import logging, sys, time
sys.path.insert(0, {root!r})
import migrate_db
from pathlib import Path
log = logging.getLogger("long")

def main():
    migrate_db.setup_logging(log_file="long.log")
    runs = Path("runs.txt")
    runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
    ticks = 0
    try:
        log.info("working")
        while True:
            time.sleep(0.05)
            ticks += 1
    finally:
        log.info("summary: %d ticks, work in flight given back", ticks)
    return 1

migrate_db.run_main(main)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_run_sh_passes_sigterm_and_sighup_on_and_stops(suite: Path, signum: int) -> None:
    (suite / "long.py").write_text(LONG_SCRIPT.format(root=str(ROOT)))
    folder = account_folder(suite, "RUN_SCRIPT=long.py\n")
    process = run_sh(folder)
    wait_until(lambda: "working" in text_of(folder / "run.log"), what="the script to start")
    process.send_signal(signum)                # only to run.sh, as `kill` does
    _, err = process.communicate(timeout=helpers.TIMEOUT)
    assert process.returncode == 0, err
    log = (folder / "run.log").read_text()
    name = signal.Signals(signum).name
    assert log.count("summary: ") == 1 and "stopped by " + name in log
    assert f"long.py stopped by {name} (exit code 0); not restarting" in log
    assert (folder / "runs.txt").read_text() == "1"


def clone_world(tmp_path: Path, folder: Path, messages: int = 5) -> World:
    world = World.create(tmp_path / "world.db")
    world.add_account("acc")
    source = world.create_channel("Src", username="ops_source", owner="acc")
    world.create_channel("Dst", username="ops_target", owner="acc")
    for n in range(messages):
        world.post(source, f"post {n}")
    world.make_session_folder(folder, "acc", extra_env={
        "SOURCE_CHAT": "@ops_source", "TARGET_CHAT": "@ops_target", "COPY_MODE": "copy"})
    return world


def following(log: Path) -> bool:
    return "following new messages" in text_of(log)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_cloner_stops_on_sigterm_and_sighup_with_its_summary(tmp_path: Path,
                                                             signum: int) -> None:
    folder = tmp_path / "sessions" / "acc"
    clone_world(tmp_path, folder)
    metrics = tmp_path / "clone.prom"
    process = helpers.start(python("clone_streaming_shared.py", "--metrics-file", metrics),
                            cwd=folder, env=script_env())
    wait_until(lambda: following(folder / "clone.log"), what="the backfill")
    process.send_signal(signum)
    _, err = process.communicate(timeout=helpers.TIMEOUT)
    assert process.returncode == 0, err
    log = (folder / "clone.log").read_text()
    assert "summary: cloned 5" in log and f"stopped by {signal.Signals(signum).name}" in log
    assert all(LOG_LINE.match(line) for line in log.splitlines() if line[:1].isdigit())
    assert (folder / "clone.log").stat().st_mode & 0o777 == 0o600
    prom = metrics.read_text()
    assert 'suite_messages{script="clone",status="done"} 5' in prom
    assert re.search(r'^suite_last_success_timestamp_seconds\{script="clone"\} [1-9]', prom,
                     re.M)


def test_cloner_under_run_sh_stopped_with_sigterm_is_not_restarted(tmp_path: Path,
                                                                   suite: Path) -> None:
    folder = suite / "sessions" / "acc"
    clone_world(tmp_path, folder)
    shutil.copy(ROOT / "sessions" / "session1" / "run.sh", folder / "run.sh")
    process = run_sh(folder)
    wait_until(lambda: following(folder / "run.log"), what="the backfill")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=helpers.TIMEOUT)
    assert process.returncode == 0, err
    log = (folder / "run.log").read_text()
    assert log.count("summary: cloned 5") == 1
    assert "clone_streaming_shared.py stopped by SIGTERM (exit code 0); not restarting" in log
    assert log.count("starting clone_streaming_shared.py") == 1
    assert not (folder / "clone.log").exists()        # stored once: run.log only


@pytest.mark.skipif(shutil.which("screen") is None, reason="screen is not installed")
def test_screen_quit_stops_the_cloner_with_its_summary(tmp_path: Path, suite: Path) -> None:
    folder = suite / "sessions" / "acc"
    clone_world(tmp_path, folder)
    shutil.copy(ROOT / "sessions" / "session1" / "run.sh", folder / "run.sh")
    name = f"ops-test-{os.getpid()}"
    assert helpers.run(["screen", "-S", name, "-dm", "bash", "run.sh"], cwd=folder,
                       env=script_env()).returncode == 0
    try:
        wait_until(lambda: following(folder / "run.log"), what="the backfill")
        assert helpers.run(["screen", "-S", name, "-X", "quit"]).returncode == 0
        wait_until(lambda: "not restarting" in text_of(folder / "run.log"),
                   what="run.sh to stop")
    finally:
        helpers.run(["screen", "-S", name, "-X", "quit"])
    log = (folder / "run.log").read_text()
    assert log.count("summary: cloned 5") == 1
    assert "stopped by SIGHUP" in log and "Traceback" not in log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_heatup_serve_stops_on_sigterm_and_sighup(tmp_path: Path, signum: int) -> None:
    (tmp_path / "sessions").mkdir()
    process = helpers.start(python("heatup.py", "serve", "--port", str(free_port()),
                                   "--sessions-dir", "sessions", "--db", "history.db",
                                   "--channels", ROOT / "channels_data.json"),
                            cwd=tmp_path, env=script_env())
    wait_until(lambda: "heat-up API on" in text_of(tmp_path / "heatup.log"), what="the server")
    process.send_signal(signum)
    _, err = process.communicate(timeout=helpers.TIMEOUT)
    assert process.returncode == 0, err
    log = (tmp_path / "heatup.log").read_text()
    assert "heat-up API stopped" in log and f"stopped by {signal.Signals(signum).name}" in log
    assert "Traceback" not in err


def test_campaign_start_stops_on_sighup_with_a_summary(tmp_path: Path) -> None:
    from test_campaign import make_campaign
    from test_campaign_cli import start_in_background, successes, write_config

    setup = make_campaign(tmp_path, ("s1",), chats=4)
    write_config(setup, max_messages_per_hour=1, max_cycles=1)
    metrics = tmp_path / "campaign.prom"
    start = start_in_background(setup, "--metrics-file", str(metrics))
    wait_until(lambda: successes(setup) == 1 and metrics.exists(), what="the first send")
    os.killpg(start.pid, signal.SIGHUP)       # the terminal's hang-up reaches the group
    out, err = start.communicate(timeout=helpers.TIMEOUT)
    assert start.returncode == 0, err
    assert "Traceback" not in err
    assert re.search(r"run \S+ stopped", out) and "  s1: 1 sent, 0 failed, stopped" in out
    assert 'suite_messages{script="campaign",status="success"}' in metrics.read_text()


# ----------------------------------------------------------------------------- databases

def test_migrate_db_skips_a_simulator_world_and_catches_a_damaged_database(
        tmp_path: Path) -> None:
    World.create(tmp_path / "world.db").close()
    good = tmp_path / "campaign.db"
    migrate_db.connect(good, kind="campaign").close()
    bad = tmp_path / "checkpoint.db"
    conn = migrate_db.connect(bad, kind="checkpoint")
    with migrate_db.transaction(conn):
        conn.executemany("INSERT INTO messages (source_chat, msg_id, status) "
                         "VALUES ('s', ?, 'done')", [(n,) for n in range(3000)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(bad, "r+b") as handle:           # a page in the middle overwritten
        handle.seek(4096 * 4)
        handle.write(b"\x07" * 4096)
    world_before = (tmp_path / "world.db").read_bytes()
    result = helpers.run(python("migrate_db.py", "world.db", "campaign.db", "checkpoint.db"),
                         cwd=tmp_path)
    assert result.returncode == 1
    assert "world.db: skipped, not one of the suite's databases" in result.stdout
    assert "campaign.db: up to date" in result.stdout
    assert (tmp_path / "world.db").read_bytes() == world_before
    error, = result.stderr.splitlines()
    assert error.startswith("error: checkpoint.db: damaged (")
    assert "stop every script using it" in error and ".recover" in error


def test_migrate_db_covers_heatup_history_and_account_folders(tmp_path: Path,
                                                             monkeypatch) -> None:
    shared = tmp_path / "sessions" / "shared"
    monkeypatch.setattr(migrate_db, "DEFAULT_DB_DIR", shared)
    monkeypatch.delenv("DATABASE_PATH", raising=False)
    for path in (shared / "accounts.db", tmp_path / "sessions" / "acc" / "checkpoint.db",
                 tmp_path / "sessions.db"):
        migrate_db.connect(path).close()
    assert migrate_db.suite_databases() == [
        shared / "accounts.db", tmp_path / "sessions" / "acc" / "checkpoint.db",
        tmp_path / "sessions.db"]


def test_transaction_surfaces_the_real_error_after_sqlite_rolled_back(db_path: Path) -> None:
    conn = migrate_db.connect(db_path, kind="heatup")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"), \
            migrate_db.transaction(conn):
        conn.executemany("INSERT INTO session_history (session_id, action_type, action_data) "
                         "VALUES ('acc', 'read', ?)", [("x" * 4000,) for _ in range(50)])
    assert not conn.in_transaction
    with migrate_db.transaction(conn):                 # the connection is usable again
        conn.execute("INSERT INTO session_history (session_id, action_type) "
                     "VALUES ('acc', 'idle')")
    assert conn.execute("SELECT action_type FROM session_history").fetchall() == [("idle",)]
    conn.close()


def test_new_databases_and_logs_are_private_and_migrate_tightens_old_ones(
        tmp_path: Path) -> None:
    conn = migrate_db.connect(tmp_path / "shared" / "accounts.db", kind="accounts")
    with migrate_db.transaction(conn):
        conn.execute("INSERT INTO accounts (name, phone) VALUES ('acc', '+15550100')")
    for name in ("accounts.db", "accounts.db-wal", "accounts.db-shm"):
        assert (tmp_path / "shared" / name).stat().st_mode & 0o777 == 0o600, name
    conn.close()
    old = tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE rate_limits (id INTEGER)").connection.close()
    old.chmod(0o644)
    report = migrate_db.migrate_file(old)
    assert "mode 644 -> 600" in report and old.stat().st_mode & 0o777 == 0o600


def test_durable_transaction_commits_with_synchronous_full(db: sqlite3.Connection) -> None:
    seen = []
    with migrate_db.durable_transaction(db):
        seen.append(db.execute("PRAGMA synchronous").fetchone()[0])
        db.execute("INSERT INTO campaign_texts (text) VALUES ('hi')")
    assert seen == [2]                                        # FULL during the commit
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1   # NORMAL again after


# ----------------------------------------------------------------------------- dialer csv

def test_dialer_resume_cuts_a_half_row_and_never_appends_to_it(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    first = helpers.run(python("vibedialer.py", "dial", "555-234-56", "-o", out,
                               "--no-interactive", "--yes", "--limit", "5", "--metrics-file",
                               tmp_path / "dialer.prom"))
    assert first.returncode == 0, first.stderr
    assert 'suite_sends_total{script="dialer"} 5' in (tmp_path / "dialer.prom").read_text()
    assert out.stat().st_mode & 0o777 == 0o600
    whole = out.read_bytes()
    last_row = whole.rstrip(b"\r\n").rsplit(b"\n", 1)[1]
    with open(out, "ab") as handle:             # a sixth row cut short by a full disk
        handle.write(last_row.replace(b"555-234-5604", b"555-234-5605")[:20])
    resumed = helpers.run(python("vibedialer.py", "dial", "--resume", out, "--infer-prefix",
                                 "--no-interactive", "--yes", "--limit", "3"))
    assert resumed.returncode == 0, resumed.stderr
    assert "removed an incomplete last row (20 bytes)" in resumed.stderr
    data = out.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n")
    import csv
    rows = list(csv.reader(data.decode().splitlines()))
    assert all(len(row) == len(rows[0]) for row in rows)
    numbers = [row[1] for row in rows[1:]]
    assert len(numbers) == 8 == len(set(numbers))


# ----------------------------------------------------------------------------- supervision

def test_systemd_unit_prevents_restarts_on_the_codes_run_sh_stops_on() -> None:
    unit = (ROOT / "sessions" / "template" / "suite@.service").read_text()
    prevent = re.search(r"^RestartPreventExitStatus=(.+)$", unit, re.M).group(1).split()
    run_sh_text = (ROOT / "sessions" / "session1" / "run.sh").read_text()
    codes = dict(re.findall(r"(EXIT_\w+)=(\d+)", run_sh_text))
    assert sorted(prevent) == sorted(codes.values()) == ["130", "2", "3", "4", "5"]
    assert re.search(r"^Restart=on-failure$", unit, re.M)
    assert "Environment=SUITE_LOG_CAPTURED=1" in unit      # the journal stores each line


def test_heartbeat_speaks_only_after_a_quiet_spell(caplog) -> None:
    log = logging.getLogger("ops-test")
    beat = migrate_db.Heartbeat(log, every=3600)
    with caplog.at_level(logging.INFO, logger="ops-test"):
        beat.beat("busy")                        # something was logged less than an hour ago
        migrate_db.Heartbeat(log, every=0).beat("waiting for the next slot")
    assert [r.getMessage() for r in caplog.records] == ["heartbeat: waiting for the next slot"]
