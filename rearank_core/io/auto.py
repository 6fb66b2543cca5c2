"""Topics and qrels in whichever common format a path holds, told apart by name and first line."""

from __future__ import annotations

from pathlib import Path

from rearank_core.io.beir import read_beir_qrels, read_beir_queries
from rearank_core.io.files import iter_lines
from rearank_core.io.trec import read_qrels, read_topics
from rearank_core.records import Qrels, Query


def read_any_topics(path: str | Path) -> list[Query]:
    """BEIR queries JSONL (``*.jsonl``/``*.jsonl.gz``) or TREC ``qid<TAB>text`` topics."""
    name = Path(path).name
    if name.endswith((".jsonl", ".jsonl.gz")):
        return read_beir_queries(path)
    return read_topics(path)


def read_any_qrels(path: str | Path) -> Qrels:
    """BEIR qrels TSV (header ``query-id``, three columns) or TREC four-column qrels."""
    _, first = next(iter_lines(path))
    if first.startswith("query-id") or len(first.split()) == 3:
        return read_beir_qrels(path)
    return read_qrels(path)
