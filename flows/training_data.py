"""Prefect flow for the training-data job: augment -> teacher -> filter -> build -> validate, with the stage
functions and paths of dvc.yaml's data stages, from params.yaml. A failed validation fails the flow."""

from __future__ import annotations

from prefect import flow, task

from flows.server import temporary_server
from rearank_core.config import (
    DataConfig,
    DataJob,
    FilterConfig,
    Params,
    TeacherConfig,
    TrackingConfig,
    load_params,
)
from rearank_core.errors import InputError
from rearank_core.stages.data import (
    augment_stage,
    build_stage,
    filter_stage,
    teacher_stage,
    validate_stage,
)


@task(name="augment")
def augment_task(job: DataJob, cfg: DataConfig, tracking: TrackingConfig) -> int:
    return augment_stage(cfg.sources, job.windows, cfg, tracking, job.cards).kept


@task(name="teacher", retries=2, retry_delay_seconds=30)  # a teacher server that went away: resume from the journal
def teacher_task(job: DataJob, cfg: TeacherConfig, tracking: TrackingConfig) -> dict[str, object]:
    return teacher_stage(job.windows, job.teacher, cfg, tracking, job.cards).to_dict()


@task(name="filter")
def filter_task(job: DataJob, cfg: FilterConfig, tracking: TrackingConfig) -> int:
    windows = job.windows if cfg.min_gold_ndcg is not None else None
    return filter_stage(job.teacher, job.filtered, cfg, tracking, job.cards, windows=windows).kept


@task(name="build")
def build_task(job: DataJob, params: Params) -> dict[str, object]:
    return build_stage(job.windows, job.sft, job.grpo, params.data, params.tracking, job.cards,
                       params.rerank.model_cache, teacher=job.filtered)


@task(name="validate")
def validate_task(path: str, kind: str, params: Params, report_dir: str, verdict: str) -> int:
    report = validate_stage(path, kind, params.data, params.tracking, params.rerank.model_cache, report_dir, verdict)
    if not report.success:
        raise InputError(f"validation failed:\n{report.summary()}", path)
    return report.records


@flow(name="training-data")
def training_data(params_path: str = "params.yaml") -> dict[str, int]:
    """The default datasets (DL21, gold teacher unless params.yaml names a teacher model), validated."""
    params = load_params(params_path)
    job = params.job("data_job")
    augment_task(job, params.data, params.tracking)
    teacher_task(job, params.teacher, params.tracking)
    filter_task(job, params.filter, params.tracking)
    build_task(job, params)
    files = {"windows": job.windows, "teacher": job.filtered, "sft": job.sft, "grpo": job.grpo}
    return {kind: validate_task(path, kind, params, f"{job.reports}/{kind}", job.verdict) for kind, path in files.items()}


if __name__ == "__main__":
    with temporary_server():
        training_data()
