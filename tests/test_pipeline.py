"""The three drivers produce the same files: `dvc repro` and the Prefect flow (run offline on a temporary
local Prefect server), with the evaluate stage's metrics landing in MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Path:
    """A fresh git+DVC project holding the pipeline files and the SciFact data."""
    dest = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(root / name, dest / name)
    shutil.copytree(root / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(root / "data" / "beir" / "scifact", dest / "data" / "beir" / "scifact")
    shutil.copytree(root / "flows", dest / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".gitignore").write_text("work/\nmlruns/\n.prefect/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=dest, check=True)
    return dest


def _env(project: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_HOME": str(project / ".prefect"),
            "PYTHONPATH": str(project), "MLFLOW_TRACKING_URI": ""}


def _mlflow_metrics(project: Path) -> list[dict[str, float]]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rearank")
    runs = client.search_runs([experiment.experiment_id], "tags.`rearank.stage` = 'evaluate-scifact'")
    return [r.data.metrics for r in runs]


def test_dvc_repro_and_prefect_flow_write_the_same_run(project: Path) -> None:
    env = _env(project)
    subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=project, env=env, check=True)
    dvc_run = (project / "work" / "scifact" / "bm25.trec").read_bytes()
    dvc_metrics = json.loads((project / "metrics" / "scifact_bm25.json").read_text())
    assert dvc_metrics["ndcg@10"] == pytest.approx(0.679, abs=0.005)
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=project, env=env, check=True, capture_output=True, text=True)
    assert "up to date" in status.stdout

    shutil.rmtree(project / "work")
    (project / "metrics" / "scifact_bm25.json").unlink()
    flow = subprocess.run([sys.executable, "-c", "from flows.bm25_baseline import bm25_baseline; bm25_baseline()"],
                          cwd=project, env=env, capture_output=True, text=True)
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert "Finished in state Completed" in flow.stdout + flow.stderr
    assert (project / "work" / "scifact" / "bm25.trec").read_bytes() == dvc_run
    assert json.loads((project / "metrics" / "scifact_bm25.json").read_text()) == dvc_metrics

    tracked = _mlflow_metrics(project)
    assert len(tracked) == 2  # one from dvc repro's evaluate stage, one from the flow
    for metrics in tracked:
        assert metrics["ndcg_at_10"] == pytest.approx(dvc_metrics["ndcg@10"], abs=1e-4)
        assert metrics["queries_evaluated"] == 300
