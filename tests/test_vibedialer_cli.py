"""vibedialer as real processes: Ctrl+C, SIGTERM, kill -9, and the live view on a terminal."""
from __future__ import annotations

import csv
import fcntl
import os
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import helpers
import pytest
from helpers import read_until, wait_until

import vibedialer

SCRIPT = Path(__file__).resolve().parent.parent / "vibedialer.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "xterm-256color"}
ENV.pop("COLUMNS", None)
ENV.pop("LINES", None)
SLOW = ("--sim-call-seconds", "0.01", "--seed", "3")


def dialer(*argv: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *argv]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def wait_for_rows(path: Path, count: int) -> None:
    wait_until(lambda: path.exists() and path.read_text().count("\n") > count,
               what=f"{count} rows in {path.name}")


def committed_rows(db: Path) -> int:
    """The dial_results rows committed so far (0 before the table exists)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dial_results'"
                            ).fetchone():
            return 0
        return conn.execute("SELECT COUNT(*) FROM dial_results").fetchone()[0]
    finally:
        conn.close()


def dialed_in_summary(text: str) -> int:
    match = re.search(r"(\d+) of (\d+) dialed", text)
    assert match, text
    return int(match.group(1))


def test_ctrl_c_flushes_prints_the_summary_and_exits_130(tmp_path):
    out = tmp_path / "r.csv"
    proc = helpers.start(dialer("dial", "555-234-5", "-o", str(out), "--no-interactive",
                                *SLOW), env=ENV)
    wait_for_rows(out, 5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Interrupted: session" in stdout and "to continue:" in stdout
    rows = read_rows(out)
    assert len(rows) == dialed_in_summary(stdout) > 0
    lines = [line for line in stdout.splitlines() if "  555-234-5" in line]
    assert len(lines) == len(rows)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_stops_cleanly_with_the_sqlite_session_closed(tmp_path, signum):
    db = tmp_path / "calls.db"
    proc = helpers.start(dialer("dial", "555-234-5", "--storage", "sqlite", "-o", str(db),
                                "--no-interactive", *SLOW), env=ENV)
    read_until(proc.stdout, "  555-234-5")                 # the first dial
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr          # stopped like Ctrl+C, but not an interrupt
    assert "Interrupted: session" in stdout and "Traceback" not in stderr
    conn = sqlite3.connect(db)
    total, end_time = conn.execute("SELECT total_calls, end_time FROM sessions").fetchone()
    rows = conn.execute("SELECT COUNT(*) FROM dial_results").fetchone()[0]
    conn.close()
    assert total == rows == dialed_in_summary(stdout) > 0
    assert end_time is not None


def test_kill_9_loses_no_csv_row_and_resume_continues(tmp_path):
    out = tmp_path / "r.csv"
    proc = helpers.start(dialer("dial", "555-234-56", "-o", str(out), "--no-interactive",
                                "--random", *SLOW), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV)
    wait_for_rows(out, 10)
    proc.kill()
    proc.wait(timeout=10)
    rows = read_rows(out)
    assert len(rows) >= 10
    assert all(row["tone_type"] is not None and row["status"] for row in rows)  # whole rows
    done = helpers.run(dialer("dial", "--resume", str(out), "--resume-prefix", "555-234-56",
                              "--yes", "--no-interactive"), env=ENV)
    assert done.returncode == 0, done.stderr
    assert f"dialed {len(rows)}, remaining {100 - len(rows)}" in done.stdout
    final = read_rows(out)
    assert sorted(row["phone_number"] for row in final) == \
        [f"555-234-56{n:02d}" for n in range(100)]
    assert len({row["session_id"] for row in final}) == 1


def test_kill_9_keeps_sqlite_counters_consistent_with_rows(tmp_path):
    db = tmp_path / "calls.db"
    proc = helpers.start(dialer("dial", "555-234-5", "--storage", "sqlite", "-o", str(db),
                                "--no-interactive", *SLOW), stderr=subprocess.DEVNULL, env=ENV)
    wait_until(lambda: committed_rows(db), what="the first committed batch")
    proc.kill()
    dials_seen = sum(1 for line in helpers.finish(proc).stdout.splitlines()
                     if "  555-234-5" in line)
    conn = sqlite3.connect(db)
    total, end_time = conn.execute("SELECT total_calls, end_time FROM sessions").fetchone()
    rows = conn.execute("SELECT COUNT(*) FROM dial_results").fetchone()[0]
    conn.close()
    # whole batches only (one was committed after BATCH_SECONDS), counters in the same commit
    assert 0 < rows == total
    assert rows >= dials_seen - vibedialer.BATCH_ROWS
    assert end_time is None          # the session never ended


def run_on_terminal(argv: list[str], interrupt_when: bytes | None = None,
                    timeout: float = 30.0) -> tuple[int, str]:
    """Run under a pseudo-terminal (120x40); optionally Ctrl+C once `interrupt_when` shows."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = helpers.start(argv, stdin=slave, stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    output, interrupted = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if interrupt_when and not interrupted and interrupt_when in output:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            interrupted = True
    os.close(master)
    return proc.wait(timeout=10), output.decode("utf-8", "replace")


def test_live_view_on_a_terminal_ends_with_the_summary(tmp_path):
    out = tmp_path / "r.csv"
    code, screen = run_on_terminal(dialer("dial", "555-234-56", "-o", str(out),
                                          "--sim-call-seconds", "0.005", "--seed", "1"))
    assert code == 0, screen
    assert "VibeDialer" in screen and "last results:" in screen and "ETA" in screen
    assert "100/100" in screen
    assert "Summary: session" in screen and "100 of 100 dialed" in screen
    assert len(read_rows(out)) == 100


def test_ctrl_c_in_the_live_view(tmp_path):
    out = tmp_path / "r.csv"
    code, screen = run_on_terminal(dialer("dial", "555-234-5", "-o", str(out), *SLOW),
                                   interrupt_when=b"last results:")
    assert code == 130, screen
    assert "Interrupted: session" in screen and "Traceback" not in screen
    assert len(read_rows(out)) == dialed_in_summary(screen)


def test_outside_the_window_it_waits_and_dials_nothing(tmp_path):
    now = time.localtime()
    start = (now.tm_hour * 60 + now.tm_min + 120) % 1440
    end = (start + 60) % 1440
    window = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    out = tmp_path / "r.csv"
    proc = helpers.start(dialer("dial", "555-234-56", "-o", str(out), "--no-interactive",
                                "--window", window), env=ENV)
    line = read_until(proc.stdout, "outside the dialing window")
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=20)
    assert f"outside the dialing window {window}: waiting" in line
    assert proc.returncode == 130
    assert "0 of 100 dialed" in stdout
    assert read_rows(out) == []
