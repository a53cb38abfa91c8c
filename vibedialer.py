#!/usr/bin/env python3
"""vibedialer: dial phone-number ranges for audits of lines you own or are authorised to test.

Simulation is the default backend; a real modem (`--backend modem`) or SIP trunk/PBX
(`--backend voip`: a small SIP user agent over UDP with digest authentication, receiving
PCMU/PCMA RTP) dials only when asked, and only within an authorisation scope (`--scope
FILE`: who authorised it, contact, ranges, dates, the callee's hours). What answers is
classified from its audio (classify_audio: modem and fax tones, call-progress tones, special
information tones, voicemail beep, voice, silence). Results go to a csv file (one row
written and flushed per dial) or to a suite SQLite database (tables `sessions` and
`dial_results`, opened through migrate_db), grouped into sessions that can be continued and
resumed; hits (modem, fax, dial tone) also go to a carriers-found file beside them.

    python vibedialer.py dial 555-234-56 --storage sqlite --output calls.db
    python vibedialer.py dial --resume calls.db --infer-prefix
    python vibedialer.py dial 555-234 --backend modem --modem-port /dev/ttyUSB0 --scope s.yaml
    python vibedialer.py dial 555-234-1X3X --backend voip --sip-server pbx.lan --scope s.yaml
    python vibedialer.py classify recording.wav
    python vibedialer.py sessions calls.db
    python vibedialer.py report calls.db --session-id a3f5c2d1

Never dialed, whatever the input (patterns, lists, resumed ranges):
- North America (+1): an area code or exchange that is an N11 service code (211, 311, 411,
  511, 611, 711, 811, 911) or begins with 0 or 1; anything whose dialed digits begin with
  911 or 988.
- Every country: dialed digits beginning with 112, 911, 999, 000, 110, 119 or 100, plus the
  country's own emergency and service codes in COUNTRY_PLANS (e.g. UK 999/111/101,
  France 15/17/18/115/119, Australia 000/106, India 100-102/108, Russia 01-04/101-104).
  "Dialed digits" are the dial prefix (the country's trunk prefix unless `--dial-prefix`)
  followed by the national number, which is what the modem sends after ATDT.
- Numbers and prefixes listed in the `--exclude` file.
A pattern that could only produce such numbers is a usage error; otherwise they are skipped
and counted, and the count shown before dialing is exactly the number of dials.

Numbers are generated lazily: sequential order counts through the range, random order walks a
seeded permutation of it (a Feistel network), so even a 3-digit prefix (about 8 million
numbers) starts at once in constant memory. On resume the numbers already dialed are loaded
from the csv or database into a sorted array (8 bytes per number dialed) and skipped.

The simulation never sleeps unless `--sim-call-seconds` is given (the benchmark relies on it).
Exit codes: 0 done, 1 runtime failure (modem stopped answering, output not writable),
2 usage or validation error, 130 interrupted by Ctrl+C (results flushed first); SIGTERM
and SIGHUP stop the same way and exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import secrets
import sqlite3
import sys
import time
import uuid
import wave
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import migrate_db

# numpy, pyserial, PyYAML, python-dotenv and rich load when first used, so --help answers at once
np = migrate_db.lazy_import("numpy")
serial = migrate_db.lazy_import("serial")
yaml = migrate_db.lazy_import("yaml")
dotenv = migrate_db.lazy_import("dotenv")
rich_console = migrate_db.lazy_import("rich.console")
rich_live = migrate_db.lazy_import("rich.live")
rich_progress = migrate_db.lazy_import("rich.progress")
rich_table = migrate_db.lazy_import("rich.table")
rich_text = migrate_db.lazy_import("rich.text")

UTC = timezone.utc        # datetime.UTC is Python 3.11+

log = logging.getLogger("vibedialer")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CSV_FIELDS = ("session_id", "phone_number", "status", "timestamp", "success", "message",
              "carrier_detected", "tone_type", "tone_confidence")
CSV_FIELDS_BEFORE_CONFIDENCE = CSV_FIELDS[:-1]   # files written before the classifier
HIT_TONES = frozenset({"modem", "fax", "dialtone"})   # what goes to the carriers-found file
DEFAULT_OUTPUT = {"csv": "dial_results.csv", "sqlite": "dial_results.db"}
BATCH_ROWS = 500            # sqlite: rows per transaction at most ...
BATCH_SECONDS = 1.0         # ... and seconds between commits at most
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
PATTERN_SEPARATORS = " -.()/"
MAX_SPEC_PREFIXES = 100_000  # a mask or range expands to at most this many prefixes
MIN_PATTERN_DIGITS = 3       # an area code; shorter patterns need --allow-wide
SEQUENTIAL_BLOCK = 10_000  # ascending order checks exclusions block by block first
LINE_FLUSH_SECONDS = 0.2    # --no-interactive output reaches a pipe at least this often
RECENT_RESULTS = 8          # rows of the interactive view's "last results"
HITS_SHOWN = 10             # rows of its hits panel (modems, faxes, dial tones)

DEFAULT_MODEM_BAUDRATE = 57600
DEFAULT_CALL_TIMEOUT = 60.0
DEFAULT_GUARD_SECONDS = 1.0   # Hayes S12 default: 50 x 20 ms
MODEM_COMMAND_TIMEOUT = 5.0   # an AT command gets OK within this, or the modem is not answering
MODEM_POLL_SECONDS = 0.05
DEFAULT_MODEM_DELAY = 3.0     # seconds between calls on a real line, unless --delay
RETRYABLE_STATUSES = frozenset({"busy", "no_dialtone"})
STATUS_ORDER = {status: rank for rank, status in enumerate(
    ("modem", "fax", "dialtone", "person", "voicemail", "busy", "no_answer", "ringing",
     "invalid", "silence", "no_carrier", "no_dialtone", "timeout", "error"))}

# Call audio: 8 kHz G.711 on the line; the classifier looks at 50 ms frames (20 Hz resolution
# separates 440 from 480 Hz) and at the share of each frame's energy in these signatures.
SAMPLE_RATE = 8000
ANALYSIS_FRAME = 400
TONE_SIGNATURES = {
    "dialtone": (350.0, 440.0), "ringback": (440.0, 480.0), "busy": (480.0, 620.0),
    "ans": (2100.0,), "bell": (2225.0,), "cng": (1100.0,),
    "beep": (1000.0,), "sit1": (913.8,), "sit2": (1370.6,), "sit3": (1776.7,),
}
ANALYSIS_FREQUENCIES = sorted({f for tones in TONE_SIGNATURES.values() for f in tones})
SIGNATURE_COLUMNS = [[ANALYSIS_FREQUENCIES.index(f) for f in tones]
                     for tones in TONE_SIGNATURES.values()]
ANALYSIS_FFT = 800          # zero-padded to 10 Hz bins
V21_BAND_SHARE = 0.6
TONE_SCORE = 0.5             # a frame is a tone when this share of its energy is in the tone
TONE_MIN_COMPONENT = 0.15    # ... and each of a dual tone's frequencies has at least this
SILENCE_DBFS = -45.0         # frames quieter than this are silent
VOICE_MIN_VARIATION_DB = 3.0  # speech varies this much from frame to frame; steady noise not
TONE_TYPES = ("modem", "fax", "voice", "voicemail", "dialtone", "busy", "reorder",
              "ringback", "sit", "silence")

# voip: SIP over UDP (RFC 3261 timers), G.711 RTP; what a final response or the audio means
SIP_DEFAULT_PORT = 5060
SIP_T1, SIP_T2 = 0.5, 4.0
SIP_REFUSED_AFTER = 2.0       # ICMP "port unreachable" for this long: nothing listens there
SIP_USER_AGENT = "vibedialer"
DEFAULT_MAX_RING = 30.0       # seconds of ringing before CANCEL
DEFAULT_LISTEN = 8.0          # seconds recorded after answer
SIP_STATUS_MAP = {486: "busy", 600: "busy", 404: "invalid", 484: "invalid", 604: "invalid",
                  480: "no_answer", 408: "no_answer", 403: "error", 503: "error"}
TONE_OUTCOMES = {   # tone_type: (status, success, carrier_detected)
    "modem": ("modem", True, True), "fax": ("fax", True, False),
    "voice": ("person", True, False), "voicemail": ("voicemail", True, False),
    "dialtone": ("dialtone", True, False), "busy": ("busy", False, False),
    "reorder": ("busy", False, False), "ringback": ("no_answer", False, False),
    "sit": ("invalid", False, False), "silence": ("silence", False, False),
}

UNIVERSAL_EMERGENCY = ("112", "911", "999", "000", "110", "119", "100")
N11_CODES = frozenset(f"{n}11" for n in range(2, 10))


@dataclass(frozen=True)
class CountryPlan:
    """How national numbers of one country look and which dialed prefixes are forbidden."""

    code: str
    name: str
    length: int              # digits of a national (significant) number
    trunk_prefix: str        # dialed before a national number unless --dial-prefix
    emergency: tuple[str, ...]
    north_american: bool = False

    @property
    def forbidden_dialed_prefixes(self) -> tuple[str, ...]:
        """Every code the dialed digits must never begin with."""
        return tuple(sorted(set(UNIVERSAL_EMERGENCY) | set(self.emergency)))


COUNTRY_PLANS = {plan.code: plan for plan in (
    CountryPlan("1", "North America (NANP)", 10, "", ("911", "988") + tuple(sorted(N11_CODES)),
                north_american=True),
    CountryPlan("7", "Russia", 10, "8", ("01", "02", "03", "04", "101", "102", "103", "104")),
    CountryPlan("33", "France", 9, "0", ("15", "17", "18", "114", "115", "116", "119", "191",
                                          "196", "197")),
    CountryPlan("34", "Spain", 9, "", ("016", "061", "062", "080", "085", "091", "092")),
    CountryPlan("44", "United Kingdom", 10, "0", ("101", "105", "111", "116", "118")),
    CountryPlan("61", "Australia", 9, "0", ("000", "106")),
    CountryPlan("91", "India", 10, "0", ("101", "102", "108", "1091", "1098")),
)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call ended with."""

    status: str
    success: bool
    message: str
    carrier_detected: bool = False
    tone_type: str | None = None
    confidence: float | None = None     # of tone_type, when a classifier heard it


# What answers a simulated call that listens (--sim-audio synth), by weight.
SIM_LISTEN_KINDS = (("modem", 0.3), ("fax", 0.1), ("voice", 0.35), ("voicemail", 0.15),
                    ("dialtone", 0.05), ("silence", 0.05))

# The original's simulation weights; success for modem and person, carrier for modem.
SIM_OUTCOMES = (
    (Outcome("no_answer", False, "No answer"), 0.40),
    (Outcome("busy", False, "Busy signal"), 0.20),
    (Outcome("person", True, "Person answered", tone_type="voice"), 0.15),
    (Outcome("modem", True, "Modem detected", carrier_detected=True, tone_type="modem"), 0.10),
    (Outcome("error", False, "Call failed"), 0.10),
    (Outcome("ringing", False, "Ringing, nobody answered"), 0.05),
)

# Hayes final result codes (verbose, ATQ0V1) other than CONNECT.
MODEM_RESULTS = {
    "BUSY": Outcome("busy", False, "BUSY"),
    "NO CARRIER": Outcome("no_carrier", False, "NO CARRIER"),
    "NO ANSWER": Outcome("no_answer", False, "NO ANSWER"),
    "NO DIALTONE": Outcome("no_dialtone", False, "NO DIALTONE"),
    "NO DIAL TONE": Outcome("no_dialtone", False, "NO DIALTONE"),
    "VOICE": Outcome("person", True, "VOICE", tone_type="voice"),
    "ERROR": Outcome("error", False, "ERROR"),
    "DELAYED": Outcome("error", False, "DELAYED (modem refuses to redial yet)"),
    "BLACKLISTED": Outcome("error", False, "BLACKLISTED (modem refuses this number)"),
}
RING_LINES = frozenset({"RING", "RINGING"})
MODEM_INIT = ("ATZ", "ATE0", "ATQ0V1")   # must answer OK; then ATX4 (OK or ERROR)


class UsageError(Exception):
    """A bad argument or input file: reported as one usage line, exit 2."""


class ModemError(Exception):
    """The line failed at run time (the modem, or the SIP server for voip): reported as one
    error line, exit 1."""


class VoipError(ModemError):
    """The SIP server or the local network failed at run time."""


class ModemNotResponding(ModemError):
    """The modem stopped answering; `outcome` is the call that was in progress, if any."""

    def __init__(self, message: str, outcome: Outcome | None = None):
        super().__init__(message)
        self.outcome = outcome


# ----------------------------------------------------------------------------- number plans

def _nxx_prefix_counts() -> Counter:
    """How many valid NANP area codes / exchanges (NXX, not N11) begin with each prefix."""
    codes = [str(n) for n in range(200, 1000) if f"{n}" not in N11_CODES]
    return Counter(code[:k] for code in codes for k in range(4))


NXX_PREFIX_COUNTS = _nxx_prefix_counts()


def minimal_prefixes(prefixes: Iterable[str]) -> list[str]:
    """The prefixes with every entry that extends another one dropped, sorted."""
    kept: list[str] = []
    for prefix in sorted(set(prefixes)):
        if not kept or not prefix.startswith(kept[-1]):
            kept.append(prefix)
    return kept


class PrefixSet:
    """A set of digit prefixes of fixed-length numbers, tested against numbers as ints."""

    def __init__(self, prefixes: Iterable[str], length: int):
        self.prefixes = minimal_prefixes(prefixes)
        groups: dict[int, set[int]] = {}
        for prefix in self.prefixes:
            groups.setdefault(10 ** (length - len(prefix)), set()).add(int(prefix))
        self._groups = sorted(groups.items())

    def __contains__(self, number: int) -> bool:
        return any(number // divisor in values for divisor, values in self._groups)

    def covers(self, first: int, count: int) -> bool:
        """Whether one prefix covers the aligned block first .. first+count-1."""
        return any(first // divisor in values for divisor, values in self._groups
                   if divisor >= count)

    def __bool__(self) -> bool:
        return bool(self.prefixes)


class NumberPlan:
    """The national numbers of one country that may be dialed, and how they are written."""

    def __init__(self, country: CountryPlan, dial_prefix: str | None = None):
        self.country = country
        self.length = country.length
        self.dial_prefix = country.trunk_prefix if dial_prefix is None else dial_prefix
        self.blocked = PrefixSet(self._blocked_national_prefixes(), self.length)
        self._lowest = 10 ** (self.length - 1)

    def _blocked_national_prefixes(self) -> list[str]:
        """Forbidden dialed prefixes, seen through the dial prefix as national prefixes."""
        dialed = self.dial_prefix.replace(",", "")
        blocked = []
        for code in self.country.forbidden_dialed_prefixes:
            if dialed.startswith(code):
                raise UsageError(f"dial prefix {self.dial_prefix!r} begins with the emergency "
                                 f"number {code}; choose another --dial-prefix")
            if code.startswith(dialed):
                blocked.append(code[len(dialed):])
        return blocked

    def well_formed(self, number: int) -> bool:
        """Numbering-plan rules: NANP area code and exchange NXX and not N11; else no leading 0."""
        if self.country.north_american:
            area, rest = divmod(number, 10_000_000)
            exchange = rest // 10_000
            return (area >= 200 and area % 100 != 11 and exchange >= 200
                    and exchange % 100 != 11)
        return number >= self._lowest

    def check_number_form(self, number: int) -> None:
        """ValueError unless the number is possible (N11 numbers are possible: just never
        dialed)."""
        digits = f"{number:0{self.length}d}"
        if self.country.north_american:
            if digits[0] in "01" or digits[3] in "01":
                raise ValueError(f"{self.format(number)} is not a North American number (area "
                                 f"code and exchange begin with 2-9)")
        elif digits.startswith("0"):
            raise ValueError(f"{digits} begins with 0; write national numbers without the "
                             f"trunk prefix")

    def dialable(self, number: int) -> bool:
        """Well formed and not an emergency or service number."""
        return self.well_formed(number) and number not in self.blocked

    def count_well_formed(self, prefix: str) -> int:
        """How many well-formed national numbers begin with `prefix` (digits)."""
        if self.country.north_american:
            return (NXX_PREFIX_COUNTS[prefix[:3]] * NXX_PREFIX_COUNTS[prefix[3:6]]
                    * 10 ** (4 - len(prefix[6:])))
        if prefix.startswith("0"):
            return 0
        free = self.length - len(prefix)
        return 9 * 10 ** (free - 1) if not prefix else 10 ** free

    def format(self, number: int) -> str:
        """NANP as NXX-NXX-XXXX, other countries as the national digits."""
        digits = f"{number:0{self.length}d}"
        if self.country.north_american:
            return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
        return digits

    def format_pattern(self, prefix: str) -> str:
        """A prefix with its free digits as X, e.g. 555-234-56XX."""
        padded = prefix + "X" * (self.length - len(prefix))
        if self.country.north_american:
            return f"{padded[:3]}-{padded[3:6]}-{padded[6:]}"
        return padded

    def dial_string(self, number: int) -> str:
        """What follows ATDT: the dial prefix and the national number."""
        return f"{self.dial_prefix}{number:0{self.length}d}"

    def national_digits(self, text: str) -> str:
        """The digits of a written number or prefix, country code dropped if it has one."""
        stripped = text.strip()
        digits = re.sub(r"\D", "", stripped)
        if stripped.startswith("+"):
            if not digits.startswith(self.country.code):
                raise ValueError(f"{text!r} is not a +{self.country.code} number")
            return digits[len(self.country.code):]
        if len(digits) == self.length + len(self.country.code) and \
                digits.startswith(self.country.code):
            return digits[len(self.country.code):]
        return digits

    def parse_number(self, text: str) -> int:
        """A complete national number; ValueError saying what is wrong."""
        if re.search(r"[^\d+" + re.escape(PATTERN_SEPARATORS) + "]", text):
            raise ValueError(f"{text.strip()!r} contains characters other than digits and "
                             f"separators")
        digits = self.national_digits(text)
        if len(digits) != self.length:
            raise ValueError(f"{text.strip()!r} has {len(digits)} digits; a "
                             f"{self.country.name} number has {self.length}")
        return int(digits)

    def parse_pattern(self, text: str) -> str:
        """A pattern's prefix digits, checked against the numbering plan; raises UsageError."""
        body = text.strip()
        wildcards = re.search(r"[Xx?]+$", re.sub(f"[{re.escape(PATTERN_SEPARATORS)}]+$", "",
                                                 body))
        if wildcards:
            body = body[:wildcards.start()]
        bad = re.search(r"[^\d+" + re.escape(PATTERN_SEPARATORS) + "]", body)
        if bad:
            raise UsageError(f"pattern {text!r}: unexpected {bad.group()!r}; write digits with "
                             f"optional separators ( ) - . / and trailing X for free digits")
        try:
            digits = self.national_digits(body)
        except ValueError as exc:
            raise UsageError(f"pattern {exc}") from None
        if not digits:
            raise UsageError(f"pattern {text!r} has no digits; give at least the first digit "
                             f"of the numbers to dial")
        if len(digits) > self.length:
            raise UsageError(f"pattern {text!r} has {len(digits)} digits; {self.country.name} "
                             f"numbers have {self.length}")
        self._check_pattern_rules(text, digits)
        return digits

    def _check_pattern_rules(self, text: str, digits: str) -> None:
        if not self.country.north_american:
            if digits.startswith("0"):
                raise UsageError(f"pattern {text!r}: national numbers do not begin with 0 "
                                 f"(the dial prefix {self.dial_prefix!r} is added when dialing)")
            return
        for name, code in (("area code", digits[:3]), ("exchange", digits[3:6])):
            if code and code[0] in "01":
                raise UsageError(f"pattern {text!r}: a North American {name} begins with 2-9, "
                                 f"not {code[0]}")
            if code in N11_CODES:
                raise UsageError(f"pattern {text!r}: {name} {code} is an N11 service code; "
                                 f"N11 and emergency numbers are never dialed")

    def parse_spec(self, text: str) -> list[str]:
        """The disjoint prefixes of a pattern (555-234-56), a mask with X anywhere
        (555-234-1X3X) or a range (555-234-1000..555-234-1999); raises UsageError."""
        if ".." in text:
            return self._parse_range(text)
        body = re.sub(f"[{re.escape(PATTERN_SEPARATORS)}]", "", text.strip())
        mask = re.sub(r"[Xx?]+$", "", body)
        if not re.search(r"[Xx?]", mask):
            return [self.parse_pattern(text)]
        if re.search(r"[^\d+Xx?]", mask) or "+" in mask[1:]:
            raise UsageError(f"pattern {text!r}: write digits, separators and X for free digits")
        if mask.startswith("+"):
            if not mask[1:].startswith(self.country.code):
                raise UsageError(f"pattern {text!r} is not a +{self.country.code} number")
            mask = mask[1 + len(self.country.code):]
        if len(mask) > self.length:
            raise UsageError(f"pattern {text!r} has {len(mask)} digits; {self.country.name} "
                             f"numbers have {self.length}")
        free = sum(1 for char in mask if not char.isdigit())
        if 10 ** free > MAX_SPEC_PREFIXES:
            raise UsageError(f"pattern {text!r}: {free} free digits before the last fixed one "
                             f"are too many; split it into ranges")
        prefixes = [""]
        for char in mask:
            digits = "0123456789" if not char.isdigit() else char
            prefixes = [prefix + digit for prefix in prefixes for digit in digits]
        return self._possible(text, prefixes)

    def _parse_range(self, text: str) -> list[str]:
        low_text, _, high_text = text.partition("..")
        ends = []
        for end in (low_text, high_text):
            if not end.strip() or re.search(r"[^\d+" + re.escape(PATTERN_SEPARATORS) + "]", end):
                raise UsageError(f"range {text!r}: write FIRST..LAST with digits and separators, "
                                 f"e.g. 555-234-1000..555-234-1999")
            try:
                ends.append(self.national_digits(end))
            except ValueError as exc:
                raise UsageError(f"range {exc}") from None
        low, high = ends
        if len(low) != len(high) or not low or len(low) > self.length:
            raise UsageError(f"range {text!r}: both ends need the same number of digits (1 to "
                             f"{self.length})")
        if int(low) > int(high):
            raise UsageError(f"range {text!r}: the first end is above the last")
        prefixes, first, last, width = [], int(low), int(high), len(low)
        while first <= last:
            step = 1
            while first % (step * 10) == 0 and first + step * 10 - 1 <= last and \
                    step * 10 <= 10 ** width:
                step *= 10
            digits = width - len(str(step)) + 1
            prefixes.append(f"{first // step:0{digits}d}" if digits else "")
            first += step
        return self._possible(text, prefixes)

    def _possible(self, text: str, prefixes: list[str]) -> list[str]:
        """The prefixes that contain well-formed numbers; UsageError when none does."""
        kept = [prefix for prefix in prefixes if self.count_well_formed(prefix)]
        if not kept:
            raise UsageError(f"{text!r} contains no valid {self.country.name} number")
        return kept


def parse_exclusions(path: Path, plan: NumberPlan) -> list[str]:
    """Numbers and prefixes to skip, one per line, `#` comments; raises UsageError."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--exclude {path}: cannot read it ({exc})") from None
    prefixes = []
    for number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if re.search(r"[^\d+" + re.escape(PATTERN_SEPARATORS) + "]", entry):
            raise UsageError(f"--exclude {path} line {number}: {entry!r} is not a number or "
                             f"prefix (digits and separators only; # starts a comment)")
        try:
            digits = plan.national_digits(entry)
        except ValueError as exc:
            raise UsageError(f"--exclude {path} line {number}: {exc}") from None
        if not digits or len(digits) > plan.length:
            raise UsageError(f"--exclude {path} line {number}: {entry!r} must have 1 to "
                             f"{plan.length} digits")
        prefixes.append(digits)
    return prefixes


def read_number_list(path: Path, plan: NumberPlan) -> array:
    """The numbers of a --numbers file in file order, duplicates dropped; raises UsageError."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--numbers {path}: cannot read it ({exc})") from None
    numbers, seen = array("q"), set()
    for line_number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            number = plan.parse_number(entry)
            plan.check_number_form(number)
        except ValueError as exc:
            raise UsageError(f"--numbers {path} line {line_number}: {exc}") from None
        if number not in seen:
            seen.add(number)
            numbers.append(number)
    if not numbers:
        raise UsageError(f"--numbers {path} lists no numbers")
    return numbers


# ----------------------------------------------------------------------------- generation

class RandomOrder:
    """A seeded permutation of range(size) in constant memory.

    An unbalanced Feistel network (alternating half-rounds on the high and low bits) permutes
    the integers below the next power of two; walking through that domain in order and
    keeping the images below `size` visits every index exactly once, at most two domain
    steps per index.
    """

    ROUNDS = 4
    MULTIPLIER = 0x9E3779B97F4A7C15
    MASK64 = (1 << 64) - 1

    def __init__(self, size: int, rng: random.Random):
        self.size = size
        self.bits = max(2, (size - 1).bit_length())
        self.low_bits = self.bits // 2
        self.high_mask = (1 << (self.bits - self.low_bits)) - 1
        self.low_mask = (1 << self.low_bits) - 1
        self.keys = [rng.getrandbits(64) for _ in range(self.ROUNDS)]

    def permute(self, index: int) -> int:
        """The image of `index` in the permuted power-of-two domain."""
        multiplier, mask64 = self.MULTIPLIER, self.MASK64
        high_mask, low_mask, low_bits = self.high_mask, self.low_mask, self.low_bits
        high, low = index >> low_bits, index & low_mask
        k0, k1, k2, k3 = self.keys
        high ^= (((low ^ k0) * multiplier & mask64) >> 32) & high_mask
        low ^= (((high ^ k1) * multiplier & mask64) >> 32) & low_mask
        high ^= (((low ^ k2) * multiplier & mask64) >> 32) & high_mask
        low ^= (((high ^ k3) * multiplier & mask64) >> 32) & low_mask
        return (high << low_bits) | low

    def __iter__(self) -> Iterator[int]:
        size, permute = self.size, self.permute
        for index in range(1 << self.bits):
            image = permute(index)
            if image < size:
                yield image


def nxx_codes(given: str) -> list[int]:
    """The valid NANP area codes / exchanges (2-9 first, not N11) beginning with `given`."""
    return [code for code in range(200, 1000)
            if code % 100 != 11 and str(code).startswith(given)]


class RangeSpace:
    """The well-formed numbers beginning with a prefix, indexed 0..size-1 in ascending order.

    North American numbers are area x exchange x line with only valid area codes and
    exchanges in the lists, so no order ever walks through numbers the plan forbids.
    """

    def __init__(self, plan: NumberPlan, prefix: str):
        if plan.country.north_american:
            self.areas, self.exchanges = nxx_codes(prefix[:3]), nxx_codes(prefix[3:6])
            line_digits = prefix[6:]
            self.run = 10 ** (4 - len(line_digits))
            self.line_base = int(line_digits or "0") * self.run
        else:
            self.areas, self.exchanges = [0], [0]
            self.run = 10 ** (plan.length - len(prefix))
            self.line_base = int(prefix) * self.run
        self.size = len(self.areas) * len(self.exchanges) * self.run

    def number(self, index: int) -> int:
        """The index-th number in ascending order."""
        head, line = divmod(index, self.run)
        area, exchange = divmod(head, len(self.exchanges))
        return (self.areas[area] * 10_000_000 + self.exchanges[exchange] * 10_000
                + self.line_base + line)

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(first, count) of aligned blocks of consecutive numbers, ascending; count is a
        power of ten dividing first."""
        for area in self.areas:
            for exchange in self.exchanges:
                start = area * 10_000_000 + exchange * 10_000 + self.line_base
                step = min(self.run, SEQUENTIAL_BLOCK)
                for offset in range(0, self.run, step):
                    yield start + offset, step


class UnionSpace:
    """Several disjoint RangeSpaces indexed one after the other."""

    def __init__(self, spaces: list[RangeSpace]):
        self.spaces = [space for space in spaces if space.size]
        self.starts, total = [], 0
        for space in self.spaces:
            self.starts.append(total)
            total += space.size
        self.size = total

    def number(self, index: int) -> int:
        """The index-th number: in the space whose share holds the index."""
        position = bisect_right(self.starts, index) - 1
        return self.spaces[position].number(index - self.starts[position])


@dataclass
class DialPlan:
    """What one run dials: a pattern's range or a list, minus everything never to dial."""

    plan: NumberPlan
    prefix: str | None                  # pattern digits, or None for a mask, range or list
    numbers: array | None = None        # the --numbers list
    prefixes: list[str] | None = None   # a mask's or range's disjoint prefixes (or [prefix])
    spec: str | None = None             # the mask or range as written
    excluded: PrefixSet | None = None
    dialed: array = field(default_factory=lambda: array("q"))   # sorted, already dialed
    in_range: int = 0                   # well-formed numbers in the range or list
    emergency: int = 0                  # of those, never dialed (emergency/service)
    excluded_count: int = 0             # of the rest, in the --exclude file
    already_dialed: int = 0             # of the rest, dialed before (resume)

    def __post_init__(self):
        if self.prefixes is None and self.prefix is not None:
            self.prefixes = [self.prefix]
        if self.prefixes is not None:
            self.prefixes = sorted(self.prefixes)
            self._members = PrefixSet(self.prefixes, self.plan.length)
            if self.prefix is None and len(self.prefixes) == 1 and self.spec is None:
                self.prefix = self.prefixes[0]

    @property
    def to_dial(self) -> int:
        """Exactly how many numbers iterate() yields."""
        return self.in_range - self.emergency - self.excluded_count - self.already_dialed

    @property
    def description(self) -> str:
        """The pattern as NXX-NXX-XXXX with X for free digits, or the list size."""
        if self.numbers is not None:
            return f"list of {len(self.numbers)} numbers"
        if self.spec is not None:
            return self.spec
        return self.plan.format_pattern(self.prefix)

    def was_dialed(self, number: int) -> bool:
        """Whether `number` is in the sorted already-dialed array."""
        position = bisect_left(self.dialed, number)
        return position < len(self.dialed) and self.dialed[position] == number

    def _skip_set(self) -> PrefixSet:
        excluded = self.excluded.prefixes if self.excluded else []
        return PrefixSet(self.plan.blocked.prefixes + excluded, self.plan.length)

    def iterate(self, randomized: bool, rng: random.Random) -> Iterator[int]:
        """The numbers to dial, lazily: ascending, or in a seeded random order."""
        skip, dialed = self._skip_set(), self.dialed
        if self.numbers is not None:
            numbers, well_formed = self.numbers, self.plan.well_formed
            order = RandomOrder(len(numbers), rng) if randomized else range(len(numbers))
            candidates = (numbers[index] for index in order)
            return (n for n in candidates if well_formed(n) and n not in skip
                    and not (dialed and self.was_dialed(n)))
        spaces = [RangeSpace(self.plan, prefix) for prefix in self.prefixes]
        if not randomized:
            return (number for space in spaces for number in self._ascending(space, skip))
        union = UnionSpace(spaces)
        candidates = map(union.number, RandomOrder(union.size, rng))
        return (n for n in candidates if n not in skip and not (dialed and self.was_dialed(n)))

    def _ascending(self, space: RangeSpace, skip: PrefixSet) -> Iterator[int]:
        """Ascending order, stepping over whole blocks that are skipped or already dialed."""
        dialed = self.dialed
        for first, count in space.blocks():
            if skip.covers(first, count):
                continue
            done: set[int] = set()
            if dialed:
                low, high = bisect_left(dialed, first), bisect_left(dialed, first + count)
                if high - low == count:
                    continue
                done = set(dialed[low:high])
            for number in range(first, first + count):
                if number not in skip and number not in done:
                    yield number

    def count(self) -> None:
        """Fill in the counts; for a pattern without walking the range."""
        if self.numbers is not None:
            self._count_list()
        else:
            counts = [self._count_range(prefix) for prefix in self.prefixes]
            self.in_range, self.emergency, self.excluded_count = (sum(column) for column
                                                                  in zip(*counts, strict=True))
        self.already_dialed = sum(1 for number in self.dialed if self._in_scope(number)
                                  and self.plan.dialable(number)
                                  and not (self.excluded and number in self.excluded))

    def _in_scope(self, number: int) -> bool:
        if self.numbers is not None:
            return number in self._list_members
        return number in self._members

    def _count_list(self) -> None:
        plan = self.plan
        self._list_members = set(self.numbers)
        self.in_range = len(self.numbers)
        self.emergency = sum(1 for n in self.numbers if not plan.dialable(n))
        self.excluded_count = sum(1 for n in self.numbers if plan.dialable(n)
                                  and self.excluded and n in self.excluded)

    def _count_range(self, prefix: str) -> tuple[int, int, int]:
        """(in range, emergency, excluded) of one prefix of the pattern."""
        plan = self.plan
        in_range = plan.count_well_formed(prefix)
        blocked = plan.blocked.prefixes
        emergency = self._count_under(blocked, prefix, in_range)
        excluded = self.excluded.prefixes if self.excluded else []
        excluded_count = 0
        for entry in excluded:
            if any(entry.startswith(b) for b in blocked):
                continue
            scope = self._intersection(entry, prefix)
            if scope is None:
                continue
            if scope == prefix:
                # the whole range is excluded (minus its emergency numbers); nothing else counts
                return in_range, emergency, in_range - emergency
            excluded_count += plan.count_well_formed(scope) - sum(
                plan.count_well_formed(b) for b in blocked if b.startswith(scope))
        return in_range, emergency, excluded_count

    def _count_under(self, prefixes: list[str], prefix: str, in_range: int) -> int:
        """Well-formed numbers of the range that begin with one of the disjoint `prefixes`."""
        total = 0
        for entry in prefixes:
            scope = self._intersection(entry, prefix)
            if scope == prefix:
                return in_range
            if scope is not None:
                total += self.plan.count_well_formed(scope)
        return total

    @staticmethod
    def _intersection(entry: str, prefix: str) -> str | None:
        """The longer of two prefixes if one extends the other, else None (disjoint)."""
        if entry.startswith(prefix):
            return entry
        if prefix.startswith(entry):
            return prefix
        return None


# ----------------------------------------------------------------------------- audio

def _ulaw_to_linear(byte: int) -> int:
    """G.711 mu-law byte to a 14-bit-range linear sample (ITU-T G.711, as in sox and audioop)."""
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


def _alaw_to_linear(byte: int) -> int:
    """G.711 A-law byte to a 13-bit-range linear sample."""
    a = byte ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (
        exponent - 1)
    return magnitude if a & 0x80 else -magnitude


@functools.cache
def g711_table(codec: str) -> np.ndarray:
    """The decoding table of `codec` (byte -> sample in -1..1), so no audioop (gone in
    Python 3.13) is needed."""
    to_linear = {"PCMU": _ulaw_to_linear, "PCMA": _alaw_to_linear}[codec]
    return np.array([to_linear(b) for b in range(256)], dtype=np.float64) / 32768.0
RTP_PAYLOAD_CODECS = {0: "PCMU", 8: "PCMA"}


def g711_decode(payload: bytes, codec: str) -> np.ndarray:
    """G.711 bytes as float samples in -1..1."""
    return g711_table(codec)[np.frombuffer(payload, dtype=np.uint8)]


def g711_encode(samples: np.ndarray, codec: str) -> bytes:
    """Float samples in -1..1 as G.711 bytes (each sample to the nearest code)."""
    table = g711_table(codec)
    order = np.argsort(table, kind="stable")
    levels = table[order]
    clipped = np.clip(samples, levels[0], levels[-1])
    upper = np.clip(np.searchsorted(levels, clipped), 1, len(levels) - 1)
    nearer_lower = clipped - levels[upper - 1] < levels[upper] - clipped
    return order[upper - nearer_lower].astype(np.uint8).tobytes()


def resample_to_8k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Samples at `rate` as 8 kHz samples (low-pass below 3.8 kHz first when downsampling)."""
    if rate == SAMPLE_RATE or not len(samples):
        return samples
    if rate > SAMPLE_RATE:
        taps = np.arange(-50, 51)
        cutoff = 3800.0 / rate
        kernel = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.hamming(len(taps))
        samples = np.convolve(samples, kernel / kernel.sum(), mode="same")
    duration = len(samples) / rate
    times = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    return np.interp(times, np.arange(len(samples)) / rate, samples)


def read_wav(path: Path) -> np.ndarray:
    """A WAV file (PCM 8/16/24/32-bit, float, mu-law or A-law; any rate; channels mixed) as
    8 kHz float samples; raises UsageError when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UsageError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    fmt, body, offset = None, None, 12
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8],
                                                              "little")
        content = data[offset + 8:offset + 8 + size]
        if chunk == b"fmt ":
            fmt = content
        elif chunk == b"data":
            body = content
        offset += 8 + size + (size & 1)
    if fmt is None or body is None or len(fmt) < 16:
        raise UsageError(f"{path}: WAV file without a fmt or data chunk")
    tag, channels, rate = (int.from_bytes(fmt[0:2], "little"),
                           int.from_bytes(fmt[2:4], "little"),
                           int.from_bytes(fmt[4:8], "little"))
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == 0xFFFE and len(fmt) >= 26:   # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
        tag = int.from_bytes(fmt[24:26], "little")
    width = bits // 8
    if channels < 1 or rate < 1 or width < 1:
        raise UsageError(f"{path}: WAV header says {channels} channels at {rate} Hz")
    body = body[:len(body) - len(body) % (width * channels)]
    if tag == 7 and bits == 8:
        samples = g711_decode(body, "PCMU")
    elif tag == 6 and bits == 8:
        samples = g711_decode(body, "PCMA")
    elif tag == 3 and bits in (32, 64):
        samples = np.frombuffer(body, dtype=f"<f{width}").astype(np.float64)
    elif tag == 1 and bits == 8:
        samples = (np.frombuffer(body, dtype=np.uint8).astype(np.float64) - 128) / 128
    elif tag == 1 and bits in (16, 32):
        samples = np.frombuffer(body, dtype=f"<i{width}").astype(np.float64) / 2 ** (bits - 1)
    elif tag == 1 and bits == 24:
        raw = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = raw[:, 0] | raw[:, 1] << 8 | raw[:, 2] << 16
        samples = np.where(values >= 1 << 23, values - (1 << 24), values) / 2 ** 23
    else:
        raise UsageError(f"{path}: WAV encoding {tag} with {bits} bits is not supported (use "
                         f"PCM, float, mu-law or A-law)")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return resample_to_8k(samples, rate)


def write_wav(path: Path, samples: np.ndarray) -> None:
    """8 kHz float samples as a 16-bit PCM WAV file, written atomically."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm)
    migrate_db.write_atomically(path, buffer.getvalue())


# ----------------------------------------------------------------------------- classifier

@dataclass(frozen=True)
class Classification:
    """What a recording of an answered call is."""

    tone_type: str      # one of TONE_TYPES
    confidence: float   # 0..1
    detail: str


@functools.cache
def _v21_bands() -> tuple[np.ndarray, np.ndarray]:
    """The FFT bins of V.21 channel 2's halves: mark 1650 Hz (1550-1750) and space
    1850 Hz (1750-1950)."""
    bins = np.fft.rfftfreq(ANALYSIS_FFT, 1 / SAMPLE_RATE)
    return (bins >= 1550) & (bins < 1750), (bins >= 1750) & (bins <= 1950)


@functools.cache
def _analysis_basis() -> tuple[list[str], np.ndarray, np.ndarray, float]:
    """(signature names, FFT bin of each analysis frequency, Hann window, scale)."""
    window = np.hanning(ANALYSIS_FRAME)
    # the zero-padded FFT has 10 Hz bins: every signature frequency is within 5 Hz of one
    bins = np.array([round(f * ANALYSIS_FFT / SAMPLE_RATE) for f in ANALYSIS_FREQUENCIES])
    # a tone of amplitude A: |X|^2 = (A sum(w) / 2)^2 and windowed energy A^2 sum(w^2) / 2
    scale = (window.sum() / 2) ** 2 / ((window ** 2).sum() / 2)
    return list(TONE_SIGNATURES), bins, window, scale


def frame_labels(samples: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per 50 ms frame: the tone signature heard (or 'sound' / 'silent'), its score (the
    share of the frame's energy in the signature's frequencies) and the level in dBFS."""
    names, bins, window, scale = _analysis_basis()
    count = len(samples) // ANALYSIS_FRAME
    if count == 0:
        return [], np.zeros(0), np.zeros(0)
    frames = samples[:count * ANALYSIS_FRAME].reshape(count, ANALYSIS_FRAME)
    windowed = frames * window
    spectrum_power = np.abs(np.fft.rfft(windowed, n=ANALYSIS_FFT, axis=1)) ** 2
    energy = (windowed ** 2).sum(axis=1) * scale + 1e-20
    share = spectrum_power[:, bins] / energy[:, None]
    scores = np.stack([share[:, columns].sum(axis=1)
                       * (share[:, columns].min(axis=1) >= TONE_MIN_COMPONENT)
                       for columns in SIGNATURE_COLUMNS], axis=1)
    best = scores.argmax(axis=1)
    best_score = scores[np.arange(count), best]
    level = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-20)
    # V.21 FSK (300 baud between 1650 and 1850 Hz) spreads over the band: its share, both halves
    total = spectrum_power.sum(axis=1) + 1e-20
    low_band, high_band = _v21_bands()
    low = spectrum_power[:, low_band].sum(axis=1) / total
    high = spectrum_power[:, high_band].sum(axis=1) / total
    fsk = (low + high >= V21_BAND_SHARE) & (np.minimum(low, high) >= 0.1)
    labels = [("silent" if lvl < SILENCE_DBFS else names[b] if s >= TONE_SCORE
               else "v21" if v21 else "sound")
              for b, s, lvl, v21 in zip(best, best_score, level, fsk, strict=True)]
    return labels, np.where(fsk & (best_score < TONE_SCORE), low + high, best_score), level


def _runs(labels: list[str]) -> list[tuple[str, int, int]]:
    """(label, first frame, length) of each run of equal labels."""
    runs: list[tuple[str, int, int]] = []
    for index, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((label, index, 1))
    return runs


def _phase_reversals(samples: np.ndarray, frequency: float) -> tuple[int, float]:
    """(phase reversals, 15 Hz amplitude-modulation depth) of an answer tone: V.25 ANS with
    reversals every 450 ms, V.8 ANSam also modulated 20% at 15 Hz."""
    step = 80   # 10 ms
    count = len(samples) // step
    if count < 8:
        return 0, 0.0
    frames = samples[:count * step].reshape(count, step)
    carrier = np.exp(-2j * np.pi * frequency * np.arange(step) / SAMPLE_RATE)
    phasors = frames @ carrier
    amplitude = np.abs(phasors)
    strong = amplitude > 0.5 * np.median(amplitude)
    angle = np.angle(phasors)
    # the tone's own drift over two frames, then jumps of about pi beyond it
    drift = np.angle(np.median(np.exp(1j * (angle[2:] - angle[:-2]))))
    jump = np.abs(np.angle(np.exp(1j * (angle[2:] - angle[:-2] - drift))))
    events = (jump > 2 * np.pi / 3) & strong[2:] & strong[:-2]
    reversals, last = 0, -10
    for index in np.flatnonzero(events):
        if index - last > 3:
            reversals += 1
        last = index
    times = np.arange(count) * step / SAMPLE_RATE
    mean = amplitude.mean() + 1e-20
    depth = 2 * abs(np.mean((amplitude - mean) * np.exp(-2j * np.pi * 15 * times))) / mean
    return reversals, float(depth)


def classify_audio(samples: np.ndarray) -> Classification:
    """Classify 8 kHz float samples of an answered call (Goertzel-style frame analysis).

    Modem: 2100 Hz answer tone (V.25 ANS, with phase reversals ANS/PR, V.8 ANSam) or 2225 Hz
    Bell answer tone. Fax: 1100 Hz CNG or V.21 1650/1850 Hz (also after a 2100 Hz CED).
    Special information tones 913.8/1370.6/1776.7 Hz in sequence. Busy (0.5 s cadence) and
    reorder (0.25 s) 480+620 Hz, ringback 440+480 Hz, dial tone 350+440 Hz. Voicemail: a
    ~1000 Hz beep after speech. Voice: sound that is no tone and varies like speech.
    Silence: nothing of the above.
    """
    labels, scores, level = frame_labels(np.asarray(samples, dtype=np.float64))
    if not labels:
        return Classification("silence", 1.0, "no audio")
    seconds = ANALYSIS_FRAME / SAMPLE_RATE
    runs = _runs(labels)
    frames = Counter(labels)

    def longest(label: str) -> float:
        return max((length for name, _, length in runs if name == label), default=0) * seconds

    def mean_score(*names: str) -> float:
        picked = [s for s, lab in zip(scores, labels, strict=True) if lab in names]
        return float(np.mean(picked)) if picked else 0.0

    def confident(value: float) -> float:
        return round(min(1.0, max(0.0, value)), 2)

    if frames["v21"] * seconds >= 0.3 or longest("cng") >= 0.35:
        heard = "V.21 1650/1850 Hz" if frames["v21"] * seconds >= 0.3 else "1100 Hz CNG"
        if frames["ans"]:
            heard = f"2100 Hz CED then {heard}"
        strength = max(frames["v21"] * seconds / 0.6, longest("cng") / 0.5)
        return Classification("fax", confident(min(1.0, strength) * mean_score("v21", "cng")
                                               / 0.9), f"fax: {heard}")
    for label, frequency in (("ans", 2100.0), ("bell", 2225.0)):
        if frames[label] * seconds >= 0.8:
            confidence = confident(min(1.0, frames[label] * seconds / 1.5)
                                   * mean_score(label) / 0.9)
            if label == "bell":
                return Classification("modem", confidence, "modem: 2225 Hz Bell answer tone")
            tone = np.concatenate([samples[start * ANALYSIS_FRAME:(start + length)
                                           * ANALYSIS_FRAME]
                                   for name, start, length in runs if name == "ans"])
            reversals, depth = _phase_reversals(tone, frequency)
            kind = ("V.8 ANSam" if depth >= 0.1 else "ANS/PR") if reversals else "V.25 ANS"
            detail = f"modem: 2100 Hz answer tone ({kind}" + (
                f", {reversals} phase reversals)" if reversals else ")")
            return Classification("modem", confidence, detail)
    sit = [next((start for name, start, _ in runs if name == part), None)
           for part in ("sit1", "sit2", "sit3")]
    if all(start is not None for start in sit) and sit[0] < sit[1] < sit[2] and \
            min(frames["sit1"], frames["sit2"], frames["sit3"]) >= 2:
        return Classification("sit", confident(mean_score("sit1", "sit2", "sit3") / 0.9),
                              "special information tone 913.8/1370.6/1776.7 Hz")
    if frames["busy"] * seconds >= 0.4:
        bursts = [length * seconds for name, _, length in runs if name == "busy"]
        typical = float(np.median(bursts))
        kind = "reorder" if typical < 0.37 and len(bursts) > 1 else "busy"
        expected = 0.25 if kind == "reorder" else 0.5
        fit = 1.0 - min(1.0, abs(typical - expected) / expected) if len(bursts) > 1 else 0.6
        return Classification(kind, confident(fit * mean_score("busy") / 0.9),
                              f"{kind}: 480+620 Hz, {typical:.2f} s bursts")
    if frames["ringback"] * seconds >= 0.8:
        return Classification("ringback", confident(min(1.0, frames["ringback"] * seconds / 1.6)
                                                    * mean_score("ringback") / 0.9),
                              "ringback: 440+480 Hz")
    if frames["dialtone"] * seconds >= 1.0:
        return Classification("dialtone", confident(min(1.0, frames["dialtone"] * seconds / 2)
                                                    * mean_score("dialtone") / 0.9),
                              "dial tone: 350+440 Hz")
    sound = [lvl for lab, lvl in zip(labels, level, strict=True) if lab == "sound"]
    variation = float(np.std(sound)) if len(sound) > 1 else 0.0
    beep = next((start for name, start, length in runs
                 if name == "beep" and length * seconds >= 0.15), None)
    if beep is not None:
        before = sum(1 for lab in labels[:beep] if lab == "sound") * seconds
        if before >= 1.0:
            return Classification("voicemail", confident(0.6 + 0.4 * min(1.0, before / 2)),
                                  f"voicemail: 1000 Hz beep after {before:.1f} s of speech")
    if len(sound) * seconds >= 0.5 and variation >= VOICE_MIN_VARIATION_DB:
        return Classification("voice", confident(0.5 + variation / 12),
                              f"voice: {len(sound) * seconds:.1f} s of speech-like sound")
    if beep is not None:
        return Classification("voicemail", 0.5, "voicemail: 1000 Hz beep")
    loud = max(float(max(level)), -99.0)
    return Classification("silence", confident(1.0 - max(0.0, loud - SILENCE_DBFS) / 40),
                          f"silence: loudest frame {loud:.0f} dBFS, no tone, no speech")


# ----------------------------------------------------------------------------- synthesis

def _tone(frequencies: tuple[float, ...], count: int, rng: random.Random) -> np.ndarray:
    """Equal-level sines (random phases) summing to unit peak at most."""
    t = np.arange(count) / SAMPLE_RATE
    return sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
               for f in frequencies) / len(frequencies)


def _cadence(signal: np.ndarray, on: float, off: float, rng: random.Random) -> np.ndarray:
    """The signal switched on for `on` s and off for `off` s, starting at a random phase."""
    period = on + off
    t = np.arange(len(signal)) / SAMPLE_RATE + rng.uniform(0, period)
    return signal * ((t % period) < on)


def _speech(count: int, rng: random.Random) -> np.ndarray:
    """Speech-like sound: voiced syllables (gliding pitch, formant-shaped harmonics, syllabic
    envelope), some noise bursts (consonants) and pauses."""
    out = np.zeros(count)
    position = int(rng.uniform(0, 0.3) * SAMPLE_RATE)
    base_pitch = rng.uniform(90, 230)
    while position < count:
        length = int(rng.uniform(0.12, 0.35) * SAMPLE_RATE)
        end = min(count, position + length)
        n = end - position
        t = np.arange(n) / SAMPLE_RATE
        start_pitch = base_pitch * rng.uniform(0.85, 1.2)
        pitch = start_pitch * (1 + rng.uniform(-0.25, 0.25) * t / max(t[-1], 1e-3)) \
            if n else np.zeros(0)
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        formants = ((rng.uniform(300, 900), 90), (rng.uniform(900, 2400), 120),
                    (rng.uniform(2400, 3300), 180))
        syllable = np.zeros(n)
        for harmonic in range(1, int(3600 / start_pitch)):
            frequency = harmonic * start_pitch
            weight = sum(1 / (1 + ((frequency - centre) / width) ** 2)
                         for centre, width in formants) / harmonic ** 0.5
            syllable += weight * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
        syllable *= np.hanning(n) if n > 1 else 1.0
        if rng.random() < 0.4:   # a consonant: a short noise burst before the vowel
            burst = min(n, int(0.04 * SAMPLE_RATE))
            noise = np.array([rng.gauss(0, 1) for _ in range(burst)])
            syllable[:burst] += 0.3 * np.diff(noise, prepend=0.0) * np.abs(syllable).max()
        out[position:end] = syllable
        position = end + int(rng.choice((rng.uniform(0.03, 0.15), rng.uniform(0.2, 0.6)))
                             * SAMPLE_RATE)
    return out / (np.abs(out).max() + 1e-12)


def synthesize_call_audio(kind: str, seconds: float, rng: random.Random,
                          snr_db: float | None = 10.0) -> np.ndarray:
    """What a line of `kind` (a TONE_TYPES name) sounds like after answer: 8 kHz samples at a
    random level, with white noise `snr_db` below the signal (measured where it is on)."""
    count = int(seconds * SAMPLE_RATE)
    detune = 1 + rng.uniform(-0.004, 0.004)
    if kind == "modem":
        variant = rng.choice(("ans", "anspr", "ansam", "bell"))
        if variant == "bell":
            signal = _tone((2225.0 * detune,), count, rng)
        else:
            signal = _tone((2100.0 * detune,), count, rng)
            if variant != "ans":
                t = np.arange(count) / SAMPLE_RATE + rng.uniform(0, 0.45)
                signal *= np.where((t // 0.45) % 2, -1.0, 1.0)
            if variant == "ansam":
                signal *= 1 + 0.2 * np.sin(2 * np.pi * 15 * np.arange(count) / SAMPLE_RATE)
    elif kind == "fax":
        if rng.random() < 0.5:
            signal = _cadence(_tone((1100.0 * detune,), count, rng), 0.5, 3.0, rng)
            if not signal.any():
                signal = _tone((1100.0 * detune,), count, rng) * (
                    np.arange(count) < 0.5 * SAMPLE_RATE)
        else:
            ced = int(rng.uniform(0.5, 2.5) * SAMPLE_RATE)
            flags = [bit == "1" for bit in "01111110" * 38]   # 1 s of HDLC flags, then data
            data = [rng.random() < 0.5 for _ in range(count // 26 + 1)]
            bits = np.repeat(flags + data, 27)[:count]   # 300 baud: 26.7 samples a bit
            frequency = np.where(bits, 1650.0, 1850.0) * detune
            fsk = np.sin(2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE)
            signal = np.concatenate([_tone((2100.0 * detune,), ced, rng),
                                     np.zeros(int(0.075 * SAMPLE_RATE)), fsk])[:count]
    elif kind == "dialtone":
        signal = _tone((350.0 * detune, 440.0 * detune), count, rng)
    elif kind in ("busy", "reorder"):
        on = 0.5 if kind == "busy" else 0.25
        signal = _cadence(_tone((480.0 * detune, 620.0 * detune), count, rng), on, on, rng)
    elif kind == "ringback":
        signal = _tone((440.0 * detune, 480.0 * detune), count, rng)
        t = np.arange(count) / SAMPLE_RATE + rng.uniform(0, 6.0)
        signal *= (t % 6.0) < 2.0
        if not signal.any():
            signal = _tone((440.0, 480.0), count, rng) * (np.arange(count) < SAMPLE_RATE)
    elif kind == "sit":
        segment = int(0.33 * SAMPLE_RATE)
        start = int(rng.uniform(0, 0.5) * SAMPLE_RATE)
        signal = np.zeros(count)
        for index, frequency in enumerate((913.8, 1370.6, 1776.7)):
            first = start + index * segment
            signal[first:first + segment] = _tone((frequency,), min(segment, count - first),
                                                  rng)[:max(0, count - first)]
        tail = start + 3 * segment + int(0.3 * SAMPLE_RATE)
        if tail < count:
            signal[tail:] = 0.5 * _speech(count - tail, rng)   # the recorded announcement
    elif kind == "voicemail":
        greeting = int(rng.uniform(1.6, max(1.7, seconds - 1.2)) * SAMPLE_RATE)
        beep = int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
        signal = np.zeros(count)
        signal[:greeting] = _speech(greeting, rng)
        gap = int(0.2 * SAMPLE_RATE)
        signal[greeting + gap:greeting + gap + beep] = _tone(
            (1000.0 * detune,), beep, rng)[:max(0, count - greeting - gap)]
    elif kind == "voice":
        signal = _speech(count, rng)
    elif kind == "silence":
        signal = np.zeros(count)
    else:
        raise ValueError(f"unknown call audio kind {kind!r}")
    level = 10 ** (rng.uniform(-25, -10) / 20)
    frames = signal[:len(signal) // 80 * 80].reshape(-1, 80)
    power = (frames ** 2).mean(axis=1) if len(frames) else np.zeros(1)
    active = power[power > 0.01 * power.max()] if power.max() > 0 else power
    rms = np.sqrt(active.mean()) if active.mean() > 0 else 1.0
    signal = signal / rms * level
    if kind == "silence":
        noise_rms = 10 ** (rng.uniform(-65, -50) / 20)
    elif snr_db is None:
        return signal
    else:
        noise_rms = level / 10 ** (snr_db / 20)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, noise_rms, count)
    return signal + noise


# ----------------------------------------------------------------------------- backends

class SimulationBackend:
    """Outcomes drawn with the original's weights from a seeded generator.

    With `listen` ("synth" or a folder of WAV recordings), an answered call (person or modem)
    plays audio through the classifier the voip backend uses, and the classifier decides the
    outcome: synthesised audio of a kind drawn by SIM_LISTEN_KINDS at 10 dB SNR, or a
    recording from the folder, cut to `listen_seconds`.
    """

    name = "simulation"

    def __init__(self, rng: random.Random, call_seconds: float = 0.0, listen: str | None = None,
                 listen_seconds: float = DEFAULT_LISTEN):
        self.rng = rng
        self.random = rng.random
        self.call_seconds = call_seconds
        self.listen = listen
        self.listen_seconds = listen_seconds
        self.recordings: list[Path] = []
        if listen is not None and listen != "synth":
            folder = Path(listen)
            self.recordings = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav") \
                if folder.is_dir() else []
            if not self.recordings:
                raise UsageError(f"--sim-audio {listen}: give 'synth' or a folder with .wav "
                                 f"recordings")
        self._outcomes = [outcome for outcome, _ in SIM_OUTCOMES]
        cumulative, total = [], 0.0
        for _, weight in SIM_OUTCOMES[:-1]:
            total += weight
            cumulative.append(total)
        self._cumulative = cumulative   # the last outcome takes what is above the rest

    def open(self) -> None:
        """Nothing to open."""

    def dial(self, dial_string: str) -> Outcome:
        """One simulated call."""
        if self.call_seconds:
            time.sleep(self.call_seconds)
        outcome = self._outcomes[bisect_right(self._cumulative, self.random())]
        if self.listen is None or outcome.status not in ("person", "modem"):
            return outcome
        if self.recordings:
            recording = self.rng.choice(self.recordings)
            samples = read_wav(recording)[:int(self.listen_seconds * SAMPLE_RATE)]
            return classified_outcome(samples, f"replayed {recording.name}")
        kinds = [kind for kind, _ in SIM_LISTEN_KINDS]
        kind = self.rng.choices(kinds, [weight for _, weight in SIM_LISTEN_KINDS])[0]
        samples = synthesize_call_audio(kind, self.listen_seconds, self.rng)
        samples = g711_decode(g711_encode(samples, "PCMU"), "PCMU")   # as the line carries it
        return classified_outcome(samples, f"simulated {kind}")

    def close(self) -> None:
        """Nothing to close."""


class ModemBackend:
    """A Hayes-compatible modem on a serial port or any pyserial URL (socket://, rfc2217://)."""

    name = "modem"

    def __init__(self, port: str, baudrate: int, call_timeout: float, guard_seconds: float):
        self.port_name = port
        self.baudrate = baudrate
        self.call_timeout = call_timeout
        self.guard_seconds = guard_seconds
        self.command_timeout = min(MODEM_COMMAND_TIMEOUT, call_timeout)
        self.port: serial.SerialBase | None = None
        self._buffer = b""
        self._in_call = False
        self._answering = True
        self._dtr_supported = True

    # -- port I/O
    def open(self) -> None:
        """Open the port (UsageError if it cannot be) and initialise the modem."""
        try:
            self.port = serial.serial_for_url(self.port_name, baudrate=self.baudrate,
                                              timeout=MODEM_POLL_SECONDS,
                                              write_timeout=self.command_timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise UsageError(f"--modem-port {self.port_name}: cannot open it ({exc})") from None
        self.port.reset_input_buffer()
        for command in MODEM_INIT:
            if self.command(command) != "OK":
                raise ModemError(f"modem on {self.port_name} refused {command}")
        if self.command("ATX4") != "OK":
            log.warning("modem refused ATX4: busy and dial-tone detection may be missing")

    def _write(self, data: str) -> None:
        try:
            self.port.write(data.encode("ascii"))
        except (serial.SerialException, OSError) as exc:
            raise ModemNotResponding(f"writing to the modem on {self.port_name} failed "
                                     f"({exc})") from None

    def _read_line(self, deadline: float) -> str | None:
        """The next non-empty line from the modem, or None at the deadline."""
        while True:
            cut = min((i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n"))
                       if i >= 0), default=-1)
            if cut >= 0:
                line, self._buffer = self._buffer[:cut], self._buffer[cut + 1:]
                text = line.decode("ascii", "replace").strip()
                if text:
                    return text
                continue
            if time.monotonic() >= deadline:
                return None
            try:
                self._buffer += self.port.read(self.port.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise ModemNotResponding(f"reading from the modem on {self.port_name} failed "
                                         f"({exc})") from None

    def command(self, text: str, outcome: Outcome | None = None) -> str:
        """Send an AT command; returns OK or ERROR. ModemNotResponding if neither comes."""
        self._write(text + "\r")
        deadline = time.monotonic() + self.command_timeout
        while (line := self._read_line(deadline)) is not None:
            if line in ("OK", "ERROR"):
                return line
        self._answering = False
        raise ModemNotResponding(f"modem on {self.port_name} stopped answering: no reply to "
                                 f"{text} within {self.command_timeout:g} s", outcome)

    # -- calls
    def dial(self, dial_string: str) -> Outcome:
        """Dial, wait for a final result code (RING counted), hang up; one Outcome."""
        self.port.reset_input_buffer()
        self._buffer = b""
        self._in_call = True
        self._write(f"ATDT{dial_string}\r")
        deadline = time.monotonic() + self.call_timeout
        rings = 0
        while True:
            line = self._read_line(deadline)
            if line is None:
                return self._timed_out(rings)
            if line.startswith("AT"):
                continue   # echo
            if line in RING_LINES:
                rings += 1
            elif line.startswith("CONNECT"):
                outcome = self._connected(line, rings)
                self._hang_up_online(outcome)
                return outcome
            elif line in MODEM_RESULTS:
                self._in_call = False
                return self._with_rings(MODEM_RESULTS[line], rings)
            else:
                log.debug("modem said %r while dialing", line)

    @staticmethod
    def _with_rings(outcome: Outcome, rings: int) -> Outcome:
        if not rings:
            return outcome
        return replace(outcome, message=f"{outcome.message} after {rings} "
                                        f"ring{'s' if rings > 1 else ''}")

    def _connected(self, line: str, rings: int) -> Outcome:
        match = re.match(r"CONNECT\s*(\d+)?\s*(?:/(\S+))?", line)
        speed, protocol = match.group(1), match.group(2)
        detail = f" at {speed} bps" if speed else ""
        detail += f" ({protocol})" if protocol else ""
        outcome = Outcome("modem", True, f"Carrier{detail}: {line}", carrier_detected=True,
                          tone_type="modem")
        return self._with_rings(outcome, rings)

    def _timed_out(self, rings: int) -> Outcome:
        """No final result within the call timeout: abort the dial and go on hook."""
        outcome = self._with_rings(
            Outcome("timeout", False, f"no result within {self.call_timeout:g} s"), rings)
        self._abort_dialing()
        self.command("ATH0", replace(outcome, message=f"{outcome.message}; the modem stopped "
                                                      f"answering"))
        self._in_call = False
        return outcome

    def _abort_dialing(self) -> None:
        """Any character stops a modem that is dialing; it answers NO CARRIER."""
        self._write("\r")
        self._read_line(time.monotonic() + self.command_timeout)

    def _hang_up_online(self, outcome: Outcome) -> None:
        """DTR drop where the port has it, then guard pause, +++, pause, ATH0."""
        self._drop_dtr()
        time.sleep(self.guard_seconds)
        self._write("+++")
        deadline = time.monotonic() + self.guard_seconds + self.command_timeout
        while (line := self._read_line(deadline)) is not None and line != "OK":
            pass
        self.command("ATH0", outcome)
        self._in_call = False

    def _drop_dtr(self) -> None:
        if not self._dtr_supported:
            return
        try:
            self.port.dtr = False
            time.sleep(min(self.guard_seconds, 0.5))
            self.port.dtr = True
        except (serial.SerialException, OSError):
            self._dtr_supported = False

    def close(self) -> None:
        """Hang up a call still in progress (best effort) and close the port."""
        if self.port is None:
            return
        try:
            if self._in_call and self._answering:
                self._abort_dialing()
                self.command("ATH0")
        except ModemError as exc:
            log.warning("hanging up on close: %s", exc)
        finally:
            self.port.close()
            self.port = None


# ----------------------------------------------------------------------------- SIP (voip backend)

@dataclass(frozen=True)
class SipAccount:
    """Where and as whom the voip backend calls: the trunk or PBX and its credentials."""

    host: str
    port: int
    username: str
    password: str
    domain: str


@dataclass
class SipMessage:
    """A parsed SIP request or response."""

    method: str | None       # requests
    uri: str | None
    status: int | None       # responses
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (compact forms understood)."""
        wanted = name.lower()
        for key, value in self.headers:
            if SIP_COMPACT.get(key.lower(), key.lower()) == wanted:
                return value
        return None

    def all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated values split."""
        wanted = name.lower()
        return [part.strip() for key, value in self.headers
                if SIP_COMPACT.get(key.lower(), key.lower()) == wanted
                for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", value)]

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header."""
        number, _, method = (self.header("cseq") or "0 -").partition(" ")
        return int(number) if number.isdigit() else 0, method.strip().upper()


SIP_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
               "l": "content-length", "c": "content-type", "k": "supported"}


def parse_sip(data: bytes) -> SipMessage | None:
    """A SIP message from one datagram, or None when it is not one."""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    first = lines[0].split(" ", 2)
    if len(first) < 3:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    if first[0] == "SIP/2.0":
        if not first[1].isdigit():
            return None
        return SipMessage(None, None, int(first[1]), first[2], headers, body)
    if first[2] != "SIP/2.0":
        return None
    return SipMessage(first[0].upper(), first[1], None, "", headers, body)


def header_param(value: str, name: str) -> str | None:
    """A ;name=value parameter of a header value (tag, branch, ...)."""
    match = re.search(rf";\s*{name}=([^;,\s>]+)", value)
    return match.group(1) if match else None


def digest_params(challenge: str) -> dict[str, str]:
    """The parameters of a Digest challenge (WWW-Authenticate / Proxy-Authenticate)."""
    return {key.lower(): quoted if quoted else bare for key, quoted, bare in
            re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', challenge.partition(" ")[2])}


def digest_authorization(account: SipAccount, challenge: str, method: str, uri: str,
                         nonce_count: int) -> str:
    """The Authorization value answering a Digest challenge (RFC 2617 / 3261 MD5, qop=auth
    or none); VoipError for an algorithm other than MD5."""
    params = digest_params(challenge)
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise VoipError(f"SIP server asks for {algorithm} digest authentication; only MD5 is "
                        f"supported")
    realm, nonce = params.get("realm", ""), params.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode("utf-8")).hexdigest()   # noqa: S324 (SIP digest is MD5)

    cnonce, count = secrets.token_hex(8), f"{nonce_count:08x}"
    ha1 = md5(f"{account.username}:{realm}:{account.password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = md5(f"{method}:{uri}")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{account.username}"', f'realm="{realm}"', f'nonce="{nonce}"',
              f'uri="{uri}"']
    if "auth" in qops:
        response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', f"algorithm={algorithm}", f'cnonce="{cnonce}"',
                   "qop=auth", f"nc={count}"]
    else:
        fields += [f'response="{md5(f"{ha1}:{nonce}:{ha2}")}"', f"algorithm={algorithm}"]
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)


@dataclass
class CallResult:
    """What happened on one SIP call, before classification."""

    status: int | None = None          # final response to the INVITE (None: none came)
    reason: str = ""
    provisional: list[int] = field(default_factory=list)
    answered: bool = False
    cancelled: bool = False            # CANCEL sent after --max-ring
    authenticated: bool = False
    remote_bye: bool = False
    codec: str | None = None
    audio: np.ndarray | None = None    # received after answer, 8 kHz
    early_audio: np.ndarray | None = None   # received before a call that was not answered


class RtpReceiver(asyncio.DatagramProtocol):
    """Collects the PCMU/PCMA packets of one call and lays them out by RTP timestamp."""

    def __init__(self):
        self.packets: list[tuple[float, int, int, int, bytes]] = []   # time, ssrc, ts, pt, data
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        count, extension, padding = data[0] & 0x0F, data[0] & 0x10, data[0] & 0x20
        payload_type = data[1] & 0x7F
        if payload_type not in RTP_PAYLOAD_CODECS:
            return
        offset = 12 + 4 * count
        if extension and len(data) >= offset + 4:
            offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
        end = len(data) - (data[-1] if padding else 0)
        if offset < end:
            self.packets.append((time.monotonic(), int.from_bytes(data[8:12], "big"),
                                 int.from_bytes(data[4:8], "big"), payload_type,
                                 data[offset:end]))

    def audio(self, since: float, until: float, limit: int) -> tuple[np.ndarray | None, str | None]:
        """(samples, codec) of the packets that arrived between `since` and `until`, placed by
        timestamp per stream (gaps silent), at most `limit` samples."""
        chosen = [p for p in self.packets if since <= p[0] < until]
        if not chosen:
            return None, None
        pieces, stream, first_ts, codec = [], None, 0, None
        for _, ssrc, timestamp, payload_type, payload in chosen:
            codec = RTP_PAYLOAD_CODECS[payload_type]
            if ssrc != stream:
                stream, first_ts = ssrc, timestamp
                pieces.append({})
            pieces[-1][(timestamp - first_ts) & 0xFFFFFFFF] = g711_decode(payload, codec)
        out = []
        for piece in pieces:
            length = max(offset + len(samples) for offset, samples in piece.items())
            if length > limit * 4:      # a timestamp jump: fall back to arrival order
                out.append(np.concatenate(list(piece.values())))
                continue
            track = np.zeros(length)
            for offset, samples in piece.items():
                track[offset:offset + len(samples)] = samples
            out.append(track)
        return np.concatenate(out)[:limit], codec

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()


class SipUserAgent(asyncio.DatagramProtocol):
    """A SIP user agent client over UDP for outgoing calls through one server: INVITE with
    digest authentication, provisional responses, CANCEL after the ring limit, ACK, BYE."""

    def __init__(self, account: SipAccount, max_ring: float, listen: float, timeout: float):
        self.account = account
        self.max_ring = max_ring
        self.listen = listen
        self.timeout = timeout
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.calls: dict[str, asyncio.Queue] = {}      # Call-ID -> its responses
        self.remote_byes: dict[str, asyncio.Event] = {}
        self.in_progress: dict[str, Callable[[], Awaitable[None]]] = {}
        self.refused: Exception | None = None

    # -- transport
    async def start(self) -> None:
        """Open the UDP socket towards the server; VoipError when it cannot be reached."""
        loop = asyncio.get_running_loop()
        try:
            self.transport, _ = await loop.create_datagram_endpoint(
                lambda: self, remote_addr=(self.account.host, self.account.port))
        except (OSError, UnicodeError) as exc:
            raise VoipError(f"--sip-server {self.account.host}:{self.account.port}: cannot "
                            f"reach it ({exc})") from None
        self.local = self.transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        message = parse_sip(data)
        if message is None:
            return
        call_id = message.header("call-id") or ""
        if message.status is not None:
            if call_id in self.calls:
                self.calls[call_id].put_nowait(message)
            return
        if message.method == "ACK":
            return
        code, reason = 200, "OK"
        if message.method == "BYE":
            if call_id in self.remote_byes:
                self.remote_byes[call_id].set()
            else:
                code, reason = 481, "Call/Transaction Does Not Exist"
        elif message.method not in ("OPTIONS",):
            code, reason = 501, "Not Implemented"
        self._respond(message, code, reason)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors on the connected socket: port unreachable means nothing listens."""
        log.debug("SIP socket: %s", exc)
        self.refused = exc

    def _respond(self, request: SipMessage, code: int, reason: str) -> None:
        lines = [f"SIP/2.0 {code} {reason}"]
        lines += [f"Via: {via}" for via in request.all("via")]
        for name in ("From", "To", "Call-ID", "CSeq"):
            lines.append(f"{name}: {request.header(name) or ''}")
        lines += [f"User-Agent: {SIP_USER_AGENT}", "Content-Length: 0", "", ""]
        self.transport.sendto("\r\n".join(lines).encode("utf-8"))

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()

    # -- messages
    def _request(self, method: str, uri: str, dialog: dict, cseq: int, branch: str,
                 extra: list[str] = (), body: bytes = b"") -> bytes:
        host, port = self.local
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport",
                 "Max-Forwards: 70",
                 f"From: <sip:{self.account.username}@{self.account.domain}>;tag="
                 f"{dialog['from_tag']}",
                 f"To: {dialog['to']}",
                 f"Call-ID: {dialog['call_id']}",
                 f"CSeq: {cseq} {method}",
                 f"Contact: <sip:{self.account.username}@{host}:{port}>",
                 f"User-Agent: {SIP_USER_AGENT}"]
        lines += [f"Route: {route}" for route in dialog.get("routes", ())]
        lines += list(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines += [f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode("utf-8") + body

    def _send(self, data: bytes) -> None:
        self.transport.sendto(data)

    async def _transaction(self, queue: asyncio.Queue, data: bytes, cseq: int, method: str,
                           give_up: float) -> SipMessage | None:
        """Send a non-INVITE request with Timer E retransmissions; its final response."""
        interval, deadline = SIP_T1, time.monotonic() + give_up
        self._send(data)
        while (left := deadline - time.monotonic()) > 0:
            try:
                response = await asyncio.wait_for(queue.get(), min(interval, left))
            except asyncio.TimeoutError:  # noqa: UP041 (not TimeoutError on 3.10)
                self._send(data)
                interval = min(interval * 2, SIP_T2)
                continue
            if response.cseq == (cseq, method) and response.status >= 200:
                return response
            if response.cseq == (cseq, method):
                interval = SIP_T2
        return None

    # -- calls
    async def call(self, number: str) -> CallResult:
        """One call: ring up to max_ring, listen up to `listen` seconds after answer."""
        result = CallResult()
        call_id = f"{uuid.uuid4().hex}@{self.local[0]}"
        queue: asyncio.Queue = asyncio.Queue()
        self.calls[call_id] = queue
        self.remote_byes[call_id] = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            rtp_transport, rtp = await self._open_rtp(loop)
        except OSError as exc:
            raise VoipError(f"cannot open a local RTP port ({exc})") from None
        try:
            await self._run_call(number, call_id, queue, rtp, result)
            if not result.answered:   # early media: announcements, tones before an answer
                result.early_audio, _ = rtp.audio(0.0, time.monotonic() + 1,
                                                  int(self.timeout * SAMPLE_RATE))
        finally:
            rtp.close()
            self.calls.pop(call_id, None)
            self.remote_byes.pop(call_id, None)
            self.in_progress.pop(call_id, None)
        return result

    async def _open_rtp(self, loop: asyncio.AbstractEventLoop
                        ) -> tuple[asyncio.DatagramTransport, RtpReceiver]:
        """A receiving socket on an even port (RTP convention), ephemeral."""
        for _ in range(20):
            transport, protocol = await loop.create_datagram_endpoint(
                RtpReceiver, local_addr=(self.local[0], 0))
            if transport.get_extra_info("sockname")[1] % 2 == 0:
                return transport, protocol
            transport.close()
        return transport, protocol     # an odd port works with every peer we know of

    def _sdp(self, rtp_port: int, session: int) -> bytes:
        host = self.local[0]
        return ("v=0\r\n"
                f"o=vibedialer {session} {session} IN IP4 {host}\r\n"
                "s=vibedialer\r\n"
                f"c=IN IP4 {host}\r\n"
                "t=0 0\r\n"
                f"m=audio {rtp_port} RTP/AVP 0 8\r\n"
                "a=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:8 PCMA/8000\r\n"
                "a=recvonly\r\n").encode("ascii")

    async def _run_call(self, number: str, call_id: str, queue: asyncio.Queue,
                        rtp: RtpReceiver, result: CallResult) -> None:
        uri = f"sip:{number}@{self.account.domain}"
        dialog = {"call_id": call_id, "from_tag": uuid.uuid4().hex[:10],
                  "to": f"<{uri}>"}
        sdp = self._sdp(rtp.transport.get_extra_info("sockname")[1], secrets.randbits(31))
        cseq, branch, auth_header = 1, f"z9hG4bK{uuid.uuid4().hex}", []
        started = time.monotonic()
        give_up = started + self.timeout
        ring_deadline = started + self.max_ring
        nonce_count = 0
        while True:
            invite = self._request("INVITE", uri, dialog, cseq, branch, auth_header, sdp)

            async def cancel(branch: str = branch, cseq: int = cseq,
                             auth: list[str] = auth_header) -> None:
                self._send(self._request("CANCEL", uri, dialog, cseq, branch, auth))
            self.in_progress[call_id] = cancel
            response = await self._invite_transaction(queue, invite, cseq, branch, uri, dialog,
                                                      auth_header, ring_deadline, give_up,
                                                      result)
            if response is None:
                return
            code = response.status
            if code in (401, 407) and not result.authenticated and self.account.password:
                header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
                challenge = response.header(header)
                if challenge:
                    nonce_count += 1
                    authorization = digest_authorization(self.account, challenge, "INVITE",
                                                         uri, nonce_count)
                    auth_header = [f"{'Authorization' if code == 401 else 'Proxy-Authorization'}"
                                   f": {authorization}"]
                    result.authenticated = True
                    cseq, branch = cseq + 1, f"z9hG4bK{uuid.uuid4().hex}"
                    continue
            result.status, result.reason = code, response.reason
            if code >= 300:
                return
            break
        # answered: ACK the 2xx, listen, hang up
        result.answered = True
        answered_at = time.monotonic()
        dialog["to"] = response.header("to")
        dialog["routes"] = list(reversed(response.all("record-route")))
        contact = re.search(r"<([^>]+)>", response.header("contact") or "")
        target = contact.group(1) if contact else uri
        ack_branch = f"z9hG4bK{uuid.uuid4().hex}"
        ack = self._request("ACK", target, dialog, cseq, ack_branch, auth_header)
        self._send(ack)

        async def hang_up(cseq: int = cseq) -> None:
            await self._bye(queue, target, dialog, cseq + 1, auth_header)
        self.in_progress[call_id] = hang_up
        bye_event = self.remote_byes[call_id]
        listen_until = answered_at + self.listen
        while (left := listen_until - time.monotonic()) > 0 and not bye_event.is_set():
            try:
                late = await asyncio.wait_for(queue.get(), left)
            except asyncio.TimeoutError:  # noqa: UP041 (not TimeoutError on 3.10)
                break
            if late.status is not None and late.status < 300 and late.cseq[1] == "INVITE":
                self._send(ack)     # the 200 OK again: our ACK was lost
        result.remote_bye = bye_event.is_set()
        result.audio, result.codec = rtp.audio(answered_at, time.monotonic() + 1,
                                               int(self.listen * SAMPLE_RATE))
        self.in_progress.pop(call_id, None)
        if not result.remote_bye:
            await self._bye(queue, target, dialog, cseq + 1, auth_header)

    async def _invite_transaction(self, queue: asyncio.Queue, invite: bytes, cseq: int,
                                  branch: str, uri: str, dialog: dict, auth_header: list[str],
                                  ring_deadline: float, give_up: float,
                                  result: CallResult) -> SipMessage | None:
        """Send the INVITE (Timer A retransmissions until a response), wait for its final
        response, CANCEL at the ring deadline; ACK a non-2xx final response. None when the
        call ended without a usable final response (result says why)."""
        self._send(invite)
        self.refused = None
        started = time.monotonic()
        interval = SIP_T1
        next_resend = time.monotonic() + interval
        provisional, cancelled = False, False
        no_response_limit = time.monotonic() + 64 * SIP_T1    # Timer B
        while True:
            deadlines = [give_up]
            if provisional and not cancelled:
                deadlines.append(ring_deadline)
            if not provisional:
                deadlines += [next_resend, no_response_limit]
            try:
                response = await asyncio.wait_for(queue.get(),
                                                  max(0.0, min(deadlines) - time.monotonic()))
            except asyncio.TimeoutError:  # noqa: UP041 (not TimeoutError on 3.10)
                response = None
            now = time.monotonic()
            if response is None:
                if not provisional and self.refused is not None and \
                        now - started >= SIP_REFUSED_AFTER:
                    raise VoipError(f"SIP server {self.account.host}:{self.account.port} does "
                                    f"not answer ({self.refused}); is it running there?")
                if not provisional and now >= no_response_limit:
                    result.reason = "no response from the SIP server"
                    return None
                if now >= give_up:
                    result.reason = f"no final response within {self.timeout:g} s"
                    return None
                if not provisional and now >= next_resend:
                    self._send(invite)
                    interval = min(interval * 2, SIP_T2)
                    next_resend = now + interval
                if provisional and not cancelled and now >= ring_deadline:
                    self._send(self._request("CANCEL", uri, dialog, cseq, branch, auth_header))
                    result.cancelled = cancelled = True
                    give_up = min(give_up, now + 64 * SIP_T1)
                continue
            if response.cseq != (cseq, "INVITE"):
                continue        # the 200 OK of our CANCEL, or a stray response
            if response.status < 200:
                provisional = True
                if response.status > 100:
                    result.provisional.append(response.status)
                continue
            if response.status >= 300:
                ack_dialog = dict(dialog, to=response.header("to") or dialog["to"])
                self._send(self._request("ACK", uri, ack_dialog, cseq, branch, auth_header))
            return response

    async def _bye(self, queue: asyncio.Queue, target: str, dialog: dict, cseq: int,
                   auth_header: list[str]) -> None:
        """Hang up an answered call (one digest retry if the BYE is challenged)."""
        for attempt in range(2):
            bye = self._request("BYE", target, dialog, cseq, f"z9hG4bK{uuid.uuid4().hex}",
                                auth_header)
            response = await self._transaction(queue, bye, cseq, "BYE", 8 * SIP_T1)
            if response is None or response.status not in (401, 407) or attempt:
                return
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = response.header(header)
            if not challenge:
                return
            authorization = digest_authorization(self.account, challenge, "BYE", target, 1)
            auth_header = [f"{'Authorization' if response.status == 401 else 'Proxy-Authorization'}"
                           f": {authorization}"]
            cseq += 1


def classified_outcome(samples: np.ndarray, source: str) -> Outcome:
    """The Outcome of an answered call from what was heard (voip and listening simulation)."""
    heard = classify_audio(samples)
    status, success, carrier = TONE_OUTCOMES[heard.tone_type]
    return Outcome(status, success, f"{heard.detail} ({source}, "
                   f"{len(samples) / SAMPLE_RATE:.1f} s)", carrier_detected=carrier,
                   tone_type=heard.tone_type, confidence=heard.confidence)


def call_outcome(result: CallResult, max_ring: float) -> Outcome:
    """The Outcome of a SIP call: the final response's status, or the classified audio."""
    if result.answered:
        if result.audio is None or not len(result.audio):
            return Outcome("silence", False, f"answered ({result.status} {result.reason}), no "
                           f"audio received", tone_type="silence", confidence=1.0)
        return classified_outcome(result.audio, result.codec)
    rang = " after ringing" if 180 in result.provisional or 183 in result.provisional else ""
    if result.cancelled and result.status in (None, 487):
        early = ""
        if result.early_audio is not None and len(result.early_audio):
            heard = classify_audio(result.early_audio)
            if heard.tone_type == "sit":
                return Outcome("invalid", False, f"{heard.detail} in early media (CANCEL sent "
                               f"after {max_ring:g} s)", tone_type="sit",
                               confidence=heard.confidence)
            early = f"; early media: {heard.tone_type}"
        return Outcome("no_answer", False, f"no answer within {max_ring:g} s{rang} (CANCEL "
                       f"sent{early})")
    if result.status is None:
        return Outcome("error", False, result.reason or "no final response")
    text = f"SIP {result.status} {result.reason}".strip()
    status = SIP_STATUS_MAP.get(result.status)
    if status is None:
        status = "error"
        if result.status in (401, 407):
            text += (" (credentials rejected)" if result.authenticated else
                     " (set SIP_USERNAME and SIP_PASSWORD in the environment or .env)")
    return Outcome(status, False, text + rang)


def sip_account(server: str, environment: dict[str, str]) -> SipAccount:
    """The --sip-server host[:port] and the SIP_* credentials; raises UsageError."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?(?::(\d{1,5}))?", server.strip())
    if not match or not match.group(1):
        raise UsageError(f"--sip-server {server!r}: write host or host:port")
    port = int(match.group(2) or SIP_DEFAULT_PORT)
    if not 0 < port < 65536:
        raise UsageError(f"--sip-server {server!r}: port {port} is out of range")
    username = environment.get("SIP_USERNAME", "")
    password = environment.get("SIP_PASSWORD", "")
    if password and not username:
        raise UsageError("SIP_PASSWORD is set but SIP_USERNAME is not (environment or .env)")
    return SipAccount(match.group(1), port, username or "vibedialer", password,
                      environment.get("SIP_DOMAIN") or match.group(1))


def sip_environment(env_file: Path) -> dict[str, str]:
    """SIP_* settings: the environment, over the .env file in the working directory."""
    values = {key: value for key, value in dotenv.dotenv_values(env_file).items()
              if value is not None} if env_file.is_file() else {}
    values.update({key: value for key, value in os.environ.items() if key.startswith("SIP_")})
    return values


class VoipBackend:
    """Calls through a SIP server (trunk or PBX) and classifies what answers."""

    name = "voip"

    def __init__(self, account: SipAccount, max_ring: float, listen: float, timeout: float):
        self.account = account
        self.max_ring = max_ring
        self.agent = SipUserAgent(account, max_ring, listen, timeout)
        self.loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Open the SIP socket."""
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.agent.start())

    def dial(self, dial_string: str) -> Outcome:
        """One call; its Outcome."""
        result = self.loop.run_until_complete(self.agent.call(dial_string))
        return call_outcome(result, self.max_ring)

    @staticmethod
    async def _hang_up(actions: list[Callable[[], Awaitable[None]]]) -> None:
        await asyncio.wait_for(asyncio.gather(*(action() for action in actions)), 5.0)

    def close(self) -> None:
        """Hang up a call still in progress (Ctrl+C) and close the sockets."""
        if self.loop is None:
            return
        actions = list(self.agent.in_progress.values())
        try:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            if actions:
                self.loop.run_until_complete(self._hang_up(actions))
        except (asyncio.TimeoutError, OSError) as exc:  # noqa: UP041 (3.10)
            log.warning("hanging up on close: %s", exc)
        finally:
            self.agent.close()
            self.loop.close()
            self.loop = None


def dial_with_retries(backend: Backend, dial_string: str, retries: int, pause: float) -> Outcome:
    """Dial; on BUSY / NO DIALTONE dial again up to `retries` times, `pause` s apart."""
    outcome = backend.dial(dial_string)
    attempts = 1
    while outcome.status in RETRYABLE_STATUSES and attempts <= retries:
        if pause:
            time.sleep(pause)
        outcome = backend.dial(dial_string)
        attempts += 1
    if attempts > 1:
        outcome = replace(outcome, message=f"{outcome.message} (attempt {attempts})")
    return outcome


# ----------------------------------------------------------------------------- storage

@dataclass
class SessionInfo:
    """The session a run writes to."""

    session_id: str
    continued: bool
    backend: str
    storage: str
    phone_pattern: str
    country_code: str
    randomized: bool
    random_seed: int | None = None
    scope: str | None = None        # Scope.record() of the authorisation


def connect_results_db(path: Path) -> sqlite3.Connection:
    """migrate_db.connect with its failures turned into one usage line."""
    try:
        return migrate_db.connect(path, kind="dialer")
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: cannot use it as a database ({exc})") from None


def repair_partial_row(path: Path) -> int:
    """Cut a last row left incomplete (a full disk, a crash mid-write) so the next row
    starts on a line of its own and resume never reads a cut-off number; returns the bytes
    removed (each complete row ends with a line break)."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        start = max(0, size - 65536)
        handle.seek(start)
        tail = handle.read()
        if tail.endswith(b"\n"):
            return 0
        cut = tail.rfind(b"\n")
        keep = start + cut + 1 if cut >= 0 else 0
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("%s: removed an incomplete last row (%d bytes) left by an interrupted write",
                path, size - keep)
    return size - keep


class CsvStorage:
    """Appends one row per dial to a csv file, flushed at once."""

    kind = "csv"

    def __init__(self, path: Path):
        self.path = path
        self._columns = len(CSV_FIELDS)
        self._check_existing()
        self._file: TextIO | None = None

    def _open(self) -> None:
        try:
            migrate_db.create_private(self.path)        # phone numbers: owner only
            repair_partial_row(self.path)
            self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--output {self.path}: cannot write it ({exc})") from None
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(CSV_FIELDS)
            self._file.flush()

    def _check_existing(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        if migrate_db.is_sqlite_file(self.path):
            raise UsageError(f"--output {self.path} is a SQLite database; add --storage sqlite")
        with open(self.path, newline="", encoding="utf-8", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        self._columns = len(header)
        if tuple(header) not in (CSV_FIELDS, CSV_FIELDS_BEFORE_CONFIDENCE):
            raise UsageError(f"{self.path} has other columns ({','.join(header)}); write the "
                             f"results to a new file with --output")

    def has_session(self, session_id: str) -> bool:
        """Whether any row belongs to the session."""
        return session_id in sessions_in_csv(self.path)

    def latest_session(self) -> str | None:
        """The session of the last row, if any."""
        return latest_csv_session(self.path)

    def begin(self, session: SessionInfo) -> None:
        """Open the file (writing the header if it is new) and record the session beside it."""
        self._open()
        record_csv_session(self.path, session)

    def add(self, row: tuple) -> None:
        """Write and flush one result row."""
        session_id, phone, status, timestamp, success, message, carrier, tone, confidence = row
        values = (session_id, phone, status, timestamp, str(bool(success)), message,
                  str(bool(carrier)), tone or "", "" if confidence is None else f"{confidence:.2f}")
        self._writer.writerow(values[:self._columns])
        self._file.flush()

    def finish(self, session: SessionInfo) -> None:
        """Everything is on disk already."""

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class SqliteStorage:
    """dial_results rows committed in small batches with the session's counters."""

    kind = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        if path.exists() and path.stat().st_size and not migrate_db.is_sqlite_file(path):
            raise UsageError(f"--output {path} is not a SQLite database; use --storage csv or "
                             f"another file")
        self.conn = connect_results_db(path)
        self._rows: list[tuple] = []
        self._last_commit = time.monotonic()
        self._session_id = ""

    def has_session(self, session_id: str) -> bool:
        """Whether the sessions table has the id."""
        row = self.conn.execute("SELECT 1 FROM sessions WHERE session_id = ?",
                                (session_id,)).fetchone()
        return row is not None

    def latest_session(self) -> str | None:
        """The most recently started session, if any."""
        return latest_db_session(self.conn)[0]

    def begin(self, session: SessionInfo) -> None:
        """Create the session row, or reopen it keeping start_time and counters."""
        self._session_id = session.session_id
        with migrate_db.transaction(self.conn):
            self.conn.execute(
                """INSERT INTO sessions (session_id, start_time, end_time, backend_type,
                       storage_type, phone_pattern, total_calls, successful_calls,
                       modem_detections, country_code, randomized, random_seed, scope)
                   VALUES (?, ?, NULL, ?, 'sqlite', ?, 0, 0, 0, ?, ?, ?, ?)
                   ON CONFLICT(session_id) DO UPDATE SET end_time = NULL,
                       backend_type = COALESCE(sessions.backend_type, excluded.backend_type),
                       phone_pattern = COALESCE(NULLIF(sessions.phone_pattern, ''),
                                                excluded.phone_pattern),
                       country_code = COALESCE(sessions.country_code, excluded.country_code),
                       randomized = COALESCE(sessions.randomized, excluded.randomized),
                       random_seed = COALESCE(sessions.random_seed, excluded.random_seed),
                       scope = COALESCE(excluded.scope, sessions.scope)""",
                (session.session_id, migrate_db.utc_text(), session.backend,
                 session.phone_pattern, session.country_code, int(session.randomized),
                 None if session.random_seed is None else str(session.random_seed),
                 session.scope))

    def add(self, row: tuple) -> None:
        """Buffer one row; commit when the batch is full or a second has passed."""
        self._rows.append(row)
        if len(self._rows) >= BATCH_ROWS or \
                time.monotonic() - self._last_commit >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows and add them to the session's counters."""
        self._last_commit = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        successes = sum(1 for row in rows if row[4])
        modems = sum(1 for row in rows if row[2] == "modem" or row[6])
        with migrate_db.transaction(self.conn):
            self.conn.executemany(
                """INSERT INTO dial_results (session_id, phone_number, status, timestamp,
                       success, message, carrier_detected, tone_type, tone_confidence)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)
            self.conn.execute(
                """UPDATE sessions SET total_calls = COALESCE(total_calls, 0) + ?,
                       successful_calls = COALESCE(successful_calls, 0) + ?,
                       modem_detections = COALESCE(modem_detections, 0) + ?
                   WHERE session_id = ?""",
                (len(rows), successes, modems, self._session_id))

    def finish(self, session: SessionInfo) -> None:
        """Commit what is left and set end_time."""
        self.flush()
        with migrate_db.transaction(self.conn):
            self.conn.execute("UPDATE sessions SET end_time = ? WHERE session_id = ?",
                              (migrate_db.utc_text(), session.session_id))

    def close(self) -> None:
        """Close the database."""
        self.conn.close()


class DryRunStorage:
    """Stores nothing."""

    kind = "dry-run"
    path = None

    def has_session(self, session_id: str) -> bool:
        """No sessions are stored."""
        return False

    def latest_session(self) -> str | None:
        """No sessions are stored."""
        return None

    def begin(self, session: SessionInfo) -> None:
        """Nothing to do."""

    def add(self, row: tuple) -> None:
        """Nothing to do."""

    def finish(self, session: SessionInfo) -> None:
        """Nothing to do."""

    def close(self) -> None:
        """Nothing to do."""


def latest_db_session(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
    """(session_id, phone_pattern) of the most recently started session."""
    row = conn.execute("SELECT session_id, phone_pattern FROM sessions "
                       "ORDER BY start_time DESC, rowid DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (None, None)


def latest_csv_session(path: Path) -> str | None:
    """The session_id of a csv's last row (None for an old csv without sessions)."""
    latest = None
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            latest = row.get("session_id") or latest
    return latest


def csv_sessions_path(path: Path) -> Path:
    """Where a csv results file keeps its sessions (pattern, order, seed, scope)."""
    return path.with_name(path.stem + ".sessions.json")


def read_csv_sessions(path: Path) -> dict[str, dict]:
    """The sessions recorded beside a csv results file ({} when none are)."""
    try:
        data = json.loads(csv_sessions_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    sessions = data.get("sessions") if isinstance(data, dict) else None
    return sessions if isinstance(sessions, dict) else {}


def record_csv_session(path: Path, session: SessionInfo) -> None:
    """Record (or complete) a session beside the csv, keeping what was recorded before."""
    sessions = read_csv_sessions(path)
    earlier = sessions.get(session.session_id, {})
    sessions[session.session_id] = {
        "start_time": earlier.get("start_time") or migrate_db.utc_text(),
        "backend_type": earlier.get("backend_type") or session.backend,
        "phone_pattern": earlier.get("phone_pattern") or session.phone_pattern,
        "country_code": earlier.get("country_code") or session.country_code,
        "randomized": earlier.get("randomized", session.randomized),
        "random_seed": earlier.get("random_seed", session.random_seed),
        "scope": session.scope or earlier.get("scope"),
    }
    target = csv_sessions_path(path)
    try:
        migrate_db.write_atomically(target, json.dumps({"sessions": sessions}, indent=1,
                                                       sort_keys=True))
    except OSError as exc:
        raise UsageError(f"{target}: cannot write it ({exc})") from None


def sessions_in_csv(path: Path) -> set[str]:
    """Every session_id in a csv results file."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return {row["session_id"] for row in csv.DictReader(handle) if row.get("session_id")}


# ----------------------------------------------------------------------------- resume

@dataclass
class ResumeSource:
    """What a --resume file says: numbers dialed, its latest session and that one's pattern."""

    path: Path
    kind: str
    dialed: array
    latest_session: str | None
    latest_pattern: str | None
    latest_numbers: list[int] = field(default_factory=list)   # dialed by that session
    latest_randomized: bool | None = None
    latest_seed: int | None = None


def _sorted_unique(numbers: Iterable[int]) -> array:
    result = array("q")
    previous = None
    for number in sorted(numbers):
        if number != previous:
            result.append(number)
            previous = number
    return result


def read_resume_source(path: Path, plan: NumberPlan) -> ResumeSource:
    """Load the numbers dialed so far from a csv or sqlite results file; UsageError if unusable."""
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such file")

    def national(text: str) -> int | None:
        try:
            return plan.parse_number(text)
        except ValueError:
            return None

    if migrate_db.is_sqlite_file(path):
        conn = connect_results_db(path)
        try:
            rows = conn.execute("SELECT session_id, phone_number FROM dial_results").fetchall()
            session_id, pattern = latest_db_session(conn)
            order = conn.execute("SELECT randomized, random_seed FROM sessions WHERE "
                                 "session_id = ?", (session_id,)).fetchone()
        finally:
            conn.close()
        numbers = [(session, national(phone)) for session, phone in rows]
        dialed = _sorted_unique(n for _, n in numbers if n is not None)
        mine = [n for session, n in numbers if session == session_id and n is not None]
        randomized, seed = order if order else (None, None)
        return ResumeSource(path, "sqlite", dialed, session_id, pattern, mine,
                            None if randomized is None else bool(randomized),
                            int(seed) if seed not in (None, "") else None)
    try:
        repair_partial_row(path)
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "phone_number" not in reader.fieldnames:
                raise UsageError(f"--resume {path}: not a results file (no phone_number "
                                 f"column and not a SQLite database)")
            latest, found = None, []
            for row in reader:
                latest = row.get("session_id") or latest
                number = national(row["phone_number"] or "")
                if number is not None:
                    found.append((row.get("session_id"), number))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"--resume {path}: cannot read it ({exc})") from None
    recorded = read_csv_sessions(path).get(latest, {}) if latest else {}
    seed = recorded.get("random_seed")
    return ResumeSource(path, "csv", _sorted_unique(n for _, n in found), latest,
                        recorded.get("phone_pattern"),
                        [n for session, n in found if session == latest],
                        recorded.get("randomized"), int(seed) if seed is not None else None)


def infer_pattern(source: ResumeSource, plan: NumberPlan) -> tuple[str, str]:
    """(pattern as written, where it came from) of the session being resumed: its recorded
    pattern, or else the common prefix of the smallest and largest number *that session*
    dialed; never a prefix spanning other sessions' numbers."""
    session = source.latest_session
    if source.latest_pattern and source.latest_pattern != "-":
        try:
            plan.parse_spec(source.latest_pattern)
            return source.latest_pattern, f"pattern of session {session}"
        except UsageError:
            pass
    numbers = source.latest_numbers if session is not None else source.dialed
    if not numbers:
        raise UsageError(f"--infer-prefix: {source.path} has no dialed numbers"
                         + (f" in session {session}" if session else "")
                         + "; give PATTERN or --resume-prefix")
    low = f"{min(numbers):0{plan.length}d}"
    high = f"{max(numbers):0{plan.length}d}"
    common = os.path.commonprefix([low, high])
    if not common:
        raise UsageError(f"--infer-prefix: the numbers in {source.path} share no prefix; give "
                         f"--resume-prefix")
    origin = "common prefix of the numbers dialed" + (f" in session {session}" if session
                                                      else "")
    return plan.format_pattern(plan.parse_pattern(common)), origin


# ----------------------------------------------------------------------------- time windows

def parse_window(text: str) -> tuple[int, int]:
    """HH:MM-HH:MM as (start, end) minutes after midnight; raises UsageError saying what is
    wrong (the caller names the text and where it came from)."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise UsageError("write it as HH:MM-HH:MM, e.g. 09:00-17:30")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or end_h > 23 or start_m > 59 or end_m > 59:
        raise UsageError("hours are 00-23 and minutes 00-59")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise UsageError("start and end are the same time")
    return start, end


def seconds_until_window(now: datetime, window: tuple[int, int]) -> float:
    """0 inside the window (which may cross midnight), else seconds until it opens."""
    start, end = window
    minute = now.hour * 60 + now.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if inside:
        return 0.0
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    opening = midnight + timedelta(minutes=start)
    if opening <= now:
        opening += timedelta(days=1)
    return (opening - now).total_seconds()


def format_duration(seconds: float) -> str:
    """H:MM:SS."""
    return str(timedelta(seconds=round(seconds)))


# ----------------------------------------------------------------------------- authorisation scope

# North American area codes by IANA time zone. Area codes that span two zones (850, 812, ...)
# are in SPLIT_AREA_CODES instead: a scope dialing them with hours must name its time_zone.
AREA_CODE_ZONES = {
    "America/New_York": (
        "201 202 203 207 212 215 216 220 223 227 229 231 234 239 240 248 252 260 267 269 272 "
        "276 283 301 302 304 305 313 315 317 321 324 326 330 332 336 339 347 351 352 363 380 "
        "386 401 404 407 410 412 413 419 423 434 436 440 443 445 463 470 472 475 478 484 "
        "502 508 513 516 517 518 540 551 561 567 570 571 574 582 585 586 603 607 609 610 614 "
        "616 617 631 640 645 646 656 667 678 679 680 681 689 703 704 706 716 717 718 724 727 "
        "728 732 734 740 743 754 757 762 765 770 771 772 774 781 786 802 803 804 810 813 814 "
        "826 828 835 838 839 843 845 848 854 856 857 859 860 862 863 864 865 878 904 908 910 "
        "912 914 917 919 929 934 937 941 943 947 948 954 959 973 978 980 984 989"),
    "America/Toronto": (
        "226 249 263 289 343 354 365 367 382 416 418 437 438 450 468 514 519 548 579 581 613 647 "
        "683 705 742 753 819 873 905"),
    "America/Chicago": (
        "205 210 214 217 218 219 224 225 228 235 251 254 256 262 270 274 281 309 312 314 316 "
        "318 319 320 325 327 331 334 337 346 361 364 402 405 409 414 417 430 432 447 464 469 "
        "479 501 504 507 512 515 531 534 539 557 563 572 573 580 601 608 612 615 618 620 629 "
        "630 636 641 651 659 660 662 682 708 712 713 715 726 730 731 737 763 769 773 779 785 "
        "806 815 816 817 830 832 847 861 870 872 901 903 913 918 920 924 931 936 938 940 945 "
        "952 956 972 975 979 985"),
    "America/Winnipeg": "204 431 584",
    "America/Regina": "306 474 639",
    "America/Denver": "303 307 385 406 435 505 575 719 720 801 915 970 983",
    "America/Edmonton": "368 403 587 780 825",
    "America/Phoenix": "480 520 602 623 928",
    "America/Los_Angeles": (
        "206 209 213 253 279 310 323 341 350 360 369 408 415 424 425 442 458 503 509 510 530 "
        "541 559 562 564 619 626 628 650 657 661 669 702 707 714 725 747 760 775 805 818 820 "
        "831 840 858 909 916 925 949 951 971"),
    "America/Vancouver": "236 250 257 604 672 778",
    "America/Anchorage": "907",
    "Pacific/Honolulu": "808",
    "America/Halifax": "782 902",
    "America/Moncton": "428 506",
    "America/St_Johns": "709 879",
    "America/Puerto_Rico": "787 939",
    "America/St_Thomas": "340",
    "America/Santo_Domingo": "809 829 849",
    "America/Jamaica": "658 876",
    "America/Nassau": "242",
    "America/Barbados": "246",
    "America/Port_of_Spain": "868",
    "America/Cayman": "345",
    "Atlantic/Bermuda": "441",
    "Pacific/Guam": "671",
    "Pacific/Saipan": "670",
    "Pacific/Pago_Pago": "684",
}
SPLIT_AREA_CODES = frozenset({"208", "308", "448", "605", "701", "807", "812", "850", "867",
                              "906", "930", "986"})
AREA_CODE_ZONE = {code: zone for zone, codes in AREA_CODE_ZONES.items()
                  for code in codes.split()}
SCOPE_FIELDS = ("authorised_by", "contact", "ranges", "valid_from", "valid_until")


@dataclass(frozen=True)
class Scope:
    """Who authorised the test of which numbers, when, and at which hours of the callee."""

    path: Path
    authorised_by: str
    contact: str
    ranges: tuple[str, ...]
    prefixes: PrefixSet
    valid_from: date
    valid_until: date
    hours: tuple[int, int] | None
    hours_text: str
    time_zone: str | None
    digest: str

    def record(self) -> str:
        """What the sessions row keeps: the scope's content and the file's SHA-256."""
        return json.dumps({
            "file": str(self.path), "sha256": self.digest, "authorised_by": self.authorised_by,
            "contact": self.contact, "ranges": list(self.ranges),
            "valid": f"{self.valid_from}..{self.valid_until}", "hours": self.hours_text or None,
            "time_zone": self.time_zone}, sort_keys=True)


def _scope_date(path: Path, data: dict, key: str) -> date:
    value = data[key]
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise UsageError(f"--scope {path}: {key} {value!r} is not a date (YYYY-MM-DD)") from None


def load_scope(path: Path, plan: NumberPlan) -> Scope:
    """Read and check a --scope YAML file; UsageError naming what is missing or wrong."""
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--scope {path}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--scope {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--scope {path}: expected keys {', '.join(SCOPE_FIELDS)}, hours, "
                         f"time_zone")
    missing = [key for key in SCOPE_FIELDS if data.get(key) in (None, "", [])]
    if missing:
        raise UsageError(f"--scope {path}: missing {', '.join(missing)} (who authorised the "
                         f"test, how to reach them, which numbers, from and until when)")
    ranges = data["ranges"]
    if isinstance(ranges, str):
        ranges = [ranges]
    if not isinstance(ranges, list) or not all(isinstance(r, str | int) for r in ranges):
        raise UsageError(f"--scope {path}: ranges must be a list of patterns, masks or ranges")
    prefixes = []
    for entry in ranges:
        try:
            prefixes += plan.parse_spec(str(entry))
        except UsageError as exc:
            raise UsageError(f"--scope {path}: {exc}") from None
    valid_from, valid_until = (_scope_date(path, data, key)
                               for key in ("valid_from", "valid_until"))
    if valid_until < valid_from:
        raise UsageError(f"--scope {path}: valid_until {valid_until} is before valid_from "
                         f"{valid_from}")
    hours_text = str(data.get("hours") or "")
    try:
        hours = parse_window(hours_text) if hours_text else None
    except UsageError as exc:
        raise UsageError(f"--scope {path}: hours: {exc}") from None
    time_zone = data.get("time_zone")
    if time_zone is not None:
        try:
            ZoneInfo(str(time_zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"--scope {path}: time_zone {time_zone!r} is not an IANA time "
                             f"zone (e.g. America/New_York)") from None
    return Scope(path, str(data["authorised_by"]), str(data["contact"]),
                 tuple(str(r) for r in ranges), PrefixSet(prefixes, plan.length), valid_from,
                 valid_until, hours, hours_text, str(time_zone) if time_zone else None,
                 hashlib.sha256(raw).hexdigest())


def first_outside(prefix: str, scope: PrefixSet, plan: NumberPlan) -> str | None:
    """The first well-formed number beginning with `prefix` that the scope does not cover
    (padded with zeros when a whole sub-range is outside), or None."""
    if any(prefix.startswith(entry) for entry in scope.prefixes):
        return None
    if not plan.count_well_formed(prefix):
        return None
    inside = [entry for entry in scope.prefixes if entry.startswith(prefix)]
    if not inside or len(prefix) == plan.length:
        return prefix
    for digit in "0123456789":
        found = first_outside(prefix + digit, PrefixSet(inside, plan.length), plan)
        if found is not None:
            return found
    return None


def check_scope(scope: Scope, dial_plan: DialPlan, today: date) -> None:
    """UsageError unless today is in the scope's dates, every number to dial is in its ranges
    and the callee's time zone is known when it limits the hours."""
    plan = dial_plan.plan
    where = f"the scope {scope.path}"
    if not scope.valid_from <= today <= scope.valid_until:
        raise UsageError(f"{where} is valid {scope.valid_from} to {scope.valid_until}; today is "
                         f"{today}")
    if dial_plan.numbers is not None:
        outside = next((n for n in dial_plan.numbers
                        if plan.dialable(n) and n not in scope.prefixes), None)
        outside_text = None if outside is None else plan.format(outside)
    else:
        found = next((outside for outside in (first_outside(p, scope.prefixes, plan)
                                              for p in dial_plan.prefixes)
                      if outside is not None), None)
        outside_text = None if found is None else plan.format(
            int(found.ljust(plan.length, "0")))
    if outside_text is not None:
        raise UsageError(f"{outside_text} is outside {where} (authorised: "
                         f"{', '.join(scope.ranges)}); dial only what the scope lists")
    if scope.hours is None or scope.time_zone is not None:
        return
    if not plan.country.north_american:
        raise UsageError(f"{where} limits the hours: add time_zone (the callee's, e.g. "
                         f"Europe/London)")
    codes = ({f"{n:010d}"[:3] for n in dial_plan.numbers} if dial_plan.numbers is not None
             else {str(code) for prefix in dial_plan.prefixes for code in nxx_codes(prefix[:3])})
    unknown = sorted(code for code in codes if code not in AREA_CODE_ZONE)
    if unknown:
        reason = "spans two time zones" if unknown[0] in SPLIT_AREA_CODES else \
            "has no time zone in the table"
        raise UsageError(f"area code {unknown[0]} {reason}: add time_zone to {where}")


def callee_zone(scope: Scope, number: int, plan: NumberPlan) -> ZoneInfo:
    """The callee's time zone: the scope's, or the NANP area code's."""
    name = scope.time_zone or AREA_CODE_ZONE[f"{number:0{plan.length}d}"[:3]]
    return ZoneInfo(name)


def wait_for_scope_hours(scope: Scope, number: int, plan: NumberPlan, view: View) -> None:
    """Sleep until the scope's hours are open where the callee is (re-checking every minute)."""
    zone = callee_zone(scope, number, plan)
    while (wait := seconds_until_window(datetime.now(zone), scope.hours)) > 0:
        opens = (datetime.now(zone) + timedelta(seconds=wait)).strftime("%H:%M %Z")
        view.note(f"{plan.format(number)}: outside the scope's hours {scope.hours_text} "
                  f"({zone.key}); waiting {format_duration(wait)} until {opens}")
        time.sleep(min(wait, 60.0))


# ----------------------------------------------------------------------------- statistics

class DialStats:
    """Counts of this run's dials."""

    def __init__(self):
        self.by_status: Counter = Counter()
        self.dialed = 0
        self.successes = 0
        self.modems = 0
        self.started = time.monotonic()
        self.waits, self.waited = 0, 0.0       # dialing-window waits, seconds
        self.last_success: str | None = None

    def add(self, outcome: Outcome) -> None:
        """Count one call."""
        self.by_status[outcome.status] += 1
        self.dialed += 1
        self.successes += outcome.success
        self.modems += outcome.status == "modem" or outcome.carrier_detected
        if outcome.success:
            self.last_success = migrate_db.utc_text()

    def metrics(self) -> dict:
        """This run for --metrics-file."""
        return migrate_db.suite_metrics("dialer", self.by_status, self.dialed, self.waits,
                                        self.waited, self.last_success)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def per_hour(self) -> float:
        """Dials per hour so far."""
        elapsed = self.elapsed()
        return self.dialed * 3600 / elapsed if elapsed > 0 else 0.0


def summary_lines(stats: DialStats, dial_plan: DialPlan, session: SessionInfo, target: int,
                  storage: Storage, interrupted: bool) -> list[str]:
    """The summary printed at the end of a run (also after Ctrl+C)."""
    rate = f"{100 * stats.successes / stats.dialed:.1f}%" if stats.dialed else "-"
    head = "Interrupted" if interrupted else "Summary"
    remaining = dial_plan.to_dial - stats.dialed
    state = "continued" if session.continued else "new"
    lines = [
        f"{head}: session {session.session_id} ({state}), {dial_plan.description}: "
        f"{stats.dialed} of {target} dialed in {format_duration(stats.elapsed())} "
        f"({stats.per_hour():,.0f} dials/hour)",
        f"  success {stats.successes} ({rate}), modems {stats.modems}",
        "  by status: " + (", ".join(f"{status} {count}" for status, count
                                     in stats.by_status.most_common()) or "none"),
        f"  never dialed: {dial_plan.emergency} N11/emergency, {dial_plan.excluded_count} "
        f"excluded, {dial_plan.already_dialed} already dialed; remaining {remaining}"
        + (f" (about {format_duration(remaining * 3600 / stats.per_hour())} more at this rate)"
           if remaining and stats.per_hour() else ""),
    ]
    if storage.path is not None:
        lines.append(f"  results: {storage.path} ({storage.kind})")
    else:
        lines.append("  results: not stored (dry run)")
    if interrupted and storage.path is not None and dial_plan.to_dial > stats.dialed:
        lines.append(f"  to continue: python vibedialer.py dial --resume {storage.path} "
                     f"--infer-prefix")
    return lines


class HitLog:
    """The carriers-found file beside the results: one line per modem, fax or dial tone,
    appended as they are found (so a long scan's hits are never lost in its results)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.count = 0
        self._file: TextIO | None = None

    def add(self, row: tuple) -> None:
        """Append one hit (flushed at once)."""
        self.count += 1
        if self.path is None:
            return
        confidence = "-" if row[8] is None else f"{row[8]:.2f}"
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._file.write(f"{row[3]}  {row[1]}  {row[7] or row[2]:<9} {confidence:>4}  "
                             f"session {row[0]}  {row[5]}\n")
            self._file.flush()
        except OSError as exc:
            raise ModemError(f"{self.path}: cannot write the carriers-found file ({exc})") \
                from None

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def carriers_path(storage: Storage) -> Path | None:
    """The carriers-found file beside a results file (None for a dry run)."""
    if storage.path is None:
        return None
    return storage.path.with_name(storage.path.stem + ".carriers.txt")


# ----------------------------------------------------------------------------- views

class LineView:
    """--no-interactive: one line per dial, flushed at least every LINE_FLUSH_SECONDS."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._flushed = time.monotonic()

    def begin(self) -> None:
        """Nothing to set up."""

    def dialing(self, phone: str) -> None:
        """Nothing shown before the result."""

    def result(self, row: tuple) -> None:
        """One line: time, number, status, message."""
        self.stream.write(f"{row[3]}  {row[1]}  {row[2]:<11}  {row[5]}\n")
        if time.monotonic() - self._flushed >= LINE_FLUSH_SECONDS:
            self.stream.flush()
            self._flushed = time.monotonic()

    def note(self, text: str) -> None:
        """A line of information (waiting for the window, ...)."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def hit(self, row: tuple) -> None:
        """The result line said it already."""

    def end(self) -> None:
        """Flush what is left."""
        self.stream.flush()


class LiveView:
    """The interactive view: progress with ETA, current number, counts, last results."""

    def __init__(self, title: str, total: int, stats: DialStats, console: rich_console.Console):
        self.title = title
        self.stats = stats
        self.current = ""
        self.status_note = ""
        self.recent: deque = deque(maxlen=RECENT_RESULTS)
        self.hits: deque = deque(maxlen=HITS_SHOWN)
        self.hit_count = 0
        bar = rich_progress
        self.progress = bar.Progress(bar.TextColumn("[bold]dialing"), bar.BarColumn(),
                                     bar.MofNCompleteColumn(), bar.TaskProgressColumn(),
                                     bar.TimeElapsedColumn(), bar.TextColumn("ETA"),
                                     bar.TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("dialing", total=total)
        self.live = rich_live.Live(self, console=console, refresh_per_second=4)

    def __rich__(self) -> rich_console.Group:
        counts = rich_table.Table(box=None, show_header=True, padding=(0, 2))
        by_status = dict(self.stats.by_status)
        statuses = sorted(by_status, key=lambda s: (STATUS_ORDER.get(s, len(STATUS_ORDER)), s))
        for status in statuses:
            counts.add_column(status, justify="right")
        if statuses:
            counts.add_row(*(str(by_status[status]) for status in statuses))
        recent = rich_table.Table(box=None, show_header=False, padding=(0, 2))
        for row in list(self.recent):
            recent.add_row(row[1], row[2], row[5])
        current = self.status_note or f"current: {self.current}"
        hits = rich_table.Table(box=None, show_header=False, padding=(0, 2))
        for row in list(self.hits):
            hits.add_row(row[1], row[7] or row[2], "-" if row[8] is None else f"{row[8]:.2f}",
                         row[5], style="bold green")
        shown = f" (last {len(self.hits)} shown)" if self.hit_count > len(self.hits) else ""
        text = rich_text.Text
        return rich_console.Group(text(self.title, style="bold"), self.progress, text(current),
                                  counts, text(f"hits: {self.hit_count}{shown}"), hits,
                                  text("last results:"), recent)

    def begin(self) -> None:
        """Start drawing."""
        self.live.start()

    def dialing(self, phone: str) -> None:
        """Show the number being dialed."""
        self.current = phone
        self.status_note = ""

    def result(self, row: tuple) -> None:
        """Advance the bar and remember the row."""
        self.recent.append(row)
        self.progress.update(self.task, completed=self.stats.dialed)

    def note(self, text: str) -> None:
        """Show a line instead of the current number."""
        self.status_note = text

    def hit(self, row: tuple) -> None:
        """Keep a hit in the hits panel, which does not scroll with the results."""
        self.hits.append(row)
        self.hit_count += 1

    def end(self) -> None:
        """Stop drawing (the last frame stays)."""
        self.live.stop()


Backend = SimulationBackend | ModemBackend | VoipBackend
Storage = CsvStorage | SqliteStorage | DryRunStorage
View = LineView | LiveView


# ----------------------------------------------------------------------------- the dial command

@dataclass
class DialOptions:
    """Pacing and limits of a run."""

    limit: int | None
    delay: float
    retries: int
    window: tuple[int, int] | None
    window_text: str
    metrics: migrate_db.MetricsFile = field(default_factory=lambda: migrate_db.MetricsFile(None))
    scope: Scope | None = None      # its hours are the callee's


def wait_for_window(options: DialOptions, view: View, stats: DialStats) -> None:
    """Sleep until the dialing window is open (re-checking every minute)."""
    heartbeat, waited = migrate_db.Heartbeat(log), False
    while (wait := seconds_until_window(datetime.now(), options.window)) > 0:
        opens = (datetime.now() + timedelta(seconds=wait)).strftime("%H:%M")
        view.note(f"outside the dialing window {options.window_text}: waiting "
                  f"{format_duration(wait)} until {opens}")
        heartbeat.beat(f"waiting {format_duration(wait)} for the dialing window "
                       f"{options.window_text}, {stats.dialed} dialed so far")
        stats.waits += not waited
        waited = True
        step = min(wait, 60.0)
        time.sleep(step)
        stats.waited += step
        if options.metrics.due():
            options.metrics.write(stats.metrics())


def run_dials(dial_plan: DialPlan, numbers: Iterable[int], backend: Backend, storage: Storage,
              view: View, stats: DialStats, session: SessionInfo, options: DialOptions,
              hits: HitLog) -> None:
    """The dial loop: one stored row per number, paced and windowed."""
    plan, session_id = dial_plan.plan, session.session_id
    first = True
    for number in numbers:
        if options.limit is not None and stats.dialed >= options.limit:
            break
        if options.delay and not first:
            time.sleep(options.delay)
        first = False
        if options.window:
            wait_for_window(options, view, stats)
        if options.scope is not None and options.scope.hours is not None:
            wait_for_scope_hours(options.scope, number, plan, view)
        phone = plan.format(number)
        view.dialing(phone)
        try:
            outcome = dial_with_retries(backend, plan.dial_string(number), options.retries,
                                        options.delay)
        except ModemNotResponding as exc:
            if exc.outcome is not None:
                _record(storage, view, stats, hits, session_id, phone, exc.outcome)
            raise
        _record(storage, view, stats, hits, session_id, phone, outcome)
        if options.metrics.due():
            options.metrics.write(stats.metrics())


def _record(storage: Storage, view: View, stats: DialStats, hits: HitLog, session_id: str,
            phone: str, outcome: Outcome) -> None:
    """Store, count and show one call; a carrier also goes to the hits."""
    row = (session_id, phone, outcome.status, migrate_db.utc_text(), outcome.success,
           outcome.message, outcome.carrier_detected, outcome.tone_type, outcome.confidence)
    storage.add(row)
    stats.add(outcome)
    view.result(row)
    if outcome.carrier_detected or outcome.tone_type in HIT_TONES:
        hits.add(row)
        view.hit(row)


def confirm(question: str) -> bool:
    """Ask y/N on the terminal; UsageError when stdin has no answer."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        raise UsageError("no answer to the confirmation question (stdin closed); pass --yes "
                         "to dial without asking") from None
    return answer.strip().lower() in ("y", "yes")


def build_dial_plan(args: argparse.Namespace, plan: NumberPlan,
                    resume: ResumeSource | None) -> tuple[DialPlan, str]:
    """The pattern or list to dial, with counts; (plan, where the pattern came from)."""
    origin = "command line"
    if args.numbers:
        if args.pattern != "-":
            raise UsageError("with --numbers FILE the PATTERN must be '-'")
        dial_plan = DialPlan(plan, None, numbers=read_number_list(args.numbers, plan))
    else:
        if args.pattern == "-":
            raise UsageError("PATTERN '-' means a list: add --numbers FILE")
        if args.pattern is not None:
            text = args.pattern
        elif args.resume_prefix is not None:
            text, origin = args.resume_prefix, "--resume-prefix"
        elif args.infer_prefix:
            text, origin = infer_pattern(resume, plan)
        else:
            raise UsageError("give a PATTERN (or, with --resume, --infer-prefix or "
                             "--resume-prefix P)")
        dial_plan = spec_plan(plan, text)
    if args.exclude:
        dial_plan.excluded = PrefixSet(parse_exclusions(args.exclude, plan), plan.length)
    if resume is not None:
        dial_plan.dialed = resume.dialed
    dial_plan.count()
    if dial_plan.in_range and dial_plan.in_range == dial_plan.emergency:
        raise UsageError(f"every number of {dial_plan.description} is an N11 or emergency "
                         f"number; those are never dialed")
    if dial_plan.in_range == 0:
        raise UsageError(f"{dial_plan.description} contains no valid "
                         f"{plan.country.name} number")
    fixed = os.path.commonprefix(dial_plan.prefixes) if dial_plan.numbers is None else None
    if fixed is not None and len(fixed) < MIN_PATTERN_DIGITS and not args.allow_wide:
        raise UsageError(f"pattern {dial_plan.description!r} ({origin}) fixes fewer than "
                         f"{MIN_PATTERN_DIGITS} leading digits (an area code): "
                         f"{dial_plan.in_range:,} numbers; add --allow-wide if that is what "
                         f"you are authorised to dial")
    if dial_plan.to_dial == 0 and dial_plan.excluded_count and resume is None:
        raise UsageError(f"every number of {dial_plan.description} is excluded by "
                         f"{args.exclude}; nothing to dial")
    return dial_plan, origin


def spec_plan(plan: NumberPlan, text: str) -> DialPlan:
    """The DialPlan of a pattern, mask or range as written."""
    prefixes = plan.parse_spec(text)
    if ".." not in text and not re.search(r"[Xx?][\d" + re.escape(PATTERN_SEPARATORS) + r"]*\d",
                                          text):
        return DialPlan(plan, prefixes[0])
    return DialPlan(plan, None, prefixes=prefixes, spec=text.strip())


def make_storage(args: argparse.Namespace) -> Storage:
    """The output storage the arguments ask for (defaults from --resume)."""
    kind, output = args.storage, args.output
    if args.resume is not None and kind is None:
        kind = "sqlite" if migrate_db.is_sqlite_file(args.resume) else "csv"
        output = output or args.resume
    kind = kind or "csv"
    if kind == "dry-run":
        if output is not None:
            raise UsageError("--output has no effect with --storage dry-run; drop one of them")
        return DryRunStorage()
    path = Path(output or DEFAULT_OUTPUT[kind])
    return CsvStorage(path) if kind == "csv" else SqliteStorage(path)


def choose_session(args: argparse.Namespace, storage: Storage,
                   resume: ResumeSource | None) -> tuple[str, bool]:
    """(session_id, continued) following --session-id / --continue-session / --new-session."""
    if args.session_id is not None:
        exists = storage.has_session(args.session_id)
        if exists and args.session_mode == "new":
            raise UsageError(f"session {args.session_id} already exists in {storage.path}; "
                             f"choose another --session-id or drop --new-session")
        return args.session_id, exists or (resume is not None
                                           and resume.latest_session == args.session_id)
    if args.session_mode != "new":
        if resume is not None and resume.latest_session:
            return resume.latest_session, True
        if args.session_mode == "continue" and resume is None:
            latest = storage.latest_session()
            if latest is None:
                raise UsageError("--continue-session: the output has no session to continue; "
                                 "drop it to start a new session")
            return latest, True
    while True:
        session_id = uuid.uuid4().hex[:8]
        if not storage.has_session(session_id):
            return session_id, False


def make_backend(args: argparse.Namespace, rng: random.Random) -> Backend:
    """The backend the arguments ask for."""
    if args.backend == "modem":
        return ModemBackend(args.modem_port, args.modem_baudrate, args.timeout, args.modem_guard)
    if args.backend == "voip":
        account = sip_account(args.sip_server, sip_environment(Path(".env")))
        return VoipBackend(account, args.max_ring, args.listen, args.timeout)
    return SimulationBackend(rng, args.sim_call_seconds, args.sim_audio, args.listen)


def validate_dial_args(args: argparse.Namespace) -> None:
    """The checks between flags (each flag's own are its argparse type); raises
    UsageError."""
    if (args.infer_prefix or args.resume_prefix is not None) and args.resume is None:
        raise UsageError("--infer-prefix and --resume-prefix need --resume FILE")
    if args.pattern is not None and (args.infer_prefix or args.resume_prefix is not None) \
            and args.pattern != "-":
        raise UsageError("give either PATTERN or --infer-prefix/--resume-prefix, not both")
    if args.backend != "modem" and args.modem_port:
        raise UsageError("--modem-port is only used with --backend modem")
    if args.backend == "modem" and not args.modem_port:
        raise UsageError("--backend modem needs --modem-port PORT_OR_URL (a device such as "
                         "/dev/ttyUSB0, or socket://host:port, rfc2217://host:port)")
    if args.backend != "simulation" and args.sim_audio:
        raise UsageError("--sim-audio is only used with --backend simulation")
    if args.backend != "voip" and args.sip_server:
        raise UsageError("--sip-server is only used with --backend voip")
    if args.backend == "voip" and not args.sip_server:
        raise UsageError("--backend voip needs --sip-server HOST[:PORT] (your SIP trunk or PBX; "
                         "SIP_USERNAME and SIP_PASSWORD from the environment or .env)")
    if args.backend == "voip" and args.max_ring >= args.timeout:
        raise UsageError(f"--max-ring {args.max_ring:g} must be shorter than --timeout "
                         f"{args.timeout:g}")


def run_dial(args: argparse.Namespace) -> int:
    """The `dial` command."""
    validate_dial_args(args)
    plan = NumberPlan(COUNTRY_PLANS[args.country_code], args.dial_prefix)
    window = parse_window(args.window) if args.window else None
    scope = load_scope(args.scope, plan) if args.scope else None
    if scope is None and args.backend != "simulation":
        raise UsageError(f"--backend {args.backend} dials real lines: give --scope FILE (YAML: "
                         f"authorised_by, contact, ranges, valid_from, valid_until, and "
                         f"optionally hours and time_zone)")
    resume = read_resume_source(args.resume, plan) if args.resume else None
    dial_plan, origin = build_dial_plan(args, plan, resume)
    if scope is not None:
        check_scope(scope, dial_plan, date.today())
    target = dial_plan.to_dial if args.limit is None else min(args.limit, dial_plan.to_dial)
    if resume is not None:
        print(f"Resuming from {resume.path} ({resume.kind}): {dial_plan.description} "
              f"({origin})")
        print(f"  total {dial_plan.to_dial + dial_plan.already_dialed}, dialed "
              f"{dial_plan.already_dialed}, remaining {dial_plan.to_dial}")
        if dial_plan.to_dial == 0:
            print("Nothing remaining: every number of the range has been dialed.")
            return EXIT_OK
    print(f"{dial_plan.description}: {target} numbers to dial ({dial_plan.in_range} in range; "
          f"never dialed: {dial_plan.emergency} N11/emergency, {dial_plan.excluded_count} "
          f"excluded, {dial_plan.already_dialed} already dialed)")
    storage = make_storage(args)
    try:
        session_id, continued = choose_session(args, storage, resume)
        randomized, seed = session_order(args, resume, session_id, continued)
        session = SessionInfo(session_id, continued, args.backend, storage.kind,
                              stored_pattern(args, dial_plan), args.country_code, randomized,
                              seed if randomized else None,
                              scope.record() if scope is not None else None)
        if not args.yes and not confirmed(args, resume, target):
            print("Nothing dialed.")
            return EXIT_OK
        rng = random.Random(seed)
        numbers = dial_plan.iterate(randomized, rng)
        delay = args.delay if args.delay is not None else \
            (DEFAULT_MODEM_DELAY if args.backend == "modem" else 0.0)
        options = DialOptions(args.limit, delay, args.retries, window, args.window or "",
                              migrate_db.MetricsFile(args.metrics_file
                                                     or os.environ.get("METRICS_FILE")),
                              scope)
        backend = make_backend(args, rng)
        try:
            backend.open()
            return dial_session(dial_plan, numbers, backend, storage, session, options, target,
                                interactive=not args.no_interactive and sys.stdout.isatty())
        finally:
            backend.close()
    finally:
        storage.close()


def session_order(args: argparse.Namespace, resume: ResumeSource | None, session_id: str,
                  continued: bool) -> tuple[bool, int]:
    """(random order?, seed): a continued session keeps its own order and seed."""
    randomized, seed = args.random, args.seed
    if continued and resume is not None and session_id == resume.latest_session and \
            resume.latest_randomized is not None:
        if resume.latest_randomized:
            if randomized is False:
                raise UsageError(f"session {session_id} dials in random order; drop "
                                 f"--sequential (or start a --new-session)")
            if seed is not None and resume.latest_seed is not None and seed != resume.latest_seed:
                raise UsageError(f"session {session_id} was seeded {resume.latest_seed}; drop "
                                 f"--seed (or start a --new-session)")
            if resume.latest_seed is None:
                print(f"  session {session_id} recorded no seed: the rest follows a new "
                      f"random order")
            else:
                seed = resume.latest_seed
                print(f"  continuing session {session_id}'s random order (seed {seed})")
            randomized = True
        elif randomized:
            raise UsageError(f"session {session_id} dials in ascending order; drop --random "
                             f"(or start a --new-session)")
    return bool(randomized), seed if seed is not None else secrets.randbits(63)


def confirmed(args: argparse.Namespace, resume: ResumeSource | None, target: int) -> bool:
    """The y/N questions: before resuming, and before dialing a real line."""
    if resume is not None and not confirm(f"Dial the remaining {target}?"):
        return False
    if args.backend == "simulation":
        return True
    line = args.modem_port if args.backend == "modem" else f"SIP server {args.sip_server}"
    return confirm(f"Dial {target} numbers on a real line through {line}? Only lines you own "
                   f"or are authorised to test.")


def stored_pattern(args: argparse.Namespace, dial_plan: DialPlan) -> str:
    """The sessions.phone_pattern of a new session: as typed, inferred, or '-' for a list."""
    if dial_plan.numbers is not None:
        return "-"
    if dial_plan.spec is not None:
        return dial_plan.spec
    if args.pattern is not None:
        return args.pattern
    return dial_plan.plan.format_pattern(dial_plan.prefix)


def dial_session(dial_plan: DialPlan, numbers: Iterable[int], backend: Backend,
                 storage: Storage, session: SessionInfo, options: DialOptions, target: int,
                 interactive: bool) -> int:
    """Begin the session, dial, and always flush, close and summarise."""
    print(f"Session {session.session_id} ({'continued' if session.continued else 'new'}), "
          f"{backend.name} backend, results to "
          f"{storage.path if storage.path is not None else 'nowhere (dry run)'}")
    stats = DialStats()
    hits = HitLog(carriers_path(storage))
    if interactive:
        title = (f"VibeDialer  session {session.session_id}  {dial_plan.description}  "
                 f"{backend.name} -> {storage.kind}")
        view = LiveView(title, target, stats, rich_console.Console())
    else:
        view = LineView()
    code, failure, interrupted = EXIT_OK, None, False
    try:
        storage.begin(session)
        view.begin()
        try:
            run_dials(dial_plan, numbers, backend, storage, view, stats, session, options,
                      hits)
        finally:
            view.end()
            hits.close()
    except KeyboardInterrupt as exc:   # Ctrl+C: 130; SIGTERM/SIGHUP (Stopped): the same, 0
        code = EXIT_OK if isinstance(exc, migrate_db.Stopped) else EXIT_INTERRUPTED
        interrupted = True
    except ModemError as exc:
        code, failure = EXIT_FAILURE, str(exc)
    finally:
        storage.finish(session)
        if options.metrics.path is not None:
            options.metrics.write(stats.metrics())
    for line in summary_lines(stats, dial_plan, session, target, storage,
                              interrupted=interrupted):
        print(line)
    if hits.count and hits.path is not None:
        print(f"  hits: {hits.count} (modem, fax, dial tone) in {hits.path}")
    if failure:
        print(f"error: {failure}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------------- sessions / report

def open_results(path: Path) -> sqlite3.Connection:
    """A results file as a database: sqlite opened in place, csv loaded into memory."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if migrate_db.is_sqlite_file(path):
        return connect_results_db(path)
    conn = migrate_db.connect(":memory:", kind="dialer")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "phone_number" not in reader.fieldnames:
                raise UsageError(f"{path}: neither a SQLite database nor a results csv")
            rows = [(row.get("session_id") or "legacy", row["phone_number"], row["status"],
                     row["timestamp"], row["success"] == "True", row["message"],
                     row["carrier_detected"] == "True", row["tone_type"] or None,
                     float(row["tone_confidence"]) if row.get("tone_confidence") else None)
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read it as a results csv ({exc})") from None
    with migrate_db.transaction(conn):
        conn.executemany("INSERT INTO dial_results (session_id, phone_number, status, "
                         "timestamp, success, message, carrier_detected, tone_type, "
                         "tone_confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("""INSERT INTO sessions (session_id, start_time, end_time, storage_type,
                            total_calls, successful_calls, modem_detections)
                        SELECT session_id, MIN(timestamp), MAX(timestamp), 'csv', COUNT(*),
                               SUM(success), SUM(status = 'modem' OR carrier_detected)
                        FROM dial_results GROUP BY session_id""")
    return conn


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return migrate_db.parse_utc(text)
    except ValueError:
        return None


def session_duration(conn: sqlite3.Connection, session_id: str, start: str | None,
                     end: str | None) -> float:
    """Seconds from start_time to end_time (or to the last result if it never ended)."""
    if not end:
        end = conn.execute("SELECT MAX(timestamp) FROM dial_results WHERE session_id = ?",
                           (session_id,)).fetchone()[0]
    began, ended = _parse_time(start), _parse_time(end)
    if began is None or ended is None:
        return 0.0
    return max(0.0, (ended - began).total_seconds())


def run_sessions(args: argparse.Namespace) -> int:
    """The `sessions` command: one row per session with its statistics."""
    conn = open_results(args.db)
    rows = conn.execute(
        """SELECT session_id, start_time, end_time, backend_type, phone_pattern,
                  total_calls, successful_calls, modem_detections FROM sessions
           ORDER BY start_time, rowid""").fetchall()
    if not rows:
        print(f"{args.db}: no sessions")
        return EXIT_OK
    header = ("session_id", "start_time", "end_time", "backend", "pattern", "calls",
              "success", "modems", "rate", "dials/hour")
    table = []
    for session_id, start, end, backend, pattern, *counts in rows:
        calls, successes, modems = (count or 0 for count in counts)
        duration = session_duration(conn, session_id, start, end)
        table.append((session_id, (start or "-")[:19], (end or "unfinished")[:19],
                      backend or "-", pattern or "-", str(calls), str(successes), str(modems),
                      f"{100 * successes / calls:.1f}%" if calls else "-",
                      f"{calls * 3600 / duration:,.0f}" if duration else "-"))
    conn.close()
    print(migrate_db.format_table(header, table))
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    """The `report` command: counts by status, success rate, dials per hour, duration."""
    conn = open_results(args.db)
    if args.session_id is not None:
        sessions = conn.execute("SELECT session_id, start_time, end_time FROM sessions "
                                "WHERE session_id = ?", (args.session_id,)).fetchall()
        if not sessions:
            raise UsageError(f"no session {args.session_id!r} in {args.db}; "
                             f"'vibedialer.py sessions {args.db}' lists them")
        where, params, title = "WHERE session_id = ?", (args.session_id,), \
            f"session {args.session_id}"
    else:
        sessions = conn.execute("SELECT session_id, start_time, end_time FROM sessions"
                                ).fetchall()
        where, params, title = "", (), f"all {len(sessions)} sessions"
    counts = conn.execute(f"SELECT status, COUNT(*) FROM dial_results {where} "
                          f"GROUP BY status ORDER BY COUNT(*) DESC, status", params).fetchall()
    total, successes, modems = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(success), 0), "
        f"COALESCE(SUM(status = 'modem' OR carrier_detected), 0) FROM dial_results {where}",
        params).fetchone()
    duration = sum(session_duration(conn, *session) for session in sessions)
    conn.close()
    print(f"Report for {title} in {args.db}")
    print(f"  dials {total}, successful {successes} "
          f"({100 * successes / total:.1f}%)" if total else "  dials 0")
    print(f"  modems {modems}, duration {format_duration(duration)}, dials per hour "
          + (f"{total * 3600 / duration:,.0f}" if duration else "-"))
    print("  by status:")
    for status, count in counts:
        print(f"    {status:<12} {count:>8}  {100 * count / total:5.1f}%")
    return EXIT_OK


def run_classify(args: argparse.Namespace) -> int:
    """The `classify` command: what each recording is, with the classifier's confidence."""
    for path in args.files:
        samples = read_wav(path)
        heard = classify_audio(samples)
        print(f"{path}: {heard.tone_type} (confidence {heard.confidence:.2f}) {heard.detail}; "
              f"{len(samples) / SAMPLE_RATE:.1f} s")
    return EXIT_OK


# ----------------------------------------------------------------------------- command line
# Each flag's own check is its argparse type: a bad value is a usage error (exit 2) naming
# the flag; validate_dial_args checks what involves several flags.

def _at_least(kind: Callable[[str], float], low: float, complaint: str, *,
              inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: `kind` of the text, not below `low` (above it if not `inclusive`)."""
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {kind.__name__} value: {text!r}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{complaint}, not {text}")
        return value
    return convert


SECONDS = _at_least(float, 0, "must not be negative")
POSITIVE_SECONDS = _at_least(float, 0, "must be a positive number of seconds", inclusive=False)
COUNT = _at_least(int, 0, "must not be negative")


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type: the text as given, once `check` accepts it (else its UsageError
    after the text)."""
    def convert(text: str) -> str:
        try:
            check(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        return text
    return convert


def check_country_code(text: str) -> None:
    """--country-code: one of COUNTRY_PLANS."""
    if text not in COUNTRY_PLANS:
        supported = ", ".join(f"{code} ({p.name})" for code, p in COUNTRY_PLANS.items())
        raise UsageError(f"not supported; use one of {supported}")


def check_dial_prefix(text: str) -> None:
    """--dial-prefix: digits, and commas for pauses."""
    if not re.fullmatch(r"[\d,]*", text):
        raise UsageError("digits and commas (pauses) only")


def check_session_id(text: str) -> None:
    """--session-id: what every storage can keep as an id."""
    if not SESSION_ID_RE.fullmatch(text):
        raise UsageError("use 1-64 letters, digits, . _ : - (starting with a letter or digit)")


def existing_file(text: str) -> Path:
    """An argparse type: the path of a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The argument parser and its subcommand parsers by name."""
    parser = argparse.ArgumentParser(
        description="Dial phone-number ranges for audits of lines you own or are authorised "
                    "to test. Simulation by default; N11 and emergency numbers are never "
                    "dialed.",
        epilog="Exit codes: 0 done (or stopped by SIGTERM/SIGHUP), 1 runtime failure, "
               "2 usage error, 130 interrupted (Ctrl+C).", parents=[migrate_db.cli_options()])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dial = commands.add_parser(
        "dial", help="dial a pattern's range or a list of numbers",
        usage="%(prog)s PATTERN [options]   (--help lists them)",
        description="Dial every number that begins with PATTERN (e.g. 555-234-56 -> "
                    "555-234-5600 ... 555-234-5699), that matches a mask with X for any digit "
                    "(555-234-1X3X), or lies in a range (555-234-1000..555-234-1999), or the "
                    "numbers of --numbers FILE.",
        epilog="Examples: dial 555-234-56 --storage sqlite -o calls.db; "
               "dial --resume calls.db --infer-prefix; "
               "dial - --numbers list.txt --backend modem --modem-port /dev/ttyUSB0")
    dial.add_argument("pattern", nargs="?", metavar="PATTERN",
                      help="digits with optional separators; '-' with --numbers")
    what = dial.add_argument_group("what to dial")
    what.add_argument("-c", "--country-code", default="1", metavar="CC",
                      type=_checked(check_country_code),
                      help="country code of the numbers (default: %(default)s; supported: "
                           + ", ".join(COUNTRY_PLANS) + ")")
    what.add_argument("--numbers", type=existing_file, metavar="FILE",
                      help="dial the numbers listed in FILE (one a line, # comments)")
    what.add_argument("--exclude", type=existing_file, metavar="FILE",
                      help="never dial the numbers and prefixes in FILE (one a line, # comments)")
    what.add_argument("--limit", type=_at_least(int, 1, "must be at least 1"), metavar="N",
                      help="stop after N dials")
    what.add_argument("--dial-prefix", type=_checked(check_dial_prefix), metavar="DIGITS",
                      help="digits dialed before each national number, e.g. '9,' for an "
                           "outside line (default: the country's trunk prefix)")
    order = what.add_mutually_exclusive_group()
    order.add_argument("--random", action="store_true", help="random order (a seeded "
                       "permutation of the range)")
    order.add_argument("--sequential", dest="random", action="store_false",
                       help="ascending order (default)")
    what.add_argument("--seed", type=int, metavar="N",
                      help="seed for the random order and the simulation (repeatable runs)")
    what.add_argument("--allow-wide", action="store_true",
                      help=f"allow a pattern fixing fewer than {MIN_PATTERN_DIGITS} leading "
                           f"digits (millions of numbers)")
    dial.set_defaults(random=None)
    authorisation = dial.add_argument_group("authorisation")
    authorisation.add_argument(
        "--scope", type=existing_file, metavar="FILE",
        help="YAML: authorised_by, contact, ranges (patterns, masks, FIRST..LAST), valid_from, "
             "valid_until, hours (HH:MM-HH:MM, the callee's local time), time_zone; required "
             "with --backend modem or voip, which dial nothing outside it")

    backend = dial.add_argument_group("backend")
    backend.add_argument("-b", "--backend", choices=("simulation", "modem", "voip"),
                         default="simulation", help="default: %(default)s")
    backend.add_argument("--timeout", type=POSITIVE_SECONDS, default=DEFAULT_CALL_TIMEOUT,
                         metavar="SECONDS",
                         help="per-call timeout of the modem or SIP call (default: "
                              "%(default)s)")
    backend.add_argument("--retries", type=COUNT, default=0, metavar="N",
                         help="dial again on BUSY / NO DIALTONE up to N times (default: 0)")
    backend.add_argument("--sim-call-seconds", type=SECONDS, default=0.0, metavar="SECONDS",
                         help="simulated call length (default: 0, no sleeping)")
    backend.add_argument("--sim-audio", metavar="synth|DIR",
                         help="simulated answers play audio through the classifier: "
                              "synthesised ('synth') or WAV recordings from DIR")
    modem = dial.add_argument_group("modem")
    modem.add_argument("--modem-port", metavar="PORT_OR_URL",
                       help="serial device or pyserial URL (socket://, rfc2217://, loop://)")
    modem.add_argument("--modem-baudrate", default=DEFAULT_MODEM_BAUDRATE,
                       type=_at_least(int, 0, "must be a positive number", inclusive=False),
                       metavar="N", help="default: %(default)s")
    modem.add_argument("--modem-guard", type=SECONDS, default=DEFAULT_GUARD_SECONDS,
                       metavar="SECONDS", help="guard pause around the +++ escape when hanging "
                                               "up (default: %(default)s)")
    voip = dial.add_argument_group(
        "voip", "SIP over UDP through your trunk or PBX; credentials SIP_USERNAME, "
        "SIP_PASSWORD (and SIP_DOMAIN) from the environment or ./.env, never the command line")
    voip.add_argument("--sip-server", metavar="HOST[:PORT]", help="SIP server (port 5060 "
                      "unless given)")
    voip.add_argument("--max-ring", type=SECONDS, default=DEFAULT_MAX_RING, metavar="SECONDS",
                      help="CANCEL a call not answered within this (default: %(default)s)")
    voip.add_argument("--listen", type=SECONDS, default=DEFAULT_LISTEN, metavar="SECONDS",
                      help="record this long after answer, then classify and hang up "
                           "(default: %(default)s)")

    pacing = dial.add_argument_group("pacing")
    pacing.add_argument("--delay", type=SECONDS, metavar="SECONDS",
                        help=f"pause between calls (default: 0 simulated, "
                             f"{DEFAULT_MODEM_DELAY:g} with a modem)")
    pacing.add_argument("--window", type=_checked(parse_window), metavar="HH:MM-HH:MM",
                        help="dial only within these local hours (may cross midnight)")
    pacing.add_argument("--metrics-file", metavar="PATH", type=Path,
                        help="METRICS_FILE: Prometheus text rewritten every "
                             f"{migrate_db.METRICS_SECONDS:g} s (node_exporter textfile)")

    storage = dial.add_argument_group("storage and sessions")
    storage.add_argument("--storage", choices=("csv", "sqlite", "dry-run"),
                         help="default: csv, or the --resume file's kind")
    storage.add_argument("-o", "--output", type=Path, metavar="PATH",
                         help="results file (default: dial_results.csv / dial_results.db, or "
                              "the --resume file)")
    storage.add_argument("--session-id", type=_checked(check_session_id), metavar="ID",
                         help="session id (default: a new 8-character id)")
    sessions = storage.add_mutually_exclusive_group()
    sessions.add_argument("--continue-session", dest="session_mode", action="store_const",
                          const="continue", help="continue the latest session (default when "
                                                 "resuming)")
    sessions.add_argument("--new-session", dest="session_mode", action="store_const",
                          const="new", help="start a new session even when resuming")

    resume = dial.add_argument_group("resume")
    resume.add_argument("--resume", type=existing_file, metavar="FILE",
                        help="csv or sqlite results: skip the numbers already dialed there")
    resume.add_argument("--infer-prefix", action="store_true",
                        help="take the pattern from the resumed session (or the common prefix "
                             "of the numbers dialed)")
    resume.add_argument("--resume-prefix", metavar="P", help="the pattern to resume")

    display = dial.add_argument_group("display")
    display.add_argument("--no-interactive", action="store_true",
                         help="one line per dial instead of the live view")
    display.add_argument("-y", "--yes", action="store_true",
                         help="do not ask for confirmation")
    dial.set_defaults(handler=run_dial)

    listing = commands.add_parser("sessions", help="one row per session with its statistics",
                                  description="List the sessions of a results file.")
    listing.add_argument("db", type=Path, metavar="DB", help="sqlite (or csv) results file")
    listing.set_defaults(handler=run_sessions)

    report = commands.add_parser("report", help="counts by status, success rate, dials per "
                                 "hour, duration", description="Report on a results file.")
    report.add_argument("db", type=Path, metavar="DB", help="sqlite (or csv) results file")
    report.add_argument("--session-id", metavar="ID", help="only this session")
    report.set_defaults(handler=run_report)

    classify = commands.add_parser(
        "classify", help="classify recordings (modem, fax, voice, voicemail, tones, silence)",
        description="Run the answer classifier of the voip backend on WAV recordings (any "
                    "rate; PCM, float, mu-law or A-law).")
    classify.add_argument("files", type=Path, nargs="+", metavar="FILE.wav")
    classify.set_defaults(handler=run_classify)
    return parser, {"dial": dial, "sessions": listing, "report": report,
                    "classify": classify}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit code."""
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    migrate_db.setup_logging(args.verbose, args.quiet)
    try:
        return args.handler(args)
    except UsageError as exc:
        subparsers[args.command].error(str(exc))
    except KeyboardInterrupt as exc:
        print("stopped" if isinstance(exc, migrate_db.Stopped) else "interrupted",
              file=sys.stderr)
        return EXIT_OK if isinstance(exc, migrate_db.Stopped) else EXIT_INTERRUPTED
    except BrokenPipeError:             # `| head`: migrate_db.run_main ends quietly
        raise
    except (ModemError, OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    migrate_db.run_main(main)
