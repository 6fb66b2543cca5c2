"""MLflow tracking for every stage, in one place. Stages call ``stage_run``; with tracking off it is a no-op.

Default store: SQLite at ``<project>/mlruns/mlflow.db`` with artifacts in ``<project>/mlruns/artifacts``
(the project folder is the working directory, where params.yaml lives). Set MLFLOW_TRACKING_URI or
``tracking.uri`` in params.yaml to use a server; the environment variable wins, as everywhere in MLflow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rearank_core.config import TrackingConfig
from rearank_core.io.mlflow_store import sqlite_artifact_root
from rearank_core.io.mlflow_store import tracking_uri as store_uri


PARENT_RUN = "REARANK_MLFLOW_PARENT_RUN"  # a pipeline run's id, for the stages it runs in child processes


def metric_key(name: str) -> str:
    """MLflow metric names cannot hold '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def tracking_uri(cfg: TrackingConfig, project: str | Path = ".") -> str:
    """MLflow's convention first: MLFLOW_TRACKING_URI, when set, wins over params.yaml's ``tracking.uri``."""
    return store_uri(cfg.uri, project)


class StageRun:
    """Handle for logging inside one stage's MLflow run."""

    def __init__(self, mlflow: Any | None):
        self._mlflow = mlflow
        self.run_id: str | None = None

    def params(self, values: dict[str, Any]) -> None:
        if self._mlflow:
            self._mlflow.log_params({k: str(v) for k, v in values.items()})

    def metrics(self, values: dict[str, float], suffix: str = "") -> None:
        if self._mlflow:
            self._mlflow.log_metrics({metric_key(k) + suffix: float(v) for k, v in values.items()})

    def artifact(self, path: str | Path) -> None:
        if self._mlflow and Path(path).is_file():
            self._mlflow.log_artifact(str(path))

    def tags(self, values: dict[str, str]) -> None:
        if self._mlflow:
            self._mlflow.set_tags(values)


def log_run_metrics(cfg: TrackingConfig, run_id: str, values: dict[str, float], project: str | Path = ".") -> None:
    """Metrics onto an existing run by id (e.g. the pipeline's run, from whichever thread runs a stage)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(cfg, project))
    for key, value in values.items():
        client.log_metric(run_id, metric_key(key), float(value))


@contextmanager
def stage_run(cfg: TrackingConfig, stage: str, project: str | Path = ".") -> Iterator[StageRun]:
    """An MLflow run named after the stage, nested when a pipeline run is active in this process or named by
    REARANK_MLFLOW_PARENT_RUN (the pipeline runs each stage in a child process)."""
    if not cfg.enabled:
        yield StageRun(None)
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri(cfg, project)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        mlflow.create_experiment(cfg.experiment, artifact_location=sqlite_artifact_root(uri))
    mlflow.set_experiment(cfg.experiment)
    parent = None if mlflow.active_run() else os.environ.get(PARENT_RUN)
    with mlflow.start_run(run_name=stage, nested=mlflow.active_run() is not None or parent is not None,
                          parent_run_id=parent) as run:
        handle = StageRun(mlflow)
        handle.run_id = run.info.run_id
        mlflow.set_tag("rearank.stage", stage)
        yield handle
