"""rearank evaluate-model: one model over the suite's datasets, next to BM25 on the same queries, over real HTTP
(the OpenAI backend against a local ranking server), with MLflow metrics named per dataset; a BRIGHT dataset whose
documents are nowhere to be found is reported "not evaluated" with the reason."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import yaml
from conftest import DL19_CANDIDATES, DL19_QRELS
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.evaluation import evaluate
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.requests import read_candidates
from rearank_core.records import requests_to_run


def test_evaluate_model_reports_bm25_and_the_model_per_dataset(ranking_server, tmp_path: Path, root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rerank"].update(backend="openai", base_url=f"http://127.0.0.1:{ranking_server.server_port}/v1",
                            window=5, step=5, truncate_unit="words", truncate_length=20)
    params["suite"] = {"name": "tiny", "metrics": str(tmp_path / "metrics"), "work": str(tmp_path / "work"),
                       "bright_root": None}  # the HF cache, empty here
    params["suites"] = [{"name": "tiny", "datasets": [
        {"name": "dl19", "candidates": str(DL19_CANDIDATES), "qrels": str(DL19_QRELS), "top_k": 10, "queries": 3},
        {"name": "bright_biology_bm25", "bright": "biology", "first_stage": "bm25", "top_k": 10, "queries": 3}]}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "NO_COLOR": "1",
           "COLUMNS": "120", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "rearank_core.cli", "evaluate-model", "--model", "served", "--label", "served",
               "--params", str(tmp_path / "params.yaml"), "-q"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "metrics" / "tiny" / "served.json").read_text())
    assert (report["label"], report["model"], report["suite"]) == ("served", "served", "tiny")
    row = report["datasets"]["dl19"]
    assert row["first_stage"] == "bm25"
    assert json.loads((tmp_path / "metrics" / "tiny" / "served" / "dl19.json").read_text())["ndcg@10"] == \
        round(row["reranked"]["ndcg@10"], 4)
    assert row["queries"] == 3 and row["windows"] == 6 and (row["window"], row["step"], row["top_k"]) == (5, 5, 10)
    # The server answers query 1 well, query 2 with a repairable answer, query 3 cut off: 4 of 6 windows parsed.
    assert row["format_valid_rate"] == 4 / 6 and row["exact_rate"] == 2 / 6
    bm25 = evaluate(requests_to_run(read_candidates(DL19_CANDIDATES)[:3]), read_any_qrels(DL19_QRELS))
    assert row["bm25"]["ndcg@10"] == bm25.metrics["ndcg@10"]
    assert row["reranked"]["ndcg@10"] != row["bm25"]["ndcg@10"]  # query 1's windows were reversed
    assert "dl19" in result.stderr and "66.7%" in result.stderr
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("rearank").experiment_id],
                                "tags.`rearank.stage` = 'evaluate-model-served'")
    assert run.data.metrics["ndcg_at_10_dl19"] == row["reranked"]["ndcg@10"]
    assert run.data.metrics["format_valid_dl19"] == row["format_valid_rate"]
    # BRIGHT is not in the (empty) HF cache: not evaluated, with where it looked, and never a number.
    reason = f"BRIGHT is not in the Hugging Face cache of xlangai/BRIGHT ({tmp_path / 'hf' / 'hub'})"
    assert report["datasets"]["bright_biology_bm25"] == {
        "status": "not evaluated", "reason": reason + ": expected its Hugging Face layout (examples/, documents/)",
        "first_stage": "bm25"}
    assert run.data.tags["not_evaluated_bright_biology_bm25"].startswith(reason)
    assert not any(key.endswith("_bright_biology_bm25") for key in run.data.metrics)
    assert not (tmp_path / "metrics" / "tiny" / "served" / "bright_biology_bm25.json").exists()
    assert "bright_biology_bm25" in result.stderr and "not evaluated" in result.stderr
    table = (tmp_path / "metrics" / "tiny" / "served.md").read_text()
    assert "| bright_biology_bm25 | bm25 | | | not evaluated | not evaluated | | |" in table
    assert f"- bright_biology_bm25: not evaluated: {reason}" in table
    assert table.count("| dl19 | bm25 | 3 | 10 |") == 1
    # A rerun resumes every window from the traces: nothing is asked again (in this process: a second Python
    # start-up would prove nothing more).
    asked = sum(ranking_server.per_query.values())
    with contextlib.chdir(tmp_path):
        again = CliRunner().invoke(cli, command[3:], env={k: env[k] for k in ("MLFLOW_TRACKING_URI", "HF_HOME")})
    assert again.exit_code == 0 and sum(ranking_server.per_query.values()) == asked


def test_evaluate_model_in_first_mode_then_side_by_side_with_reasoning(ranking_server, tmp_path: Path,
                                                                        root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rerank"].update(backend="openai", base_url=f"http://127.0.0.1:{ranking_server.server_port}/v1",
                            window=5, step=5, truncate_unit="words", truncate_length=20)
    params["suite"] = {"name": "tiny", "metrics": str(tmp_path / "metrics"), "work": str(tmp_path / "work"),
                       "bright_root": None}
    params["suites"] = [{"name": "tiny", "datasets": [
        {"name": "dl19", "candidates": str(DL19_CANDIDATES), "qrels": str(DL19_QRELS), "top_k": 10, "queries": 3}]}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "HF_HOME": str(tmp_path / "hf")}
    with contextlib.chdir(tmp_path):
        done = CliRunner().invoke(cli, ["evaluate-model", "--model", "served", "--label", "first", "--mode", "first",
                                        "--params", str(tmp_path / "params.yaml"), "-q"], env=env)
    assert done.exit_code == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "metrics" / "tiny" / "first.json").read_text())
    row = report["datasets"]["dl19"]
    assert report["mode"] == "first" and row["windows"] == 6
    speed = json.loads((tmp_path / "work" / "tiny" / "first" / "dl19.summary.json").read_text())
    assert speed["windows_per_s"] > 0 and speed["completion_tokens"] == 0  # the run's own figures, beside its traces
    assert row["format_valid_rate"] is None and row["exact_rate"] is None  # an order from logits is always whole
    # Every window reversed by the server's log-probabilities, as its reasoning answer reverses query 1's.
    traces = [json.loads(line) for line in (tmp_path / "work" / "tiny" / "first" / "dl19.traces.jsonl").open()]
    assert all(t["order"] == [4, 3, 2, 1, 0] and t["completion"] == "" for t in traces)

    # The reasoning mode on the same candidates, then both side by side: one row per dataset, BM25's nDCG@10 once,
    # each model's own figures from its report and its run's windows/s.
    with contextlib.chdir(tmp_path):
        done = CliRunner().invoke(cli, ["evaluate-model", "--model", "served", "--label", "reasoning",
                                        "--params", str(tmp_path / "params.yaml"), "-q"], env=env)
        assert done.exit_code == 0, done.stderr[-3000:]
        compared = CliRunner().invoke(cli, ["compare", "reasoning", "first", "--params",
                                            str(tmp_path / "params.yaml"), "-q"], env=env)
    assert compared.exit_code == 0, compared.stderr[-3000:]
    reasoning = json.loads((tmp_path / "metrics" / "tiny" / "reasoning.json").read_text())["datasets"]["dl19"]
    table = (tmp_path / "metrics" / "tiny" / "compare.md").read_text()
    assert table in compared.stdout + "\n"
    (cells,) = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| dl19 ")]
    cells = [c.strip() for c in cells]
    first_speed = speed["windows_per_s"]
    reasoning_speed = json.loads((tmp_path / "work" / "tiny" / "reasoning" / "dl19.summary.json").read_text())
    assert cells == ["dl19", "3", "10", f"{row['bm25']['ndcg@10']:.4f}",
                     f"{reasoning['reranked']['ndcg@10']:.4f}", f"{reasoning['format_valid_rate']:.1%}",
                     f"{reasoning_speed['windows_per_s']:.2f}",
                     f"{row['reranked']['ndcg@10']:.4f}", "not computed", f"{first_speed:.2f}"]
    assert "reasoning (reasoning) nDCG@10" in table and "first (first) nDCG@10" in table

    # Reports of other candidates are not compared: the error names the report and the field.
    other = json.loads((tmp_path / "metrics" / "tiny" / "first.json").read_text())
    other["datasets"]["dl19"]["top_k"] = 20
    (tmp_path / "metrics" / "tiny" / "first.json").write_text(json.dumps(other))
    with contextlib.chdir(tmp_path):
        refused = CliRunner().invoke(cli, ["compare", "reasoning", "first", "--params", str(tmp_path / "params.yaml"),
                                           "-q"], env=env)
    assert refused.exit_code != 0
    assert "first.json" in refused.stderr and "datasets.dl19.top_k" in refused.stderr, refused.stderr
