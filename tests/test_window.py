"""Sliding-window spans: counts, coverage and the cases existing implementations get wrong."""

from __future__ import annotations

import pytest

from rearank_core.errors import InputError
from rearank_core.rerank.window import window_spans


@pytest.mark.parametrize(("length", "window", "step", "top_k", "count"), [
    (100, 20, 10, 100, 9), (30, 20, 10, 100, 2), (15, 20, 10, 100, 1), (20, 20, 10, 100, 1),
    (21, 20, 10, 100, 2), (100, 10, 5, 100, 19), (100, 20, 20, 100, 5), (100, 20, 10, 50, 4), (0, 20, 10, 100, 0),
    (1, 20, 10, 100, 0),
])
def test_window_counts(length: int, window: int, step: int, top_k: int, count: int) -> None:
    assert len(window_spans(length, window, step, top_k)) == count


def test_spans_go_back_to_front_and_cover_the_ranked_prefix() -> None:
    spans = window_spans(100)
    assert spans[0] == (80, 100) and spans[-1] == (0, 20)
    assert all(b[1] - a[1] == -10 for a, b in zip(spans, spans[1:]))
    assert set().union(*(range(s, e) for s, e in spans)) == set(range(100))


def test_unaligned_length_still_ends_at_the_top() -> None:
    assert window_spans(30) == [(10, 30), (0, 20)]
    assert window_spans(25) == [(5, 25), (0, 15)]


def test_top_k_below_list_length_leaves_the_tail_alone() -> None:
    spans = window_spans(100, top_k=30)
    assert spans == [(10, 30), (0, 20)]
    assert max(e for _, e in spans) == 30


@pytest.mark.parametrize(("window", "step", "says"), [(20, 0, "step"), (20, 21, "larger"), (1, 1, "window"), (20, -1, "step")])
def test_bad_settings_are_errors(window: int, step: int, says: str) -> None:
    with pytest.raises(InputError, match=says):
        window_spans(100, window, step)
