"""vibedialer's scan conventions and authorisation scope: masks and ranges, --allow-wide,
resume per session (never wider, a random session in its own order), legacy sessions filled
in, the carriers-found file and hits panel, and the --scope refusals and hours."""
from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import helpers
import pytest
from helpers import python, read_until
from rich.console import Console

import vibedialer

SCRIPT = Path(vibedialer.__file__).resolve()
NANP = vibedialer.NumberPlan(vibedialer.COUNTRY_PLANS["1"])
QUIET = ("--no-interactive", "--yes")


def run_main(*argv: str) -> int:
    try:
        return vibedialer.main(list(argv))
    except SystemExit as exc:
        return exc.code


def numbers_of(out: str) -> list[str]:
    """The dialed numbers of --no-interactive output, in order."""
    return [line.split()[1] for line in out.splitlines() if line[:4].isdigit()]


def write_scope(path: Path, **fields) -> Path:
    data = {"authorised_by": "Dana Reyes, IT Security", "contact": "dana@example.test",
            "ranges": ["555-234"], "valid_from": "2020-01-01", "valid_until": "2099-12-31"}
    data.update(fields)
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in data.items()
                            if value is not None))
    return path


# ----------------------------------------------------------------------------- masks, ranges

def test_masks_and_ranges_dial_exactly_their_numbers(capsys):
    assert run_main("dial", "555-234-1X3X", "--storage", "dry-run", *QUIET) == 0
    dialed = numbers_of(capsys.readouterr().out)
    assert len(dialed) == 100 and len(set(dialed)) == 100
    assert all(n[:9] == "555-234-1" and n[10] == "3" for n in dialed)
    assert run_main("dial", "555-234-1005..555-234-1234", "--random", "--storage", "dry-run",
                    *QUIET) == 0
    dialed = numbers_of(capsys.readouterr().out)
    assert sorted(dialed) == [NANP.format(n) for n in range(5552341005, 5552341235)]
    for bad in ("555-234-1999..555-234-1000", "555-234..555-2345", "555-2X4-ZZ"):
        assert run_main("dial", bad, "--storage", "dry-run", *QUIET) == 2
        assert len(capsys.readouterr().err.strip().splitlines()[-1:]) == 1


def test_a_pattern_shorter_than_an_area_code_needs_allow_wide(capsys):
    assert run_main("dial", "55", "--storage", "dry-run", *QUIET) == 2
    err = capsys.readouterr().err
    assert "fixes fewer than 3 leading digits" in err and "--allow-wide" in err
    assert run_main("dial", "X55-234-5678", "--storage", "dry-run", *QUIET) == 2
    assert run_main("dial", "55", "--allow-wide", "--limit", "3", "--storage", "dry-run",
                    *QUIET) == 0


# ----------------------------------------------------------------------------- resume

def test_resume_of_a_shared_csv_never_widens_beyond_the_session(tmp_path, capsys):
    out = str(tmp_path / "dial_results.csv")
    assert run_main("dial", "555-234-56", "-o", out, "--limit", "100", *QUIET) == 0
    assert run_main("dial", "555-234-57", "-o", out, "--limit", "40", *QUIET) == 0
    capsys.readouterr()
    assert run_main("dial", "--resume", out, "--infer-prefix", "--limit", "1", *QUIET) == 0
    said = capsys.readouterr().out
    assert "555-234-57XX (pattern of session" in said
    assert "total 100, dialed 40, remaining 60" in said
    # without the sessions file (an older csv) the session's own numbers give the prefix
    (tmp_path / "dial_results.sessions.json").unlink()
    assert run_main("dial", "--resume", out, "--infer-prefix", "--limit", "1", *QUIET) == 0
    said = capsys.readouterr().out
    assert "common prefix of the numbers dialed in session" in said
    assert "555-234-5XXX" not in said


def test_a_random_session_resumes_in_its_own_order(tmp_path, capsys):
    db = str(tmp_path / "calls.db")
    assert run_main("dial", "555-234-56", "--random", "--storage", "sqlite", "-o", db,
                    "--limit", "30", *QUIET) == 0
    first = numbers_of(capsys.readouterr().out)
    seed = sqlite3.connect(db).execute("SELECT random_seed FROM sessions").fetchone()[0]
    assert seed is not None
    assert run_main("dial", "--resume", db, "--infer-prefix", "--limit", "30", *QUIET) == 0
    out = capsys.readouterr().out
    assert "continuing session" in out and f"random order (seed {seed})" in out
    second = numbers_of(out)
    assert run_main("dial", "555-234-56", "--random", "--seed", seed, "--storage", "dry-run",
                    *QUIET) == 0
    reference = numbers_of(capsys.readouterr().out)
    assert first + second == reference[:60]
    assert run_main("dial", "--resume", db, "--infer-prefix", "--sequential", *QUIET) == 2
    assert "dials in random order" in capsys.readouterr().err


def test_a_continued_legacy_session_gets_its_pattern(tmp_path, capsys):
    db = tmp_path / "legacy.db"
    conn = vibedialer.migrate_db.connect(db)
    with vibedialer.migrate_db.transaction(conn):
        conn.execute("INSERT INTO sessions (session_id, start_time) VALUES ('legacy', "
                     "'2025-11-16T14:30:00')")
        conn.executemany("INSERT INTO dial_results (session_id, phone_number, status, "
                         "timestamp, success) VALUES ('legacy', ?, 'busy', "
                         "'2025-11-16T14:30:00', 0)",
                         [(f"555-234-56{i:02d}",) for i in (0, 1, 2, 97)])
    conn.close()
    assert run_main("dial", "--resume", str(db), "--infer-prefix", "--limit", "2",
                    *QUIET) == 0
    assert "555-234-56XX (common prefix of the numbers dialed in session legacy)" in \
        capsys.readouterr().out
    row = sqlite3.connect(db).execute("SELECT phone_pattern, start_time, total_calls FROM "
                                      "sessions WHERE session_id = 'legacy'").fetchone()
    assert row == ("555-234-56XX", "2025-11-16T14:30:00", 2)


# ----------------------------------------------------------------------------- hits

def test_hits_go_to_the_carriers_file_and_stay_in_the_live_view(tmp_path):
    out = tmp_path / "scan.csv"
    assert run_main("dial", "555-234-5", "-o", str(out), "--seed", "4", *QUIET) == 0
    modems = [row["phone_number"] for row in csv.DictReader(out.open())
              if row["status"] == "modem"]
    hits = (tmp_path / "scan.carriers.txt").read_text().splitlines()
    assert [line.split()[1] for line in hits] == modems and len(modems) > 50
    stats = vibedialer.DialStats()
    view = vibedialer.LiveView("t", 100, stats, Console(file=io.StringIO(), width=120))
    hit = ("s", "555-234-5600", "modem", "t", True, "2100 Hz", True, "modem", 0.97)
    view.hit(hit)
    for i in range(30):
        view.result(("s", f"555-234-57{i:02d}", "busy", "t", False, "Busy", False, None, None))
    console = Console(file=io.StringIO(), width=120)
    console.print(view)
    shown = console.file.getvalue()
    assert "hits: 1" in shown and "555-234-5600" in shown and "0.97" in shown


# ----------------------------------------------------------------------------- scope

def test_real_lines_need_a_scope_and_it_names_what_is_missing(tmp_path, capsys):
    assert run_main("dial", "555-234-56", "--backend", "voip", "--sip-server", "127.0.0.1",
                    *QUIET) == 2
    assert "dials real lines: give --scope FILE" in capsys.readouterr().err
    scope = write_scope(tmp_path / "s.yaml", contact=None, valid_until=None)
    assert run_main("dial", "555-234-56", "--scope", str(scope), "--storage", "dry-run",
                    *QUIET) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "missing contact, valid_until" in err[-1] and len(err) == 2   # usage + one line


@pytest.mark.parametrize(("pattern", "fields", "complaint"), [
    ("555-235-56", {}, "555-235-5600 is outside the scope"),
    ("555-234-5X", {"ranges": ["555-234-50..555-234-58"]}, "555-234-5900 is outside"),
    ("555-234-56", {"valid_until": "2021-01-01"}, "is valid 2020-01-01 to 2021-01-01; today"),
    ("555-234-56", {"hours": "09:00-17:00"}, "area code 555 has no time zone in the table"),
    ("850-234-56", {"ranges": ["850"], "hours": "09:00-17:00"}, "850 spans two time zones"),
    ("555-234-56", {"time_zone": "Mars/Olympus"}, "is not an IANA time zone"),
    ("555-234-56", {"hours": "9-5"}, "hours: write it as HH:MM-HH:MM"),
])
def test_numbers_outside_the_scope_are_refused(tmp_path, capsys, pattern, fields, complaint):
    scope = write_scope(tmp_path / "s.yaml", **fields)
    assert run_main("dial", pattern, "--scope", str(scope), "--storage", "dry-run",
                    *QUIET) == 2
    assert complaint in capsys.readouterr().err


def test_the_scope_is_recorded_with_the_session(tmp_path):
    scope = write_scope(tmp_path / "s.yaml", ranges=["212-555-01XX", "555-234"])
    assert run_main("dial", "212-555-01", "--scope", str(scope), "--storage", "sqlite",
                    "-o", str(tmp_path / "c.db"), "--limit", "3", *QUIET) == 0
    recorded = json.loads(sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT scope FROM sessions").fetchone()[0])
    assert recorded["authorised_by"] == "Dana Reyes, IT Security"
    assert recorded["ranges"] == ["212-555-01XX", "555-234"] and len(recorded["sha256"]) == 64
    assert run_main("dial", "212-555-01", "--scope", str(scope), "-o",
                    str(tmp_path / "c.csv"), "--limit", "3", *QUIET) == 0
    sessions = json.loads((tmp_path / "c.sessions.json").read_text())["sessions"]
    assert json.loads(next(iter(sessions.values()))["scope"])["contact"] == "dana@example.test"


def test_calls_wait_for_the_callees_hours(tmp_path):
    zone = ZoneInfo(vibedialer.AREA_CODE_ZONE["212"])
    assert zone.key == "America/New_York"
    now = datetime.now(zone)
    closed = f"{(now + timedelta(hours=2)):%H:%M}-{(now + timedelta(hours=3)):%H:%M}"
    opened = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"
    scope = write_scope(tmp_path / "open.yaml", ranges=["212-555"], hours=opened)
    assert run_main("dial", "212-555-01", "--scope", str(scope), "--storage", "dry-run",
                    "--limit", "2", *QUIET) == 0
    scope = write_scope(tmp_path / "closed.yaml", ranges=["212-555"], hours=closed)
    proc = helpers.start(python(SCRIPT, "dial", "212-555-01", "--scope", scope, "--storage",
                                "dry-run", *QUIET))
    try:
        waiting = read_until(proc.stdout, "waiting")
        assert "212-555-0100: outside the scope's hours" in waiting
        assert "(America/New_York); waiting" in waiting
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "0 of 100 dialed" in out
