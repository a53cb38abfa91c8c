"""vibedialer's voip backend against SIPp, a real SIP peer on loopback (tests/sipp_far_end.py).

The far end challenges every INVITE (digest), then by the dialed number's last digit answers
with a modem tone, fax CNG, speech, silence or a voicemail greeting and beep, or refuses with
486/404/480/503, or rings until CANCELled (..15: with a special information tone as early
media).
"""
from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import helpers
import pytest
from helpers import clean_env, python, wait_until
from sipp_far_end import (
    PASSWORD,
    USERNAME,
    free_udp_port,
    require_sipp,
    start_far_end,
    stop_far_end,
)

import vibedialer

SCRIPT = Path(vibedialer.__file__).resolve()
SCOPE = Path(__file__).resolve().parent / "scopes" / "audit-555-234.yaml"
CALL = ("--backend", "voip", "--max-ring", "1", "--listen", "2", "--timeout", "10",
        "--yes", "--no-interactive", "--scope", str(SCOPE))

EXPECTED = {   # number: (status, tone_type, what the message says)
    "555-234-5600": ("modem", "modem", "2100 Hz answer tone"),
    "555-234-5601": ("fax", "fax", "1100 Hz CNG"),
    "555-234-5602": ("person", "voice", "speech"),
    "555-234-5603": ("busy", "", "SIP 486 Busy Here"),
    "555-234-5604": ("invalid", "", "SIP 404 Not Found"),
    "555-234-5605": ("no_answer", "", "CANCEL sent"),
    "555-234-5606": ("silence", "silence", "silence"),
    "555-234-5607": ("no_answer", "", "SIP 480 Temporarily Unavailable"),
    "555-234-5608": ("voicemail", "voicemail", "1000 Hz beep after"),
    "555-234-5609": ("error", "", "SIP 503 Service Unavailable"),
}


@pytest.fixture
def far_end(tmp_path):
    require_sipp()
    running = start_far_end(tmp_path / "far-end")
    yield running
    stop_far_end(running)


def dial(cwd: Path, *argv: str, env_file: str | None = None) -> subprocess.CompletedProcess:
    """vibedialer.py as the operator runs it, in `cwd` (where its .env is), no SIP_* inherited."""
    if env_file is not None:
        (cwd / ".env").write_text(env_file)
    return helpers.run(python(SCRIPT, "dial", *argv), cwd=cwd, env=clean_env("SIP_"))


def test_a_scan_through_sipp_classifies_what_answers(far_end, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    done = dial(work, "555-234-560X", "--sip-server", far_end.server, *CALL,
                "--storage", "sqlite", "-o", "calls.db",
                env_file=f"SIP_USERNAME={USERNAME}\nSIP_PASSWORD={PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(work / "calls.db")
    rows = {row[0]: row[1:] for row in conn.execute(
        "SELECT phone_number, status, tone_type, tone_confidence, message, success, "
        "carrier_detected FROM dial_results")}
    assert set(rows) == set(EXPECTED)
    for number, (status, tone, said) in EXPECTED.items():
        got_status, got_tone, confidence, message, success, carrier = rows[number]
        assert (got_status, got_tone or "") == (status, tone), (number, rows[number])
        assert said in message, (number, message)
        assert (confidence is not None) == bool(tone), (number, confidence)
        assert bool(carrier) == (status == "modem")
        assert bool(success) == (status in ("modem", "fax", "person", "voicemail"))
    assert 0.5 <= rows["555-234-5600"][2] <= 1.0
    assert "phase reversals" in rows["555-234-5600"][3]
    # the scope and the pattern are on the sessions row
    pattern, scope = conn.execute("SELECT phone_pattern, scope FROM sessions").fetchone()
    assert pattern == "555-234-560X" and "Dana Reyes" in scope and "sha256" in scope
    conn.close()
    # modem and fax are in the carriers-found file beside the results
    hits = (work / "calls.carriers.txt").read_text().splitlines()
    assert [line.split()[1:3] for line in hits] == [["555-234-5600", "modem"],
                                                    ["555-234-5601", "fax"]]
    log = far_end.log()
    # every call's INVITE was challenged once and sent again with the user's digest ...
    invites = [m for m in re.split(r"\n-{20,}", log) if re.search(r"^INVITE sip:", m, re.M)]
    assert len(invites) == 20
    assert sum('Authorization: Digest username="auditor"' in m for m in invites) == 10
    # ... ringing past --max-ring was CANCELled, answered calls were hung up with BYE
    assert re.search(r"^CANCEL sip:5552345605@", log, re.M)
    assert len(re.findall(r"^BYE sip:", log, re.M)) == 5
    assert "SIP/2.0 487 Request Terminated" in log
    assert (far_end.directory / "errors.log").exists() is False or \
        "Aborting" not in (far_end.directory / "errors.log").read_text()


def test_a_special_information_tone_in_early_media_means_invalid(far_end, tmp_path):
    done = dial(tmp_path, "555-234-5615", "--sip-server", far_end.server, *CALL,
                "--max-ring", "1.5", "--storage", "dry-run",
                env_file=f"SIP_USERNAME={USERNAME}\nSIP_PASSWORD={PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    assert "invalid      special information tone 913.8/1370.6/1776.7 Hz in early media " \
        "(CANCEL sent after 1.5 s)" in done.stdout
    assert "CANCEL sip:5552345615@" in far_end.log()


def test_a_wrong_password_is_refused_and_missing_credentials_are_named(far_end, tmp_path):
    wrong = dial(tmp_path, "555-234-5603", "--sip-server", far_end.server, *CALL,
                 "--storage", "csv", "-o", "wrong.csv",
                 env_file=f"SIP_USERNAME={USERNAME}\nSIP_PASSWORD=guess\n")
    assert wrong.returncode == 0, wrong.stderr
    assert "error        SIP 403 Forbidden" in wrong.stdout
    (tmp_path / ".env").unlink()
    missing = dial(tmp_path, "555-234-5603", "--sip-server", far_end.server, *CALL,
                   "--storage", "dry-run")
    assert missing.returncode == 0, missing.stderr
    assert "SIP 401 Unauthorized (set SIP_USERNAME and SIP_PASSWORD" in missing.stdout


def test_credentials_never_come_from_the_command_line(tmp_path):
    done = dial(tmp_path, "555-234-5600", "--backend", "voip", "--sip-server", "127.0.0.1",
                "--sip-password", "x", "--scope", str(SCOPE))
    assert done.returncode == 2
    assert "unrecognized arguments: --sip-password" in done.stderr


def test_ctrl_c_while_ringing_cancels_the_call(far_end, tmp_path):
    env = clean_env("SIP_", SIP_USERNAME=USERNAME, SIP_PASSWORD=PASSWORD)
    proc = helpers.start(python(SCRIPT, "dial", "555-234-5605", "--sip-server",
                                far_end.server, *CALL, "--max-ring", "8", "--storage",
                                "dry-run"), cwd=tmp_path, env=env)
    wait_until(lambda: "SIP/2.0 180 Ringing" in far_end.log(), what="the far end to ring")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=helpers.TIMEOUT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    wait_until(lambda: "CANCEL sip:5552345605@" in far_end.log(), what="the CANCEL")


def test_a_server_that_is_not_there_stops_the_run_with_one_line(tmp_path):
    done = dial(tmp_path, "555-234-56", "--backend", "voip", "--sip-server",
                f"127.0.0.1:{free_udp_port()}", "--scope", str(SCOPE), "--yes",
                "--no-interactive", "--storage", "dry-run")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: SIP server 127.0.0.1:") and "does not answer" in line
    assert "0 of 100 dialed" in done.stdout
