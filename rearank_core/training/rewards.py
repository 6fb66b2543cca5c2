"""Ranking rewards as TRL reward functions: ``f(completions, <dataset columns>, **kwargs) -> list[float]``.

Completions may be strings or TRL's conversational message lists; extra keyword arguments (prompts,
completion_ids, trainer_state, other columns) are ignored. nDCG is trec_eval's (linear gain, log2 discount),
through ``evaluation.window_ndcg``; answers are read and repaired by the reranker's own parser.

REARANK's normalised gain (answer - initial) / (ideal - initial) explodes when a window's input order is already
near ideal (a denominator of 0.01 turns a small loss into -30, as seen in training), and is 0 for any answer when
the input order is ideal. ``gain_floor`` (params ``rewards.gain_floor``; 0 is the paper's formula) divides by at
least the floor instead: an answer that breaks an ideal window's order is penalised by its loss / floor (before,
no signal), and a single swap on a near-ideal window no longer costs the whole clip. The gain is then clipped to
[-gain_clip, gain_clip] (1 by default: no window weighs more than a perfect fix); augmentation's ``min_ndcg``
keeps hopeless windows out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rearank_core.evaluation import window_ndcg
from rearank_core.prompts.parsing import (
    answer_text,
    identifiers,
    parse_window,
    strict_format,
)

_RANKING = re.compile(r"\s*\[\d+\](\s*>\s*\[\d+\])*\s*")

Completion = str | list[dict[str, str]]


def completion_text(completion: Completion) -> str:
    """The text of a completion: a string as is, or the last message's content of a conversational one."""
    if isinstance(completion, str):
        return completion
    return str(completion[-1]["content"]) if completion else ""


def answer_format(text: str) -> bool:
    """There is an ``<answer>`` block and it holds nothing but a ranking ``[i] > [j] > …``."""
    answer = answer_text(text, "think_answer")
    return answer is not None and bool(_RANKING.fullmatch(answer))


def rearank_components(completions: Sequence[Completion], labels: Sequence[Sequence[int]],
                       gain_clip: float = 1.0, gain_floor: float = 0.0) -> dict[str, list[float]]:
    """Each part of REARANK's reward per completion: normalised gain, strict format, answer format, and the
    answer's nDCG@10. ``labels[i][j]`` is the grade of passage j+1 of window i (prompt order)."""
    if len(completions) != len(labels):
        raise ValueError(f"{len(completions)} completions for {len(labels)} label lists")
    texts = [completion_text(c) for c in completions]
    parsed = [parse_window(t, len(g), "think_answer") for t, g in zip(texts, labels, strict=True)]
    orders = [p.order for p in parsed]
    ideal = [sorted(range(len(g)), key=lambda j, g=g: -g[j]) for g in labels]
    grades = [list(g) for g in labels]
    answer = window_ndcg(grades, orders)
    initial = window_ndcg(grades)
    best = window_ndcg(grades, ideal)
    room = [max(b - i, gain_floor) for i, b in zip(initial, best, strict=True)]
    gain = [0.0 if r <= 0 else max(-gain_clip, min(gain_clip, (a - i) / r))
            for a, i, r in zip(answer, initial, room, strict=True)]
    return {"gain": gain, "strict_format": [float(p.strict_format) for p in parsed],
            "answer_format": [float(answer_format(t)) for t in texts], "ndcg10": answer}


def log_components(kwargs: dict[str, Any], prefix: str, parts: dict[str, list[Any]]) -> None:
    """Each component's batch mean through TRL's ``log_metric`` hook (passed to reward functions), if present."""
    log_metric = kwargs.get("log_metric")
    if not callable(log_metric):
        return
    for name, values in parts.items():
        present = [float(v) for v in values if v is not None]
        if present:
            log_metric(f"{prefix}/{name}", sum(present) / len(present))


def rearank_reward(completions: Sequence[Completion], labels: Sequence[Sequence[int]], rank_weight: float = 0.8,
                   strict_weight: float = 0.1, answer_weight: float = 0.1, gain_clip: float = 1.0,
                   gain_floor: float = 0.0, **kwargs: Any) -> list[float]:
    """REARANK: 0.8 x normalised nDCG@10 gain + 0.1 x strict format + 0.1 x answer format. A missing or cut-off
    answer keeps the window's input order (gain 0). Under TRL each component is logged as ``rearank/<name>``
    (``rearank/answer_format`` is the format-valid rate)."""
    parts = rearank_components(completions, labels, gain_clip, gain_floor)
    log_components(kwargs, "rearank", parts)
    return [rank_weight * g + strict_weight * s + answer_weight * a
            for g, s, a in zip(parts["gain"], parts["strict_format"], parts["answer_format"], strict=True)]


def rbo(ranking: Sequence[int], reference: Sequence[int], p: float = 1.0) -> float:
    """Rank-biased overlap of two rankings, as the ``rbo`` package computes it (what ReasonRank calls):
    ``p < 1``: (1 - p) x sum over depths d of p^(d-1) x overlap@d / d, to the shorter list's depth (no
    extrapolation); ``p = 1``: the plain average of overlap@d / d over the depths, i.e. average overlap, which
    weighs every depth alike rather than favouring the top."""
    if not 0 < p <= 1:
        raise ValueError(f"RBO persistence p must be in (0, 1], got {p}")
    if not ranking and not reference:
        return 1.0
    depth = min(len(ranking), len(reference))
    if depth == 0:
        return 0.0
    seen_a: set[int] = set()
    seen_b: set[int] = set()
    overlap = 0
    total = 0.0
    for d in range(1, depth + 1):
        a, b = ranking[d - 1], reference[d - 1]
        overlap += (a in seen_b) + (b in seen_a) + (a == b)
        seen_a.add(a)
        seen_b.add(b)
        agreement = overlap / d
        total += agreement if p == 1.0 else (1 - p) * p ** (d - 1) * agreement
    return min(1.0, max(0.0, total / depth if p == 1.0 else total))


def multiview_components(completions: Sequence[Completion], relevant: Sequence[Sequence[int]],
                         gold: Sequence[Sequence[int]], rbo_p: float = 1.0) -> dict[str, list[float | None]]:
    """Each part of ReasonRank's reward per completion: nDCG@10 and Recall@10 against ``relevant`` (1-based,
    binary), RBO against ``gold``; None where the format rules decide the reward instead (``valid`` says which:
    -1 broken format, 0 wrong length or duplicates, 1 scored)."""
    if not len(completions) == len(relevant) == len(gold):
        raise ValueError(f"{len(completions)} completions, {len(relevant)} relevant sets, {len(gold)} gold lists")
    valid: list[float | None] = []
    answers: list[list[int] | None] = []
    for completion, reference in zip(completions, gold, strict=True):
        text = completion_text(completion)
        answer = answer_text(text, "think_answer")
        if not strict_format(text) or answer is None:
            valid.append(-1.0)
            answers.append(None)
            continue
        ids = identifiers(answer)
        ok = len(ids) == len(reference) and len(set(ids)) == len(ids) and set(ids) == set(reference)
        valid.append(1.0 if ok else 0.0)
        answers.append(ids if ok else None)
    scored = [i for i, a in enumerate(answers) if a is not None]
    ndcg: list[float | None] = [None] * len(completions)
    recall: list[float | None] = [None] * len(completions)
    overlap: list[float | None] = [None] * len(completions)
    if scored:
        labels = [[1 if n in set(relevant[i]) else 0 for n in range(1, len(gold[i]) + 1)] for i in scored]
        values = window_ndcg(labels, [[n - 1 for n in answers[i]] for i in scored])  # type: ignore[union-attr]
        for i, value in zip(scored, values, strict=True):
            top = set(answers[i][:10])  # type: ignore[index]
            ndcg[i] = value
            recall[i] = len(top & set(relevant[i])) / len(relevant[i]) if relevant[i] else 0.0
            overlap[i] = rbo(answers[i], gold[i], rbo_p)  # type: ignore[arg-type]
    return {"valid": valid, "ndcg10": ndcg, "recall10": recall, "rbo": overlap}


def multiview_reward(completions: Sequence[Completion], relevant: Sequence[Sequence[int]],
                     gold: Sequence[Sequence[int]], ndcg_weight: float = 1.0, recall_weight: float = 0.2,
                     rbo_weight: float = 0.1, rbo_p: float = 1.0, **kwargs: Any) -> list[float]:
    """ReasonRank: nDCG@10 + 0.2 x Recall@10 + 0.1 x RBO(gold) for a well-formed full permutation; -1 for a broken
    ``<think>/<answer>`` format; 0 for an answer of the wrong length or with duplicates."""
    parts = multiview_components(completions, relevant, gold, rbo_p)
    log_components(kwargs, "multiview", {**parts, "valid": [1.0 if v == 1.0 else 0.0 for v in parts["valid"]]})
    rewards = []
    for i, valid in enumerate(parts["valid"]):
        if valid != 1.0:
            rewards.append(float(valid))  # type: ignore[arg-type]
            continue
        rewards.append(ndcg_weight * parts["ndcg10"][i] + recall_weight * parts["recall10"][i]  # type: ignore[operator]
                       + rbo_weight * parts["rbo"][i])  # type: ignore[operator]
    return rewards


def constant_terms(reward: str, recall_weight: float, window: int) -> list[str]:
    """The weighted reward terms that cannot vary on windows of ``window`` passages, each as a sentence (a constant
    term only shifts every reward of a group alike: GRPO's advantages ignore it)."""
    if reward == "multiview" and recall_weight > 0 and window <= 10:
        return [f"Recall@10 is 1 for every valid answer on windows of {window} passages (all of them fit in the top "
                f"10): rewards.recall_weight {recall_weight:g} adds a constant"]
    return []
