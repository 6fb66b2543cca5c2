"""The pipeline's stages by their dvc.yaml names, each what its stage's command does, on params: what the
pipeline flow runs in each stage's child process (this module imports the library only, so a child starts in a
second rather than importing Prefect too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rearank_core.config import Params, override
from rearank_core.stages.bm25 import index_stage, retrieve_stage
from rearank_core.stages.data import (
    augment_stage,
    build_stage,
    filter_stage,
    teacher_stage,
    validate_stage,
)
from rearank_core.stages.evaluate import evaluate_stage
from rearank_core.stages.evaluate_model import evaluate_model_stage
from rearank_core.stages.registry import promote_stage, register_stage, registered_version
from rearank_core.stages.train import train_grpo_stage, train_sft_stage


def _validate(params: Params) -> dict[str, int]:
    job = params.job("data_job")
    files = {"windows": job.windows, "teacher": job.filtered, "sft": job.sft, "grpo": job.grpo}
    counts = {}
    for kind, path in files.items():
        report = validate_stage(path, kind, params.data, params.tracking, params.rerank.model_cache,
                                f"{job.reports}/{kind}", job.verdict)
        if not report.success:
            raise RuntimeError(f"{path}: validation failed\n{report.summary()}")
        counts[kind] = report.records
    return counts


def _evaluate(params: Params, model: str, label: str, mode: str | None = None) -> dict[str, Any]:
    cfg = override(params.rerank, "rerank", model=model, mode=mode)
    return evaluate_model_stage(label, params.evaluation_suite(), params.suite, cfg, params.evaluate,
                                params.tracking, params.bm25, show_progress=True)


def _register(params: Params) -> dict[str, Any]:
    job = params.job("train_job")
    data = {kind: getattr(params.job("data_job"), kind) for kind in ("sft", "grpo")}
    return register_stage(job.grpo_dir, params.suite.report("trained"), params.registry, params.rerank,
                          params.tracking, params.path, data, job.registered)


def _promote(params: Params) -> dict[str, Any]:
    job = params.job("train_job")
    decision = promote_stage(params.registry, params.tracking, registered_version(job.registered),
                             state_out=job.promoted)
    return decision.to_dict()


# The pipeline's stages in order: dvc.yaml's stage name -> what its command does.
STAGES: dict[str, Callable[[Params], Any]] = {
    "index": lambda p: index_stage(p.job("baseline").corpus, p.job("baseline").index, threads=p.bm25.threads,
                                   show_progress=True).documents,
    "retrieve": lambda p: retrieve_stage(p.job("baseline").index, p.job("baseline").topics, p.job("baseline").run,
                                         p.bm25, candidates_out=p.job("baseline").candidates,
                                         show_progress=True).queries,
    "evaluate": lambda p: evaluate_stage(p.job("baseline").run, p.job("baseline").qrels, p.evaluate, p.tracking,
                                         metrics_out=p.job("baseline").metrics, name=p.job("baseline").name).metrics,
    "augment": lambda p: augment_stage(p.data.sources, p.job("data_job").windows, p.data, p.tracking,
                                       p.job("data_job").cards).kept,
    "teacher": lambda p: teacher_stage(p.job("data_job").windows, p.job("data_job").teacher, p.teacher, p.tracking,
                                       p.job("data_job").cards).to_dict(),
    "filter": lambda p: filter_stage(
        p.job("data_job").teacher, p.job("data_job").filtered, p.filter, p.tracking, p.job("data_job").cards,
        windows=p.job("data_job").windows if p.filter.min_gold_ndcg is not None else None).kept,
    "build": lambda p: build_stage(p.job("data_job").windows, p.job("data_job").sft, p.job("data_job").grpo, p.data,
                                   p.tracking, p.job("data_job").cards, p.rerank.model_cache,
                                   teacher=p.job("data_job").filtered),
    "validate": _validate,
    "sft": lambda p: train_sft_stage(p.job("data_job").sft, p.job("train_job").sft_dir, p.sft, p.tracking,
                                     p.rerank.model_cache, p.job("train_job").sft_metrics,
                                     p.job("train_job").sft_history),
    "grpo": lambda p: train_grpo_stage(p.job("data_job").grpo, p.job("train_job").grpo_dir, p.grpo, p.rewards,
                                       p.tracking, p.rerank.model_cache, p.job("train_job").grpo_metrics,
                                       p.job("train_job").grpo_history),
    "sft_first": lambda p: train_sft_stage(p.job("data_job").windows, p.job("train_job").first_dir,
                                           p.job("sft_first"), p.tracking, p.rerank.model_cache,
                                           p.job("train_job").first_metrics, p.job("train_job").first_history),
    "evaluate_untrained": lambda p: _evaluate(p, p.job("train_job").untrained, "untrained"),
    "evaluate_trained": lambda p: _evaluate(p, p.job("train_job").grpo_dir, "trained"),
    "evaluate_first": lambda p: _evaluate(p, p.job("train_job").first_dir, "first", mode="first"),
    "register": _register,
    "promote": _promote,
}


# The FIRST model's stages: `dvc repro` and the flow's pipeline() run them; README command 1 (flows.pipeline.main)
# leaves them out, as its 30-minute budget in float32 has no room for them.
FIRST_STAGES = ("sft_first", "evaluate_first")


def run_named_stage(name: str, params: Params) -> Any:
    """One stage by its dvc.yaml name (a stage's child process runs this)."""
    return STAGES[name](params)
