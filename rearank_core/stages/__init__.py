"""Stage functions: typed config in, files in, files out, figures returned, tracked in MLflow.

The CLI (and so ``dvc.yaml``), the Prefect flows in ``flows/`` and Python callers all run these same
functions, so every driver writes the same files."""

from rearank_core.stages.bm25 import RetrieveStats, index_stage, retrieve_stage
from rearank_core.stages.data import (
           augment_stage,
           build_stage,
           filter_stage,
           teacher_stage,
           validate_stage,
)
from rearank_core.stages.demo import run_demo
from rearank_core.stages.evaluate import evaluate_stage
from rearank_core.stages.rerank import rerank_stage
from rearank_core.stages.train import train_grpo_stage, train_sft_stage

__all__ = ["RetrieveStats", "augment_stage", "build_stage", "evaluate_stage", "filter_stage", "index_stage",
           "rerank_stage", "retrieve_stage", "run_demo", "teacher_stage", "train_grpo_stage", "train_sft_stage",
           "validate_stage"]
