"""REARANK's and ReasonRank's rewards against values computed by hand (trec_eval nDCG: linear gain, log2
discount; window [0, 1, 3, 0] -> initial nDCG@10 = (1/log2 3 + 3/2) / (3 + 1/log2 3) = 0.586883)."""

from __future__ import annotations

import math

import pytest

from rearank_core.training.rewards import (
    constant_terms,
    multiview_reward,
    rbo,
    rearank_components,
    rearank_reward,
)

LABELS = [0, 1, 3, 0]
IDCG = 3 + 1 / math.log2(3)
INITIAL = (1 / math.log2(3) + 3 / 2) / IDCG


def think(answer: str) -> str:
    return f"<think>passage 3 answers the query</think>\n<answer>{answer}</answer>"


def gain(ndcg: float) -> float:
    return (ndcg - INITIAL) / (1 - INITIAL)


@pytest.mark.parametrize("completion, expected", [
    (think("[3] > [2] > [1] > [4]"), 0.8 * 1 + 0.1 + 0.1),  # perfect
    (think("[4] > [3] > [2] > [1]"), 0.8 * gain((3 / math.log2(3) + 1 / 2) / IDCG) + 0.2),  # reversed
    (think("[1] > [4] > [2] > [3]"), 0.8 * gain((1 / 2 + 3 / math.log2(5)) / IDCG) + 0.2),  # worse than BM25
    (think("[3] > [3] > [2]"), 0.8 * 1 + 0.2),  # duplicate dropped, missing appended: perfect after repair
    (think("[9] > [3] > [2] > [1] > [4]"), 0.8 * 1 + 0.2),  # out of range dropped
    ("<think>I think [3] > [2]</think>", 0.0),  # no answer: input order, no format reward
    ("<think>[3] > [2] > [1] and then", 0.0),  # cut off inside the reasoning
    ("<answer>[3] > [2] > [1] > [4]</answer>", 0.8 * 1 + 0.1),  # answer format only
    (think("3, 2, 1, 4"), 0.8 * 1 + 0.1),  # strict format, but the answer is not [i] > [j]
    ([{"role": "assistant", "content": think("[3] > [2] > [1] > [4]")}], 1.0),  # TRL conversational
])
def test_rearank_reward_by_hand(completion: object, expected: float) -> None:
    assert rearank_reward([completion], [LABELS], prompts=["ignored"], trainer_state=None) == \
        [pytest.approx(expected, abs=1e-6)]


def test_rearank_reward_is_zero_gain_when_ideal_equals_initial() -> None:
    assert rearank_reward([think("[2] > [1] > [3]")], [[3, 1, 0]]) == [pytest.approx(0.2)]
    assert rearank_reward([think("[2] > [1] > [3]")], [[0, 0, 0]]) == [pytest.approx(0.2)]


def test_the_gain_floor_gives_an_ideal_window_a_signal_and_softens_a_near_ideal_one() -> None:
    # Ideal input [3, 2, 0]: swapping the first two loses nDCG@10 (2 + 3 / log2 3 against 3 + 2 / log2 3, over
    # the ideal's own: -0.087); the paper's gain is 0, the floored one that loss over 0.2.
    swap = think("[2] > [1] > [3]")
    ideal, swapped = 3 + 2 / math.log2(3), 2 + 3 / math.log2(3)
    loss = (swapped - ideal) / ideal
    assert rearank_components([swap], [[3, 2, 0]], gain_floor=0.2)["gain"] == [pytest.approx(loss / 0.2)]
    assert rearank_components([swap], [[3, 2, 0]])["gain"] == [0.0]
    keep = think("[1] > [2] > [3]")
    assert rearank_components([keep], [[3, 2, 0]], gain_floor=0.2)["gain"] == [0.0]
    # Near ideal (initial 0.907, ideal 1): one swap that costs 0.111 is -1.19, clipped to -1, over a denominator of
    # 0.093; over the floor it is -0.56.
    labels = [3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    near = think(" > ".join(f"[{i}]" for i in [1, 4, 3, 2, 5, 6, 7, 8, 9, 10, 11, 12]))  # one swap: -0.111
    paper = rearank_components([near], [labels])["gain"][0]
    floored = rearank_components([near], [labels], gain_floor=0.2)["gain"][0]
    dcg = 3 + 3 / math.log2(5)  # 3 at ranks 1 and 4
    ideal = 3 + 3 / math.log2(3) + 1 / 2  # 3, 3, 1 at ranks 1-3
    initial = (3 + 3 / math.log2(3)) / ideal
    assert paper == -1.0 and floored == pytest.approx((dcg / ideal - initial) / 0.2)


def test_near_ideal_windows_cannot_explode_the_gain() -> None:
    labels = [3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # initial 0.907: only the 1 sits past rank 10
    bad = think(" > ".join(f"[{i}]" for i in [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2]))
    raw = rearank_components([bad], [labels], gain_clip=math.inf)["gain"][0]
    assert raw < -3
    assert rearank_components([bad], [labels])["gain"] == [-1.0]
    assert rearank_reward([bad], [labels]) == [pytest.approx(0.8 * -1 + 0.2)]


def test_rearank_weights_come_from_the_caller() -> None:
    assert rearank_reward([think("[3] > [2] > [1] > [4]")], [LABELS], rank_weight=1.0, strict_weight=0.0,
                          answer_weight=0.0) == [pytest.approx(1.0)]


RELEVANT, GOLD = [2, 3], [3, 2, 1, 4]


@pytest.mark.parametrize("completion, expected", [
    (think("[3] > [2] > [1] > [4]"), 1.0 + 0.2 * 1.0 + 0.1 * 1.0),
    # nDCG (1/log2 4 + 1/log2 5) / (1 + 1/log2 3); recall 1; average overlap (0 + 0 + 2/3 + 1) / 4
    (think("[1] > [4] > [2] > [3]"), (0.5 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)) + 0.2 + 0.1 * (5 / 3) / 4),
    ("<answer>[3] > [2] > [1] > [4]</answer>", -1.0),  # no <think>: broken format
    ("<think>cut off", -1.0),
    (think("[3] > [2]"), 0.0),  # wrong length
    (think("[3] > [3] > [1] > [4]"), 0.0),  # duplicate
    ([{"role": "assistant", "content": think("[3] > [2] > [1] > [4]")}], 1.3),
])
def test_multiview_reward_by_hand(completion: object, expected: float) -> None:
    assert multiview_reward([completion], [RELEVANT], [GOLD], completion_ids=[[1]]) == \
        [pytest.approx(expected, abs=1e-6)]


def test_rbo_by_hand() -> None:
    assert rbo([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert rbo([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx((0 + 0 + 2 / 3 + 1) / 4)
    assert rbo([1, 2, 3, 4], [4, 3, 2, 1], p=0.9) == pytest.approx(0.1 * (0.81 * 2 / 3 + 0.729 * 1))
    assert rbo([], []) == 1.0 and rbo([1], []) == 0.0
    with pytest.raises(ValueError):
        rbo([1], [1], p=0.0)


def test_batches_keep_their_order() -> None:
    completions = [think("[3] > [2] > [1] > [4]"), "<think>no answer</think>", think("[1] > [4] > [2] > [3]")]
    rewards = rearank_reward(completions, [LABELS] * 3)
    assert rewards == [rearank_reward([c], [LABELS])[0] for c in completions]
    with pytest.raises(ValueError):
        rearank_reward(completions, [LABELS])


def test_weights_from_params_yaml(root) -> None:
    from dataclasses import asdict

    from rearank_core.config import load_params

    weights = asdict(load_params(root / "params.yaml").rewards)
    perfect = think("[3] > [2] > [1] > [4]")
    assert rearank_reward([perfect], [LABELS], **weights) == [pytest.approx(1.0)]
    assert multiview_reward([perfect], [RELEVANT], [GOLD], **weights) == [pytest.approx(1.3)]


def test_components_reach_trls_log_metric_hook() -> None:
    logged: dict[str, float] = {}
    completions = [think("[3] > [2] > [1] > [4]"), "<think>no answer</think>"]
    rearank_reward(completions, [LABELS] * 2, log_metric=logged.__setitem__)
    assert logged == {"rearank/gain": 0.5, "rearank/strict_format": 0.5, "rearank/answer_format": 0.5,
                      "rearank/ndcg10": pytest.approx((1 + INITIAL) / 2)}
    multiview_reward(completions, [RELEVANT] * 2, [GOLD] * 2, log_metric=logged.__setitem__)
    assert logged["multiview/valid"] == 0.5 and logged["multiview/ndcg10"] == 1.0


def test_a_reward_term_that_cannot_vary_is_named() -> None:
    assert constant_terms("multiview", 0.2, 10) == [
        "Recall@10 is 1 for every valid answer on windows of 10 passages (all of them fit in the top 10): "
        "rewards.recall_weight 0.2 adds a constant"]
    assert constant_terms("multiview", 0.2, 20) == [] and constant_terms("multiview", 0.0, 10) == []
    assert constant_terms("rearank", 0.2, 10) == []
