"""Prefect flows: thin drivers over ``rearank_core.stages``, one per job of params.yaml and one for the whole
pipeline (installed with the ``rearank`` package, so ``python -m flows.pipeline`` works from any folder that
holds a params.yaml and dvc.yaml).

Prefect's state (its SQLite database, task results) stays in the project, under ``.prefect/``, unless
PREFECT_HOME says otherwise; set before Prefect is imported, which reads its settings once."""

import os
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy 2-core machine
