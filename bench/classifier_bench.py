#!/usr/bin/env python3
"""Benchmark of vibedialer's answer classifier: speed and accuracy on generated call audio.

Generates CLIPS clips evenly over the classes (modem, fax, voice, voicemail, dial tone, busy,
reorder, ringback, special information tones, silence) with vibedialer.synthesize_call_audio:
random level, frequency offsets, cadence phases and modem/fax variants, white noise at
--snr dB below the signal, through a G.711 mu-law round trip as on the line. Where espeak-ng
is installed, half of the voice and voicemail clips use its recorded speech instead of the
synthetic speech. Prints the accuracy, a confusion table (rows: what was played, columns:
what was heard) and the seconds of audio classified per CPU second of classify_audio alone.

Goals (issue 16): at least 500x real time; at least 98% correct at 10 dB SNR.

    python bench/classifier_bench.py [--clips 1100] [--seconds 6] [--snr 10] [--seed 1]
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import vibedialer  # noqa: E402

SPEED_GOAL = 500.0
ACCURACY_GOAL = 0.98
PHRASES = (
    "Hello, this is the front desk, how can I help you?",
    "You have reached the voicemail of the audit team. Please leave a message.",
    "Good morning, accounts department, Maria speaking.",
    "Thank you for calling. All our agents are busy at the moment.",
)


def espeak_speech() -> list[np.ndarray]:
    """Recorded speech from espeak-ng at 8 kHz (empty when it is not installed)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return []
    recordings = []
    with tempfile.TemporaryDirectory() as directory:
        for index, phrase in enumerate(PHRASES):
            for voice in ("en", "en-us"):
                wav = Path(directory) / f"{index}-{voice}.wav"
                subprocess.run([espeak, "-v", voice, "-w", str(wav), phrase], check=True,
                               capture_output=True)
                recordings.append(vibedialer.read_wav(wav))
    return recordings


def recorded_clip(kind: str, seconds: float, speech: list[np.ndarray], rng: random.Random,
                  snr_db: float) -> np.ndarray:
    """A voice or voicemail clip built from espeak-ng speech, noise `snr_db` below it."""
    count = int(seconds * vibedialer.SAMPLE_RATE)
    talk = np.concatenate([rng.choice(speech) for _ in range(3)])
    start = rng.randrange(0, max(1, len(talk) - count))
    signal = np.zeros(count)
    if kind == "voice":
        signal[:] = talk[start:start + count][:count]
    else:
        greeting = int(rng.uniform(1.6, seconds - 1.2) * vibedialer.SAMPLE_RATE)
        signal[:greeting] = talk[start:start + greeting]
        beep = int(rng.uniform(0.25, 0.6) * vibedialer.SAMPLE_RATE)
        first = greeting + int(0.2 * vibedialer.SAMPLE_RATE)
        t = np.arange(min(beep, count - first)) / vibedialer.SAMPLE_RATE
        signal[first:first + len(t)] = np.sin(2 * np.pi * 1000 * t)
    level = 10 ** (rng.uniform(-25, -10) / 20)
    frames = signal[:len(signal) // 80 * 80].reshape(-1, 80)
    power = (frames ** 2).mean(axis=1)
    signal *= level / np.sqrt(power[power > 0.01 * power.max()].mean())
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, level / 10 ** (snr_db / 20),
                                                              count)
    return signal + noise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    speech = espeak_speech()
    kinds = vibedialer.TONE_TYPES
    confusion: Counter = Counter()
    cpu = audio = 0.0
    recorded = 0
    for index in range(args.clips):
        kind = kinds[index % len(kinds)]
        if speech and kind in ("voice", "voicemail") and rng.random() < 0.5:
            samples = recorded_clip(kind, args.seconds, speech, rng, args.snr)
            recorded += 1
        else:
            samples = vibedialer.synthesize_call_audio(kind, args.seconds, rng, args.snr)
        samples = vibedialer.g711_decode(vibedialer.g711_encode(samples, "PCMU"), "PCMU")
        started = time.process_time()
        heard = vibedialer.classify_audio(samples)
        cpu += time.process_time() - started
        audio += len(samples) / vibedialer.SAMPLE_RATE
        confusion[kind, heard.tone_type] += 1
    correct = sum(count for (played, heard), count in confusion.items() if played == heard)
    accuracy = correct / args.clips
    speed = audio / cpu if cpu else float("inf")
    print(f"{args.clips} clips of {args.seconds:g} s at {args.snr:g} dB SNR (G.711 mu-law; "
          f"{recorded} with espeak-ng speech), seed {args.seed}")
    print(f"accuracy: {correct}/{args.clips} = {100 * accuracy:.2f}% "
          f"(goal {100 * ACCURACY_GOAL:.0f}%)")
    print(f"speed: {audio:.0f} s of audio in {cpu:.2f} CPU s = {speed:,.0f}x real time "
          f"(goal {SPEED_GOAL:,.0f}x)")
    width = max(len(k) for k in kinds)
    print("confusion (rows played, columns heard):")
    print(" " * (width + 2) + " ".join(f"{k[:6]:>6}" for k in kinds))
    for played in kinds:
        print(f"{played:<{width}}  " + " ".join(f"{confusion[played, heard] or '.':>6}"
                                                for heard in kinds))
    return 0 if accuracy >= ACCURACY_GOAL and speed >= SPEED_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
