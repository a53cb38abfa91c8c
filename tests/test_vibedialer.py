"""vibedialer: patterns, never-dial rules, lazy generation, storage, sessions, resume, errors."""
from __future__ import annotations

import csv
import io
import random
import sqlite3
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest

import vibedialer
from vibedialer import (
    COUNTRY_PLANS,
    DialPlan,
    NumberPlan,
    PrefixSet,
    RandomOrder,
    UsageError,
)

NANP = NumberPlan(COUNTRY_PLANS["1"])
FORBIDDEN_NANP_STARTS = ("911", "988", "112", "999", "000", "110", "119", "100")


def run_main(*argv: str) -> int:
    """vibedialer.main as the shell sees it: the exit code, also for parser.error."""
    try:
        return vibedialer.main(list(argv))
    except SystemExit as exc:
        return exc.code


def reference_dialable(digits: str) -> bool:
    """The never-dial rules for +1, written independently of the module."""
    for code in (digits[:3], digits[3:6]):
        if code[0] in "01" or code[1:] == "11":
            return False
    return not digits.startswith(FORBIDDEN_NANP_STARTS)


def make_plan(pattern: str, exclude: list[str] | None = None,
              dialed: list[int] | None = None) -> DialPlan:
    plan = DialPlan(NANP, NANP.parse_pattern(pattern))
    if exclude:
        plan.excluded = PrefixSet(exclude, NANP.length)
    if dialed:
        plan.dialed = vibedialer._sorted_unique(dialed)
    plan.count()
    return plan


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- patterns

def test_pattern_expands_to_every_completion_formatted_nxx_nxx_xxxx():
    plan = make_plan("(555) 234-56")
    numbers = [NANP.format(n) for n in plan.iterate(False, random.Random(1))]
    assert plan.to_dial == len(numbers) == 100
    assert numbers[0] == "555-234-5600" and numbers[-1] == "555-234-5699"
    assert plan.description == "555-234-56XX"


def test_trailing_x_and_country_code_in_a_pattern_are_understood():
    assert NANP.parse_pattern("+1 555-234-56XX") == "55523456"
    assert NANP.parse_pattern("555.234.5") == "5552345"


@pytest.mark.parametrize(("pattern", "complaint"), [
    ("055", "begins with 2-9"),
    ("155-234", "begins with 2-9"),
    ("911", "N11"),
    ("411-555", "N11"),
    ("555-911", "N11"),
    ("555-1", "exchange begins with 2-9"),
    ("555-CALL", "unexpected 'C'"),
    ("---", "no digits"),
    ("555-234-5678-9", "11 digits"),
    ("+44 555", r"not a \+1 number"),
])
def test_bad_patterns_are_usage_errors_that_say_why(pattern, complaint):
    with pytest.raises(UsageError, match=complaint):
        NANP.parse_pattern(pattern)


def test_n11_exchanges_inside_a_range_are_skipped_and_counted():
    plan = make_plan("555-21")
    numbers = list(plan.iterate(False, random.Random(1)))
    assert plan.in_range == plan.to_dial == len(numbers) == 9 * 10_000
    assert not any(NANP.format(n).startswith("555-211") for n in numbers)
    shuffled = list(plan.iterate(True, random.Random(7)))
    assert shuffled != numbers and sorted(shuffled) == numbers


@pytest.mark.parametrize(("pattern", "exclude", "dialed"), [
    ("201-555", [], []),
    ("201-555", ["201-555-1", "2015552345", "201-5"], []),
    ("988-200", [], []),
    ("212-209", ["212-209-9"], [2122090001, 2122090002, 2122099999, 2129990000]),
    ("212-200-1", ["212"], []),
    ("201-21", ["201-219", "201-210-5555"], [2012101234, 2012111234, 2012120000]),
])
def test_count_shown_equals_numbers_dialed_and_a_brute_force_count(pattern, exclude, dialed):
    plan = make_plan(pattern, [NANP.national_digits(e) for e in exclude], dialed)
    prefix = NANP.parse_pattern(pattern)
    excluded = [NANP.national_digits(e) for e in exclude]
    free = 10 - len(prefix)
    expected = []
    for tail in range(10 ** free):
        digits = prefix + f"{tail:0{free}d}" if free else prefix
        if reference_dialable(digits) and not digits.startswith(tuple(excluded) or ("x",)) \
                and int(digits) not in dialed:
            expected.append(int(digits))
    for randomized in (False, True):
        got = list(plan.iterate(randomized, random.Random(3)))
        assert sorted(got) == expected
        assert plan.to_dial == len(got)


def test_a_pattern_of_only_emergency_numbers_is_refused_before_dialing(tmp_path, capsys):
    code = run_main("dial", "988", "-o", str(tmp_path / "r.csv"), "--no-interactive")
    assert code == 2
    assert "N11 or emergency" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_three_digit_prefix_starts_at_once_in_constant_memory():
    peaks = {}
    for pattern in ("555-234-5", "555", "5"):
        for randomized in (False, True):
            plan = make_plan(pattern)
            tracemalloc.start()
            numbers = plan.iterate(randomized, random.Random(5))
            first = [next(numbers) for _ in range(500)]
            peaks[pattern, randomized] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert len(set(first)) == 500
    assert make_plan("555").to_dial == 792 * 10_000
    # memory does not grow with the range: 10^3 and 10^9 numbers need the same few KB
    assert max(peaks.values()) < 256 * 1024, peaks


def test_random_order_is_a_seeded_permutation():
    for size in (1, 2, 3, 5, 16, 17, 100, 1000, 4097):
        assert sorted(RandomOrder(size, random.Random(1))) == list(range(size))
    first = list(RandomOrder(1000, random.Random(42)))
    assert first == list(RandomOrder(1000, random.Random(42)))
    assert first != list(RandomOrder(1000, random.Random(43)))
    assert first != list(range(1000))


def test_other_countries_use_their_lengths_and_emergency_codes():
    france = NumberPlan(COUNTRY_PLANS["33"], dial_prefix="")
    plan = DialPlan(france, france.parse_pattern("1"))
    plan.count()
    # 15/17/18 and 100/110/112/114/115/116/119/191/196/197 begin what would be dialed
    assert plan.in_range == 10 ** 8
    assert plan.emergency == 3 * 10 ** 7 + 10 * 10 ** 6
    sample = [next(iter_) for iter_ in [plan.iterate(True, random.Random(2))] for _ in range(3000)]
    assert not any(f"{n}".startswith(("15", "17", "18", "112", "119")) for n in sample)
    with pytest.raises(UsageError, match="N11 or emergency"):
        vibedialer.build_dial_plan(_dial_args("15", country_code="33", dial_prefix=""),
                                   france, None)
    with pytest.raises(UsageError, match="do not begin with 0"):
        NumberPlan(COUNTRY_PLANS["44"]).parse_pattern("020")
    with pytest.raises(UsageError, match="emergency number 911"):
        NumberPlan(COUNTRY_PLANS["1"], dial_prefix="911")
    australia = NumberPlan(COUNTRY_PLANS["61"], dial_prefix="0")
    assert australia.dial_string(212345678) == "0212345678"


def _dial_args(pattern, **overrides):
    parser, _ = vibedialer.build_parser()
    args = parser.parse_args(["dial", pattern])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


# ----------------------------------------------------------------------------- exclusions, lists

def test_exclude_file_numbers_and_prefixes_are_never_dialed(tmp_path, capsys):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# our own lines\n555-234-560   # the office block\n5552345655\n\n")
    out = tmp_path / "r.csv"
    assert run_main("dial", "555-234-56", "--exclude", str(exclude), "-o", str(out),
                    "--no-interactive", "--seed", "1") == 0
    printed = capsys.readouterr().out
    phones = [row["phone_number"] for row in read_rows(out)]
    assert len(phones) == 89
    assert not any(p.startswith("555-234-560") or p == "555-234-5655" for p in phones)
    assert "89 numbers to dial" in printed and "11 excluded" in printed


def test_numbers_list_skips_emergency_numbers_and_duplicates(tmp_path, capsys):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("212-555-0101\n# comment\n+1 (212) 555-0102\n911-555-1234\n"
                       "212-911-1234\n212-555-0101\n1-212-555-0103\n")
    out = tmp_path / "r.csv"
    assert run_main("dial", "-", "--numbers", str(numbers), "-o", str(out),
                    "--no-interactive") == 0
    phones = [row["phone_number"] for row in read_rows(out)]
    assert phones == ["212-555-0101", "212-555-0102", "212-555-0103"]
    printed = capsys.readouterr().out
    assert "3 numbers to dial" in printed and "never dialed: 2 N11/emergency" in printed


# ----------------------------------------------------------------------------- storage

def test_csv_has_session_id_first_and_one_row_per_dial(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run_main("dial", "555-234-56", "-o", str(out), "--no-interactive",
                    "--seed", "9") == 0
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(vibedialer.CSV_FIELDS)
    rows = read_rows(out)
    assert len(rows) == 100
    session = rows[0]["session_id"]
    assert len(session) == 8 and all(row["session_id"] == session for row in rows)
    by_status = {row["status"] for row in rows}
    assert by_status <= {"no_answer", "busy", "person", "modem", "error", "ringing"}
    modem = next(row for row in rows if row["status"] == "modem")
    assert (modem["success"], modem["carrier_detected"], modem["tone_type"]) == \
        ("True", "True", "modem")
    printed = capsys.readouterr().out
    assert f"Summary: session {session} (new)" in printed
    assert sum(1 for line in printed.splitlines() if "  555-234-56" in line) == 100


def test_seed_makes_the_simulation_repeatable(tmp_path):
    outcomes = []
    for name in ("a.csv", "b.csv"):
        run_main("dial", "555-234-5", "--random", "--seed", "11", "-o", str(tmp_path / name),
                 "--no-interactive", "--limit", "50")
        outcomes.append([(r["phone_number"], r["status"]) for r in read_rows(tmp_path / name)])
    assert outcomes[0] == outcomes[1]
    counts = {s: sum(1 for _, st in outcomes[0] if st == s) for _, s in outcomes[0]}
    assert len(counts) >= 3


def test_simulation_weights_are_the_originals():
    backend = vibedialer.SimulationBackend(random.Random(0))
    draws = [backend.dial("5552345600").status for _ in range(20_000)]
    share = {status: draws.count(status) / len(draws) for status in set(draws)}
    expected = {"no_answer": .40, "busy": .20, "person": .15, "modem": .10, "error": .10,
                "ringing": .05}
    assert set(share) == set(expected)
    for status, weight in expected.items():
        assert abs(share[status] - weight) < 0.02


def sessions_rows(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM sessions ORDER BY start_time").fetchall()
    conn.close()
    return rows


def results_count(db: Path, session_id: str | None = None) -> int:
    conn = sqlite3.connect(db)
    if session_id is None:
        count = conn.execute("SELECT COUNT(*) FROM dial_results").fetchone()[0]
    else:
        count = conn.execute("SELECT COUNT(*) FROM dial_results WHERE session_id = ?",
                             (session_id,)).fetchone()[0]
    conn.close()
    return count


def test_sqlite_session_row_and_counters_match_the_results(tmp_path):
    db = tmp_path / "calls.db"
    assert run_main("dial", "555-234-5", "--storage", "sqlite", "-o", str(db),
                    "--no-interactive", "--seed", "2", "--limit", "250") == 0
    (session,) = sessions_rows(db)
    assert session["total_calls"] == results_count(db) == 250
    conn = sqlite3.connect(db)
    successes, modems = conn.execute(
        "SELECT SUM(success), SUM(status = 'modem') FROM dial_results").fetchone()
    conn.close()
    assert session["successful_calls"] == successes and session["modem_detections"] == modems
    assert session["end_time"] >= session["start_time"]
    assert (session["backend_type"], session["storage_type"], session["phone_pattern"],
            session["country_code"], session["randomized"]) == \
        ("simulation", "sqlite", "555-234-5", "1", 0)


def test_continuing_a_session_keeps_start_time_and_adds_counters(tmp_path):
    db = tmp_path / "calls.db"
    common = ("--storage", "sqlite", "-o", str(db), "--no-interactive", "--session-id",
              "office-scan-2025")
    assert run_main("dial", "555-234-56", *common, "--limit", "30") == 0
    (first,) = sessions_rows(db)
    assert run_main("dial", "555-234-57", *common, "--limit", "20") == 0
    (second,) = sessions_rows(db)
    assert second["session_id"] == "office-scan-2025"
    assert second["start_time"] == first["start_time"]
    assert second["total_calls"] == 50 == results_count(db)
    assert second["end_time"] > first["end_time"]
    assert second["phone_pattern"] == "555-234-56"


def test_new_session_with_an_existing_id_is_refused(tmp_path, capsys):
    db = tmp_path / "calls.db"
    run_main("dial", "555-234-56", "--storage", "sqlite", "-o", str(db), "--no-interactive",
             "--session-id", "s1", "--limit", "3")
    code = run_main("dial", "555-234-56", "--storage", "sqlite", "-o", str(db),
                    "--no-interactive", "--session-id", "s1", "--new-session")
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert results_count(db) == 3


def test_continue_session_without_resume_continues_the_latest(tmp_path, capsys):
    db = tmp_path / "calls.db"
    run_main("dial", "555-234-56", "--storage", "sqlite", "-o", str(db), "--no-interactive",
             "--limit", "5")
    run_main("dial", "555-234-57", "--storage", "sqlite", "-o", str(db), "--no-interactive",
             "--limit", "5", "--continue-session")
    rows = sessions_rows(db)
    assert len(rows) == 1 and rows[0]["total_calls"] == 10
    assert "(continued)" in capsys.readouterr().out


def test_dry_run_stores_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main("dial", "555-234-56", "--storage", "dry-run", "--no-interactive") == 0
    assert list(tmp_path.iterdir()) == []
    assert "not stored (dry run)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- resume

@pytest.mark.parametrize("storage", ["csv", "sqlite"])
def test_resume_dials_only_the_remaining_numbers_in_the_same_session(tmp_path, capsys,
                                                                     storage):
    out = tmp_path / ("calls.db" if storage == "sqlite" else "calls.csv")
    assert run_main("dial", "555-234-56", "--storage", storage, "-o", str(out), "--random",
                    "--seed", "4", "--limit", "37", "--no-interactive") == 0
    capsys.readouterr()
    assert run_main("dial", "--resume", str(out), "--infer-prefix", "--yes",
                    "--no-interactive") == 0
    printed = capsys.readouterr().out
    assert "total 100, dialed 37, remaining 63" in printed
    if storage == "sqlite":
        conn = sqlite3.connect(out)
        phones = [p for (p,) in conn.execute("SELECT phone_number FROM dial_results")]
        sessions = {s for (s,) in conn.execute("SELECT session_id FROM dial_results")}
        conn.close()
        assert sessions_rows(out)[0]["total_calls"] == 100
    else:
        rows = read_rows(out)
        phones = [row["phone_number"] for row in rows]
        sessions = {row["session_id"] for row in rows}
    assert sorted(phones) == [f"555-234-56{n:02d}" for n in range(100)]
    assert len(sessions) == 1
    # nothing left: says so, exits 0, dials nothing
    assert run_main("dial", "--resume", str(out), "--infer-prefix", "--yes",
                    "--no-interactive") == 0
    assert "Nothing remaining" in capsys.readouterr().out
    assert len(phones) == 100


def test_resume_with_new_session_and_explicit_prefix(tmp_path, capsys):
    out = tmp_path / "calls.csv"
    run_main("dial", "555-234-5", "-o", str(out), "--limit", "10", "--no-interactive")
    first = read_rows(out)[0]["session_id"]
    assert run_main("dial", "--resume", str(out), "--resume-prefix", "555-234-50",
                    "--new-session", "--yes", "--no-interactive") == 0
    assert "total 100, dialed 10, remaining 90" in capsys.readouterr().out
    rows = read_rows(out)
    assert len(rows) == 100
    assert {row["session_id"] for row in rows[10:]} != {first}


def test_inferred_prefix_falls_back_to_the_common_prefix_of_an_old_csv(tmp_path, capsys):
    legacy = tmp_path / "old.csv"
    legacy.write_text("phone_number,status,timestamp,success,message,carrier_detected,"
                      "tone_type\n555-234-5600,busy,2025-11-16T14:30:00,False,Busy,False,\n"
                      "555-234-5699,modem,2025-11-16T14:30:01,True,Modem,True,modem\n")
    out = tmp_path / "new.csv"
    assert run_main("dial", "--resume", str(legacy), "--infer-prefix", "-o", str(out),
                    "--yes", "--no-interactive") == 0
    printed = capsys.readouterr().out
    assert "555-234-56XX (common prefix of the numbers dialed)" in printed
    assert len(read_rows(out)) == 98


def test_resume_asks_before_dialing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "calls.csv"
    run_main("dial", "555-234-56", "-o", str(out), "--limit", "10", "--no-interactive")
    resume = ("dial", "--resume", str(out), "--resume-prefix", "555-234-56", "--no-interactive")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run_main(*resume) == 0
    assert "Nothing dialed" in capsys.readouterr().out
    assert len(read_rows(out)) == 10
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run_main(*resume) == 2
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert run_main(*resume) == 0
    assert len(read_rows(out)) == 100


def test_legacy_database_without_sessions_is_resumed_as_session_legacy(tmp_path, capsys):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE dial_results (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "phone_number TEXT NOT NULL, status TEXT NOT NULL, timestamp TEXT NOT NULL, "
                 "success BOOLEAN NOT NULL, message TEXT, carrier_detected BOOLEAN, "
                 "tone_type TEXT)")
    conn.executemany("INSERT INTO dial_results (phone_number, status, timestamp, success) "
                     "VALUES (?, 'busy', '2025-11-16T14:30:00', 0)",
                     [(f"555-234-56{n:02d}",) for n in range(0, 100, 2)])
    conn.commit()
    conn.close()
    assert run_main("dial", "--resume", str(db), "--resume-prefix", "555-234-56", "--yes",
                    "--no-interactive") == 0
    assert "Session legacy (continued)" in capsys.readouterr().out
    (session,) = sessions_rows(db)
    assert session["session_id"] == "legacy" and session["total_calls"] == 100


# ----------------------------------------------------------------------------- windows

def test_dialing_window_including_overnight():
    window = vibedialer.parse_window("22:00-06:30")
    assert vibedialer.seconds_until_window(datetime(2026, 1, 1, 23, 0), window) == 0
    assert vibedialer.seconds_until_window(datetime(2026, 1, 1, 6, 0), window) == 0
    assert vibedialer.seconds_until_window(datetime(2026, 1, 1, 21, 0), window) == 3600
    day = vibedialer.parse_window("09:00-17:00")
    assert vibedialer.seconds_until_window(datetime(2026, 1, 1, 12, 0), day) == 0
    assert vibedialer.seconds_until_window(datetime(2026, 1, 1, 17, 0), day) == 16 * 3600
    assert vibedialer.seconds_until_window(datetime(2026, 1, 1, 8, 59, 30), day) == 30


# ----------------------------------------------------------------------------- sessions / report

def test_sessions_and_report_commands(tmp_path, capsys):
    db = tmp_path / "calls.db"
    run_main("dial", "555-234-56", "--storage", "sqlite", "-o", str(db), "--no-interactive",
             "--session-id", "first", "--seed", "1")
    run_main("dial", "555-234-57", "--storage", "sqlite", "-o", str(db), "--no-interactive",
             "--session-id", "second", "--limit", "40")
    capsys.readouterr()
    assert run_main("sessions", str(db)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["session_id", "start_time", "end_time"]
    assert lines[1].startswith("first") and " 100 " in lines[1]
    assert lines[2].startswith("second") and " 40 " in lines[2]
    assert run_main("report", str(db), "--session-id", "second") == 0
    report = capsys.readouterr().out
    assert "session second" in report and "dials 40" in report and "by status:" in report
    assert "dials per hour" in report
    assert run_main("report", str(db)) == 0
    assert "dials 140" in capsys.readouterr().out


def test_sessions_and_report_read_a_csv_too(tmp_path, capsys):
    out = tmp_path / "r.csv"
    run_main("dial", "555-234-56", "-o", str(out), "--no-interactive", "--limit", "25")
    session = read_rows(out)[0]["session_id"]
    capsys.readouterr()
    assert run_main("sessions", str(out)) == 0
    assert session in capsys.readouterr().out
    assert run_main("report", str(out), "--session-id", session) == 0
    assert "dials 25" in capsys.readouterr().out


# ----------------------------------------------------------------------------- usage errors

def _usage_cases(tmp: Path) -> list[tuple[list[str], str]]:
    other_csv = tmp / "other.csv"
    other_csv.write_text("a,b\n1,2\n")
    bad_exclude = tmp / "bad_exclude.txt"
    bad_exclude.write_text("555-234\nfive\n")
    bad_numbers = tmp / "bad_numbers.txt"
    bad_numbers.write_text("555-234-5600\n555-234\n")
    invalid_numbers = tmp / "invalid_numbers.txt"
    invalid_numbers.write_text("212-555-0101\n055-555-0101\n")
    not_results = tmp / "notes.txt"
    not_results.write_text("hello\n")
    empty_db = tmp / "empty.db"
    return [
        (["dial"], "give a PATTERN"),
        (["dial", "abc"], "unexpected 'a'"),
        (["dial", "911"], "N11"),
        (["dial", "-"], "--numbers FILE"),
        (["dial", "555", "--numbers", str(bad_numbers)], "must be '-'"),
        (["dial", "-", "--numbers", str(bad_numbers)], "line 2"),
        (["dial", "555", "--exclude", str(bad_exclude)], "line 2"),
        (["dial", "-", "--numbers", str(invalid_numbers)], "not a North American number"),
        (["dial", "555", "--exclude", str(tmp / "missing.txt")], "no such file"),
        (["dial", "555", "--country-code", "99"], "not supported"),
        (["dial", "555", "--window", "9-17"], "HH:MM-HH:MM"),
        (["dial", "555", "--window", "25:00-26:00"], "00-23"),
        (["dial", "555", "--window", "09:00-09:00"], "same time"),
        (["dial", "555", "--limit", "0"], "at least 1"),
        (["dial", "555", "--retries", "-1"], "not be negative"),
        (["dial", "555", "--timeout", "0"], "positive"),
        (["dial", "555", "--delay", "-1"], "not be negative"),
        (["dial", "555", "--dial-prefix", "9a"], "digits and commas"),
        (["dial", "555", "--random", "--sequential"], "not allowed with"),
        (["dial", "555", "--new-session", "--continue-session"], "not allowed with"),
        (["dial", "555", "--backend", "voip"], "needs --sip-server"),
        (["dial", "555", "--backend", "modem"], "needs --modem-port"),
        (["dial", "555", "--modem-port", "/dev/ttyS0"], "only used with --backend modem"),
        (["dial", "555", "--storage", "dry-run", "-o", str(tmp / "x.csv")], "no effect"),
        (["dial", "555", "-o", str(other_csv)], "other columns"),
        (["dial", "555", "--session-id", "bad id!"], "--session-id"),
        (["dial", "555", "--infer-prefix"], "need --resume"),
        (["dial", "--resume", str(tmp / "missing.db")], "no such file"),
        (["dial", "--resume", str(not_results), "--infer-prefix"], "not a results file"),
        (["dial", "555", "--continue-session", "--storage", "sqlite", "-o", str(empty_db)],
         "no session to continue"),
        (["dial", "555", "--limit", "x"], "invalid int"),
        (["sessions", str(tmp / "missing.db")], "no such file"),
        (["report", str(not_results)], "neither a SQLite database"),
        ([], "required"),
    ]


def test_every_usage_error_is_one_line_exit_2_without_traceback(tmp_path, capsys):
    for argv, complaint in _usage_cases(tmp_path):
        code = run_main(*argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        error_lines = [line for line in err.splitlines() if "error:" in line]
        assert len(error_lines) == 1 and complaint in error_lines[0], (argv, err)
        assert "Traceback" not in err


def test_report_on_an_unknown_session_is_a_usage_error(tmp_path, capsys):
    db = tmp_path / "calls.db"
    run_main("dial", "555-234-56", "--storage", "sqlite", "-o", str(db), "--no-interactive",
             "--limit", "2")
    capsys.readouterr()
    assert run_main("report", str(db), "--session-id", "nope") == 2
    assert "no session 'nope'" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    for argv in (["--help"], ["dial", "--help"], ["sessions", "--help"], ["report", "--help"]):
        assert run_main(*argv) == 0
        assert "usage:" in capsys.readouterr().out
