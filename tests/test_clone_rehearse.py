"""rehearse.py, the README's first command: two accounts clone the demo world at once."""
from __future__ import annotations

import subprocess
from pathlib import Path

import helpers
from helpers import python

from rehearse import EXTRA_POSTS

ROOT = Path(__file__).resolve().parent.parent


def rehearse(*args: str) -> subprocess.CompletedProcess:
    return helpers.run(python("rehearse.py", *args), timeout=300)


def test_rehearsal_clones_everything_once_with_both_accounts(tmp_path: Path) -> None:
    workdir = tmp_path / "rehearsal"
    result = rehearse("--workdir", str(workdir))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "duplicates: 0" in out and "lost: 0" in out
    assert "albums: 2 of 2 sent as one album" in out
    assert "topics: 2 created in the target (News, Talk)" in out
    assert "replies pointing to the cloned message: 2 of 2" in out
    counts = [int(line.split("cloned ")[1].split()[0]) for line in out.splitlines()
              if ": cloned " in line]
    assert len(counts) == 2 and sum(counts) == 12 + EXTRA_POSTS    # the demo's 12 + posts
    assert (workdir / "world.db").is_file()
    assert (workdir / "sessions" / "session2" / "clone.log").is_file()


def test_rehearsal_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = rehearse("--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "is not empty" in result.stderr
    assert "Traceback" not in result.stderr
