"""The three drivers produce the same files: `dvc repro`, the Prefect flows (installed with the package, run
offline on a temporary local Prefect server) and `rearank demo`, with every stage's run in MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import BIN

from rearank_core.io.trec import read_run

pytestmark = pytest.mark.integration

SLICE_QUERIES = 2  # 2 DL19 queries x top-30: 5 windows of 10 (step 5) each, per driver
# `python -m` for each module named on the command line in turn, in one process: one Python start-up and one
# temporary Prefect server for several flows (each module's own finds it running); a flow that fails raises, and
# the process exits non-zero.
RUN_MODULES = ("import runpy, sys\nfrom flows.server import temporary_server\nwith temporary_server():\n"
               "    for module in sys.argv[1:]:\n        runpy.run_module(module, run_name='__main__')\n")


def make_project(dest: Path, root: Path, model_cache: Path, data: dict[str, object] | None = None,
                 **job: object) -> Path:
    """A fresh git+DVC project holding the pipeline files, the data they read and the shipped reranker (no
    flows/: the installed package provides them). ``data`` and ``job`` override params.yaml's data and rerank_job knobs."""
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(root / name, dest / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rerank"]["model_cache"] = str(model_cache)
    params["rerank_job"].update(job)
    params["data"].update(data or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(root / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(root / "data" / "beir" / "scifact", dest / "data" / "beir" / "scifact")
    shutil.copytree(root / "data" / "msmarco", dest / "data" / "msmarco")
    shutil.copytree(root / "data" / "bright", dest / "data" / "bright")  # the suites' BRIGHT runs (a dvc.yaml dep)
    shutil.copytree(root / "models", dest / "models")  # the shipped reranker, the rerank settings' default model
    shutil.copytree(root / "rearank_core", dest / "rearank_core",  # the stages' code deps (it runs from the install)
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / ".gitignore").write_text("work/\nmlruns/\n.prefect/\ndvc-remote/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=dest, check=True)
    return dest


def project_env(project: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_HOME": str(project / ".prefect"),
           "NO_COLOR": "1", "COLUMNS": "80"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PYTHONPATH", None)  # the flows come from the installed package
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, root: Path, model_cache: Path) -> Path:
    project = make_project(tmp_path_factory.mktemp("project"), root, model_cache, queries=SLICE_QUERIES)
    return short_completions(project)


def short_completions(project: Path) -> Path:
    """The shipped reranker with 64-token completions instead of 320: the drivers must write the same generated
    text whatever its length, and the generation alone took most of these tests' time (test_shipped_model
    generates at the shipped length)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rerank"]["max_new_tokens"] = 64
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def outputs(project: Path) -> dict[str, object]:
    """What a driver wrote: runs byte for byte, metrics, and the traces without their timings."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    base, job = params["baseline"], params["rerank_job"]
    traces = [json.loads(line) for line in (project / job["traces"]).read_text().splitlines()]
    summary = json.loads((project / job["summary"]).read_text())
    return {
        "bm25_run": (project / base["run"]).read_bytes(),
        "bm25_metrics": json.loads((project / base["metrics"]).read_text()),
        "rerank_run": (project / job["run"]).read_bytes(),
        "rerank_metrics": json.loads((project / job["metrics"]).read_text()),
        "traces": [{k: v for k, v in t.items() if k != "latency_s"} for t in traces],
        "summary": {k: summary[k] for k in ("queries", "windows", "status", "prompt_tokens", "completion_tokens")},
    }


def tracked_runs(project: Path, stage: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rearank")
    return client.search_runs([experiment.experiment_id], f"tags.`rearank.stage` = '{stage}'")


def test_dvc_repro_and_prefect_flows_write_the_same_files(project: Path) -> None:
    env = project_env(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    subprocess.run([str(BIN / "dvc"), "repro", "-q", "evaluate"], cwd=project, env=env, check=True)  # the baseline
    job = params["rerank_job"]  # the slice by the CLI commands the flow's tasks mirror
    for command in (["rerank", "--candidates", job["candidates"], "--limit", str(job["queries"]), "--top-k",
                     str(job["top_k"]), "--run", job["run"], "--traces", job["traces"], "--summary-out", job["summary"],
                     "--name", job["name"], "-q"],
                    ["evaluate", "--run", job["run"], "--qrels", job["qrels"], "--metrics-out", job["metrics"],
                     "--name", job["name"]]):
        subprocess.run([str(BIN / "rearank"), *command], cwd=project, env=env, check=True, capture_output=True)
    by_dvc = outputs(project)
    assert by_dvc["bm25_metrics"]["ndcg@10"] == pytest.approx(0.679, abs=0.005)
    assert by_dvc["summary"]["queries"] == SLICE_QUERIES and by_dvc["summary"]["windows"] == 5 * SLICE_QUERIES
    assert by_dvc["rerank_metrics"]["queries_evaluated"] == SLICE_QUERIES
    run = read_run(project / "work" / "dl19_slice" / "rerank.trec")
    assert len(run) == SLICE_QUERIES and all(len(ranking) == 100 for ranking in run.values())
    status = subprocess.run([str(BIN / "dvc"), "status", "evaluate"], cwd=project, env=env, check=True,
                            capture_output=True, text=True)
    assert "up to date" in status.stdout

    shutil.rmtree(project / "work" / "scifact")
    shutil.rmtree(project / "work" / "dl19_slice")
    shutil.rmtree(project / "metrics")
    flow = subprocess.run([sys.executable, "-c", RUN_MODULES, "flows.bm25_baseline", "flows.rerank_slice"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert "Finished in state Completed" in flow.stdout + flow.stderr
    assert outputs(project) == by_dvc

    for metrics in (r.data.metrics for r in tracked_runs(project, "evaluate-scifact")):
        assert metrics["ndcg_at_10"] == pytest.approx(by_dvc["bm25_metrics"]["ndcg@10"], abs=1e-4)
    reranks = tracked_runs(project, "rerank-dl19-slice")
    assert len(reranks) == 2  # one from the CLI, one from the flow
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    for tracked in reranks:
        assert tracked.data.params["model"] == params["rerank"]["model"] and tracked.data.params["window"] == "10"
        assert tracked.data.params["top_k"] == "30" and tracked.data.params["limit"] == str(SLICE_QUERIES)
        assert tracked.data.metrics["windows"] == 5 * SLICE_QUERIES
        assert tracked.data.metrics["prompt_tokens"] == by_dvc["summary"]["prompt_tokens"]
        assert {a.path for a in client.list_artifacts(tracked.info.run_id)} >= {"traces.jsonl", "dl19_slice_rerank.json"}
    evaluated = tracked_runs(project, "evaluate-dl19-slice")
    assert len(evaluated) == 2
    assert all(r.data.metrics["ndcg_at_10"] == pytest.approx(by_dvc["rerank_metrics"]["ndcg@10"], abs=1e-4)
               for r in evaluated)


def test_demo_runs_the_two_jobs_onto_the_pipeline_files(tmp_path: Path, root: Path, model_cache: Path) -> None:
    """`rearank demo` on the shipped jobs (5 DL19 queries): the figures the README quotes, in an 80-column table."""
    project = short_completions(make_project(tmp_path, root, model_cache))
    result = subprocess.run([str(BIN / "rearank"), "demo", "-q"], cwd=project, env=project_env(project),
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("│ ndcg") or line.startswith("│ mrr")}
    assert rows["ndcg@10"][:2] == ["0.6789", "0.5720"]  # SciFact BM25 (published 0.679); DL19 slice BM25
    written = outputs(project)
    assert written["bm25_metrics"]["ndcg@10"] == pytest.approx(0.6789, abs=1e-4)
    assert f"{written['rerank_metrics']['ndcg@10']:.4f}" == rows["ndcg@10"][2]
    assert written["summary"]["windows"] == 5 * 5 and "format-valid rate" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_whole_dag_by_dvc_then_the_training_data_and_training_flows(tmp_path: Path, root: Path, model_cache: Path,
                                                                         tiny_dir: Path) -> None:
    """`dvc repro` of command 1's DAG on a tiny random model (LoRA, one step each): the data stages (augment -> teacher
    -> filter -> build -> validate, gold teacher) with the cards' figures in MLflow, sft -> grpo -> evaluate whose
    shipped-style adapter reranks the suite with per-step logs as the DVC plots, and register -> promote. Then the
    training-data and training flows write the same files again, each stage an MLflow run. One project and one DAG
    run serve both jobs: the training job reads the data job's records."""
    project = make_project(tmp_path, root, model_cache, data={"per_query": 2})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rerank"].update(window=5, step=5, max_new_tokens=8)
    params["sft"].update(model=str(tiny_dir), max_steps=1, grad_accum=1, save_steps=1)
    params["grpo"].update(max_steps=1, num_generations=2, max_completion_length=8, limit=2, save_steps=1)
    params["train_job"]["untrained"] = str(tiny_dir)
    params["registry"]["min_queries"] = 2
    suite = params["suite"]["name"]  # the pipeline's suite, cut to 2 DL19 queries
    params["suites"] = [{"name": suite, "datasets": [{"name": "dl19", "candidates": "data/msmarco/dl19/"
                                                      "rank_llm_BM25_retrieve_results_dl19.json",
                                                      "qrels": "data/msmarco/dl19/qrels.dl19-passage.txt",
                                                      "top_k": 10, "queries": 2}]}]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = project_env(project)
    # README command 1's stages (promote and all it depends on, both baselines' evaluations); the FIRST model's two
    # are test_mlops_pipeline's (through the flow), test_first_training's and test_evaluate_model's (their commands).
    subprocess.run([str(BIN / "dvc"), "repro", "-q", "promote", "evaluate", "evaluate_untrained"], cwd=project, env=env,
                   check=True, timeout=1800)

    # The data job.
    job = params["data_job"]
    files = ("windows", "teacher", "filtered", "sft", "grpo")
    by_dvc = {name: (project / job[name]).read_bytes() for name in files}
    cards = {name: json.loads((project / job["cards"] / f"{name}.json").read_text())
             for name in ("windows", "teacher", "filtered", "sft", "grpo")}
    assert cards["windows"]["windows_drawn"] == 53 * 2 and cards["windows"]["windows_kept"] > 80
    assert cards["teacher"]["status"] == {"ok": cards["windows"]["windows_kept"]}
    assert cards["sft"]["records"] == cards["grpo"]["records"] == cards["filtered"]["kept"]
    assert cards["sft"]["prompt_tokens"]["max"] < params["data"]["max_prompt_tokens"]
    for kind in ("windows", "teacher", "sft", "grpo"):
        assert json.loads((project / job["reports"] / kind / "report.json").read_text())["success"]

    # The training job.
    train = params["train_job"]
    report = json.loads((project / "metrics" / "eval" / suite / "trained.json").read_text())
    assert report["datasets"]["dl19"]["windows"] == 2 * 2 and report["model"] == train["grpo_dir"]
    assert json.loads((project / train["grpo_dir"] / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == str(tiny_dir)
    history = (project / train["grpo_history"]).read_text().splitlines()
    assert len(history) == 2 and "rearank/answer_format" in history[0].split(",")

    # The registry: the first version registered becomes the champion (there was none).
    assert json.loads((project / train["registered"]).read_text())["aliases"] == {"candidate": "1"}
    promoted = json.loads((project / train["promoted"]).read_text())
    assert promoted["aliases"] == {"candidate": "1", "champion": "1"} and promoted["decision"]["moved"]
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=project, env=env, capture_output=True, text=True,
                            check=True).stdout
    assert {line.rstrip(":") for line in status.splitlines() if line and not line.startswith((" ", "\t"))} == \
        {"sft_first", "evaluate_first"}, status  # all but the two stages this run left out are up to date
    # A change to the reward code makes grpo stale, and what follows from it, not the stages before it.
    rewards = project / "rearank_core" / "training" / "rewards.py"
    code = rewards.read_bytes()
    rewards.write_bytes(code + b"\n# a change\n")
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=project, env=env, capture_output=True, text=True,
                            check=True).stdout
    stale = {line.rstrip(":") for line in status.splitlines() if line and not line.startswith((" ", "\t"))}
    assert "grpo" in stale and not stale & {"augment", "build", "sft"}, status
    rewards.write_bytes(code)
    verdict = json.loads((project / job["verdict"]).read_text())
    assert sorted(verdict) == ["grpo", "sft", "teacher", "windows"] and all(v["passed"] for v in verdict.values())

    # The two flows, in one process (one temporary Prefect server), onto the same files.
    for folder in ("work/data", "work/train", "work/eval", "metrics/eval", "metrics/train"):
        shutil.rmtree(project / folder)
    flow = subprocess.run([sys.executable, "-c", RUN_MODULES, "flows.training_data", "flows.training"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert "Finished in state Completed" in flow.stdout + flow.stderr
    assert {name: (project / job[name]).read_bytes() for name in files} == by_dvc
    again = json.loads((project / "metrics" / "eval" / suite / "trained.json").read_text())
    assert again["datasets"]["dl19"]["windows"] == 4 and again["datasets"]["dl19"]["bm25"] == \
        report["datasets"]["dl19"]["bm25"]

    augments = tracked_runs(project, "data-augment")
    assert len(augments) == 2
    assert all(r.data.metrics["windows_kept"] == cards["windows"]["windows_kept"] for r in augments)
    validated = tracked_runs(project, "data-validate-grpo")
    assert len(validated) == 2 and all(r.data.metrics["success"] == 1.0 for r in validated)
    assert tracked_runs(project, "data-build-sft")[0].data.metrics["prompt_tokens.p95"] > 0
    for stage in ("train-sft", "train-grpo", "evaluate-model-trained"):
        assert len(tracked_runs(project, stage)) == 2, stage
