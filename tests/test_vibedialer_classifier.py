"""vibedialer's answer classifier: G.711 tables, WAV reading, every class at 10 dB SNR, the
`classify` command, and the simulation that listens through the same classifier."""
from __future__ import annotations

import random
import wave
from collections import Counter

import numpy as np
import pytest

import vibedialer
from vibedialer import classify_audio, g711_decode, g711_encode, synthesize_call_audio

RATE = vibedialer.SAMPLE_RATE


def run_main(*argv: str) -> int:
    try:
        return vibedialer.main(list(argv))
    except SystemExit as exc:
        return exc.code


def test_g711_tables_match_the_standard():
    # ITU-T G.711 end points and zeros (the values sox and audioop give)
    pcmu = (vibedialer.g711_table("PCMU") * 32768).astype(int)
    pcma = (vibedialer.g711_table("PCMA") * 32768).astype(int)
    assert [pcmu[b] for b in (0x00, 0x7F, 0x80, 0xFF, 0x0F, 0x8F)] == \
        [-32124, 0, 32124, 0, -16764, 16764]
    assert [pcma[b] for b in (0x55, 0xD5, 0x2A, 0xAA, 0x5A, 0xDA)] == \
        [-8, 8, -32256, 32256, -248, 248]
    for table in (pcmu, pcma):
        assert sorted(set(table)) == sorted(set(-table))       # symmetric
        assert len(set(table)) >= 255
    # encoding picks the nearest code
    samples = np.random.default_rng(1).uniform(-0.9, 0.9, 5000)
    for codec in ("PCMU", "PCMA"):
        decoded = g711_decode(g711_encode(samples, codec), codec)
        nearest = np.abs(vibedialer.g711_table(codec)[None, :] - samples[:, None]).min(axis=1)
        assert np.allclose(np.abs(decoded - samples), nearest)


def test_wav_files_of_every_common_encoding_are_read_at_8_khz(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)   # 1 s at 16 kHz
    path = tmp_path / "tone16k.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        stereo = np.repeat((tone * 32767).astype("<i2"), 2)
        handle.writeframes(stereo.tobytes())
    samples = vibedialer.read_wav(path)
    assert len(samples) == RATE
    assert abs(np.sqrt(np.mean(samples[100:-100] ** 2)) - 0.5 / np.sqrt(2)) < 0.01
    # a mu-law WAV (format 7), as telephone recorders write them
    ulaw = tmp_path / "ulaw.wav"
    data = g711_encode(tone[::2], "PCMU")
    fmt = (7).to_bytes(2, "little") + (1).to_bytes(2, "little") + RATE.to_bytes(4, "little") \
        + RATE.to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" \
        + len(data).to_bytes(4, "little") + data
    ulaw.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    assert np.allclose(vibedialer.read_wav(ulaw), g711_decode(data, "PCMU"))
    (tmp_path / "not.wav").write_text("hello")
    with pytest.raises(vibedialer.UsageError, match="not a WAV file"):
        vibedialer.read_wav(tmp_path / "not.wav")


@pytest.mark.parametrize("kind", vibedialer.TONE_TYPES)
def test_every_class_is_recognised_at_10_db_snr(kind):
    rng = random.Random(f"classifier-{kind}")
    got = Counter()
    for _ in range(12):
        samples = synthesize_call_audio(kind, 6.0, rng, snr_db=10.0)
        samples = g711_decode(g711_encode(samples, "PCMU"), "PCMU")
        heard = classify_audio(samples)
        got[heard.tone_type] += 1
        assert 0.0 <= heard.confidence <= 1.0
    assert got[kind] >= 11, got


def test_modem_answer_tones_are_told_apart():
    t = np.arange(3 * RATE) / RATE
    plain = 0.3 * np.sin(2 * np.pi * 2100 * t)
    reversed_ = plain * np.where((t // 0.45) % 2, -1, 1)
    ansam = reversed_ * (1 + 0.2 * np.sin(2 * np.pi * 15 * t))
    bell = 0.3 * np.sin(2 * np.pi * 2225 * t)
    assert classify_audio(plain).detail.startswith("modem: 2100 Hz answer tone (V.25 ANS)")
    assert "ANS/PR" in classify_audio(reversed_).detail
    assert "V.8 ANSam" in classify_audio(ansam).detail
    assert "phase reversals" in classify_audio(ansam).detail
    assert classify_audio(bell).detail == "modem: 2225 Hz Bell answer tone"
    assert classify_audio(np.zeros(100)).tone_type == "silence"


def test_the_classify_command_reports_type_and_confidence(tmp_path, capsys):
    rng = random.Random(4)
    for kind in ("modem", "busy", "voicemail"):
        vibedialer.write_wav(tmp_path / f"{kind}.wav", synthesize_call_audio(kind, 6.0, rng))
    assert run_main("classify", *(str(tmp_path / f"{k}.wav") for k in
                                  ("modem", "busy", "voicemail"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == ["modem", "busy",
                                                                       "voicemail"]
    assert all("(confidence " in line for line in lines)
    assert run_main("classify", str(tmp_path / "missing.wav")) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_a_rehearsal_listens_through_the_same_classifier(tmp_path):
    out = tmp_path / "rehearsal.db"
    assert run_main("dial", "555-234-56", "--sim-audio", "synth", "--listen", "4",
                    "--seed", "11", "--storage", "sqlite", "-o", str(out), "--no-interactive",
                    "--limit", "60") == 0
    import sqlite3
    conn = sqlite3.connect(out)
    rows = conn.execute("SELECT status, tone_type, tone_confidence, message FROM dial_results "
                        "WHERE tone_type IS NOT NULL AND tone_confidence IS NOT NULL").fetchall()
    conn.close()
    assert len(rows) >= 8
    for status, tone, confidence, message in rows:
        played = message.rsplit("(simulated ", 1)[1].split(",")[0]
        assert played == tone, message          # what was played is what was heard
        assert status == vibedialer.TONE_OUTCOMES[tone][0]
        assert 0 <= confidence <= 1
    assert (tmp_path / "rehearsal.carriers.txt").exists()


def test_a_rehearsal_replays_recordings_from_a_folder(tmp_path, capsys):
    folder = tmp_path / "recordings"
    folder.mkdir()
    vibedialer.write_wav(folder / "fax-line.wav",
                         synthesize_call_audio("fax", 5.0, random.Random(2)))
    assert run_main("dial", "555-234-56", "--sim-audio", str(folder), "--seed", "3",
                    "--storage", "dry-run", "--no-interactive", "--limit", "40") == 0
    replayed = [line for line in capsys.readouterr().out.splitlines() if "replayed" in line]
    assert replayed and all(" fax " in line and "fax-line.wav" in line for line in replayed)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main("dial", "555-234-56", "--sim-audio", str(empty), "--storage", "dry-run",
                    "--no-interactive") == 2
