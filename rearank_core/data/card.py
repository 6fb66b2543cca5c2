"""Dataset cards: one JSON (a DVC metrics file, logged to MLflow) and one markdown page per dataset."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rearank_core.backends.base import hf_chat_ids
from rearank_core.io.files import atomic_write, write_json
from rearank_core.records import Messages


def length_stats(lengths: list[int]) -> dict[str, float] | None:
    """min / mean / p50 / p95 / max of token lengths; None for no records (not computed, never 0)."""
    if not lengths:
        return None
    ordered = sorted(lengths)
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 1), "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}


def token_lengths(tokenizer: Any, prompts: list[Messages], completions: list[str] | None = None) -> dict[str, Any]:
    """Prompt lengths as the model sees them (chat template with the generation prompt) and completion lengths."""
    prompt = [len(ids) for ids in hf_chat_ids(tokenizer, prompts)]
    out: dict[str, Any] = {"prompt_tokens": length_stats(prompt)}
    if completions is not None:
        done = [len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"]] if completions else []
        out["completion_tokens"] = length_stats(done)
    return out


def _markdown(title: str, card: dict[str, Any], depth: int = 0) -> list[str]:
    lines = [f"# Dataset card: {title}", ""] if depth == 0 else []
    for key, value in card.items():
        if isinstance(value, dict):
            lines.append(f"{'  ' * depth}- **{key}**:")
            lines += _markdown(title, value, depth + 1)
        else:
            shown = "not computed" if value is None else value
            lines.append(f"{'  ' * depth}- **{key}**: {shown}")
    return lines


def write_card(folder: str | Path, name: str, card: dict[str, Any]) -> Path:
    """``<folder>/<name>.json`` and ``<name>.md``, each written atomically; returns the JSON path."""
    folder = Path(folder)
    write_json(folder / f"{name}.json", card)
    with atomic_write(folder / f"{name}.md") as handle:
        handle.write("\n".join(_markdown(name, card)) + "\n")
    return folder / f"{name}.json"
