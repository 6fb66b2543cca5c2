"""Training profiles: params.yaml is the embedded CPU profile, profiles/paper.yaml the published setting laid over
it (``extends``); the multi-GPU launch files under infra/ load through accelerate's and DeepSpeed's own readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rearank_core.config import Params, load_params
from rearank_core.errors import InputError

QWEN = "Qwen/Qwen2.5-7B-Instruct"
# The DeepSpeed keys whose "auto" the HF Trainer fills (transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig).
TRAINER_AUTO_KEYS = {
    "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping",
    "fp16.enabled", "bf16.enabled", "optimizer.params.lr", "optimizer.params.betas", "optimizer.params.eps",
    "optimizer.params.weight_decay", "scheduler.params.warmup_min_lr", "scheduler.params.warmup_max_lr",
    "scheduler.params.total_num_steps", "scheduler.params.warmup_num_steps", "zero_optimization.reduce_bucket_size",
    "zero_optimization.stage3_prefetch_bucket_size", "zero_optimization.stage3_param_persistence_threshold",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_paper_profile_has_the_published_setting(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root)
    paper = load_params("profiles/paper.yaml")
    assert paper.path == "profiles/paper.yaml"
    assert (paper.rerank.backend, paper.rerank.model, paper.rerank.window, paper.rerank.step) == ("vllm", QWEN, 20, 10)
    assert paper.rerank.max_new_tokens >= 2048
    assert (paper.data.window, paper.data.per_query, paper.data.tokenizer) == (20, 50, QWEN)
    sft = paper.sft
    assert (sft.model, sft.lora, sft.learning_rate, sft.batch_size, sft.grad_accum, sft.epochs) == (QWEN, False, 5e-6,
                                                                                                   1, 8, 5.0)
    assert (sft.scheduler, sft.warmup_ratio, sft.dtype) == ("cosine", 0.1, "auto") and sft.max_length >= 20480
    grpo = paper.grpo
    assert (grpo.num_generations, grpo.beta, grpo.learning_rate, grpo.temperature) == (8, 0.001, 1e-6, 1.0)
    assert grpo.max_completion_length >= 2048 and grpo.max_steps == 200
    assert grpo.use_vllm and not grpo.lora and grpo.vllm_mode == "colocate"
    embedded = load_params("params.yaml")
    assert grpo.model == embedded.job("train_job").sft_dir  # GRPO starts from the SFT output folder
    assert paper.rewards == embedded.rewards and paper.job("data_job") == embedded.job("data_job")


def test_the_server_profile_extends_the_paper_profile(root: Path) -> None:
    server = load_params(root / "profiles" / "paper-server.yaml")
    assert (server.grpo.vllm_mode, server.grpo.vllm_server_base_url) == ("server", "http://127.0.0.1:8000")
    assert server.grpo.num_generations == 8 and server.rerank.model == QWEN


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml"])
def test_training_and_inference_prompts_match(root: Path, profile: str) -> None:
    params = load_params(root / profile)
    assert params.rerank.window == params.data.window
    assert (params.rerank.truncate_unit, params.rerank.truncate_length) == (params.data.truncate_unit,
                                                                            params.data.truncate_length)


def test_the_embedded_profile_is_the_cpu_one(root: Path) -> None:
    params = load_params(root / "params.yaml")
    assert params.rerank.window == 10 and params.sft.lora
    assert params.sft.model == params.job("train_job").export  # the main job goes on training the shipped adapter
    assert params.rerank.model == params.job("train_job").export  # the shipped adapter on the embedded model
    assert (params.rerank.truncate_unit, params.rerank.truncate_length) == ("words", 48)
    assert not params.grpo.use_vllm and params.grpo.vllm_mode == "colocate"


def test_an_overlay_replaces_its_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "bm25:\n  k1: 1.2\nrerank:\n  window: 10\n  top_k: 50\n")
    overlay = write(tmp_path / "profiles" / "big.yaml",  # relative to the overlay, not the working directory
                    "extends: ../base.yaml\nrerank:\n  window: 20\ntracking:\n  experiment: big\n")
    params = load_params(overlay)
    assert (params.rerank.window, params.rerank.top_k, params.bm25.k1) == (20, 50, 1.2)
    assert params.tracking.experiment == "big"  # a section only the overlay has
    assert params.path == str(overlay) and params.baseline is None


def test_an_empty_overlay_is_its_base(root: Path, tmp_path: Path) -> None:
    overlay = write(tmp_path / "same.yaml", f"extends: {root / 'params.yaml'}\n")
    assert load_params(overlay) == Params(**{**vars(load_params(root / "params.yaml")), "path": str(overlay)})


@pytest.mark.parametrize("files, says", [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "bm25:\n  k: 5\nextends: a.yaml\n"}, "extends cycle"),
    ({"a.yaml": "extends: a.yaml\n"}, "extends cycle"),
    ({"a.yaml": "extends: none.yaml\n"}, "no such params file"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "expected the path of the params file this one extends"),
])
def test_a_bad_extends_is_an_error(tmp_path: Path, files: dict[str, str], says: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(InputError, match="field 'extends'") as caught:
        load_params(tmp_path / "a.yaml")
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("base, overlay, where, line, key, says", [
    ("rerank:\n  window: 10\n", "extends: base.yaml\nrerank:\n  window: \"20\"\n", "overlay", 3, "rerank.window",
     "expected an integer, got '20' (str)"),
    ("rerank:\n  window: 10\n", "extends: base.yaml\n\ngrpo:\n  vllm_mode: remote\n", "overlay", 4, "grpo.vllm_mode",
     "expected one of colocate, server"),
    ("rerank:\n  window: 10\n", "extends: base.yaml\nrerank:\n  windw: 20\n", "overlay", 3, "rerank.windw",
     "unknown key"),
    ("bm25:\n  k: 1\n  b: 1.5\n", "extends: base.yaml\nbm25:\n  k: 5\n", "base", 3, "bm25.b", "must be at most 1"),
    ("\nreranker: {}\n", "extends: base.yaml\nrerank:\n  window: 20\n", "base", 2, "reranker", "unknown section"),
])
def test_errors_name_the_file_and_line_the_value_came_from(tmp_path: Path, base: str, overlay: str, where: str,
                                                           line: int, key: str, says: str) -> None:
    paths = {"base": write(tmp_path / "base.yaml", base), "overlay": write(tmp_path / "overlay.yaml", overlay)}
    with pytest.raises(InputError) as caught:
        load_params(paths["overlay"])
    message = str(caught.value)
    assert message.startswith(f"{paths[where]}:{line}: field '{key}': "), message
    assert says in message


def test_the_accelerate_config_loads_and_names_the_deepspeed_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.commands.config.config_args import (
        ClusterConfig,
        load_config_from_file,
    )
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    config = load_config_from_file(str(root / "infra" / "accelerate" / "multi_gpu.yaml"))
    assert isinstance(config, ClusterConfig) and config.distributed_type == DistributedType.DEEPSPEED
    assert (config.num_processes, config.num_machines) == (8, 1)
    ds_file = config.deepspeed_config["deepspeed_config_file"]
    assert (root / ds_file).is_file()  # relative to the repository root, where accelerate is launched
    # What `accelerate launch` hands the training processes: the plugin refuses a file together with the
    # settings it would ignore (mixed_precision, zero_stage, ...), which must live in the DeepSpeed file.
    monkeypatch.chdir(root)
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", ",".join(config.deepspeed_config))
    plugin = DeepSpeedPlugin(hf_ds_config=ds_file, zero3_init_flag=config.deepspeed_config["zero3_init_flag"])
    assert plugin.zero_stage == 3 and plugin.zero3_init_flag


def test_the_deepspeed_config_is_zero3_in_bf16_with_trainer_autos(root: Path) -> None:
    config = json.loads((root / "infra" / "deepspeed" / "zero3.json").read_text())
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and config["bf16"]["enabled"] is True
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # the saved model loads with from_pretrained
    assert "optimizer" not in config and "scheduler" not in config  # the Trainer's AdamW and cosine schedule

    def autos(node: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in node.items():
            if isinstance(value, dict):
                found |= autos(value, f"{prefix}{key}.")
            elif value == "auto":
                found.add(f"{prefix}{key}")
        return found

    assert autos(config) and autos(config) <= TRAINER_AUTO_KEYS
