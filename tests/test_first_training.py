"""FIRST's training objective (`rearank train sft --objective first`): the weighted RankNet term by hand, the rows
built from window records, and real TRL steps on a tiny Llama that train, resume, log the RankNet loss and save a
model the first-mode reranker loads."""

from __future__ import annotations

import contextlib
import math
import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from conftest import DATA
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.config import DataConfig, RerankConfig, SFTTrainConfig
from rearank_core.data.augment import augment
from rearank_core.errors import InputError
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.files import write_jsonl
from rearank_core.io.requests import read_candidates
from rearank_core.io.training_data import WindowRecord
from rearank_core.prompts import load_template
from rearank_core.rerank import Reranker
from rearank_core.training.first import first_rows, gold_order, weighted_ranknet
from rearank_core.training.sft import run_sft

DL21 = DATA / "msmarco" / "dl21"


def window(labels: list[int]) -> WindowRecord:
    n = len(labels)
    return WindowRecord(id="s/q/0", source="s", qid="q", query="what is a cat", docids=[f"d{i}" for i in range(n)],
                        passages=[f"passage {i}" for i in range(n)], labels=labels, initial_ndcg10=0.5)


def test_weighted_ranknet_by_hand() -> None:
    # labels [0, 2, 1]: gold order 1, 2, 0 (ranks 3, 1, 2); ordered pairs (1,0) w 1/4, (1,2) w 1/3, (2,0) w 1/5.
    scores = torch.zeros(3, requires_grad=True)
    loss = weighted_ranknet(scores, [0, 2, 1])
    assert loss.item() == pytest.approx((1 / 4 + 1 / 3 + 1 / 5) / 3 * math.log(2), rel=1e-6)
    loss.backward()
    assert scores.grad[1] < 0 < scores.grad[0]  # descent raises the most relevant, lowers the least
    lifted = torch.tensor([5.0, 0.0, 0.0])  # the irrelevant passage scored highest costs more
    assert weighted_ranknet(lifted, [0, 2, 1]).item() > loss.item()
    assert weighted_ranknet(torch.zeros(3), [1, 1, 1]).item() == 0.0  # no ordered pair: no signal


def test_rows_answer_the_gold_order_in_letters() -> None:
    assert gold_order([0, 2, 1, 2]) == [1, 3, 2, 0]  # ties keep window order
    (row,) = first_rows([window([0, 2, 1])], load_template("first"))
    assert row["completion"] == [{"role": "assistant", "content": "[B] > [C] > [A]"}]
    assert row["relevance"] == [0, 2, 1] and "[A] passage 0" in row["prompt"][-1]["content"]
    with pytest.raises(InputError, match="single-token identifiers"):
        first_rows([window([0, 1])], load_template("rearank"))
    with pytest.raises(InputError, match="at most 26"):
        first_rows([window([0] * 27)], load_template("first"))


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 5-passage DL21 window records (40-word passages)."""
    requests = read_candidates(DL21 / "rank_llm_BM25_retrieve_results_dl21.json")[:3]
    drawn = augment(requests, read_any_qrels(DL21 / "qrels.dl21-passage.txt"), "dl21",
                    DataConfig(per_query=2, window=5, top_n=30, min_ndcg=0.0, truncate_unit="words",
                               truncate_length=40))
    path = tmp_path_factory.mktemp("first") / "windows.jsonl"
    write_jsonl(path, [w.to_dict() for w in drawn])
    return path


def config(tiny_dir: Path, **knobs: object) -> SFTTrainConfig:
    base = SFTTrainConfig(model=str(tiny_dir), objective="first", max_steps=2, batch_size=2, grad_accum=1,
                          learning_rate=1e-3, save_steps=1, warmup_ratio=0.0, max_length=2048, dtype="float32")
    return replace(base, **knobs)


@pytest.mark.integration
def test_first_objective_trains_resumes_and_the_model_ranks_in_first_mode(windows: Path, tiny_dir: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "first"
    figures = run_sft(config(tiny_dir, max_steps=6), windows, out, tmp_path)
    steps = [row for row in figures["history"] if "ranknet_loss" in row]
    assert figures["steps"] == 6 and figures["records"] == 6 and len(steps) == 6
    assert all(math.isfinite(row["ranknet_loss"]) and row["ranknet_loss"] >= 0 for row in steps)
    # Six steps over the same six windows at a large learning rate: the ranking term falls.
    assert steps[-1]["ranknet_loss"] < steps[0]["ranknet_loss"]
    shutil.rmtree(out / "checkpoint-6")
    (out / "rearank-done.json").unlink()  # as if killed before the end
    again = run_sft(config(tiny_dir, max_steps=6), windows, out, tmp_path)
    assert again["resumed_from"].endswith("checkpoint-5") and again["steps"] == 6
    reranker = Reranker(RerankConfig(mode="first", model=str(out), window=5, step=5, top_k=5, dtype="float32"))
    requests = read_candidates(DL21 / "rank_llm_BM25_retrieve_results_dl21.json")[:1]
    results, summary = reranker.rerank(requests)
    assert summary.status == {"ok": 1} and sorted(results[0].traces[0].order) == list(range(5))


@pytest.mark.integration
def test_cli_trains_the_first_objective_and_logs_the_ranknet_loss(windows: Path, tiny_dir: Path, tmp_path: Path,
                                                                  root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    # --objective first trains with params' sft_first section (dvc.yaml's sft_first stage), not sft's knobs
    params["sft_first"].update(model=str(tiny_dir), max_steps=2, grad_accum=1, learning_rate=1e-3, save_steps=1,
                               dtype="float32")
    params["rerank"]["model_cache"] = str(tmp_path / "models")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "NO_COLOR": "1"}
    with contextlib.chdir(tmp_path):
        done = CliRunner().invoke(cli, ["train", "sft", "--objective", "first", "--records", str(windows),
                                        "--params", str(tmp_path / "params.yaml"), "-q"], env=env)
    assert done.exit_code == 0, done.stderr[-3000:]
    assert "SFT (FIRST objective): 6 records, 2 steps" in done.stderr and "--mode first" in done.stderr
    assert (tmp_path / "work" / "train" / "first" / "adapter_config.json").is_file()  # train_job.first_dir, LoRA
    history = (tmp_path / "metrics" / "train" / "first_history.csv").read_text().splitlines()
    assert "ranknet_loss" in history[0].split(",") and len(history) == 3
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("rearank").experiment_id],
                                "tags.`rearank.stage` = 'train-first'")
    assert len(client.get_metric_history(run.info.run_id, "ranknet_loss")) == 2
    assert run.data.params["rearank.sft.objective"] == "first"
