"""The main job on the embedded default (what the README's first command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from rearank_core.config import BM25Config, DemoConfig, EvalConfig, TrackingConfig, section
from rearank_core.stages import evaluate_stage, index_stage, retrieve_stage


def run_demo(workdir: str | Path, params: dict[str, Any], params_path: str | Path = "params.yaml",
             show_progress: bool = True, console: Console | None = None) -> dict[str, dict[str, float]]:
    """BM25 baseline on BEIR SciFact: index, retrieve top-k, evaluate. Returns {row label: metrics}."""
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
    return {f"BM25 SciFact k1={bm25.k1:g} b={bm25.b:g}": result.metrics}
