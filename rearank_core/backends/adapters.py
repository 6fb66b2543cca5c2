"""LoRA adapters as the trainers save them and the backends load them.

An adapter folder names its base model in ``adapter_config.json``. The trainers write the base as the user gave it
('embedded', a hub id) rather than the converted folder it was loaded from, so a shipped adapter loads on any
machine: the base resolves there through the same rules as ``--model``."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rearank_core.backends.embedded import resolve_model
from rearank_core.errors import BackendError
from rearank_core.io.files import atomic_write
from rearank_core.memory import tune_allocator

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder names."""
    config = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(f"{config}: no readable base_model_name_or_path ({exc})") from exc
    if not isinstance(base, str) or not base:
        raise BackendError(f"{config}: base_model_name_or_path must be a model name, got {base!r}")
    return base


def tokenizer_source(path: str, cache_dir: Path) -> str:
    """Where ``path``'s tokenizer loads from: the folder itself, or an adapter's base when the adapter ships none."""
    if is_adapter(path) and not (Path(path) / "tokenizer_config.json").is_file():
        return resolve_model(adapter_base(path), cache_dir)
    return path


def set_adapter_base(path: str | Path, base: str) -> None:
    """Record ``base`` (as the user names it) as the adapter's base model."""
    config = Path(path) / ADAPTER_CONFIG
    data = json.loads(config.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = base
    with atomic_write(config) as sink:
        sink.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def library_deprecations_quiet() -> Iterator[None]:
    """Silence the deprecation notices peft and TRL trigger inside transformers 5 (they call
    ``gradient_checkpointing_enable`` / ``is_gradient_checkpointing``, renamed ``activation_checkpointing_*``): the
    user can do nothing about them. Matched by exact message; everything else still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated "
                                                  r"and will be removed in v6", category=FutureWarning)
        yield


def load_causal_lm(path: str, cache_dir: Path, dtype: Any, trainable_adapter: bool = False) -> Any:
    """A causal LM from a model folder, a hub id, or an adapter folder. An adapter is loaded on its base and merged
    (inference), or kept as a trainable peft model (``trainable_adapter``: training goes on in the same adapter,
    so a run ships one adapter however many stages trained it)."""
    from transformers import AutoModelForCausalLM

    tune_allocator()  # before the first tensor: training and long generation otherwise keep their freed memory
    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    from peft import PeftModel

    base_path = resolve_model(adapter_base(path), cache_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, attn_implementation="sdpa")
    with library_deprecations_quiet():
        model = PeftModel.from_pretrained(base, path, is_trainable=trainable_adapter)
    if not trainable_adapter:
        return model.merge_and_unload()
    # While it trains, the adapter names the folder its base loaded from: peft looks the base's config.json up
    # at every save, and a portable name ('embedded') sent it to the hub (a warning per checkpoint offline).
    # save_final writes the portable name back.
    model.peft_config[model.active_adapter].base_model_name_or_path = base_path
    return model
