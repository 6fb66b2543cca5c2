"""Completion -> permutation: the answer block only, repair, and honest failure records."""

from __future__ import annotations

import pytest

from rearank_core.prompts.parsing import (
    NO_ANSWER,
    OK,
    REPAIRED,
    TRUNCATED,
    parse_window,
    repair,
)


def test_well_formed_answer() -> None:
    p = parse_window("<think>[2] is best</think>\n<answer>[2] > [3] > [1]</answer>", 3, "think_answer")
    assert (p.order, p.status, p.strict_format, p.format_valid) == ([1, 2, 0], OK, True, True)


@pytest.mark.parametrize(("answer", "order", "dup", "oor", "miss"), [
    ("[2] > [2] > [1] > [3]", [1, 0, 2], 1, 0, 0),          # duplicate dropped
    ("[4] > [2] > [0] > [1] > [3]", [1, 0, 2], 0, 2, 0),    # out of range (0 and 4) dropped
    ("[3]", [2, 0, 1], 0, 0, 2),                             # missing appended in input order
    ("[3] > [3] > [9] > [1]", [2, 0, 1], 1, 1, 1),
    ("3 > 1 > 2", [2, 0, 1], 0, 0, 0),                       # bare numbers are identifiers too
    ("[٣] > [١] > [٢]", [2, 0, 1], 0, 0, 0),                 # unicode digits
])
def test_repair(answer: str, order: list[int], dup: int, oor: int, miss: int) -> None:
    p = parse_window(f"<think>x</think><answer>{answer}</answer>", 3, "think_answer")
    assert (p.order, p.duplicates, p.out_of_range, p.missing) == (order, dup, oor, miss)
    assert p.status == (OK if dup == oor == miss == 0 else REPAIRED)
    assert sorted(p.order) == [0, 1, 2]


def test_cut_off_answer_keeps_input_order_and_never_reads_the_reasoning() -> None:
    text = "<think>Passage [3] is clearly best, then [1], then [2].</think><answer>[3] > [1"
    p = parse_window(text, 3, "think_answer", finish_reason="length")
    assert (p.order, p.status, p.format_valid) == ([0, 1, 2], TRUNCATED, False)


def test_reasoning_cut_off_before_the_answer() -> None:
    p = parse_window("<think>[2] beats [1] because", 3, "think_answer", finish_reason="length")
    assert (p.order, p.status) == ([0, 1, 2], TRUNCATED)


def test_no_answer_block_when_the_model_stopped() -> None:
    p = parse_window("I think [3] > [1] > [2] is right.", 3, "think_answer", finish_reason="stop")
    assert (p.order, p.status, p.missing) == ([0, 1, 2], NO_ANSWER, 3)


def test_empty_answer_block() -> None:
    p = parse_window("<think>hmm</think><answer>none fit</answer>", 3, "think_answer")
    assert (p.order, p.status) == ([0, 1, 2], NO_ANSWER)


def test_last_answer_block_wins_and_loose_format_is_not_strict() -> None:
    p = parse_window("<answer>[1] > [2]</answer> wait <answer>[2] > [1]</answer>", 2, "think_answer")
    assert (p.order, p.status, p.strict_format) == ([1, 0], OK, False)


def test_plain_answer_after_reasoning() -> None:
    p = parse_window("<think>[1] is weak</think>[2] > [1]", 2, "plain")
    assert (p.order, p.status) == ([1, 0], OK)


def test_plain_answer_still_thinking_or_cut_off() -> None:
    assert parse_window("<think>[2] > [1]", 2, "plain").status == NO_ANSWER
    assert parse_window("[2] > [1] > [", 3, "plain", finish_reason="length").status == TRUNCATED


def test_repair_function_directly() -> None:
    assert repair([5, 1, 1, 2], 4) == ([0, 1, 2, 3], 1, 1, 2)
