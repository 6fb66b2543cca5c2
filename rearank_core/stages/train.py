"""Training stages: SFT (and, next, GRPO) on the validated records, each one MLflow run with the trainer's
own figures (loss, learning rate, grad norm per step, through transformers' MLflow callback) and a metrics file."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rearank_core.config import SFTTrainConfig, TrackingConfig
from rearank_core.io.files import atomic_write
from rearank_core.mlops.tracking import stage_run
from rearank_core.training.sft import run_sft


def train_sft_stage(records: str | Path, output_dir: str | Path, cfg: SFTTrainConfig, tracking: TrackingConfig,
                    model_cache: str | Path, metrics_out: str | Path | None = None) -> dict[str, Any]:
    """Cold-start SFT; a rerun resumes from the last checkpoint in ``output_dir``."""
    with stage_run(tracking, "train-sft") as tracked:
        # Prefixed: the trainer's MLflow callback logs its own arguments (learning_rate, ...) as params.
        tracked.params({f"rearank.sft.{k}": v for k, v in asdict(cfg).items()} | {"rearank.records": str(records)})
        figures = run_sft(cfg, records, output_dir, model_cache, report_to=["mlflow"] if tracking.enabled else None)
        if metrics_out is not None:
            with atomic_write(metrics_out) as handle:
                json.dump(figures, handle, indent=2)
                handle.write("\n")
            tracked.artifact(metrics_out)
        tracked.metrics({f"sft_{k}": v for k, v in figures.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return figures
