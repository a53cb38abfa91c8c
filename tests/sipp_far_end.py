"""SIPp as the far end of vibedialer's voip backend: a real SIP peer on loopback.

SIPp (Debian's `sip-tester`, installed by .ci/run) runs tests/sipp/uas_dialer.xml, which asks
for digest authentication and then answers by the dialed number's last digit (see the
scenario's header), streaming raw PCMU files from its working directory with rtp_stream.
The files are made here at test time: tones with numpy, speech with espeak-ng (or, where
espeak-ng is missing, vibedialer's synthetic speech).
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import wait_until

import vibedialer

SCENARIO = Path(__file__).resolve().parent / "sipp" / "uas_dialer.xml"
SIPP = shutil.which("sipp")
ESPEAK = shutil.which("espeak-ng")
USERNAME, PASSWORD = "auditor", "s3cret"
RATE = vibedialer.SAMPLE_RATE
SPEECH = ("Hello, you have reached the front desk of the example laboratory. "
          "Please leave your name and number after the tone.")


def require_sipp() -> None:
    """Skip without SIPp, except where REQUIRE_SIPP is set (CI): there it is a failure."""
    if SIPP is None:
        if os.environ.get("REQUIRE_SIPP"):
            pytest.fail("sipp is not installed but REQUIRE_SIPP is set (apt-get install "
                        "sip-tester)")
        pytest.skip("needs SIPp (apt-get install sip-tester)")


def free_udp_port(pairs: bool = False) -> int:
    """A loopback UDP port nobody uses now (with `pairs`: an even one whose +2 is free too,
    as SIPp's media port needs)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not pairs:
            return port
        if port % 2 or port + 2 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 2))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port pair on loopback")


def speech_samples() -> np.ndarray:
    """About three seconds of speech at 8 kHz: espeak-ng's when it is installed."""
    if ESPEAK is None:
        return vibedialer.synthesize_call_audio("voice", 3.0, random.Random(5), snr_db=None)
    with tempfile.TemporaryDirectory() as directory:
        wav = Path(directory) / "speech.wav"
        spoken = helpers.run([ESPEAK, "-s", "190", "-w", wav, SPEECH])
        assert spoken.returncode == 0, spoken.stderr
        samples = vibedialer.read_wav(wav)
    return 0.5 * samples / np.abs(samples).max()


def write_far_end_audio(directory: Path) -> None:
    """The raw PCMU files the scenario streams: modem, fax, voice, silence, voicemail, sit."""
    t = np.arange(int(3.0 * RATE)) / RATE
    speech = speech_samples()
    beep = 0.3 * np.sin(2 * np.pi * 1000 * t[:int(0.4 * RATE)])
    clips = {
        # V.8 ANSam: 2100 Hz, phase reversed every 450 ms, 20% amplitude modulation at 15 Hz
        "modem": 0.3 * np.sin(2 * np.pi * 2100 * t) * np.where((t // 0.45) % 2, -1, 1)
        * (1 + 0.2 * np.sin(2 * np.pi * 15 * t)),
        "fax": 0.3 * np.sin(2 * np.pi * 1100 * t) * ((t % 3.5) < 0.5),   # CNG: 0.5 s on, 3 off
        "voice": speech,
        "silence": np.zeros(len(t)),
        # special information tone (913.8, 1370.6, 1776.7 Hz, 330 ms each), then the announcement
        "sit": np.concatenate([0.3 * np.sin(2 * np.pi * f * t[:int(0.33 * RATE)])
                               for f in (913.8, 1370.6, 1776.7)] + [speech]),
        "voicemail": np.concatenate([speech[:int(1.4 * RATE)], np.zeros(int(0.1 * RATE)),
                                     beep, np.zeros(int(0.3 * RATE))]),
    }
    for name, samples in clips.items():
        (directory / f"{name}.ulaw").write_bytes(vibedialer.g711_encode(samples, "PCMU"))


def _udp_bound(port: int) -> bool:
    with open("/proc/net/udp", encoding="ascii") as table:
        return any(line.split()[1].endswith(f":{port:04X}") for line in list(table)[1:])


@dataclass
class FarEnd:
    """A running SIPp far end."""

    port: int
    process: subprocess.Popen
    messages: Path
    directory: Path

    @property
    def server(self) -> str:
        """The --sip-server argument."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Every SIP message SIPp sent and received so far."""
        return self.messages.read_text(errors="replace") if self.messages.exists() else ""


def start_far_end(directory: Path, scenario: Path = SCENARIO) -> FarEnd:
    """Start SIPp on free loopback ports with the audio in `directory`; wait until it listens."""
    directory.mkdir(parents=True, exist_ok=True)
    write_far_end_audio(directory)
    for _ in range(5):
        port, media = free_udp_port(), free_udp_port(pairs=True)
        messages = directory / "messages.log"
        process = helpers.start(
            [SIPP, "-sf", scenario, "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1",
             "-mp", str(media), "-nostdin", "-timeout", "300", "-trace_msg", "-message_file",
             messages, "-trace_err", "-error_file", directory / "errors.log"],
            cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda p=process, n=port: p.poll() is not None or _udp_bound(n),
                   what="SIPp to listen or end")
        if process.poll() is None:
            return FarEnd(port, process, messages, directory)
        stop_far_end(FarEnd(port, process, messages, directory))
    raise RuntimeError("SIPp did not start (see errors.log in the test's folder)")


def stop_far_end(far_end: FarEnd) -> None:
    """Stop SIPp (this process's child only)."""
    if far_end.process.poll() is None:
        far_end.process.terminate()
        try:
            far_end.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            far_end.process.kill()
            far_end.process.wait(timeout=10)
