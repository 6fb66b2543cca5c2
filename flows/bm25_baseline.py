"""Prefect flow for the BM25 baseline: the same stage functions and output paths as dvc.yaml."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from rearank_core.config import BM25Config, EvalConfig, TrackingConfig, load_params, section
from rearank_core.stages import evaluate_stage, index_stage, retrieve_stage


@task(name="index")
def index_task(corpus: str, index_dir: str, threads: int) -> int:
    return index_stage(corpus, index_dir, threads=threads, show_progress=False).documents


@task(name="retrieve")
def retrieve_task(index_dir: str, topics: str, run: str, candidates: str, cfg: BM25Config) -> int:
    return retrieve_stage(index_dir, topics, run, cfg, candidates_out=candidates, show_progress=False).queries


@task(name="evaluate")
def evaluate_task(run: str, qrels: str, metrics_out: str, cfg: EvalConfig, tracking: TrackingConfig, name: str) -> dict[str, float]:
    return evaluate_stage(run, qrels, cfg, tracking, metrics_out=metrics_out, name=name).metrics


@flow(name="bm25-baseline")
def bm25_baseline(
    params_path: str = "params.yaml",
    corpus: str = "data/beir/scifact/corpus.jsonl",
    topics: str = "data/beir/scifact/queries.test.jsonl",
    qrels: str = "data/beir/scifact/qrels/test.tsv",
    workdir: str = "work/scifact",
    metrics_out: str = "metrics/scifact_bm25.json",
    name: str = "scifact",
) -> dict[str, float]:
    """Index -> retrieve -> evaluate; defaults mirror dvc.yaml so both write the same files."""
    params = load_params(params_path)
    bm25 = section(params, "bm25", BM25Config, params_path)
    work = Path(workdir)
    index_task(corpus, str(work / "index"), bm25.threads)
    retrieve_task(str(work / "index"), topics, str(work / "bm25.trec"), str(work / "bm25.candidates.jsonl"), bm25)
    return evaluate_task(str(work / "bm25.trec"), qrels, metrics_out, section(params, "evaluate", EvalConfig, params_path),
                         section(params, "tracking", TrackingConfig, params_path), name)


if __name__ == "__main__":
    print(bm25_baseline())
