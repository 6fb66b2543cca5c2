"""Prefect flow for the rerank job: a candidates slice reranked (the embedded model by default) and evaluated,
with the stage functions and paths of dvc.yaml's rerank and evaluate_rerank stages, from params.yaml."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow, task

from flows.server import temporary_server
from rearank_core.config import (
    EvalConfig,
    RerankConfig,
    RerankJob,
    TrackingConfig,
    load_params,
)
from rearank_core.stages import evaluate_stage, rerank_stage


@task(name="rerank")
def rerank_task(job: RerankJob, cfg: RerankConfig, tracking: TrackingConfig) -> dict[str, object]:
    return rerank_stage(job.candidates, job.run, cfg, tracking, traces_out=job.traces, summary_out=job.summary,
                        limit=job.queries, name=job.name, show_progress=False).to_dict()


@task(name="evaluate")
def evaluate_task(job: RerankJob, cfg: EvalConfig, tracking: TrackingConfig) -> dict[str, float]:
    return evaluate_stage(job.run, job.qrels, cfg, tracking, metrics_out=job.metrics, name=job.name).metrics


@flow(name="rerank-slice")
def rerank_slice(params_path: str = "params.yaml") -> dict[str, float]:
    """Rerank -> evaluate, on the ``rerank_job`` section's slice and paths with the ``rerank`` settings."""
    params = load_params(params_path)
    job = params.job("rerank_job")
    rerank_task(job, replace(params.rerank, top_k=job.top_k), params.tracking)
    return evaluate_task(job, params.evaluate, params.tracking)


if __name__ == "__main__":
    with temporary_server():
        rerank_slice()
