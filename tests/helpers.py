"""The tests' shared tools: run a script as a real process (to completion, or in the
background and stopped after the test whatever happens), and wait for a condition.

    result = run(python(SCRIPT, "--once"), cwd=folder, env=clean_env("SOURCE_CHAT"))
    process = start(python(SCRIPT), cwd=folder)     # conftest stops it after the test
    wait_until(lambda: log.exists(), what="the log file")

Waits poll a condition under a generous ceiling, never a fixed time: a busy machine makes
a test slower, not red.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120            # seconds: the ceiling of a run or a wait, far above the happy path
POLL = 0.05              # seconds between two looks at a condition

T = TypeVar("T")
_started: list[tuple[subprocess.Popen, bool]] = []     # (process, in a group of its own)


def python(script: str | Path, *args: str | Path) -> list[str]:
    """The command line running `script` (a path, or a file name in the checkout) with
    this interpreter."""
    path = Path(script) if os.path.isabs(script) else ROOT / script
    return [sys.executable, str(path), *map(str, args)]


def clean_env(*drop: str, **extra: str) -> dict[str, str]:
    """This process's environment without the variables whose names start with any of
    `drop` (e.g. "SOURCE_CHAT", "SIP_"), plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(drop)} if drop \
        else dict(os.environ)
    return {**kept, **extra}


def run(argv: Sequence[str | Path], *, cwd: str | Path | None = None,
        env: dict[str, str] | None = None, timeout: float = TIMEOUT,
        **options: Any) -> subprocess.CompletedProcess:
    """Run a command to completion, its output captured as text (unless `options` say
    otherwise, e.g. stdout=...); stdin is empty unless input= is given."""
    options.setdefault("text", True)
    if "stdout" not in options and "stderr" not in options:
        options.setdefault("capture_output", True)
    if "input" not in options:
        options.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, timeout=timeout,
                          check=False, **options)


def start(argv: Sequence[str | Path], *, cwd: str | Path | None = None,
          env: dict[str, str] | None = None, **options: Any) -> subprocess.Popen:
    """Start a command in the background, stdout and stderr piped as text (unless
    `options` say otherwise). Whatever is still running when the test ends is killed
    (with its process group when start_new_session=True) by conftest's stop_started."""
    options.setdefault("text", True)
    options.setdefault("stdout", subprocess.PIPE)
    options.setdefault("stderr", subprocess.PIPE)
    process = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, **options)
    _started.append((process, bool(options.get("start_new_session"))))
    return process


def finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Wait for a started process to end; its exit code and the rest of its output."""
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def read_until(stream: IO, text: str | bytes) -> str | bytes:
    """Read a started process's output line by line up to the first line holding `text`,
    and return that line; fail if the output ends first."""
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f"the output ended without {text!r}")


def stop_started() -> None:
    """Kill what start() started and is still running, and close its pipes."""
    while _started:
        process, own_group = _started.pop()
        if own_group:                       # its group may outlive it (worker processes)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        elif process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _timed_out(what: str, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_until(condition: Callable[[], T], *, what: str, timeout: float = TIMEOUT,
               interval: float = POLL) -> T:
    """Poll `condition` every `interval` seconds until it returns something true, and
    return that; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(interval)
    return result


async def wait_until_async(condition: Callable[[], T | Awaitable[T]], *, what: str,
                           timeout: float = TIMEOUT) -> T:
    """wait_until for a test running an event loop: the loop runs between looks, and
    `condition` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(POLL)
