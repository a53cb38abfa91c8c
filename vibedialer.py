#!/usr/bin/env python3
"""vibedialer: dial phone-number ranges for audits of lines you own or are authorised to test.

Simulation is the default backend; a real modem dials only with `--backend modem`. Results go
to a csv file (one row written and flushed per dial) or to a suite SQLite database (tables
`sessions` and `dial_results`, opened through migrate_db), grouped into sessions that can be
continued and resumed.

    python vibedialer.py dial 555-234-56 --storage sqlite --output calls.db
    python vibedialer.py dial --resume calls.db --infer-prefix
    python vibedialer.py dial 555-234 --backend modem --modem-port /dev/ttyUSB0 --window 09:00-17:00
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
import csv
import logging
import os
import random
import re
import secrets
import sqlite3
import sys
import time
import uuid
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

import serial
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

import migrate_db

UTC = timezone.utc        # datetime.UTC is Python 3.11+

log = logging.getLogger("vibedialer")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CSV_FIELDS = ("session_id", "phone_number", "status", "timestamp", "success", "message",
              "carrier_detected", "tone_type")
DEFAULT_OUTPUT = {"csv": "dial_results.csv", "sqlite": "dial_results.db"}
BATCH_ROWS = 500            # sqlite: rows per transaction at most ...
BATCH_SECONDS = 1.0         # ... and seconds between commits at most
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
PATTERN_SEPARATORS = " -.()/"
SEQUENTIAL_BLOCK = 10_000  # ascending order checks exclusions block by block first
LINE_FLUSH_SECONDS = 0.2    # --no-interactive output reaches a pipe at least this often
RECENT_RESULTS = 8          # rows of the interactive view's "last results"

DEFAULT_MODEM_BAUDRATE = 57600
DEFAULT_CALL_TIMEOUT = 60.0
DEFAULT_GUARD_SECONDS = 1.0   # Hayes S12 default: 50 x 20 ms
MODEM_COMMAND_TIMEOUT = 5.0   # an AT command gets OK within this, or the modem is not answering
MODEM_POLL_SECONDS = 0.05
DEFAULT_MODEM_DELAY = 3.0     # seconds between calls on a real line, unless --delay
RETRYABLE_STATUSES = frozenset({"busy", "no_dialtone"})
STATUS_ORDER = {status: rank for rank, status in enumerate(
    ("modem", "person", "busy", "no_answer", "ringing", "no_carrier", "no_dialtone", "timeout",
     "error"))}

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
    """The modem failed at run time: reported as one error line, exit 1."""


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


@dataclass
class DialPlan:
    """What one run dials: a pattern's range or a list, minus everything never to dial."""

    plan: NumberPlan
    prefix: str | None                  # pattern digits, or None for a --numbers list
    numbers: array | None = None        # the --numbers list
    excluded: PrefixSet | None = None
    dialed: array = field(default_factory=lambda: array("q"))   # sorted, already dialed
    in_range: int = 0                   # well-formed numbers in the range or list
    emergency: int = 0                  # of those, never dialed (emergency/service)
    excluded_count: int = 0             # of the rest, in the --exclude file
    already_dialed: int = 0             # of the rest, dialed before (resume)

    @property
    def to_dial(self) -> int:
        """Exactly how many numbers iterate() yields."""
        return self.in_range - self.emergency - self.excluded_count - self.already_dialed

    @property
    def description(self) -> str:
        """The pattern as NXX-NXX-XXXX with X for free digits, or the list size."""
        if self.prefix is None:
            return f"list of {len(self.numbers)} numbers"
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
        if self.prefix is None:
            numbers, well_formed = self.numbers, self.plan.well_formed
            order = RandomOrder(len(numbers), rng) if randomized else range(len(numbers))
            candidates = (numbers[index] for index in order)
            return (n for n in candidates if well_formed(n) and n not in skip
                    and not (dialed and self.was_dialed(n)))
        space = RangeSpace(self.plan, self.prefix)
        if not randomized:
            return self._ascending(space, skip)
        candidates = map(space.number, RandomOrder(space.size, rng))
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
        if self.prefix is None:
            self._count_list()
        else:
            self._count_range()
        self.already_dialed = sum(1 for number in self.dialed if self._in_scope(number)
                                  and self.plan.dialable(number)
                                  and not (self.excluded and number in self.excluded))

    def _in_scope(self, number: int) -> bool:
        if self.prefix is None:
            return number in self._list_members
        free = 10 ** (self.plan.length - len(self.prefix))
        return number // free == int(self.prefix)

    def _count_list(self) -> None:
        plan = self.plan
        self._list_members = set(self.numbers)
        self.in_range = len(self.numbers)
        self.emergency = sum(1 for n in self.numbers if not plan.dialable(n))
        self.excluded_count = sum(1 for n in self.numbers if plan.dialable(n)
                                  and self.excluded and n in self.excluded)

    def _count_range(self) -> None:
        plan, prefix = self.plan, self.prefix
        self.in_range = plan.count_well_formed(prefix)
        blocked = plan.blocked.prefixes
        self.emergency = self._count_under(blocked, prefix)
        excluded = self.excluded.prefixes if self.excluded else []
        self.excluded_count = 0
        for entry in excluded:
            if any(entry.startswith(b) for b in blocked):
                continue
            scope = self._intersection(entry, prefix)
            if scope is None:
                continue
            if scope == prefix:
                # the whole range is excluded (minus its emergency numbers); nothing else counts
                self.excluded_count = self.in_range - self.emergency
                break
            self.excluded_count += plan.count_well_formed(scope) - sum(
                plan.count_well_formed(b) for b in blocked if b.startswith(scope))

    def _count_under(self, prefixes: list[str], prefix: str) -> int:
        """Well-formed numbers of the range that begin with one of the disjoint `prefixes`."""
        total = 0
        for entry in prefixes:
            scope = self._intersection(entry, prefix)
            if scope == prefix:
                return self.in_range
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


# ----------------------------------------------------------------------------- backends

class SimulationBackend:
    """Outcomes drawn with the original's weights from a seeded generator."""

    name = "simulation"

    def __init__(self, rng: random.Random, call_seconds: float = 0.0):
        self.random = rng.random
        self.call_seconds = call_seconds
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
        return self._outcomes[bisect_right(self._cumulative, self.random())]

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
        if tuple(header) != CSV_FIELDS:
            raise UsageError(f"{self.path} has other columns ({','.join(header)}); write the "
                             f"results to a new file with --output")

    def has_session(self, session_id: str) -> bool:
        """Whether any row belongs to the session."""
        return session_id in sessions_in_csv(self.path)

    def latest_session(self) -> str | None:
        """The session of the last row, if any."""
        return latest_csv_session(self.path)

    def begin(self, session: SessionInfo) -> None:
        """Open the file (writing the header if it is new)."""
        self._open()

    def add(self, row: tuple) -> None:
        """Write and flush one result row."""
        session_id, phone, status, timestamp, success, message, carrier, tone = row
        self._writer.writerow((session_id, phone, status, timestamp, str(bool(success)),
                               message, str(bool(carrier)), tone or ""))
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
                       modem_detections, country_code, randomized)
                   VALUES (?, ?, NULL, ?, 'sqlite', ?, 0, 0, 0, ?, ?)
                   ON CONFLICT(session_id) DO UPDATE SET end_time = NULL""",
                (session.session_id, migrate_db.utcnow(), session.backend,
                 session.phone_pattern, session.country_code, int(session.randomized)))

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
                       success, message, carrier_detected, tone_type)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""", rows)
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
                              (migrate_db.utcnow(), session.session_id))

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
            numbers = (national(phone) for (phone,) in
                       conn.execute("SELECT phone_number FROM dial_results"))
            dialed = _sorted_unique(n for n in numbers if n is not None)
            session_id, pattern = latest_db_session(conn)
        finally:
            conn.close()
        return ResumeSource(path, "sqlite", dialed, session_id, pattern)
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
                    found.append(number)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"--resume {path}: cannot read it ({exc})") from None
    return ResumeSource(path, "csv", _sorted_unique(found), latest, None)


def infer_prefix(source: ResumeSource, plan: NumberPlan) -> tuple[str, str]:
    """(pattern digits, where they came from): the session's pattern, or the common prefix of
    the smallest and largest number dialed."""
    if source.latest_pattern and source.latest_pattern != "-":
        try:
            return plan.parse_pattern(source.latest_pattern), \
                f"pattern of session {source.latest_session}"
        except UsageError:
            pass
    if not source.dialed:
        raise UsageError(f"--infer-prefix: {source.path} has no dialed numbers; give PATTERN "
                         f"or --resume-prefix")
    low = f"{source.dialed[0]:0{plan.length}d}"
    high = f"{source.dialed[-1]:0{plan.length}d}"
    common = ""
    for a, b in zip(low, high, strict=True):
        if a != b:
            break
        common += a
    if not common:
        raise UsageError(f"--infer-prefix: the numbers in {source.path} share no prefix; give "
                         f"--resume-prefix")
    return plan.parse_pattern(common), "common prefix of the numbers dialed"


# ----------------------------------------------------------------------------- time windows

def parse_window(text: str) -> tuple[int, int]:
    """HH:MM-HH:MM as (start, end) minutes after midnight; raises UsageError."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise UsageError(f"--window {text!r}: write it as HH:MM-HH:MM, e.g. 09:00-17:30")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or end_h > 23 or start_m > 59 or end_m > 59:
        raise UsageError(f"--window {text!r}: hours are 00-23 and minutes 00-59")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise UsageError(f"--window {text!r}: start and end are the same time")
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
            self.last_success = migrate_db.utcnow()

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

    def end(self) -> None:
        """Flush what is left."""
        self.stream.flush()


class LiveView:
    """The interactive view: progress with ETA, current number, counts, last results."""

    def __init__(self, title: str, total: int, stats: DialStats, console: Console):
        self.title = title
        self.stats = stats
        self.current = ""
        self.status_note = ""
        self.recent: deque = deque(maxlen=RECENT_RESULTS)
        self.progress = Progress(TextColumn("[bold]dialing"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("dialing", total=total)
        self.live = Live(self, console=console, refresh_per_second=4)

    def __rich__(self) -> Group:
        counts = Table(box=None, show_header=True, padding=(0, 2))
        by_status = dict(self.stats.by_status)
        statuses = sorted(by_status, key=lambda s: (STATUS_ORDER.get(s, len(STATUS_ORDER)), s))
        for status in statuses:
            counts.add_column(status, justify="right")
        if statuses:
            counts.add_row(*(str(by_status[status]) for status in statuses))
        recent = Table(box=None, show_header=False, padding=(0, 2))
        for row in list(self.recent):
            recent.add_row(row[1], row[2], row[5])
        current = self.status_note or f"current: {self.current}"
        return Group(Text(self.title, style="bold"), self.progress, Text(current), counts,
                     Text("last results:"), recent)

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

    def end(self) -> None:
        """Stop drawing (the last frame stays)."""
        self.live.stop()


Backend = SimulationBackend | ModemBackend
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
              view: View, stats: DialStats, session: SessionInfo,
              options: DialOptions) -> None:
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
        phone = plan.format(number)
        view.dialing(phone)
        try:
            outcome = dial_with_retries(backend, plan.dial_string(number), options.retries,
                                        options.delay)
        except ModemNotResponding as exc:
            if exc.outcome is not None:
                _record(storage, view, stats, session_id, phone, exc.outcome)
            raise
        _record(storage, view, stats, session_id, phone, outcome)
        if options.metrics.due():
            options.metrics.write(stats.metrics())


def _record(storage: Storage, view: View, stats: DialStats, session_id: str, phone: str,
            outcome: Outcome) -> None:
    """Store, count and show one call."""
    row = (session_id, phone, outcome.status, migrate_db.utcnow(), outcome.success,
           outcome.message, outcome.carrier_detected, outcome.tone_type)
    storage.add(row)
    stats.add(outcome)
    view.result(row)


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
            prefix = plan.parse_pattern(args.pattern)
        elif args.resume_prefix is not None:
            prefix, origin = plan.parse_pattern(args.resume_prefix), "--resume-prefix"
        elif args.infer_prefix:
            prefix, origin = infer_prefix(resume, plan)
        else:
            raise UsageError("give a PATTERN (or, with --resume, --infer-prefix or "
                             "--resume-prefix P)")
        dial_plan = DialPlan(plan, prefix)
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
    if dial_plan.to_dial == 0 and dial_plan.excluded_count and resume is None:
        raise UsageError(f"every number of {dial_plan.description} is excluded by "
                         f"{args.exclude}; nothing to dial")
    return dial_plan, origin


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
        if not SESSION_ID_RE.fullmatch(args.session_id):
            raise UsageError(f"--session-id {args.session_id!r}: use 1-64 letters, digits, "
                             f". _ : - (starting with a letter or digit)")
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
    return SimulationBackend(rng, args.sim_call_seconds)


def validate_dial_args(args: argparse.Namespace) -> None:
    """Checks argparse cannot express; raises UsageError."""
    for name in ("delay", "timeout", "sim_call_seconds", "modem_guard"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative")
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.retries < 0:
        raise UsageError("--retries must not be negative")
    if args.modem_baudrate <= 0:
        raise UsageError("--modem-baudrate must be a positive number")
    if args.country_code not in COUNTRY_PLANS:
        supported = ", ".join(f"{code} ({p.name})" for code, p in COUNTRY_PLANS.items())
        raise UsageError(f"--country-code {args.country_code}: not supported; use one of "
                         f"{supported}")
    if args.dial_prefix is not None and not re.fullmatch(r"[\d,]*", args.dial_prefix):
        raise UsageError(f"--dial-prefix {args.dial_prefix!r}: digits and commas (pauses) only")
    if (args.infer_prefix or args.resume_prefix is not None) and args.resume is None:
        raise UsageError("--infer-prefix and --resume-prefix need --resume FILE")
    if args.pattern is not None and (args.infer_prefix or args.resume_prefix is not None) \
            and args.pattern != "-":
        raise UsageError("give either PATTERN or --infer-prefix/--resume-prefix, not both")
    for name in ("resume", "exclude", "numbers"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            raise UsageError(f"--{name} {path}: no such file")
    if args.backend != "modem" and args.modem_port:
        raise UsageError("--modem-port is only used with --backend modem")
    if args.backend == "modem" and not args.modem_port:
        raise UsageError("--backend modem needs --modem-port PORT_OR_URL (a device such as "
                         "/dev/ttyUSB0, or socket://host:port, rfc2217://host:port)")


def run_dial(args: argparse.Namespace) -> int:
    """The `dial` command."""
    validate_dial_args(args)
    plan = NumberPlan(COUNTRY_PLANS[args.country_code], args.dial_prefix)
    window = parse_window(args.window) if args.window else None
    resume = read_resume_source(args.resume, plan) if args.resume else None
    dial_plan, origin = build_dial_plan(args, plan, resume)
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
        session = SessionInfo(*choose_session(args, storage, resume), args.backend,
                              storage.kind, stored_pattern(args, dial_plan), args.country_code,
                              args.random)
        if not args.yes and not confirmed(args, resume, target):
            print("Nothing dialed.")
            return EXIT_OK
        seed = args.seed if args.seed is not None else secrets.randbits(64)
        rng = random.Random(seed)
        numbers = dial_plan.iterate(args.random, rng)
        delay = args.delay if args.delay is not None else \
            (DEFAULT_MODEM_DELAY if args.backend == "modem" else 0.0)
        options = DialOptions(args.limit, delay, args.retries, window, args.window or "",
                              migrate_db.MetricsFile(args.metrics_file
                                                     or os.environ.get("METRICS_FILE")))
        backend = make_backend(args, rng)
        try:
            backend.open()
            return dial_session(dial_plan, numbers, backend, storage, session, options, target,
                                interactive=not args.no_interactive and sys.stdout.isatty())
        finally:
            backend.close()
    finally:
        storage.close()


def confirmed(args: argparse.Namespace, resume: ResumeSource | None, target: int) -> bool:
    """The y/N questions: before resuming, and before dialing a real line."""
    if resume is not None and not confirm(f"Dial the remaining {target}?"):
        return False
    return args.backend != "modem" or confirm(
        f"Dial {target} numbers on a real line through {args.modem_port}? Only lines you own "
        f"or are authorised to test.")


def stored_pattern(args: argparse.Namespace, dial_plan: DialPlan) -> str:
    """The sessions.phone_pattern of a new session: as typed, inferred, or '-' for a list."""
    if dial_plan.prefix is None:
        return "-"
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
    if interactive:
        title = (f"VibeDialer  session {session.session_id}  {dial_plan.description}  "
                 f"{backend.name} -> {storage.kind}")
        view = LiveView(title, target, stats, Console())
    else:
        view = LineView()
    code, failure, interrupted = EXIT_OK, None, False
    try:
        storage.begin(session)
        view.begin()
        try:
            run_dials(dial_plan, numbers, backend, storage, view, stats, session, options)
        finally:
            view.end()
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
                     row["carrier_detected"] == "True", row["tone_type"] or None)
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError) as exc:
        raise UsageError(f"{path}: cannot read it as a results csv ({exc})") from None
    with migrate_db.transaction(conn):
        conn.executemany("INSERT INTO dial_results (session_id, phone_number, status, "
                         "timestamp, success, message, carrier_detected, tone_type) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
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
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    table = [header]
    for session_id, start, end, backend, pattern, calls, successes, modems in rows:
        calls, successes, modems = calls or 0, successes or 0, modems or 0
        duration = session_duration(conn, session_id, start, end)
        table.append((session_id, (start or "-")[:19], (end or "unfinished")[:19],
                      backend or "-", pattern or "-", str(calls), str(successes), str(modems),
                      f"{100 * successes / calls:.1f}%" if calls else "-",
                      f"{calls * 3600 / duration:,.0f}" if duration else "-"))
    conn.close()
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
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


# ----------------------------------------------------------------------------- command line

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
                    "555-234-5600 ... 555-234-5699) or the numbers of --numbers FILE.",
        epilog="Examples: dial 555-234-56 --storage sqlite -o calls.db; "
               "dial --resume calls.db --infer-prefix; "
               "dial - --numbers list.txt --backend modem --modem-port /dev/ttyUSB0")
    dial.add_argument("pattern", nargs="?", metavar="PATTERN",
                      help="digits with optional separators; '-' with --numbers")
    what = dial.add_argument_group("what to dial")
    what.add_argument("-c", "--country-code", default="1", metavar="CC",
                      help="country code of the numbers (default: %(default)s; supported: "
                           + ", ".join(COUNTRY_PLANS) + ")")
    what.add_argument("--numbers", type=Path, metavar="FILE",
                      help="dial the numbers listed in FILE (one a line, # comments)")
    what.add_argument("--exclude", type=Path, metavar="FILE",
                      help="never dial the numbers and prefixes in FILE (one a line, # comments)")
    what.add_argument("--limit", type=int, metavar="N", help="stop after N dials")
    what.add_argument("--dial-prefix", metavar="DIGITS",
                      help="digits dialed before each national number, e.g. '9,' for an "
                           "outside line (default: the country's trunk prefix)")
    order = what.add_mutually_exclusive_group()
    order.add_argument("--random", action="store_true", help="random order (a seeded "
                       "permutation of the range)")
    order.add_argument("--sequential", dest="random", action="store_false",
                       help="ascending order (default)")
    what.add_argument("--seed", type=int, metavar="N",
                      help="seed for the random order and the simulation (repeatable runs)")

    backend = dial.add_argument_group("backend")
    backend.add_argument("-b", "--backend", choices=("simulation", "modem"),
                         default="simulation", help="default: %(default)s")
    backend.add_argument("--timeout", type=float, default=DEFAULT_CALL_TIMEOUT,
                         metavar="SECONDS",
                         help="per-call timeout of the modem (default: %(default)s)")
    backend.add_argument("--retries", type=int, default=0, metavar="N",
                         help="dial again on BUSY / NO DIALTONE up to N times (default: 0)")
    backend.add_argument("--sim-call-seconds", type=float, default=0.0, metavar="SECONDS",
                         help="simulated call length (default: 0, no sleeping)")
    modem = dial.add_argument_group("modem")
    modem.add_argument("--modem-port", metavar="PORT_OR_URL",
                       help="serial device or pyserial URL (socket://, rfc2217://, loop://)")
    modem.add_argument("--modem-baudrate", type=int, default=DEFAULT_MODEM_BAUDRATE,
                       metavar="N", help="default: %(default)s")
    modem.add_argument("--modem-guard", type=float, default=DEFAULT_GUARD_SECONDS,
                       metavar="SECONDS", help="guard pause around the +++ escape when hanging "
                                               "up (default: %(default)s)")

    pacing = dial.add_argument_group("pacing")
    pacing.add_argument("--delay", type=float, metavar="SECONDS",
                        help=f"pause between calls (default: 0 simulated, "
                             f"{DEFAULT_MODEM_DELAY:g} with a modem)")
    pacing.add_argument("--window", metavar="HH:MM-HH:MM",
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
    storage.add_argument("--session-id", metavar="ID",
                         help="session id (default: a new 8-character id)")
    sessions = storage.add_mutually_exclusive_group()
    sessions.add_argument("--continue-session", dest="session_mode", action="store_const",
                          const="continue", help="continue the latest session (default when "
                                                 "resuming)")
    sessions.add_argument("--new-session", dest="session_mode", action="store_const",
                          const="new", help="start a new session even when resuming")

    resume = dial.add_argument_group("resume")
    resume.add_argument("--resume", type=Path, metavar="FILE",
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
    return parser, {"dial": dial, "sessions": listing, "report": report}


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
    except (ModemError, OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    migrate_db.run_main(main)
