"""Training stages: SFT and GRPO on the validated records, each one MLflow run with the trainer's own figures
(loss, learning rate, grad norm, reward and its components, completion lengths, KL per step, through
transformers' MLflow callback) and a metrics file."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rearank_core.config import (
    GRPOTrainConfig,
    Params,
    RewardConfig,
    SFTTrainConfig,
    TrackingConfig,
)
from rearank_core.io.files import atomic_write, write_json
from rearank_core.mlops.tracking import stage_run
from rearank_core.training.export import export_adapter
from rearank_core.training.grpo import run_grpo
from rearank_core.training.sft import run_sft


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """The trainer's per-step log as CSV (one row per logged step, the final summary row left out): what
    ``dvc plots`` draws."""
    rows = [row for row in history if "train_runtime" not in row]
    columns = ["step"] + sorted({key for row in rows for key in row} - {"step"})
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _tracked(tracking: TrackingConfig, stage: str, params: dict[str, Any], metrics_out: str | Path | None,
             history_out: str | Path | None, train: Callable[[list[str] | None], dict[str, Any]]) -> dict[str, Any]:
    with stage_run(tracking, stage) as tracked:
        # Prefixed: the trainer's MLflow callback logs its own arguments (learning_rate, ...) as params.
        tracked.params({f"rearank.{k}": v for k, v in params.items()})
        figures = train(["mlflow"] if tracking.enabled else None)
        history = figures.pop("history")
        if history_out is not None:
            write_history(history, history_out)
            tracked.artifact(history_out)
        if metrics_out is not None:
            write_json(metrics_out, figures)
            tracked.artifact(metrics_out)
        prefix = stage.removeprefix("train-")
        tracked.metrics({f"{prefix}_{k}": v for k, v in figures.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return figures


def train_sft_stage(records: str | Path, output_dir: str | Path, cfg: SFTTrainConfig, tracking: TrackingConfig,
                    model_cache: str | Path, metrics_out: str | Path | None = None,
                    history_out: str | Path | None = None) -> dict[str, Any]:
    """Cold-start SFT (objective first: FIRST's, MLflow run ``train-first``); a rerun resumes from the last
    checkpoint in ``output_dir``."""
    params = {f"sft.{k}": v for k, v in asdict(cfg).items()} | {"records": str(records)}
    stage = "train-first" if cfg.objective == "first" else "train-sft"
    return _tracked(tracking, stage, params, metrics_out, history_out,
                    lambda report_to: run_sft(cfg, records, output_dir, model_cache, report_to))


def train_grpo_stage(records: str | Path, output_dir: str | Path, cfg: GRPOTrainConfig, weights: RewardConfig,
                     tracking: TrackingConfig, model_cache: str | Path,
                     metrics_out: str | Path | None = None, history_out: str | Path | None = None) -> dict[str, Any]:
    """GRPO; a rerun resumes from the last checkpoint in ``output_dir``."""
    params = ({f"grpo.{k}": v for k, v in asdict(cfg).items()} | {f"rewards.{k}": v for k, v in asdict(weights).items()}
              | {"records": str(records)})
    return _tracked(tracking, "train-grpo", params, metrics_out, history_out,
                    lambda report_to: run_grpo(cfg, weights, records, output_dir, model_cache, report_to))


def _read_json(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def export_stage(model_dir: str | Path, dest: str | Path, params: Params, tracking: TrackingConfig,
                 schedule: str = "") -> dict[str, Any]:
    """Ship the trained adapter: copied to ``dest`` with a training card made of the trainers' figures (every JSON
    beside ``train_job.sft_metrics``, so continued runs are listed too), the profile's settings, ``schedule`` (the
    commands as run, where they differ from params.yaml) and the trained model's evaluation on the pipeline's suite
    (``<suite.metrics>/<suite.name>/trained.json``), where they exist."""
    job = params.job("train_job")
    folder = Path(job.sft_metrics).parent
    figures = {path.stem: _read_json(path) for path in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    settings = {"rerank": {k: getattr(params.rerank, k) for k in ("prompt", "window", "step", "max_new_tokens",
                                                                  "truncate_unit", "truncate_length")},
                "data": {k: getattr(params.data, k) for k in ("window", "per_query", "truncate_unit",
                                                              "truncate_length")},
                "teacher": params.teacher.model, "sft": asdict(params.sft), "grpo": asdict(params.grpo),
                "rewards": asdict(params.rewards)}
    evaluation = _read_json(params.suite.report("trained"))
    with stage_run(tracking, "train-export") as tracked:
        report = export_adapter(model_dir, dest, figures, settings, evaluation, schedule)
        tracked.params({"model_dir": str(model_dir), "dest": str(dest), "base": report["base"]})
        tracked.metrics({"adapter_bytes": report["bytes"]})
        tracked.artifact(Path(dest) / "README.md")
    return report
