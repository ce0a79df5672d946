"""Feedback classifier benchmark: ``parse_message`` against the standard library's parser alone, same bytes.

Run: ``uv run python benchmarks/feedback_parse.py [--count N] [--repeat R] [--profile]``

The messages: the hand-written samples under ``tests/feedback/samples/`` that are bounces or ARF reports
(DSNs, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo, SES, Domino, ..., ARF digests), multiplied to
``--count`` (default 5,000) and varied so that no two are byte-identical: each copy gets its own recipient
local part, its own 26-character ref and a different date. All are built in memory before any timing.

Timed, each ``--repeat`` times (default 3, the fastest run counts), over the same list of bytes:

- baseline: ``email.parser.BytesParser(policy=email.policy.compat32).parsebytes`` alone: the parse that
  ``parse_message`` itself does once;
- ``zgoda.feedback.parsing.parse_message(raw, bounce_domain=...)``: parsing plus classification.

Goal: ``parse_message`` within 3x of the baseline's time. ``--profile`` adds cProfile's top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import random
import sys
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from zgoda.feedback.parsing import parse_message

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "feedback" / "samples"
BOUNCE_DOMAIN = "bounce.zgoda.example"
GOAL_RATIO = 3.0
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
SKIP_GROUPS = {"autoreply"}
NOT_FEEDBACK_SAMPLES = ("human_", "newsletter_", "mdn_", "delivered_", "not_spam", "auth_failure")


def _base_messages() -> list[bytes]:
    found = []
    for path in sorted(SAMPLES.rglob("*.eml")):
        if path.parent.name in SKIP_GROUPS or path.name.startswith(NOT_FEEDBACK_SAMPLES):
            continue
        found.append(path.read_bytes())
    return found


def build(count: int, seed: int) -> list[bytes]:
    """``count`` distinct bounce and ARF messages made from the samples."""
    rng = random.Random(seed)
    bases = _base_messages()
    messages = []
    for index in range(count):
        raw = bases[index % len(bases)]
        ref = "".join(rng.choice(ALPHABET) for _ in range(26))
        for old in {raw[at + 8 : at + 34] for at in _all(raw, b"bounces+")}:
            raw = raw.replace(old, ref.encode())
        raw = raw.replace(b"@example.", f"{index}@example.".encode()).replace(
            b"10:12:33", f"10:{index % 60:02d}:33".encode()
        )
        messages.append(raw)
    return messages


def _all(data: bytes, needle: bytes) -> list[int]:
    found, start = [], data.find(needle)
    while start != -1:
        found.append(start)
        start = data.find(needle, start + 1)
    return found


def baseline(messages: list[bytes]) -> None:
    parser = BytesParser(policy=compat32)
    for raw in messages:
        parser.parsebytes(raw)


def classify(messages: list[bytes]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for raw in messages:
        for report in parse_message(raw, bounce_domain=BOUNCE_DOMAIN):
            kinds[report.kind.value] += 1
    return kinds


def best_of(repeat: int, step: object, messages: list[bytes]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        step(messages)  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="messages (default 5,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step; the fastest counts (default 3)")
    parser.add_argument("--seed", type=int, default=20260414)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of parse_message")
    args = parser.parse_args()

    messages = build(args.count, args.seed)
    size = sum(len(raw) for raw in messages)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {args.count:,} messages, "
        f"{size / args.count / 1024:.1f} KiB each on average, best of {args.repeat}"
    )
    kinds = classify(messages)  # warm-up, and a check that the messages are what they should be
    print("reports: " + ", ".join(f"{kind} {number:,}" for kind, number in sorted(kinds.items())))
    if kinds.get("not_feedback"):
        print("unexpected not_feedback reports: the generated messages are broken", file=sys.stderr)
        return 1

    base = best_of(args.repeat, baseline, messages)
    ours = best_of(args.repeat, classify, messages)
    ratio = ours / base
    print(f"stdlib BytesParser (compat32) {base:7.3f} s  {args.count / base:9,.0f} messages/s")
    print(f"parse_message                 {ours:7.3f} s  {args.count / ours:9,.0f} messages/s")
    verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
    print(f"ratio                         {ratio:7.2f}x  (goal: within {GOAL_RATIO:.0f}x: {verdict})")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        classify(messages)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
