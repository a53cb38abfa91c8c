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

import pytest

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


def wait_for_rows(path: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") > count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} rows")


def dialed_in_summary(text: str) -> int:
    match = re.search(r"(\d+) of (\d+) dialed", text)
    assert match, text
    return int(match.group(1))


def test_ctrl_c_flushes_prints_the_summary_and_exits_130(tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(dialer("dial", "555-234-5", "-o", str(out), "--no-interactive",
                                   *SLOW), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
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
    proc = subprocess.Popen(dialer("dial", "555-234-5", "--storage", "sqlite", "-o", str(db),
                                   "--no-interactive", *SLOW), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 20
    while "555-234-5" not in (proc.stdout.readline() or "") and time.monotonic() < deadline:
        pass
    time.sleep(0.2)
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
    proc = subprocess.Popen(dialer("dial", "555-234-56", "-o", str(out), "--no-interactive",
                                   "--random", *SLOW), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    wait_for_rows(out, 10)
    proc.kill()
    proc.wait(timeout=10)
    rows = read_rows(out)
    assert len(rows) >= 10
    assert all(row["tone_type"] is not None and row["status"] for row in rows)  # whole rows
    done = subprocess.run(dialer("dial", "--resume", str(out), "--resume-prefix", "555-234-56",
                                 "--yes", "--no-interactive"),
                          capture_output=True, text=True, env=ENV, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"dialed {len(rows)}, remaining {100 - len(rows)}" in done.stdout
    final = read_rows(out)
    assert sorted(row["phone_number"] for row in final) == \
        [f"555-234-56{n:02d}" for n in range(100)]
    assert len({row["session_id"] for row in final}) == 1


def test_kill_9_keeps_sqlite_counters_consistent_with_rows(tmp_path):
    db = tmp_path / "calls.db"
    proc = subprocess.Popen(dialer("dial", "555-234-5", "--storage", "sqlite", "-o", str(db),
                                   "--no-interactive", *SLOW), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    lines = [proc.stdout.readline() for _ in range(3)]    # two header lines, one dial
    started = time.monotonic()
    while time.monotonic() - started < vibedialer.BATCH_SECONDS * 1.5:
        lines.append(proc.stdout.readline())
    proc.kill()
    proc.wait(timeout=10)
    dials_seen = sum(1 for line in lines if "  555-234-5" in line)
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
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=ENV,
                            close_fds=True)
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
    proc = subprocess.Popen(dialer("dial", "555-234-56", "-o", str(out), "--no-interactive",
                                   "--window", window), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    line = ""
    deadline = time.monotonic() + 20
    while "outside the dialing window" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=20)
    assert f"outside the dialing window {window}: waiting" in line
    assert proc.returncode == 130
    assert "0 of 100 dialed" in stdout
    assert read_rows(out) == []
