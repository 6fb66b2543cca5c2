"""Completion -> permutation of a window, with repair and diagnostics.

Only the answer is read: the ``<answer>`` block for reasoning templates, the text after any ``</think>``
for plain ones. When the answer is missing or cut off, the window keeps its input order and the failure
is recorded; numbers are never taken from the reasoning (both papers' code does, when output is truncated)."""

from __future__ import annotations

import re
from dataclasses import dataclass

OK, REPAIRED, NO_ANSWER, TRUNCATED = "ok", "repaired", "no_answer", "truncated"
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_STRICT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.S | re.I)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class ParsedWindow:
    order: list[int]  # 0-based positions in the window's input, a full permutation
    status: str  # ok | repaired | no_answer | truncated
    duplicates: int = 0
    out_of_range: int = 0
    missing: int = 0
    strict_format: bool = False  # the whole completion is exactly <think>..</think><answer>..</answer>

    @property
    def format_valid(self) -> bool:
        return self.status in (OK, REPAIRED)


def answer_text(completion: str, answer_format: str) -> str | None:
    """The answer part of a completion, or None when there is none."""
    if answer_format == "think_answer":
        blocks = _ANSWER.findall(completion)
        return blocks[-1] if blocks else None
    lowered = completion.lower()
    if "<think>" in lowered and "</think>" not in lowered:
        return None  # still reasoning: no answer yet
    cut = lowered.rfind("</think>")
    return completion[cut + len("</think>"):] if cut >= 0 else completion


def strict_format(completion: str) -> bool:
    """The whole completion is exactly ``<think>…</think>`` then ``<answer>…</answer>``."""
    return bool(_STRICT.match(completion))


def identifiers(answer: str) -> list[int]:
    """The passage numbers an answer names, in order (digits only, as the RankGPT lineage reads them)."""
    return [int(n) for n in _NUMBER.findall(answer)]


def repair(identifiers: list[int], size: int) -> tuple[list[int], int, int, int]:
    """1-based ids -> a full 0-based permutation: drop duplicates and out-of-range ids, then append the
    unmentioned positions in input order. Returns (order, duplicates, out_of_range, missing)."""
    order: list[int] = []
    seen: set[int] = set()
    duplicates = out_of_range = 0
    for ident in identifiers:
        pos = ident - 1
        if not 0 <= pos < size:
            out_of_range += 1
        elif pos in seen:
            duplicates += 1
        else:
            seen.add(pos)
            order.append(pos)
    missing = [p for p in range(size) if p not in seen]
    return order + missing, duplicates, out_of_range, len(missing)


def parse_window(completion: str, size: int, answer_format: str, finish_reason: str = "stop") -> ParsedWindow:
    """Parse a completion for a window of ``size`` passages."""
    strict = strict_format(completion)
    answer = answer_text(completion, answer_format)
    if answer_format == "plain" and finish_reason == "length":
        answer = None  # a bare permutation cut off by the token limit is not a finished answer
    identity = list(range(size))
    if answer is None:
        return ParsedWindow(identity, TRUNCATED if finish_reason == "length" else NO_ANSWER, missing=size, strict_format=strict)
    named = identifiers(answer)
    if not named:
        return ParsedWindow(identity, TRUNCATED if finish_reason == "length" else NO_ANSWER, missing=size, strict_format=strict)
    order, dup, oor, miss = repair(named, size)
    status = OK if dup == oor == miss == 0 else REPAIRED
    return ParsedWindow(order, status, dup, oor, miss, strict)
