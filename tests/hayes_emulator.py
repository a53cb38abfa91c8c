"""A Hayes-command modem emulator for the dialer's tests, on a pty pair or a TCP socket.

The emulator runs in a thread on the far side of a real serial stream: the slave end of a
pseudo-terminal pair (the dialer opens its path, e.g. /dev/pts/7) or a loopback TCP socket
(the dialer opens socket://127.0.0.1:PORT). It answers the AT commands the dialer sends and
plays a script per dialed number. A script is a list of steps per dial of that number (the
n-th dial plays the n-th list, the last one repeating):

    "BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE", "VOICE", "ERROR"  final result codes
    "CONNECT 14400/V32"   carrier: the modem goes online until +++ (guard time) and ATH0
    "RING"                one ring line
    "SILENCE"             say nothing until the dialer sends a character, then NO CARRIER
    "DEAD"                stop answering anything, for good
    ("WAIT", seconds)     pause

Every command line received (and "+++") is recorded in `received`.
"""
from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import threading
import time
import tty

POLL_SECONDS = 0.01


class HayesEmulator:
    """A scripted Hayes modem serving one connection in a background thread."""

    def __init__(self, script: dict[str, list] | None = None, default: list | None = None,
                 guard_seconds: float = 0.02, dead: bool = False, refuse_x4: bool = False):
        self.script = script or {}
        self.default = default or ["NO CARRIER"]
        self.guard_seconds = guard_seconds
        self.dead = dead
        self.refuse_x4 = refuse_x4
        self.received: list[str] = []
        self.dials: dict[str, int] = {}
        self.echo = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._write = None
        self._cleanup: list = []
        self._leftover = b""

    # -- transports
    def serve_pty(self) -> str:
        """Start on a new pty pair; returns the slave's path for --modem-port."""
        master, slave = os.openpty()
        tty.setraw(slave)
        self._read = lambda: os.read(master, 4096)
        self._write = lambda data: os.write(master, data)
        self._fileno = master
        self._cleanup = [lambda: os.close(master), lambda: os.close(slave)]
        self._start()
        return os.ttyname(slave)

    def serve_tcp(self) -> str:
        """Start a one-connection TCP server on loopback; returns its socket:// URL."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self._server = server
        self._cleanup = [server.close]
        self._start()
        return f"socket://127.0.0.1:{server.getsockname()[1]}"

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the streams."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for close in self._cleanup:
            with contextlib.suppress(OSError):
                close()

    def _accept(self) -> bool:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._server], [], [], POLL_SECONDS)
            if ready:
                conn, _ = self._server.accept()
                self._cleanup.append(conn.close)
                self._read = functools.partial(conn.recv, 4096)
                self._write = conn.sendall
                self._fileno = conn.fileno()
                return True
        return False

    # -- the modem
    def _receive(self, timeout: float) -> bytes | None:
        """Bytes from the dialer, b'' when nothing came in `timeout`, None when closed."""
        ready, _, _ = select.select([self._fileno], [], [], timeout)
        if not ready:
            return b""
        try:
            data = self._read()
        except OSError:
            return None
        return data if data else None

    def _say(self, text: str) -> None:
        self._write(f"\r\n{text}\r\n".encode())

    def _run(self) -> None:
        if self._read is None and not self._accept():
            return
        buffer = b""
        while not self._stop.is_set():
            data = self._receive(POLL_SECONDS)
            if data is None:
                return
            buffer += data
            while b"\r" in buffer:
                line, buffer = buffer.split(b"\r", 1)
                command = line.decode("ascii", "replace").strip()
                if not command:
                    continue
                self.received.append(command)
                if self.dead:
                    continue
                if self.echo:
                    self._write(line + b"\r")
                if not self._command(command.upper()):
                    return
                buffer, self._leftover = buffer + self._leftover, b""

    def _command(self, command: str) -> bool:
        """Answer one command line; False when the connection went away."""
        if command.startswith("ATDT"):
            return self._dial(command[4:])
        if command == "ATZ":
            self.echo = True
        elif command == "ATE0":
            self.echo = False
        elif command == "ATE1":
            self.echo = True
        elif (command == "ATX4" and self.refuse_x4) or \
                command not in ("AT", "ATQ0V1", "ATX4", "ATH0", "ATH"):
            self._say("ERROR")
            return True
        self._say("OK")
        return True

    def _dial(self, number: str) -> bool:
        count = self.dials.get(number, 0)
        self.dials[number] = count + 1
        attempts = self.script.get(number, [self.default])
        steps = attempts[min(count, len(attempts) - 1)]
        for step in steps:
            if isinstance(step, tuple):
                time.sleep(step[1])
            elif step == "RING":
                self._say("RING")
                time.sleep(0.005)
            elif step == "DEAD":
                self.dead = True
                return True
            elif step == "SILENCE":
                return self._silent_until_aborted()
            elif step.startswith("CONNECT"):
                self._say(step)
                return self._online()
            else:
                self._say(step)
                return True
        return True

    def _silent_until_aborted(self) -> bool:
        while not self._stop.is_set():
            data = self._receive(POLL_SECONDS)
            if data is None:
                return False
            if data:
                self._leftover = data[1:]   # the first character aborted the dial
                self._say("NO CARRIER")
                return True
        return False

    def _online(self) -> bool:
        """Data mode: wait for +++ followed by guard-time silence, then OK (command mode)."""
        buffer = b""
        while not self._stop.is_set():
            data = self._receive(self.guard_seconds)
            if data is None:
                return False
            if data:
                buffer += data
                continue
            if buffer.endswith(b"+++"):
                self.received.append("+++")
                self._say("OK")
                return True
        return False
