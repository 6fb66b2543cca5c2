"""The end-to-end pipeline flow (README command 1's job) on a tiny profile, under `prefect_test_harness`: every stage
runs, the trained model is registered with its metrics (BRIGHT recorded as not evaluated) and promoted; `dvc
status` then lists only the FIRST model's stages, which the whole pipeline's run adds, after which it is up to date; a rerun skips every stage; params P1 -> P2 -> P1 runs the stage three times; a stage that fails leaves the earlier
outputs intact and the next run resumes from there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from test_pipeline import make_project, project_env

pytestmark = pytest.mark.integration

DL19 = {"name": "dl19", "candidates": "data/msmarco/dl19/rank_llm_BM25_retrieve_results_dl19.json",
        "qrels": "data/msmarco/dl19/qrels.dl19-passage.txt", "top_k": 10, "queries": 2}
BRIGHT = {"name": "bright_biology_reasonir", "bright": "biology", "first_stage": "reasonir",
          "run": "data/bright/runs/reasonir/biology.trec", "top_k": 10, "queries": 2}
MAIN_JOB = {"index", "retrieve", "evaluate", "augment", "teacher", "filter", "build", "validate", "sft", "grpo",
            "evaluate_untrained", "evaluate_trained", "register", "promote"}
FIRST = {"sft_first", "evaluate_first"}  # the FIRST model's stages: dvc repro and pipeline() run them, main() not
STAGES = MAIN_JOB | FIRST


def finished(log: str, how: str) -> set[str]:
    """The stages the flow's log reports as ``done`` or ``cached``."""
    return set(re.findall(rf"- (\w+): {how}", log))


def tiny_project(tmp_path: Path, root: Path, model_cache: Path, tiny_dir: Path) -> Path:
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", root, model_cache, data={"per_query": 1, "window": 5})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rerank"].update(window=5, step=5, max_new_tokens=8)
    params["sft"].update(model=str(tiny_dir), max_steps=1, grad_accum=1, save_steps=1)
    params["sft_first"].update(model=str(tiny_dir), max_steps=1, grad_accum=1, save_steps=1)
    params["grpo"].update(max_steps=1, num_generations=2, max_completion_length=8, limit=2, save_steps=1)
    params["train_job"]["untrained"] = str(tiny_dir)
    params["suite"].update(name="tiny", bright_root=str(tmp_path / "no-bright-here"))
    params["suites"] = [{"name": "tiny", "datasets": [DL19, BRIGHT]}]
    params["registry"].update(name="tiny-reranker", min_queries=2)  # the tiny suite evaluates 2 DL19 queries
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qam", "tiny profile"], cwd=project, check=True)
    return project


# README command 1's main(), then on the same temporary Prefect server (one process, one start-up): `dvc status`, a
# rerun of the whole pipeline (the FIRST stages too) and `dvc status` again, BM25's evaluation with another rel_level and then with params.yaml's again (P1 -> P2 -> P1), sft and grpo
# after a change to the reward code, a run with a missing GRPO model after the GRPO output is
# removed, and a resumed run of sft and grpo. Each part
# starts with a line "=== <part>" in the merged output; the SFT metrics' digest is printed around the failed run.
SCRIPT = """
import hashlib, pathlib, shutil, subprocess, sys
from prefect.testing.utilities import prefect_test_harness
from flows.pipeline import main, pipeline

def part(name):
    print(f"=== {name}", flush=True)

def sft_digest():
    print("sft.json", hashlib.sha256(pathlib.Path("metrics/train/sft.json").read_bytes()).hexdigest(), flush=True)

with prefect_test_harness(server_startup_timeout=120):
    part("first")
    main()
    part("dvc status")
    subprocess.run(["dvc", "status"], check=True)
    part("again")
    pipeline()
    part("dvc status again")
    subprocess.run(["dvc", "status"], check=True)
    part("params changed")
    pipeline(overrides={"evaluate.rel_level": 2}, stages=["evaluate"])
    part("params back")
    pipeline(stages=["evaluate"])
    part("code changed")
    rewards = pathlib.Path("rearank_core/training/rewards.py")
    code = rewards.read_bytes()
    rewards.write_bytes(code + b"\\n# a change\\n")
    pipeline(stages=["sft", "grpo"])
    rewards.write_bytes(code)
    shutil.rmtree("work/train/grpo")
    part("failed")
    sft_digest()
    try:
        pipeline(overrides={"grpo.model": "./work/no-such-model"})
    except Exception as exc:
        print(f"failed: {exc}", flush=True)
    else:
        sys.exit("the run with a missing GRPO model did not fail")
    sft_digest()
    part("resumed")
    pipeline(stages=["sft", "grpo"])
"""


def test_pipeline_flow_registers_promotes_and_leaves_dvc_up_to_date(tmp_path: Path, root: Path, model_cache: Path,
                                                                    tiny_dir: Path) -> None:
    project = tiny_project(tmp_path, root, model_cache, tiny_dir)
    ran = subprocess.run([sys.executable, "-c", SCRIPT], cwd=project, env=project_env(project),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    parts = dict(part.split("\n", 1) for part in ran.stdout.split("=== ")[1:])
    assert ran.returncode == 0 and set(parts) == {"first", "dvc status", "again", "dvc status again",
                                                  "params changed", "params back", "code changed", "failed",
                                                  "resumed"}, ran.stdout[-4000:]

    first = parts["first"]
    assert finished(first, "done") == MAIN_JOB, first[-4000:]
    assert "not evaluated" in first and "champion" in first and "mlflow ui" in first
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("tiny-reranker", "champion")
    trained = json.loads((project / "metrics" / "eval" / "tiny" / "trained.json").read_text())
    assert float(champion.tags["ndcg_at_10_dl19"]) == round(trained["datasets"]["dl19"]["reranked"]["ndcg@10"], 6)
    assert champion.tags["ndcg_at_10_bright_biology_reasonir"].startswith("not evaluated")
    assert champion.tags["profile"] == "params.yaml" and champion.tags["data_md5_sft"]
    experiment = client.get_experiment_by_name("rearank").experiment_id
    register_run = client.search_runs([experiment], "tags.`rearank.stage` = 'register'")[0]
    assert register_run.data.tags.get("mlflow.parentRunId"), "stage runs nest under the pipeline's run"
    pipeline_run = client.get_run(register_run.data.tags["mlflow.parentRunId"])
    assert 0.1 < pipeline_run.data.metrics["peak_rss_gib/sft"] < 6 and pipeline_run.data.metrics["wall_s/sft"] > 0

    # After the main job only the FIRST model's two stages are left to run; the whole pipeline then runs just those.
    stale = set(re.findall(r"^(\w+):\s*$", parts["dvc status"], re.M))
    assert stale == FIRST, parts["dvc status"]
    assert finished(parts["again"], "cached") == MAIN_JOB, parts["again"][-4000:]
    assert finished(parts["again"], "done") == FIRST, parts["again"][-4000:]
    assert "up to date" in parts["dvc status again"], parts["dvc status again"]
    first_report = json.loads((project / "metrics" / "eval" / "tiny" / "first.json").read_text())
    assert first_report["mode"] == "first" and first_report["datasets"]["dl19"]["format_valid_rate"] is None
    # P1 -> P2 -> P1: the third run finds P2's metrics file, not the one its cached result was made with, and runs.
    assert "evaluate: done" in parts["params changed"], parts["params changed"][-4000:]
    assert "evaluate: done" in parts["params back"], parts["params back"][-4000:]
    changed = parts["code changed"]  # the reward code is grpo's dependency, not sft's
    assert "sft: cached" in changed and "grpo: done" in changed, changed[-4000:]

    # A stage that fails keeps what came before; the next run resumes at that stage.
    failed = parts["failed"]
    assert "no-such-model" in failed, failed[-4000:]
    before, after = [line for line in failed.splitlines() if line.startswith("sft.json ")]
    assert before == after
    assert (project / "work" / "train" / "sft" / "adapter_config.json").is_file()
    assert "sft: cached" in parts["resumed"] and "grpo: done" in parts["resumed"], parts["resumed"][-4000:]
    assert (project / "work" / "train" / "grpo" / "adapter_config.json").is_file()
