#!/usr/bin/env python3
"""Benchmark of vibedialer's voip path: calls per minute through SIPp, 10 calls at a time.

Starts the tests' SIPp far end (tests/sipp/uas_dialer.xml: digest challenge on every call,
then by the last digit a modem tone, fax, speech, silence, voicemail, 486, 404, 480, 503, or
ringing until CANCEL) on loopback, and drives vibedialer's SipUserAgent (the voip backend's
user agent, one UDP socket for every call) with --concurrent calls in flight until --calls
calls are done: each call authenticates, rings, is answered and listened to for --listen
seconds (and classified), or refused, or CANCELled after --max-ring seconds. Prints calls
per minute of wall time, the outcomes, and how many were classified as the far end played.

    python bench/sipp_calls_bench.py [--calls 100] [--concurrent 10] [--listen 2] [--max-ring 1]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from sipp_far_end import PASSWORD, SIPP, USERNAME, start_far_end, stop_far_end  # noqa: E402

import vibedialer  # noqa: E402

PLAYED = {"0": "modem", "1": "fax", "2": "person", "3": "busy", "4": "invalid",
          "5": "no_answer", "6": "silence", "7": "no_answer", "8": "voicemail", "9": "error"}


async def run_calls(agent: vibedialer.SipUserAgent, calls: int, concurrent: int,
                    max_ring: float) -> tuple[Counter, int]:
    """(outcomes by status, calls whose status is what the far end played)."""
    await agent.start()
    gate = asyncio.Semaphore(concurrent)
    outcomes: Counter = Counter()
    right = 0

    async def one(index: int) -> None:
        nonlocal right
        number = f"555234{index:04d}"
        async with gate:
            result = await agent.call(number)
        outcome = vibedialer.call_outcome(result, max_ring)
        outcomes[outcome.status] += 1
        right += outcome.status == PLAYED[number[-1]]

    await asyncio.gather(*(one(index) for index in range(calls)))
    agent.close()
    return outcomes, right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--listen", type=float, default=2.0)
    parser.add_argument("--max-ring", type=float, default=1.0)
    args = parser.parse_args()
    if SIPP is None:
        sys.exit("error: sipp is not installed (apt-get install sip-tester)")
    with tempfile.TemporaryDirectory() as directory:
        far_end = start_far_end(Path(directory))
        try:
            account = vibedialer.SipAccount("127.0.0.1", far_end.port, USERNAME, PASSWORD,
                                            "127.0.0.1")
            agent = vibedialer.SipUserAgent(account, args.max_ring, args.listen, 30.0)
            started = time.perf_counter()
            cpu = time.process_time()
            outcomes, right = asyncio.run(run_calls(agent, args.calls, args.concurrent,
                                                    args.max_ring))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            stop_far_end(far_end)
    print(f"{args.calls} calls through SIPp, {args.concurrent} at a time, listen "
          f"{args.listen:g} s, max ring {args.max_ring:g} s")
    print(f"wall {wall:.1f} s: {60 * args.calls / wall:.0f} calls/minute; dialer CPU "
          f"{cpu:.1f} s ({1000 * cpu / args.calls:.0f} ms per call)")
    print("outcomes: " + ", ".join(f"{status} {count}" for status, count
                                   in outcomes.most_common()))
    print(f"as played by the far end: {right}/{args.calls}")
    return 0 if right == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
