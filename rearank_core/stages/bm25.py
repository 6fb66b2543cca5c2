"""Stages of the BM25 baseline: build a Lucene index, retrieve the top-k with passage text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rearank_core.config import BM25Config
from rearank_core.io.auto import read_any_topics
from rearank_core.io.collection import corpus_files, iter_corpus
from rearank_core.io.requests import write_requests
from rearank_core.io.trec import write_run
from rearank_core.retrieval.bm25 import IndexStats, bm25_run, build_index


def _count_lines(files: list[Path]) -> int:
    import gzip

    total = 0
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def index_stage(corpus: str | Path, index_dir: str | Path, threads: int = 2, show_progress: bool = True) -> IndexStats:
    """Index a BEIR corpus or JsonCollection (file or folder) into a Lucene index at ``index_dir``."""
    total = _count_lines(corpus_files(corpus))
    return build_index(iter_corpus(corpus), index_dir, threads=threads, total=total, show_progress=show_progress)


@dataclass(frozen=True)
class RetrieveStats:
    queries: int
    hits: int
    queries_without_hits: list[str]


def retrieve_stage(index_dir: str | Path, topics: str | Path, run_out: str | Path, cfg: BM25Config,
                   candidates_out: str | Path | None = None, show_progress: bool = True) -> RetrieveStats:
    """BM25 top-k for every topic: a TREC run and, optionally, the candidates file with passage text."""
    queries = read_any_topics(topics)
    run, requests = bm25_run(index_dir, queries, k=cfg.k, k1=cfg.k1, b=cfg.b, threads=cfg.threads,
                             with_text=candidates_out is not None, show_progress=show_progress)
    write_run(run_out, run, tag="bm25")
    if candidates_out is not None:
        write_requests(candidates_out, requests)
    return RetrieveStats(len(queries), sum(len(r) for r in run.values()), [q for q, r in run.items() if not r])
