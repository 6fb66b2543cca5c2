"""Sliding windows over a ranked list, back to front (the best passages bubble up to the top)."""

from __future__ import annotations

from rearank_core.errors import InputError


def check_window(window: int, step: int) -> None:
    if window < 2:
        raise InputError(f"window must be at least 2 passages, got {window}", field="window")
    if step < 1:
        raise InputError(f"step must be at least 1, got {step} (step 0 would never move the window)", field="step")
    if step > window:
        raise InputError(f"step ({step}) larger than the window ({window}) would leave passages never ranked", field="step")


def window_spans(length: int, window: int = 20, step: int = 10, top_k: int = 100) -> list[tuple[int, int]]:
    """[start, end) spans in processing order over the first ``min(top_k, length)`` items.

    The first window ends at the last ranked item; each next one moves ``step`` towards the top; the last
    starts at 0. A list shorter than the window gets one window (REARANK's code gets none); items past
    ``top_k`` are never touched. 100 items, 20/10 -> 9 windows; 30 -> 2; 15 -> 1."""
    check_window(window, step)
    if top_k < 1:
        raise InputError(f"top-k must be at least 1, got {top_k}", field="top_k")
    end = min(top_k, length)
    if end < 2:
        return []
    spans = []
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step
