"""Stage functions of the BM25 baseline: files in, files out, figures returned.

The CLI (and so ``dvc.yaml``), the Prefect flows and Python callers all run these same functions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rearank_core.config import BM25Config, EvalConfig, TrackingConfig
from rearank_core.errors import InputError
from rearank_core.evaluation import Evaluation, evaluate
from rearank_core.fileio import atomic_write
from rearank_core.formats.auto import read_any_qrels, read_any_topics
from rearank_core.formats.collection import corpus_files, iter_corpus
from rearank_core.formats.requests import read_candidates, write_requests
from rearank_core.formats.trec import check_run_queries, read_exclusions, read_run, write_run
from rearank_core.records import results_to_run
from rearank_core.rerank import RerankConfig, Reranker, RerankSummary
from rearank_core.retrieval import IndexStats, bm25_run, build_index
from rearank_core.tracking import stage_run


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


def evaluate_stage(run_path: str | Path, qrels_path: str | Path, cfg: EvalConfig, tracking: TrackingConfig,
                   exclude: str | Path | None = None, topics: str | Path | None = None,
                   metrics_out: str | Path | None = None, name: str = "") -> Evaluation:
    """Score a run; write the metrics JSON (a DVC metrics file) and log params and metrics to MLflow."""
    run = read_run(run_path)
    if topics is not None:
        check_run_queries(run, read_any_topics(topics), run_path, topics)
    qrels = read_any_qrels(qrels_path)
    excluded = read_exclusions(exclude) if exclude is not None else None
    result = evaluate(run, qrels, cfg.metrics, cfg.rel_level, excluded)
    if metrics_out is not None:
        with atomic_write(metrics_out) as handle:
            json.dump(result.to_dict(), handle, indent=2)
            handle.write("\n")
    with stage_run(tracking, f"evaluate{'-' + name if name else ''}") as tracked:
        tracked.params({"run": str(run_path), "qrels": str(qrels_path), "rel_level": cfg.rel_level,
                        "exclude": str(exclude) if exclude else "", "dataset": name})
        tracked.metrics(result.metrics)
        tracked.metrics({"queries_evaluated": result.queries_evaluated})
        if metrics_out is not None:
            tracked.artifact(metrics_out)
    return result


def rerank_stage(candidates: str | Path, run_out: str | Path, cfg: RerankConfig, traces_out: str | Path | None = None,
                 resume: bool = False, limit: int | None = None, show_progress: bool = True,
                 reranker: Reranker | None = None) -> RerankSummary:
    """Rerank a candidates file (rank_llm JSONL or RankGPT retrieve-results JSON) into a TREC run, with a trace
    line per window. The run is written only once every query is done; traces are kept as windows finish."""
    requests = read_candidates(candidates)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}", field="limit")
        requests = requests[:limit]
    reranker = reranker or Reranker(cfg)
    results, summary = reranker.rerank(requests, traces_path=traces_out, resume=resume, show_progress=show_progress)
    write_run(run_out, results_to_run(results), tag=f"rearank-{cfg.prompt}")
    return summary
