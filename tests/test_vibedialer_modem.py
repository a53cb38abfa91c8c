"""vibedialer's modem backend against a Hayes emulator on a pty pair and on socket:// loopback."""
from __future__ import annotations

import csv
import io
import signal
import sqlite3
from pathlib import Path

import helpers
import pytest
from hayes_emulator import HayesEmulator
from helpers import python, wait_until

import vibedialer

SCRIPT = Path(vibedialer.__file__).resolve()
SCOPE = Path(__file__).resolve().parent / "scopes" / "audit-555-234.yaml"
FAST = ("--timeout", "0.4", "--modem-guard", "0.02", "--delay", "0", "--yes",
        "--no-interactive", "--scope", str(SCOPE))

EVERY_RESULT = {
    "5552345600": [["BUSY"]],
    "5552345601": [["RING", "RING", "NO ANSWER"]],
    "5552345602": [["CONNECT 14400/V32"]],
    "5552345603": [["VOICE"]],
    "5552345604": [["NO DIALTONE"]],
    "5552345605": [["ERROR"]],
    "5552345606": [["SILENCE"]],
    "5552345607": [["NO CARRIER"]],
    "5552345608": [["RING", "RING", "RING", "CONNECT 2400"]],
    "5552345609": [["RING", ("WAIT", 0.05), "RING", "BUSY"]],
}
EXPECTED = {
    "555-234-5600": ("busy", "False", "False", "BUSY"),
    "555-234-5601": ("no_answer", "False", "False", "NO ANSWER after 2 rings"),
    "555-234-5602": ("modem", "True", "True", "Carrier at 14400 bps (V32): CONNECT 14400/V32"),
    "555-234-5603": ("person", "True", "False", "VOICE"),
    "555-234-5604": ("no_dialtone", "False", "False", "NO DIALTONE"),
    "555-234-5605": ("error", "False", "False", "ERROR"),
    "555-234-5606": ("timeout", "False", "False", "no result within 0.4 s"),
    "555-234-5607": ("no_carrier", "False", "False", "NO CARRIER"),
    "555-234-5608": ("modem", "True", "True", "Carrier at 2400 bps: CONNECT 2400 after 3 rings"),
    "555-234-5609": ("busy", "False", "False", "BUSY after 2 rings"),
}


def run_main(*argv: str) -> int:
    try:
        return vibedialer.main(list(argv))
    except SystemExit as exc:
        return exc.code


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(params=["pty", "socket"])
def modem(request):
    """An emulator serving on a pty pair or on loopback TCP; yields (emulator, port)."""
    made = []

    def start(script=None, **options) -> tuple[HayesEmulator, str]:
        emulator = HayesEmulator(script, **options)
        made.append(emulator)
        port = emulator.serve_pty() if request.param == "pty" else emulator.serve_tcp()
        return emulator, port

    yield start
    for emulator in made:
        emulator.stop()


def test_every_result_code_is_recorded_and_the_modem_is_driven_by_the_book(modem, tmp_path):
    emulator, port = modem(EVERY_RESULT)
    out = tmp_path / "r.csv"
    assert run_main("dial", "555-234-560", "--backend", "modem", "--modem-port", port,
                    "-o", str(out), *FAST) == 0
    got = {row["phone_number"]: (row["status"], row["success"], row["carrier_detected"],
                                 row["message"]) for row in read_rows(out)}
    assert got == EXPECTED
    received = emulator.received
    assert received[:4] == ["ATZ", "ATE0", "ATQ0V1", "ATX4"]
    # after a CONNECT: +++ then ATH0, before the next number is dialed
    after_connect = received[received.index("ATDT5552345602") + 1:][:3]
    assert after_connect == ["+++", "ATH0", "ATDT5552345603"]
    # a silent call is aborted and the modem put on hook
    after_silence = received[received.index("ATDT5552345606") + 1:][:2]
    assert after_silence == ["ATH0", "ATDT5552345607"]
    assert [c for c in received if c.startswith("ATDT")] == \
        [f"ATDT55523456{n:02d}" for n in range(10)]


def test_retries_on_busy_and_no_dialtone_up_to_the_limit(modem, tmp_path):
    script = {"5552345600": [["BUSY"], ["NO DIALTONE"], ["CONNECT 9600"]],
              "5552345601": [["BUSY"]]}
    emulator, port = modem(script)
    out = tmp_path / "r.csv"
    assert run_main("dial", "555-234-560", "--limit", "2", "--backend", "modem",
                    "--modem-port", port, "--retries", "2", "-o", str(out), *FAST) == 0
    rows = read_rows(out)
    assert (rows[0]["status"], rows[0]["message"]) == \
        ("modem", "Carrier at 9600 bps: CONNECT 9600 (attempt 3)")
    assert (rows[1]["status"], rows[1]["message"]) == ("busy", "BUSY (attempt 3)")
    assert emulator.dials == {"5552345600": 3, "5552345601": 3}


def test_a_modem_that_stops_answering_is_reported_not_waited_on(modem, tmp_path, capsys):
    script = {"5552345602": [["DEAD"]]}
    emulator, port = modem(script, default=["BUSY"])
    db = tmp_path / "calls.db"
    code = run_main("dial", "555-234-560", "--backend", "modem", "--modem-port", port,
                    "--storage", "sqlite", "-o", str(db), *FAST)
    captured = capsys.readouterr()
    assert code == 1
    assert "stopped answering" in captured.err and "Traceback" not in captured.err
    assert "3 of 10 dialed" in captured.out
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT phone_number, status FROM dial_results ORDER BY id").fetchall()
    total, end_time = conn.execute("SELECT total_calls, end_time FROM sessions").fetchone()
    conn.close()
    assert rows == [("555-234-5600", "busy"), ("555-234-5601", "busy"),
                    ("555-234-5602", "timeout")]
    assert total == 3 and end_time is not None


def test_a_modem_that_never_answers_fails_at_init(modem, tmp_path, capsys):
    emulator, port = modem(dead=True)
    out = tmp_path / "r.csv"
    assert run_main("dial", "555-234-56", "--backend", "modem", "--modem-port", port,
                    "-o", str(out), *FAST) == 1
    err = capsys.readouterr().err
    assert "no reply to ATZ" in err
    assert not out.exists()
    assert emulator.received == ["ATZ"]


def test_a_modem_refusing_atx4_still_dials(modem, tmp_path, caplog):
    emulator, port = modem({"5552345600": [["VOICE"]]}, refuse_x4=True)
    out = tmp_path / "r.csv"
    assert run_main("dial", "555-234-5600", "--backend", "modem", "--modem-port", port,
                    "-o", str(out), *FAST) == 0
    assert "modem refused ATX4" in caplog.text
    assert read_rows(out)[0]["status"] == "person"


def test_modem_dialing_asks_for_authorisation_first(modem, tmp_path, monkeypatch, capsys):
    emulator, port = modem()
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    args = [a for a in FAST if a != "--yes"]
    assert run_main("dial", "555-234-56", "--backend", "modem", "--modem-port", port,
                    "-o", str(tmp_path / "r.csv"), *args) == 0
    out = capsys.readouterr().out
    assert "authorised" in out and "Nothing dialed" in out
    assert emulator.received == []


def test_dial_prefix_is_sent_and_emergency_numbers_never_reach_the_modem(modem, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("212-555-0101\n911-555-0101\n212-911-0101\n212-555-0102\n")
    emulator, port = modem(default=["BUSY"])
    assert run_main("dial", "-", "--numbers", str(numbers), "--dial-prefix", "9,",
                    "--backend", "modem", "--modem-port", port, "--storage", "dry-run",
                    *FAST) == 0
    assert [c for c in emulator.received if c.startswith("ATDT")] == \
        ["ATDT9,2125550101", "ATDT9,2125550102"]


def test_a_port_that_cannot_be_opened_is_a_usage_error(tmp_path, capsys):
    code = run_main("dial", "555-234-56", "--backend", "modem", "--modem-port",
                    str(tmp_path / "no-such-tty"), *FAST)
    err = capsys.readouterr().err
    assert code == 2 and "cannot open it" in err and "Traceback" not in err


def test_ctrl_c_during_a_call_hangs_up_and_exits_130(tmp_path):
    emulator = HayesEmulator({"5552345601": [["SILENCE"]]}, default=["BUSY"])
    port = emulator.serve_pty()
    out = tmp_path / "r.csv"
    try:
        proc = helpers.start(python(
            SCRIPT, "dial", "555-234-56", "--backend", "modem", "--modem-port", port, "-o",
            out, "--timeout", "30", "--modem-guard", "0.02", "--delay", "0", "--yes",
            "--no-interactive", "--scope", SCOPE))
        wait_until(lambda: "ATDT5552345601" in emulator.received, what="the second call")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        emulator.stop()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "1 of 100 dialed" in stdout
    assert emulator.received[-1] == "ATH0"
    assert [row["phone_number"] for row in read_rows(out)] == ["555-234-5600"]
