"""GRPO on the GRPO records with TRL's GRPOTrainer, from one config object (``GRPOTrainConfig``).

Rows are TRL's conversational ``prompt`` plus the reward columns (``labels`` for REARANK's reward, ``relevant`` and
``gold`` for ReasonRank's); the reward's components reach MLflow through TRL's ``log_metric`` hook. TRL's
defaults that do not fit a CPU are set explicitly (group size, completion length, bf16). Memory: the group's
completions are generated once per optimiser step and trained ``micro_batch`` at a time (gradients accumulated),
with activation checkpointing: the four ~1,300-token rows of an embedded-profile step in one float32
forward/backward saved 3 GiB of activations per row for the backward pass. A rerun resumes from the last
checkpoint; the final policy (or adapter) is saved at the top of the
output folder, where ``rearank rerank --model DIR`` loads it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rearank_core.backends.adapters import is_adapter
from rearank_core.backends.base import local_model
from rearank_core.backends.transformers_engine import Sampling
from rearank_core.config import GRPOTrainConfig, RewardConfig
from rearank_core.errors import InputError
from rearank_core.io.training_data import GRPORecord
from rearank_core.training.rewards import constant_terms, multiview_reward, rearank_reward
from rearank_core.training.rollout import engine_rollout, use_engine
from rearank_core.backends.adapters import library_deprecations_quiet
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


def grpo_rows(records: list[GRPORecord]) -> list[dict[str, Any]]:
    return [{"prompt": r.prompt, "labels": r.labels, "relevant": r.relevant, "gold": r.gold} for r in records]


def reward_function(kind: str, weights: RewardConfig) -> Callable[..., list[float]]:
    """The configured reward with params.yaml's weights, named for TRL's logs (``rewards/<name>/mean``)."""
    def rearank(completions: list[Any], labels: list[list[int]], **kwargs: Any) -> list[float]:
        return rearank_reward(completions, labels, weights.rank_weight, weights.strict_weight, weights.answer_weight,
                              weights.gain_clip, weights.gain_floor, **kwargs)

    def multiview(completions: list[Any], relevant: list[list[int]], gold: list[list[int]],
                  **kwargs: Any) -> list[float]:
        return multiview_reward(completions, relevant, gold, weights.ndcg_weight, weights.recall_weight,
                                weights.rbo_weight, weights.rbo_p, **kwargs)

    return {"rearank": rearank, "multiview": multiview}[kind]


def check_reference(cfg: GRPOTrainConfig, model_cache: str | Path) -> None:
    """Refuse a KL term toward the wrong model. With ``lora: false`` an adapter given as ``grpo.model`` is merged
    into its base for a full fine-tune, and TRL builds the reference for ``beta > 0`` from the loaded model's name,
    the base before SFT: the KL would pull the policy back to the untrained model."""
    path = local_model(cfg.model, Path(model_cache))
    if cfg.beta > 0 and not cfg.lora and is_adapter(path):
        raise InputError(f"grpo.beta {cfg.beta} with an adapter as grpo.model and grpo.lora false: the adapter is "
                         "merged for a full fine-tune and the KL reference would be its base model, before SFT; set "
                         "grpo.lora true (the reference is then the adapter's own starting point), grpo.beta 0, or "
                         "give a merged model folder", field="grpo.beta")


def run_grpo(cfg: GRPOTrainConfig, weights: RewardConfig, records_path: str | Path, output_dir: str | Path,
             model_cache: str | Path, report_to: list[str] | None = None) -> dict[str, Any]:
    """Train, resuming from the last checkpoint in ``output_dir`` if there is one; returns the run's figures."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    records = load_records(records_path, GRPORecord, cfg.limit)
    check_reference(cfg, model_cache)
    resume = resume_point(output_dir, {"grpo": asdict(cfg), "rewards": asdict(weights)}, [records_path, cfg.model])
    done = finished(output_dir)
    if done is not None:
        log.info("GRPO already finished in %s (the same job): nothing to train", output_dir)
        return done
    for warning in constant_terms(cfg.reward, weights.recall_weight, max(len(r.labels) for r in records)):
        log.warning("%s: %s", records_path, warning)
    model, tokenizer, dtype, device, continues = load_base(cfg.model, model_cache, cfg.dtype, cfg.lora)
    args = GRPOConfig(
        output_dir=str(output_dir), use_cpu=device == "cpu", bf16=dtype == torch.bfloat16, fp16=False,
        activation_checkpointing=cfg.activation_checkpointing, num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum * cfg.num_generations // cfg.micro_batch,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
        loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards, learning_rate=cfg.learning_rate,
        max_steps=cfg.max_steps, logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, use_vllm=cfg.use_vllm, report_to=report_to or "none",
        disable_tqdm=True, dataloader_num_workers=0, vllm_mode=cfg.vllm_mode,
        vllm_server_base_url=cfg.vllm_server_base_url)
    rollout = None
    if use_engine(cfg.rollout_engine, model, device, cfg.use_vllm):
        rollout = engine_rollout(tokenizer, cfg.max_completion_length,
                                 Sampling(args.temperature, args.top_p, args.top_k), device)
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's "experimental" notice
    log.info("GRPO rollouts: %s", "the project's decoding engine" if rollout else "TRL's generation")
    with library_deprecations_quiet():
        trainer = GRPOTrainer(model=model, reward_funcs=[reward_function(cfg.reward, weights)], args=args,
                              train_dataset=Dataset.from_list(grpo_rows(records)), processing_class=tokenizer,
                              rollout_func=rollout,
                              peft_config=None if continues else lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha,
                                                                             cfg.lora_dropout))
        if resume:
            log.info("resuming GRPO from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)
        save_final(trainer, tokenizer, output_dir, base_name(cfg.model, model_cache), cfg.lora)
    history = [entry for entry in trainer.state.log_history if "reward" in entry]
    figures = {"records": len(records), "steps": trainer.state.global_step, "reward": cfg.reward,
               "train_loss": round(float(result.training_loss), 6),
               "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
               "first_reward": history[0]["reward"] if history else None,
               "last_reward": history[-1]["reward"] if history else None,
               "resumed_from": resume or "", "dtype": str(dtype).removeprefix("torch."), "lora": cfg.lora,
               "rollouts": "engine" if rollout else "trl",
               "history": trainer.state.log_history}
    record_finished(output_dir, figures)
    log.info("GRPO done: %s", {k: v for k, v in figures.items() if k != "history"})
    return figures
