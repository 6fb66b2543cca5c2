"""GRPO rollouts on the project's own decoding engine, through TRL's ``rollout_func`` hook.

On a CPU, TRL's built-in generation pads the group's prompts into one batch and runs ``model.generate``: a padded
prefill takes SDPA's masked kernel and the dynamic cache copies itself every step. The ``loop`` engine
(``backends.transformers_engine``) prefills each distinct prompt once for its whole group (the G rows of a GRPO
group share one prompt), decodes all rows in one preallocated cache, and stops a row at ``</answer>``, where
the reranker stops too. With vLLM (GPU) TRL's own path is used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rearank_core.backends.base import hf_chat_ids
from rearank_core.backends.transformers_engine import Decoder, Sampling, loop_supported

ROLLOUT_ENGINES = ("auto", "engine", "trl")
STOP_STRINGS = ("</answer>",)


def use_engine(choice: str, model: Any, device: str, use_vllm: bool) -> bool:
    """Whether rollouts go through the project's engine: ``auto`` picks it on a CPU for the decoder families the
    ``loop`` engine supports (never with vLLM, which is faster still)."""
    if choice == "trl" or use_vllm:
        return False
    if choice == "engine":
        return True
    return device == "cpu" and loop_supported(model)


def engine_rollout(tokenizer: Any, max_completion_length: int, sampling: Sampling,
                   device: str) -> Callable[[list[Any], Any], dict[str, Any]]:
    """A TRL ``rollout_func``: one sampled completion per prompt row (TRL's sampler already repeats each prompt
    ``num_generations`` times), decoded by the policy as it stands at this step. No sampling log-probabilities
    are returned: on-policy generation needs no importance-sampling correction (TRL's own path returns none)."""
    decoders: dict[int, Decoder] = {}

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        decoder = decoders.get(id(model))
        if decoder is None:
            decoder = decoders[id(model)] = Decoder(model, tokenizer, device, stop_strings=STOP_STRINGS,
                                                    engine="loop" if device == "cpu" else "generate",
                                                    sampling=sampling)
        prompt_ids = hf_chat_ids(tokenizer, prompts)
        training = model.training
        model.eval()  # LoRA dropout off while sampling, as TRL's own generation does
        try:
            outputs = decoder.generate(prompt_ids, max_completion_length)
        finally:
            model.train(training)
        return {"prompt_ids": prompt_ids, "completion_ids": end_with_eos(outputs, tokenizer.eos_token_id,
                                                                         max_completion_length), "logprobs": None}

    return rollout


def end_with_eos(outputs: list[tuple[list[int], str]], eos_id: int, max_completion_length: int) -> list[list[int]]:
    """Each row's ids, with EOS appended to a row that stopped at ``</answer>`` (reason "stop") without one: the
    model's own end of turn, as TRL's generation ends a row, so TRL counts as truncated (``completions/clipped_ratio``,
    ``mask_truncated_completions``) only the rows the length limit cut, and the policy learns to end there."""
    return [ids + [eos_id] if reason == "stop" and (not ids or ids[-1] != eos_id) and len(ids) < max_completion_length
            else ids for ids, reason in outputs]
