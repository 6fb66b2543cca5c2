"""Progress bars (rich) with count, rate and time left; off when disabled or when stderr is not a terminal
(a log file or CI output gets no bar redraws)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.2f} {self.unit}/s" if task.speed else "")


class ProgressHandle:
    def __init__(self, progress: Progress | None = None, task: int | None = None):
        self._progress, self._task = progress, task

    def update(self, advance: float = 1, **fields: object) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=advance, **fields)


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "items", enabled: bool = True,
                 extra: str = "", **fields: object) -> Iterator[ProgressHandle]:
    """``extra`` is a rich format string over task fields, e.g. ``"valid {task.fields[valid]}"``."""
    if not enabled or not sys.stderr.isatty():
        yield ProgressHandle()
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn()]
    if extra:
        columns.append(TextColumn(extra))
    with Progress(*columns, console=Console(stderr=True)) as progress:  # stdout stays clean for --json and pipes
        yield ProgressHandle(progress, progress.add_task(description, total=total, **fields))
