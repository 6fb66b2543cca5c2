"""The end-to-end pipeline flow (README command 1's job) on a tiny profile, under `prefect_test_harness`: every stage
runs, the trained model is registered with its metrics (BRIGHT recorded as not evaluated) and promoted; `dvc
repro` then finds everything up to date; a rerun skips every stage; a stage that fails leaves the earlier
outputs intact and the next run resumes from there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import BIN
from test_pipeline import make_project, project_env

pytestmark = pytest.mark.integration

DL19 = {"name": "dl19", "candidates": "data/msmarco/dl19/rank_llm_BM25_retrieve_results_dl19.json",
        "qrels": "data/msmarco/dl19/qrels.dl19-passage.txt", "top_k": 10, "queries": 2}
BRIGHT = {"name": "bright_biology_reasonir", "bright": "biology", "first_stage": "reasonir",
          "run": "data/bright/runs/reasonir/biology.trec", "top_k": 10, "queries": 2}
STAGES = {"index", "retrieve", "evaluate", "augment", "teacher", "filter", "build", "validate", "sft", "grpo",
          "evaluate_untrained", "evaluate_trained", "register", "promote"}


def finished(log: str, how: str) -> set[str]:
    """The stages the flow's log reports as ``done`` or ``cached``."""
    return set(re.findall(rf"- (\w+): {how}", log))


def tiny_project(tmp_path: Path, root: Path, model_cache: Path, tiny_dir: Path) -> Path:
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", root, model_cache, data={"per_query": 1, "window": 5})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rerank"].update(window=5, step=5, max_new_tokens=8)
    params["sft"].update(model=str(tiny_dir), max_steps=1, grad_accum=1, save_steps=1)
    params["grpo"].update(max_steps=1, num_generations=2, max_completion_length=8, limit=2, save_steps=1)
    params["train_job"]["untrained"] = str(tiny_dir)
    params["suite"].update(name="tiny", bright_root=str(tmp_path / "no-bright-here"))
    params["suites"] = [{"name": "tiny", "datasets": [DL19, BRIGHT]}]
    params["registry"]["name"] = "tiny-reranker"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qam", "tiny profile"], cwd=project, check=True)
    return project


def run_pipeline(project: Path, call: str = "main()") -> subprocess.CompletedProcess:
    code = ("from prefect.testing.utilities import prefect_test_harness\n"
            "from flows.pipeline import main, pipeline\n"
            f"with prefect_test_harness(server_startup_timeout=120):\n    {call}\n")
    return subprocess.run([sys.executable, "-c", code], cwd=project, env=project_env(project), capture_output=True,
                          text=True, timeout=1800)


def test_pipeline_flow_registers_promotes_and_leaves_dvc_up_to_date(tmp_path: Path, root: Path, model_cache: Path,
                                                                    tiny_dir: Path) -> None:
    project = tiny_project(tmp_path, root, model_cache, tiny_dir)
    first = run_pipeline(project)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-4000:]
    assert finished(log, "done") == STAGES, log[-4000:]
    assert "not evaluated" in first.stdout and "champion" in first.stdout and "mlflow ui" in first.stdout

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("tiny-reranker", "champion")
    trained = json.loads((project / "metrics" / "eval" / "tiny" / "trained.json").read_text())
    assert float(champion.tags["ndcg_at_10_dl19"]) == round(trained["datasets"]["dl19"]["reranked"]["ndcg@10"], 6)
    assert champion.tags["ndcg_at_10_bright_biology_reasonir"].startswith("not evaluated")
    assert champion.tags["profile"] == "params.yaml" and champion.tags["data_md5_sft"]
    pipeline_run = client.search_runs([client.get_experiment_by_name("rearank").experiment_id],
                                      "tags.`rearank.stage` = 'register'")[0]
    assert pipeline_run.data.tags.get("mlflow.parentRunId"), "stage runs nest under the pipeline's run"

    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=project, env=project_env(project),
                            capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout, status.stdout

    again = run_pipeline(project)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert finished(again.stdout + again.stderr, "cached") == STAGES

    # A stage that fails keeps what came before; the next run resumes at that stage.
    sft_metrics = (project / "metrics" / "train" / "sft.json").read_bytes()
    shutil.rmtree(project / "work" / "train" / "grpo")
    failed = run_pipeline(project, 'pipeline(overrides={"grpo.model": "./work/no-such-model"})')
    assert failed.returncode != 0 and "no-such-model" in failed.stdout + failed.stderr
    assert (project / "metrics" / "train" / "sft.json").read_bytes() == sft_metrics
    assert (project / "work" / "train" / "sft" / "adapter_config.json").is_file()
    resumed = run_pipeline(project, 'pipeline(stages=["sft", "grpo"])')
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert "sft: cached" in log and "grpo: done" in log
    assert (project / "work" / "train" / "grpo" / "adapter_config.json").is_file()
