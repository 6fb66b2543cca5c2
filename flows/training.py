"""Prefect flow for the training job: SFT -> GRPO -> evaluate the trained model on the suite, with the stage
functions and paths of dvc.yaml's sft and grpo stages, from params.yaml. A rerun resumes each trainer from its last
checkpoint and the evaluation from its traces."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.server import temporary_server
from rearank_core.config import Params, TrainJob, load_params, override
from rearank_core.stages.evaluate_model import evaluate_model_stage
from rearank_core.stages.train import train_grpo_stage, train_sft_stage


@task(name="sft")
def sft_task(job: TrainJob, params: Params) -> dict[str, Any]:
    return train_sft_stage(params.job("data_job").sft, job.sft_dir, params.sft, params.tracking,
                           params.rerank.model_cache, job.sft_metrics, job.sft_history)


@task(name="grpo")
def grpo_task(job: TrainJob, params: Params) -> dict[str, Any]:
    return train_grpo_stage(params.job("data_job").grpo, job.grpo_dir, params.grpo, params.rewards, params.tracking,
                            params.rerank.model_cache, job.grpo_metrics, job.grpo_history)


@task(name="evaluate-model")
def evaluate_task(model: str, label: str, params: Params) -> dict[str, Any]:
    cfg = override(params.rerank, "rerank", model=model)
    return evaluate_model_stage(label, params.evaluation_suite(), params.suite, cfg, params.evaluate, params.tracking,
                                params.bm25, show_progress=False)


@flow(name="training")
def training(params_path: str = "params.yaml", sft: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Cold-start SFT (skipped with ``sft=False``: GRPO then starts from ``grpo.model`` as it is), GRPO, and the
    trained model's evaluation suite."""
    params = load_params(params_path)
    job = params.job("train_job")
    figures: dict[str, Any] = {}
    if sft:
        figures["sft"] = sft_task(job, params)
    figures["grpo"] = grpo_task(job, params)
    if evaluate:
        figures["evaluation"] = evaluate_task(job.grpo_dir, "trained", params)
    return figures


if __name__ == "__main__":
    with temporary_server():
        training()
