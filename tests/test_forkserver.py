"""The fork server the tests start scripts from (forkserver.py, helpers.Forked): a script
started from it sees what it would see started with exec, and its end is reported the same."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import python

PROBE = """
import json, os, sys, tempfile
umask = os.umask(0)
print(json.dumps({
    "argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "name": __name__,
    "file": __file__, "setting": os.environ.get("PROBE_SETTING"), "stdin": sys.stdin.read(),
    "tmp": tempfile.gettempdir(), "session": os.getsid(0) == os.getpid(), "umask": umask,
    "telethon": "telethon" in sys.modules, "fds": sorted(map(int, os.listdir("/proc/self/fd"))),
}))
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(PROBE, encoding="utf-8")
    return script


def started_both_ways(probe: Path, tmp_path: Path, **options) -> list[dict]:
    """The probe's report and exit code, run from the fork server and then with exec."""
    env = helpers.clean_env(PROBE_SETTING="x y", PROBE_EXIT="3", TMPDIR=str(tmp_path))
    reports = []
    for starter in (helpers.Forked, subprocess.Popen):
        process = starter([sys.executable, str(probe), "a", "b c"], cwd=tmp_path, env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **options)
        out, err = process.communicate("typed\n", timeout=helpers.TIMEOUT)
        assert err == ""
        reports.append({**json.loads(out), "code": process.returncode})
    return reports


def test_a_forked_script_sees_what_it_would_see_started_with_exec(probe: Path,
                                                                  tmp_path: Path) -> None:
    old_umask = os.umask(0o027)
    try:
        forked, executed = started_both_ways(probe, tmp_path)
    finally:
        os.umask(old_umask)
    assert forked.pop("telethon") and not executed.pop("telethon")    # preloaded, only that
    assert forked == executed
    assert forked["argv"] == [str(probe), "a", "b c"] and forked["code"] == 3
    assert forked["path0"] == str(probe.parent) and forked["name"] == "__main__"
    assert forked["stdin"] == "typed\n" and forked["tmp"] == str(tmp_path)
    assert forked["umask"] == 0o027
    assert forked["fds"] == [0, 1, 2, 3]           # the standard streams and listdir's own


def test_a_script_started_through_a_symlink_imports_beside_its_real_file(
        probe: Path, tmp_path: Path) -> None:
    link = tmp_path / "links" / "probe.py"
    link.parent.mkdir()
    link.symlink_to(probe)
    forked, executed = started_both_ways(link, tmp_path)
    assert forked["path0"] == executed["path0"] == str(probe.parent)
    assert forked["argv"][0] == forked["file"] == str(link)


def test_a_new_session_is_its_own(probe: Path, tmp_path: Path) -> None:
    forked, executed = started_both_ways(probe, tmp_path, start_new_session=True)
    assert forked["session"] and executed["session"]


def test_a_signal_ends_a_forked_script_as_it_ends_any_process(tmp_path: Path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    process = helpers.start(python(script))
    assert helpers.read_until(process.stdout, "up")
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=helpers.TIMEOUT) == -signal.SIGTERM


def test_what_the_server_cannot_reproduce_is_started_with_exec(tmp_path: Path) -> None:
    """`python -c`, another interpreter setting (PYTHON*), a shell: exec, as before."""
    show = "import sys; print('telethon' in sys.modules)"
    assert helpers.run([sys.executable, "-c", show]).stdout == "False\n"
    script = tmp_path / "show.py"
    script.write_text(show + "\n")
    assert helpers.run(python(script)).stdout == "True\n"
    env = helpers.clean_env(PYTHONWARNINGS="ignore")
    assert helpers.run(python(script), env=env).stdout == "False\n"
    assert helpers.run(python(script), forked=False).stdout == "False\n"
