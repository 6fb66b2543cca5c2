"""Prefect flow for the BM25 baseline job: the stage functions and paths of dvc.yaml, from params.yaml."""

from __future__ import annotations

from prefect import flow, task

from flows.server import temporary_server
from rearank_core.config import BM25Config, EvalConfig, TrackingConfig, load_params
from rearank_core.stages import evaluate_stage, index_stage, retrieve_stage


@task(name="index")
def index_task(corpus: str, index_dir: str, threads: int) -> int:
    return index_stage(corpus, index_dir, threads=threads, show_progress=False).documents


@task(name="retrieve")
def retrieve_task(index_dir: str, topics: str, run: str, candidates: str, cfg: BM25Config) -> int:
    return retrieve_stage(index_dir, topics, run, cfg, candidates_out=candidates, show_progress=False).queries


@task(name="evaluate")
def evaluate_task(run: str, qrels: str, metrics_out: str, cfg: EvalConfig, tracking: TrackingConfig,
                  name: str) -> dict[str, float]:
    return evaluate_stage(run, qrels, cfg, tracking, metrics_out=metrics_out, name=name).metrics


@flow(name="bm25-baseline")
def bm25_baseline(params_path: str = "params.yaml") -> dict[str, float]:
    """Index -> retrieve -> evaluate, on the ``baseline`` section's paths (the files dvc.yaml writes)."""
    params = load_params(params_path)
    job = params.job("baseline")
    index_task(job.corpus, job.index, params.bm25.threads)
    retrieve_task(job.index, job.topics, job.run, job.candidates, params.bm25)
    return evaluate_task(job.run, job.qrels, job.metrics, params.evaluate, params.tracking, job.name)


if __name__ == "__main__":
    with temporary_server():
        bm25_baseline()
