"""A fork server for the tests: starts the suite's scripts as real processes with Telethon
and aiohttp already loaded, as multiprocessing's forkserver does for its workers.

The suite starts some 300 scripts, and each of them spent most of its CPU time importing
Telethon (0.5-0.8 s), not running. This server imports the heavy libraries once, then for
each request forks a child that becomes the script: its own pid, working directory, umask,
environment, standard streams (passed over the socket), session if asked, and exit status
(sent back on the request's connection when it ends). The script module itself, and the
suite's modules it imports, load in the child, so settings read from the environment at
import time see the child's environment. helpers.py decides what is started here and what
is started with exec; see helpers.Forked. What still tells a child from an exec'd script:
the preloaded modules in sys.modules, the hash seed it shares with its siblings, and its
command line in /proc (this server's: start with exec what is found by its command line).

    python tests/forkserver.py SOCKET_PATH      # prints "ready" once listening;
                                                # ends when its standard input closes
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import runpy
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_REQUEST = 1 << 20         # bytes: argv, working directory and environment, as JSON
STANDARD_STREAMS = 3          # stdin, stdout, stderr, passed with each request
# Loaded before any fork. Telethon is loaded the scripts' way (migrate_db.import_module,
# which leaves out aiohttp), then aiohttp for tgstat_fetcher and heatup.
PRELOADED = ("telethon", "telethon.sessions", "aiohttp.web", "dotenv", "yaml")


def preload() -> None:
    """Import PRELOADED, then forget the suite modules used to do it (each child imports
    them again, under its own environment)."""
    sys.path.insert(0, str(ROOT))
    import migrate_db
    for name in PRELOADED:
        migrate_db.import_module(name)
    del sys.modules["migrate_db"]
    sys.path.remove(str(ROOT))
    gc.freeze()     # the children's collections skip (and do not copy) the preloaded objects


def serve(path: str) -> tuple[dict, list[int]]:
    """Answer requests until standard input closes (then exit). Returns only in a forked
    child: its request and the three file descriptors it was sent."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    running: dict[int, tuple[int, socket.socket]] = {}     # pidfd -> (pid, connection)
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):           # not Linux 5.3 or later: never "ready"
        sys.exit("forkserver: no pidfd_open here; the tests start every script with exec")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:                    # the test process has gone
                if not os.read(sys.stdin.fileno(), 1024):
                    sys.exit(0)
            elif key.fileobj is listener:
                connection, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST, STANDARD_STREAMS)
                if not message:                             # gone before asking
                    connection.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    connection.close()
                    for pidfd, (_, other) in running.items():
                        os.close(pidfd)
                        other.close()
                    return json.loads(message), fds
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, connection)
                selector.register(pidfd, selectors.EVENT_READ)
                with contextlib.suppress(OSError):      # the test may have gone
                    connection.send(str(pid).encode())
            else:                                           # a child has ended
                pidfd = key.fileobj
                pid, connection = running.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    connection.send(str(status).encode())
                connection.close()


def become(request: dict, fds: list[int]) -> str:
    """Turn this forked child into the requested process, short of running the script;
    returns the script's path."""
    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None
    _, script, *args = request["argv"]          # python script.py args...
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(script))   # as `python script.py` does
    return script


if __name__ == "__main__":
    preload()
    request, fds = serve(sys.argv[1])
    # From here on this is the child: the script runs as `python script.py` would run it,
    # its SystemExit or uncaught exception ending the process the same way.
    runpy.run_path(become(request, fds), run_name="__main__")
