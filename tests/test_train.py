"""SFT and GRPO with TRL on a tiny randomly initialised Llama with the real SmolLM2 tokenizer: real steps,
checkpoints, resume, the length check, the saved model reranking through the CLI's backend, the reward's
components in the logs, and the CLI's MLflow runs."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import DATA
from typer.testing import CliRunner

from rearank_core.backends.adapters import set_adapter_base
from rearank_core.backends.transformers_backend import TransformersBackend
from rearank_core.cli import app as cli
from rearank_core.config import (
    DataConfig,
    GRPOTrainConfig,
    RewardConfig,
    SFTTrainConfig,
)
from rearank_core.data.augment import augment
from rearank_core.data.build import build_records
from rearank_core.data.teacher import gold_answer
from rearank_core.errors import InputError
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.files import write_jsonl
from rearank_core.io.requests import read_candidates
from rearank_core.prompts import load_template
from rearank_core.training.export import export_adapter
from rearank_core.training.grpo import check_reference, run_grpo
from rearank_core.training.rollout import end_with_eos
from rearank_core.training.sft import run_sft

DL21 = DATA / "msmarco" / "dl21"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six SFT and six GRPO records of 5-passage DL21 windows (40-word passages), gold teacher."""
    requests = read_candidates(DL21 / "rank_llm_BM25_retrieve_results_dl21.json")[:3]
    windows = augment(requests, read_any_qrels(DL21 / "qrels.dl21-passage.txt"), "dl21",
                      DataConfig(per_query=2, window=5, top_n=30, min_ndcg=0.0, truncate_unit="words",
                                 truncate_length=40))
    sft, grpo = build_records(windows, {w.id: gold_answer(w) for w in windows}, load_template("rearank"))
    folder = tmp_path_factory.mktemp("records")
    write_jsonl(folder / "sft.jsonl", [r.to_dict() for r in sft])
    write_jsonl(folder / "grpo.jsonl", [r.to_dict() for r in grpo])
    return folder / "sft.jsonl", folder / "grpo.jsonl"


@pytest.fixture(scope="module")
def sft_records(records: tuple[Path, Path]) -> Path:
    return records[0]


def config(tiny_dir: Path, **knobs: object) -> SFTTrainConfig:
    base = SFTTrainConfig(model=str(tiny_dir), max_steps=2, batch_size=1, grad_accum=1, learning_rate=1e-3,
                          save_steps=1, warmup_ratio=0.0, max_length=2048)
    return replace(base, **knobs)


@pytest.mark.integration
def test_sft_steps_checkpoints_and_resumes(sft_records: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    first = run_sft(config(tiny_dir), sft_records, out, tmp_path)
    assert first["steps"] == 2 and first["records"] == 6 and math.isfinite(first["train_loss"])
    assert first["resumed_from"] == "" and first["dtype"] in ("float32", "bfloat16")
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    # Run again, the finished job trains nothing (Trainer resumed from its last checkpoint would take a 3rd step).
    assert run_sft(config(tiny_dir), sft_records, out, tmp_path) == json.loads(json.dumps(first))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    # Killed after its first checkpoint (so never finished): the same job resumes there.
    shutil.rmtree(out / "checkpoint-2")
    (out / "rearank-done.json").unlink()
    again = run_sft(config(tiny_dir), sft_records, out, tmp_path)
    assert again["resumed_from"].endswith("checkpoint-1") and again["steps"] == 2
    # Another job (a changed setting) never continues these checkpoints: it starts afresh and replaces them.
    other = run_sft(config(tiny_dir, learning_rate=5e-4), sft_records, out, tmp_path)
    assert other["resumed_from"] == "" and other["steps"] == 2
    # The saved folder is a plain chat model: the reranker's backend loads it with no other setting.
    backend = TransformersBackend(str(out), dtype="float32", device="cpu")
    (completion,) = backend.complete([[{"role": "user", "content": "Rank [1] and [2]."}]], max_new_tokens=4)
    assert completion.completion_tokens >= 1


@pytest.mark.integration
def test_sft_lora_saves_an_adapter(sft_records: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    figures = run_sft(config(tiny_dir, lora=True, lora_r=4, lora_alpha=8, max_steps=1), sft_records, out, tmp_path)
    assert figures["lora"] and (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    backend = TransformersBackend(str(out), dtype="float32", device="cpu")  # base + adapter, merged
    assert backend.engine == "loop" and backend.complete([[{"role": "user", "content": "Hi"}]], 2)[0].completion_tokens


@pytest.mark.integration
def test_grpo_goes_on_training_the_sft_adapter_and_ships_one_adapter(sft_records: Path, records: tuple[Path, Path],
                                                                      tiny_dir: Path, tmp_path: Path) -> None:
    """SFT (LoRA) then GRPO (LoRA) from its folder: GRPO trains the same adapter, and the final folder is one
    adapter naming the base as the user gave it (so it loads on another machine), which the backend merges."""
    sft_out, grpo_out = tmp_path / "sft", tmp_path / "grpo"
    run_sft(config(tiny_dir, lora=True, lora_r=4, lora_alpha=8, max_steps=1), sft_records, sft_out, tmp_path)
    figures = run_grpo(grpo_config(sft_out, lora=True, lora_r=8), RewardConfig(), records[1], grpo_out, tmp_path)
    assert figures["steps"] == 1 and figures["lora"]
    adapter = json.loads((grpo_out / "adapter_config.json").read_text())
    assert adapter["r"] == 4  # the SFT adapter, trained on (grpo.lora_r applies to a fresh adapter only)
    assert adapter["base_model_name_or_path"] == str(tiny_dir)
    assert not (grpo_out / "model.safetensors").exists()
    backend = TransformersBackend(str(grpo_out), dtype="float32", device="cpu")
    hi = backend.complete([[{"role": "user", "content": "Hi"}]], 4)[0]
    assert hi.completion_tokens

    shipped = tmp_path / "models" / "tiny-reranker"
    report = export_adapter(grpo_out, shipped, {"grpo": {"steps": 1}}, {"window": 5}, None)
    assert sorted(report["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert "Not evaluated." in (shipped / "README.md").read_text() and "steps 1" in (shipped / "README.md").read_text()
    again = TransformersBackend(str(shipped), dtype="float32", device="cpu")  # no tokenizer shipped: the base's
    assert again.complete([[{"role": "user", "content": "Hi"}]], 4)[0].text == hi.text
    # A checkpoint names the folder its base loaded from on the training machine; the export names the base as
    # users do, and loads the same.
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(grpo_out, checkpoint)
    set_adapter_base(checkpoint, str(tmp_path / "training-machine-only"))
    export_adapter(checkpoint, shipped, {"grpo": {"steps": 1}}, {"window": 5}, None, base=str(tiny_dir))
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_dir)
    assert TransformersBackend(str(shipped), dtype="float32", device="cpu").complete(
        [[{"role": "user", "content": "Hi"}]], 4)[0].text == hi.text
    with pytest.raises(InputError, match="not a LoRA adapter"):
        export_adapter(tiny_dir, tmp_path / "x", {}, {}, None)


def test_a_record_past_max_length_is_an_error_naming_it(sft_records: Path, tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"sft.jsonl:1: field 'messages': record dl21/\S+ is \d+ tokens"):
        run_sft(config(tiny_dir, max_length=100), sft_records, tmp_path / "x", tmp_path)
    assert not (tmp_path / "x").exists()


def rearank(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command in this process (Typer's runner): the pipeline's dvc stages run `rearank train` as a
    subprocess (tests/test_pipeline.py), and a Python start-up with torch here would prove nothing more."""
    with contextlib.chdir(cwd):
        done = CliRunner().invoke(cli, args, env=env)
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


@pytest.mark.integration
def test_cli_train_sft_logs_to_mlflow(sft_records: Path, tiny_dir: Path, tmp_path: Path, root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sft"].update(model=str(tiny_dir), max_steps=2, grad_accum=1, learning_rate=1e-3, save_steps=1)
    params["rerank"]["model_cache"] = str(tmp_path / "models")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "NO_COLOR": "1"}
    result = rearank(["train", "sft", "--records", str(sft_records), "--output", str(tmp_path / "out"),
                      "--metrics-out", str(tmp_path / "sft.json"), "--params", str(tmp_path / "params.yaml"), "-q"],
                     tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SFT: 6 records, 2 steps" in result.stderr
    figures = json.loads((tmp_path / "sft.json").read_text())
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("rearank").experiment_id],
                                "tags.`rearank.stage` = 'train-sft'")
    assert run.data.metrics["sft_train_loss"] == pytest.approx(figures["train_loss"])
    assert run.data.params["rearank.sft.max_steps"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2  # the trainer's per-step figures
    history = (tmp_path / "metrics" / "train" / "sft_history.csv").read_text().splitlines()  # the DVC plot
    assert history[0].startswith("step,") and "loss" in history[0].split(",") and len(history) == 3


def grpo_config(tiny_dir: Path, **knobs: object) -> GRPOTrainConfig:
    base = GRPOTrainConfig(model=str(tiny_dir), max_steps=1, num_generations=2, max_completion_length=8,
                           learning_rate=1e-3, save_steps=1, limit=2)
    return replace(base, **knobs)


def test_a_kl_term_toward_the_model_before_sft_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    """An SFT adapter trained further as a merged full model (lora false) with beta > 0: TRL would take the KL
    reference from the base before SFT. Refused before anything loads; with lora true TRL copies the adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "sft-adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir), LoraConfig(r=2, target_modules=["q_proj"])
                   ).save_pretrained(adapter)
    with pytest.raises(InputError, match="the KL reference would be its base model, before SFT") as refused:
        check_reference(grpo_config(tiny_dir, model=str(adapter), lora=False, beta=0.01), tmp_path)
    assert refused.value.field == "grpo.beta"
    check_reference(grpo_config(tiny_dir, model=str(adapter), lora=True, beta=0.01), tmp_path)
    check_reference(grpo_config(tiny_dir, model=str(adapter), lora=False, beta=0.0), tmp_path)
    check_reference(grpo_config(tiny_dir, lora=False, beta=0.01), tmp_path)  # a full model is its own reference


def test_rollout_rows_that_stopped_at_the_answer_end_with_eos() -> None:
    """TRL counts a row not ending in EOS as cut by the length limit (completions/clipped_ratio): a row the engine
    stopped at </answer> gets the EOS the model's own end of turn is; a row cut at the limit stays as it is."""
    eos = 2
    outputs = [([5, 6], "stop"), ([5, eos], "stop"), ([5] * 8, "length"), ([5] * 8, "stop"), ([], "stop")]
    assert end_with_eos(outputs, eos, 8) == [[5, 6, eos], [5, eos], [5] * 8, [5] * 8, [eos]]


@pytest.mark.integration
@pytest.mark.parametrize(("reward", "engine"), [("rearank", "auto"), ("multiview", "trl")])
def test_grpo_steps_log_reward_components_and_resume(records: tuple[Path, Path], tiny_dir: Path, tmp_path: Path,
                                                      reward: str, engine: str) -> None:
    out = tmp_path / "grpo"
    job = grpo_config(tiny_dir, reward=reward, rollout_engine=engine, max_steps=2)
    first = run_grpo(job, RewardConfig(), records[1], out, tmp_path)
    assert first["rollouts"] == {"auto": "engine", "trl": "trl"}[engine]  # auto: the project's engine on CPU
    assert first["steps"] == 2 and first["records"] == 2 and first["first_reward"] is not None
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    logged = state["log_history"][0]
    component = {"rearank": "rearank/answer_format", "multiview": "multiview/valid"}[reward]  # the format-valid rate
    assert f"rewards/{reward}/mean" in logged and component in logged and "completions/mean_length" in logged
    # Killed after its first checkpoint (so never finished): the same job resumes there.
    shutil.rmtree(out / "checkpoint-2")
    (out / "rearank-done.json").unlink()
    again = run_grpo(job, RewardConfig(), records[1], out, tmp_path)
    assert again["resumed_from"].endswith("checkpoint-1") and again["steps"] == 2


@pytest.mark.integration
def test_cli_train_grpo_logs_to_mlflow(records: tuple[Path, Path], tiny_dir: Path, tmp_path: Path, root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["grpo"].update(model=str(tiny_dir), max_steps=2, num_generations=2, max_completion_length=8, limit=2,
                          save_steps=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "NO_COLOR": "1"}
    result = rearank(["train", "grpo", "--records", str(records[1]), "--output", str(tmp_path / "out"),
                      "--metrics-out", str(tmp_path / "grpo.json"), "--params", str(tmp_path / "params.yaml"), "-q"],
                     tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GRPO: 2 records, 2 steps" in result.stderr
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("rearank").experiment_id],
                                "tags.`rearank.stage` = 'train-grpo'")
    assert run.data.params["rearank.rewards.rank_weight"] == "0.8"
    for name in ("reward", "rearank/gain", "rearank/answer_format", "completions/mean_length"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
