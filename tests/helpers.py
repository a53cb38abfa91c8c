"""The tests' shared tools: run a script as a real process (to completion, or in the
background and stopped after the test whatever happens), and wait for a condition.

    result = run(python(SCRIPT, "--once"), cwd=folder, env=clean_env("SOURCE_CHAT"))
    process = start(python(SCRIPT), cwd=folder)     # conftest stops it after the test
    wait_until(lambda: log.exists(), what="the log file")

Waits poll a condition under a generous ceiling, never a fixed time: a busy machine makes
a test slower, not red.

`python script.py` commands start from a fork server (forkserver.py) that has Telethon and
aiohttp loaded already: still a process of their own, four times less CPU to start.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import functools
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
        input: str | bytes | None = None, forked: bool = True,
        **options: Any) -> subprocess.CompletedProcess:
    """Run a command to completion, its output captured as text (unless `options` say
    otherwise, e.g. stdout=...); stdin is empty unless input= is given. forked: as start's."""
    options.setdefault("text", True)
    if "stdout" not in options and "stderr" not in options:
        options.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    options.setdefault("stdin", subprocess.DEVNULL if input is None else subprocess.PIPE)
    starter = Forked if forked else subprocess.Popen
    with starter([str(a) for a in argv], cwd=cwd, env=env, **options) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def start(argv: Sequence[str | Path], *, cwd: str | Path | None = None,
          env: dict[str, str] | None = None, forked: bool = True,
          **options: Any) -> subprocess.Popen:
    """Start a command in the background, stdout and stderr piped as text (unless
    `options` say otherwise). Whatever is still running when the test ends is killed
    (with its process group when start_new_session=True) by conftest's stop_started.
    forked=False starts a script with exec even where the fork server could start it: for
    a process that others find by its command line (campaign's `stop`)."""
    options.setdefault("text", True)
    options.setdefault("stdout", subprocess.PIPE)
    options.setdefault("stderr", subprocess.PIPE)
    starter = Forked if forked else subprocess.Popen
    process = starter([str(a) for a in argv], cwd=cwd, env=env, **options)
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


# ----------------------------------------------------------------------------- fork server
# Most of the processes the suite starts are `python script.py` (python() above), and most of
# their CPU time went to importing Telethon. Those whose start the fork server can reproduce
# exactly are forked from it (forkserver.py) with the libraries already loaded; anything else
# (a shell, `python -c`, a terminal, pass_fds, ...) is started with exec as before.

FORKSERVER = Path(__file__).resolve().parent / "forkserver.py"
# Read by the interpreter when it starts: a request must agree with the server on these.
STARTUP_VARIABLES = ("PYTHON", "LANG", "LC_")
_forkservers: list[subprocess.Popen] = []     # kept, their stdin open while the tests run


def _startup_variables(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_VARIABLES)}


@functools.cache
def forkserver() -> tuple[str, dict[str, str]] | None:
    """This process's fork server, started on first use: its socket's path and the
    startup variables it runs with; None if it cannot run here (pidfd_open needs Linux 5.3).
    It ends when this process does (its standard input closes)."""
    folder = tempfile.mkdtemp(prefix="forkserver-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "socket")
    env = dict(os.environ)
    server = subprocess.Popen([sys.executable, str(FORKSERVER), path], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              start_new_session=True)
    if server.stdout.readline() != b"ready\n":
        server.kill()
        server.wait()
        return None
    _forkservers.append(server)
    return path, _startup_variables(env)


class Forked(subprocess.Popen):
    """subprocess.Popen, except that `python script.py` started with the standard options is
    forked from the fork server, and its exit status comes back over the request's
    connection. It overrides Popen's POSIX _execute_child, _try_wait and _internal_poll."""

    _server: socket.socket | None = None    # the request's connection, while it runs

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread,
                       c2pwrite, errread, errwrite, *rest):
        # rest: restore_signals, gid, gids, uid, umask, start_new_session[, process_group]
        streams = [fd if fd != -1 else default
                   for default, fd in enumerate((p2cread, c2pwrite, errwrite))]
        env = dict(os.environ if env is None else env)
        server = forkserver() if self._forkable(args, executable, shell, preexec_fn,
                                                pass_fds, cwd, streams, rest) else None
        if server is None or _startup_variables(env) != server[1]:
            super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd,
                                   env, startupinfo, creationflags, shell, p2cread, p2cwrite,
                                   c2pread, c2pwrite, errread, errwrite, *rest)
            return
        umask = os.umask(0o022)
        os.umask(umask)
        request = {"argv": list(args), "cwd": os.fspath(cwd or os.getcwd()), "env": env,
                   "umask": umask, "new_session": bool(rest[5])}
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._server.connect(server[0])
        socket.send_fds(self._server, [json.dumps(request).encode()], streams)
        self.pid = int(self._server.recv(64))
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    @staticmethod
    def _forkable(args, executable, shell, preexec_fn, pass_fds, cwd, streams, rest) -> bool:
        """Whether this start is `python script.py` with nothing the fork server leaves out:
        no other executable, shell, preexec_fn, pass_fds, user or umask option, and no
        terminal for a standard stream."""
        return (executable is None and not shell and preexec_fn is None and not pass_fds
                and tuple(rest[:5]) == (True, None, None, None, -1)
                and tuple(rest[6:]) in ((), (-1,))
                and len(args) >= 2 and args[0] == sys.executable
                and args[1].endswith(".py") and os.path.isfile(args[1])
                and (cwd is None or os.path.isdir(cwd))
                and not any(os.isatty(fd) for fd in streams))

    def _forked_status(self, flags: int) -> tuple[int, int]:
        """(pid, wait status) as os.waitpid gives them; (0, 0) while it runs (WNOHANG)."""
        self._server.setblocking(not flags & os.WNOHANG)
        try:
            answer = self._server.recv(64)
        except BlockingIOError:
            return 0, 0
        self._server.close()
        if not answer:
            raise ChildProcessError(errno.ECHILD, "the fork server has gone")
        return self.pid, int(answer)

    def _try_wait(self, wait_flags):
        if self._server is None:
            return super()._try_wait(wait_flags)
        return self._forked_status(wait_flags)

    def _internal_poll(self, _deadstate=None, **waiting):
        if self._server is not None:
            waiting["_waitpid"] = lambda pid, flags: self._forked_status(flags)
        return super()._internal_poll(_deadstate, **waiting)


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
