"""A throw-away PostgreSQL cluster for the tests and benchmarks: initdb + pg_ctl in a
temporary folder, as an unprivileged user, on a free loopback port.

PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to PG_TEST_USER
(default `nobody`) and the commands run through `runuser`. The superuser `postgres` has a
password (scram-sha-256 over TCP), so the tests see a URL with a password as operators do.

    python tests/pg_cluster.py [--durable]   # by hand: prints its URL; Ctrl+C/SIGTERM stop it

The tests' cluster trades durability for speed (fsync, synchronous_commit and
full_page_writes off); --durable keeps PostgreSQL's defaults, as for benchmarks.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import helpers

HOW_TO_RUN = ("PostgreSQL tests skipped: no PostgreSQL server could be started; install "
              "Debian's postgresql package (apt-get install postgresql) or set "
              "PG_TEST_URL=postgresql://user:password@host:port/db")
START_TIMEOUT = 60                     # seconds for pg_ctl start -w


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or the cluster would not start (the reason)."""


def bin_dir() -> Path:
    """The folder of initdb/pg_ctl: PG_BINDIR, the PATH, or Debian's newest version."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    on_path = shutil.which("pg_ctl")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else "")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise ClusterUnavailable("initdb/pg_ctl not found (apt-get install postgresql)")


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def cluster(*, fast: bool = True) -> Iterator[str]:
    """Start a cluster, yield its URL (postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres),
    stop it and delete its folder afterwards. `fast`: no fsync (a test cluster)."""
    binaries = bin_dir()
    command_prefix: list[str] = []
    if os.geteuid() == 0:
        user = os.environ.get("PG_TEST_USER", "nobody")
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ClusterUnavailable(f"no user {user!r} to run PostgreSQL as") from None
        command_prefix = ["runuser", "-u", user, "--"]
    folder = Path(tempfile.mkdtemp(prefix="pgtest-"))
    if command_prefix:
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    password = secrets.token_hex(8)
    (folder / "pw").write_text(password + "\n", encoding="utf-8")
    if command_prefix:
        os.chown(folder / "pw", entry.pw_uid, entry.pw_gid)
    port = free_port()
    data = folder / "data"

    def run(*args: str) -> None:
        done = helpers.run([*command_prefix, *args], cwd=folder, timeout=START_TIMEOUT + 30)
        if done.returncode:
            raise ClusterUnavailable(f"{Path(args[0]).name} failed: "
                                     f"{(done.stderr or done.stdout).strip()[-500:]}")
    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
            "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256",
            f"--pwfile={folder / 'pw'}")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if fast:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
            str(folder / "server.log"), "-w", "-t", str(START_TIMEOUT), "start")
    except (ClusterUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ClusterUnavailable(str(exc)) from None
    try:
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    finally:
        helpers.run([*command_prefix, binaries / "pg_ctl", "-D", data, "-m", "immediate",
                     "-w", "stop"], cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def database_url(server_url: str, name: str) -> str:
    """The URL of database `name` on the server of `server_url`."""
    return server_url.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Start a throw-away PostgreSQL cluster.")
    parser.add_argument("--durable", action="store_true",
                        help="keep fsync and synchronous_commit on (benchmarks)")
    args = parser.parse_args()
    # Ctrl+C or SIGTERM stops the cluster (a background job's SIGINT is ignored otherwise)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with cluster(fast=not args.durable) as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    sys.exit(0)
