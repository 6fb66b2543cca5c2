"""The main job on the embedded default (what the README's first command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from rearank_core.config import BM25Config, DemoConfig, EvalConfig, TrackingConfig, section
from rearank_core.evaluation import evaluate
from rearank_core.formats.requests import read_candidates
from rearank_core.formats.trec import read_qrels, read_run
from rearank_core.records import requests_to_run
from rearank_core.rerank import RerankConfig, RerankSummary
from rearank_core.stages import evaluate_stage, index_stage, rerank_stage, retrieve_stage


def run_demo(workdir: str | Path, params: dict[str, Any], params_path: str | Path = "params.yaml",
             show_progress: bool = True, console: Console | None = None) -> tuple[dict[str, dict[str, float]], RerankSummary]:
    """BM25 baseline on BEIR SciFact (index, retrieve, evaluate), then a DL19 slice reranked with the configured
    model (the embedded one by default). Returns {row label: metrics} and the rerank summary."""
    console = console or Console(stderr=True)
    demo = section(params, "demo", DemoConfig, params_path)
    bm25 = section(params, "bm25", BM25Config, params_path)
    evaluation = section(params, "evaluate", EvalConfig, params_path)
    tracking = section(params, "tracking", TrackingConfig, params_path)
    work = Path(workdir)
    stats = index_stage(demo.corpus, work / "scifact" / "index", threads=bm25.threads, show_progress=show_progress)
    console.print(f"indexed {stats.documents} SciFact documents in {stats.seconds:.1f} s")
    run_path = work / "scifact" / "bm25.trec"
    retrieved = retrieve_stage(work / "scifact" / "index", demo.topics, run_path, bm25,
                               candidates_out=work / "scifact" / "bm25.candidates.jsonl", show_progress=show_progress)
    console.print(f"retrieved top-{bm25.k} for {retrieved.queries} queries")
    result = evaluate_stage(run_path, demo.qrels, evaluation, tracking, metrics_out=work / "scifact" / "metrics.json",
                            name="scifact")
    rows = {f"BM25 SciFact k1={bm25.k1:g} b={bm25.b:g}": result.metrics}

    rerank = section(params, "rerank", RerankConfig, params_path)
    rerank.top_k = demo.rerank_top_k
    slice_dir = work / "dl19-slice"
    requests = read_candidates(demo.rerank_candidates)[: demo.rerank_queries]
    qrels = read_qrels(demo.rerank_qrels)
    console.print(f"reranking the top-{rerank.top_k} of {len(requests)} DL19 queries with model '{rerank.model}' "
                  f"({rerank.backend}, prompt {rerank.prompt})")
    summary = rerank_stage(demo.rerank_candidates, slice_dir / "rerank.trec", rerank, traces_out=slice_dir / "traces.jsonl",
                           limit=demo.rerank_queries, show_progress=show_progress)
    label = f"DL19 first {len(requests)} queries, top-{rerank.top_k}"
    rows[f"BM25 {label}"] = evaluate(requests_to_run(requests), qrels).metrics
    rows[f"reranked {label}"] = evaluate(read_run(slice_dir / "rerank.trec"), qrels).metrics
    return rows, summary
