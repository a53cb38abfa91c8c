"""sessions/*/run.sh: restarts after crashes, stops on clean exit and when login is needed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent
RUN_SH = ROOT / "sessions" / "session1" / "run.sh"

# A stand-in for a suite script: exits with the codes listed in CODES, one per run.
FAKE_SCRIPT = """
import os, sys
from pathlib import Path
runs = Path("runs.txt")
n = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(n + 1))
codes = [int(c) for c in os.environ["CODES"].split(",")]
print(f"fake run {n + 1} args={sys.argv[1:]} cwd={Path.cwd().name}", flush=True)
sys.exit(codes[min(n, len(codes) - 1)])
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A suite layout: .venv/bin/python, a fake script, sessions/acc/{run.sh,.env}."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / "fake.py").write_text(FAKE_SCRIPT)
    for name in ("migrate_db.py", "schema.sql"):             # run.sh's log writer
        shutil.copy(ROOT / name, tmp_path)
    folder = tmp_path / "sessions" / "acc"
    folder.mkdir(parents=True)
    shutil.copy(RUN_SH, folder / "run.sh")
    (folder / ".env").write_text("TG_API_ID=1\nRUN_SCRIPT=fake.py\nRUN_ARGS=--once --x\n")
    return tmp_path


def run(suite: Path, codes: str, *args: str) -> subprocess.CompletedProcess:
    return helpers.run(["bash", "sessions/acc/run.sh", *args], cwd=suite,
                       env=clean_env(CODES=codes, RUN_MIN_PAUSE="0"))


def test_restarts_after_crashes_until_a_clean_exit(suite: Path):
    result = run(suite, "1,137,0")
    assert result.returncode == 0
    folder = suite / "sessions" / "acc"
    assert (folder / "runs.txt").read_text() == "3"
    log = (folder / "run.log").read_text()
    assert "exited with code 1; restarting" in log
    assert "exited with code 137; restarting" in log
    assert "fake.py finished cleanly" in log
    # run from its own folder, with RUN_ARGS from .env
    assert "fake run 1 args=['--once', '--x'] cwd=acc" in log


def test_stops_when_the_account_needs_logging_in(suite: Path):
    result = run(suite, "3,0")
    assert result.returncode == 3
    assert (suite / "sessions" / "acc" / "runs.txt").read_text() == "1"
    assert "telegram_session.py auth sessions/acc" in result.stdout


def test_does_not_restart_on_a_configuration_error(suite: Path):
    result = run(suite, "2,0", "--custom")
    assert result.returncode == 2
    assert "fake run 1 args=['--custom']" in result.stdout
    assert (suite / "sessions" / "acc" / "runs.txt").read_text() == "1"


def test_missing_env_and_missing_venv_are_explained(suite: Path):
    (suite / "sessions" / "acc" / ".env").unlink()
    result = run(suite, "0")
    assert result.returncode == 1
    assert "cp .env.example .env" in result.stderr
    (suite / "sessions" / "acc" / ".env").write_text("RUN_SCRIPT=fake.py\n")
    shutil.rmtree(suite / ".venv")
    result = run(suite, "0")
    assert result.returncode == 1
    assert "python3 -m venv .venv" in result.stderr
