"""Cold-start SFT on teacher records with TRL's SFTTrainer, from one config object (``SFTTrainConfig``); with
``objective: first``, FIRST's objective on window records instead (``training.first``).

The records become TRL's conversational prompt-completion rows (the reranker's prompt; the teacher's
``<think>…</think><answer>…</answer>``), so the loss falls on the completion only. TRL's CPU traps are set
explicitly: bf16 only where the hardware multiplies it, and ``max_length`` checked
against every record first (TRL would silently truncate a record past it). A rerun resumes from the last
checkpoint in the output folder; the final model (or LoRA adapter) and its tokenizer are saved at the top of
that folder, where ``rearank rerank --model DIR`` loads them."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rearank_core.backends.adapters import library_deprecations_quiet
from rearank_core.backends.base import hf_chat_ids, prefix_token_count, single_token_ids
from rearank_core.config import SFTTrainConfig
from rearank_core.errors import InputError
from rearank_core.io.training_data import SFTRecord, WindowRecord
from rearank_core.prompts import load_template
from rearank_core.records import Messages
from rearank_core.training.first import first_rows, first_trainer_class
from rearank_core.training.setup import (
    base_name,
    finished,
    load_base,
    load_records,
    lora_config,
    record_finished,
    resume_point,
    save_final,
)

log = logging.getLogger(__name__)


def sft_rows(records: list[SFTRecord]) -> list[dict[str, Any]]:
    """TRL's conversational prompt-completion rows: every turn but the last, and the assistant's last turn."""
    return [{"prompt": r.messages[:-1], "completion": r.messages[-1:]} for r in records]


def check_lengths(conversations: list[Messages], ids: list[str], tokenizer: Any, max_length: int,
                  path: str | Path) -> int:
    """The longest conversation in tokens; one past ``max_length`` is an error naming its record (never dropped)."""
    longest = 0
    lengths = [len(row) for row in hf_chat_ids(tokenizer, conversations, add_generation_prompt=False)]
    for number, (record_id, length) in enumerate(zip(ids, lengths, strict=True), start=1):
        if length > max_length:
            raise InputError(f"record {record_id} is {length} tokens, past sft.max_length {max_length}; raise it or "
                             "shorten the passages", path, number, "messages")
        longest = max(longest, length)
    return longest


def run_sft(cfg: SFTTrainConfig, records_path: str | Path, output_dir: str | Path, model_cache: str | Path,
            report_to: list[str] | None = None) -> dict[str, Any]:
    """Train, resuming from the last checkpoint in ``output_dir`` if there is one; returns the run's figures."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    first = cfg.objective == "first"
    records = load_records(records_path, WindowRecord if first else SFTRecord, cfg.limit)
    model, tokenizer, dtype, device, continues = load_base(cfg.model, model_cache, cfg.dtype, cfg.lora)
    if first:
        template = load_template(cfg.first_prompt)
        rows = first_rows(records, template)
        identifiers = [template.identifier(i) for i in range(1, max(len(r["relevance"]) for r in rows) + 1)]
        first_args = {"identifier_ids": single_token_ids(tokenizer, template.answer_prefix, identifiers, cfg.model),
                      "prefix_tokens": prefix_token_count(tokenizer, template.answer_prefix),
                      "ranknet_weight": cfg.ranknet_weight}
    else:
        rows = sft_rows(records)
    longest = check_lengths([r["prompt"] + r["completion"] for r in rows], [r.id for r in records], tokenizer,
                            cfg.max_length, records_path)
    resume = resume_point(output_dir, {"sft": asdict(cfg)}, [records_path, cfg.model])
    done = finished(output_dir)
    if done is not None:
        log.info("SFT already finished in %s (the same job): nothing to train", output_dir)
        return done
    peft_config = None if continues else lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    args = SFTConfig(
        output_dir=str(output_dir), use_cpu=device == "cpu", bf16=dtype == torch.bfloat16, fp16=False,
        activation_checkpointing=cfg.activation_checkpointing, max_length=cfg.max_length,
        completion_only_loss=True, packing=False,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.scheduler, warmup_steps=cfg.warmup_ratio, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, seed=cfg.seed,
        report_to=report_to or "none", disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=not first)  # first: each row's graded labels reach the collator
    with library_deprecations_quiet():
        trainer_class, extra = (first_trainer_class(), first_args) if first else (SFTTrainer, {})
        trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer, peft_config=peft_config, **extra)
        if resume:
            log.info("resuming SFT from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)
        save_final(trainer, tokenizer, output_dir, base_name(cfg.model, model_cache), cfg.lora)
    figures = {"records": len(records), "longest_record_tokens": longest, "steps": trainer.state.global_step,
               "train_loss": round(float(result.training_loss), 6), "train_runtime_s": round(result.metrics.get(
                   "train_runtime", 0.0), 2), "samples_per_s": result.metrics.get("train_samples_per_second"),
               "resumed_from": resume or "", "dtype": str(dtype).removeprefix("torch."), "lora": cfg.lora,
               "history": trainer.state.log_history}
    record_finished(output_dir, figures)
    log.info("SFT done: %s", {k: v for k, v in figures.items() if k != "history"})
    return figures
