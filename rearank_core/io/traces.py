"""Trace files: one JSON line per reranked window (``WindowTrace``), appended as windows finish."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import IO

from rearank_core.errors import InputError
from rearank_core.io.files import iter_jsonl
from rearank_core.records import WindowTrace


def read_traces(path: str | Path) -> list[WindowTrace]:
    names = WindowTrace.__slots__  # type: ignore[attr-defined]
    required = [f.name for f in fields(WindowTrace) if f.default is MISSING]
    traces = []
    for number, obj in iter_jsonl(path):
        missing = [n for n in required if n not in obj]
        if missing:
            raise InputError("missing", path, number, missing[0])
        traces.append(WindowTrace(**{n: obj[n] for n in names if n in obj}))
    return traces


def write_trace(sink: IO[str], trace: WindowTrace) -> None:
    """Append one trace line and flush it, so a crash loses no finished window."""
    sink.write(json.dumps(trace.to_dict(), ensure_ascii=False) + "\n")
    sink.flush()
