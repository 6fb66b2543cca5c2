"""What both trainers set up the same way: the base model and tokenizer on the right device and dtype, LoRA,
quiet loading, and where a rerun resumes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from rearank_core.backends.adapters import (
    adapter_base,
    is_adapter,
    load_causal_lm,
    set_adapter_base,
    tokenizer_source,
)
from rearank_core.backends.base import local_model
from rearank_core.backends.transformers_engine import pick_dtype
from rearank_core.errors import InputError
from rearank_core.io.files import write_json
from rearank_core.io.jobs import claim, job_identity, local_inputs
from rearank_core.io.training_data import read_records

T = TypeVar("T")
JOB_MARKER = "rearank-job.txt"  # the identity of the job whose checkpoints the folder holds
DONE_MARKER = "rearank-done.json"  # the figures of that job once it finished


def load_records(path: str | Path, cls: type[T], limit: int | None) -> list[T]:
    """The training records (the first ``limit``); none at all is an error naming the file."""
    records = read_records(path, cls)[:limit]
    if not records:
        raise InputError("no records to train on", path)
    return records


def load_base(model: str, model_cache: str | Path, dtype_name: str, lora: bool) -> tuple[Any, Any, Any, str, bool]:
    """(model, tokenizer, torch dtype, device, continues_adapter) for ``model`` ('embedded', a folder, a hub id or
    a LoRA adapter folder). bf16 only where the CPU or GPU multiplies it in hardware (``auto``). With ``lora``, an
    adapter folder stays a trainable adapter (``continues_adapter``: GRPO goes on training the SFT adapter, so the
    run ships one adapter); without, it is merged into its base for a full fine-tune."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars; the trainers' figures go to the log and MLflow
    path = local_model(model, Path(model_cache))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = pick_dtype(dtype_name, device)
    adapter = is_adapter(path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(path, Path(model_cache)))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = load_causal_lm(path, Path(model_cache), dtype, trainable_adapter=lora and adapter)
    return loaded, tokenizer, dtype, device, lora and adapter


def base_name(model: str, model_cache: str | Path) -> str:
    """The base model as the user names it: an adapter folder's own base, else ``model`` itself."""
    path = local_model(model, Path(model_cache))
    return adapter_base(path) if is_adapter(path) else model


def save_final(trainer: Any, tokenizer: Any, output_dir: str | Path, base: str, lora: bool) -> None:
    """The trained model (or adapter, naming ``base`` as the user gave it, so it loads elsewhere) and tokenizer at
    the top of ``output_dir``, where ``rearank rerank --model DIR`` loads them."""
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    if lora:
        set_adapter_base(output_dir, base)


def lora_config(enabled: bool, r: int, alpha: int, dropout: float) -> Any:
    """A peft LoRA config over every linear layer, or None for a full fine-tune."""
    if not enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def code_digest() -> str:
    """SHA-256 of the training code and the prompt templates: a job run by other code is another job."""
    import rearank_core.prompts
    import rearank_core.training

    digest = hashlib.sha256()
    for package, pattern in ((rearank_core.training, "*.py"), (rearank_core.prompts, "*.yaml")):
        folder = Path(package.__file__).parent
        for path in sorted(folder.glob(pattern)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def resume_point(output_dir: str | Path, settings: Mapping[str, Any], inputs: list[str | Path]) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` when this same job wrote it (same settings, same bytes of
    ``inputs``: records, starting model; same training code), where a rerun resumes. Another job's checkpoints are
    removed and None is returned: a fresh start."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    partial = [*sorted(output_dir.glob("checkpoint-*")), output_dir / DONE_MARKER]
    identity = job_identity({**settings, "code": code_digest()}, local_inputs(*inputs))
    if not claim(output_dir / JOB_MARKER, identity, partial):
        return None
    return get_last_checkpoint(str(output_dir))


def finished(output_dir: str | Path) -> dict[str, Any] | None:
    """The figures of this job when it already finished in ``output_dir`` (call after ``resume_point``, which
    removes another job's): a rerun returns them instead of training again, since Trainer resumed from a finished
    run's last checkpoint trains one step past it."""
    output_dir = Path(output_dir)
    done = output_dir / DONE_MARKER
    saved = any((output_dir / name).is_file() for name in ("adapter_config.json", "config.json"))
    return json.loads(done.read_text(encoding="utf-8")) if done.is_file() and saved else None


def record_finished(output_dir: str | Path, figures: dict[str, Any]) -> None:
    write_json(Path(output_dir) / DONE_MARKER, figures)

