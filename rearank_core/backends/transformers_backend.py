"""Local greedy generation with Hugging Face transformers, on CPU or one GPU: loads the model and its
tokenizer, renders chat prompts to token ids, and hands them to ``transformers_engine.Decoder``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rearank_core.backends.adapters import load_causal_lm, tokenizer_source
from rearank_core.backends.base import (
    Completion,
    IdentifierScores,
    check_call,
    first_token_rows,
    hf_chat_ids,
    hf_count_tokens,
    hf_truncate,
    local_model,
    single_token_ids,
)
from rearank_core.backends.transformers_engine import (
    Decoder,
    pick_device,
    pick_dtype,
)
from rearank_core.errors import BackendError
from rearank_core.records import Messages

DEFAULT_BATCH_SIZE = 16


class TransformersBackend:
    """Greedy batched generation (EOS or a stop string ends a sequence)."""

    name = "transformers"
    max_parallel_calls = 1
    has_tokenizer = True

    def __init__(self, model: str, cache_dir: Path = Path("work/models"), batch_size: int = DEFAULT_BATCH_SIZE,
                 dtype: str = "auto", device: str = "auto", stop_strings: tuple[str, ...] = ("</answer>",),
                 threads: int | None = None, engine: str = "auto", min_new_tokens: int = 0):
        """``min_new_tokens``: EOS is suppressed until a sequence has this many tokens (HF's option of the same
        name; stop strings still end it). Throughput benchmarks set it to the generation limit so that every
        window decodes as long as a reasoning model's would."""
        if batch_size < 1:
            raise BackendError(f"batch_size must be at least 1, got {batch_size}")
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.model_name = model
        self.max_batch_size = batch_size
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.path = local_model(model, cache_dir)
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        hf_logging.disable_progress_bar()  # the weight-loading bar: the reranker shows its own progress
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(self.path, Path(cache_dir)))
            self.model = load_causal_lm(self.path, Path(cache_dir), self.dtype)
        except Exception as exc:  # OSError (missing / not cached), ValueError (not a causal LM), ...
            hint = ("; HF_HUB_OFFLINE is set, so a hub id loads only from the local Hugging Face cache"
                    if offline and not Path(self.path).is_dir() else "")
            raise BackendError(f"cannot load model {model!r} ({self.path}): {type(exc).__name__}: {exc}{hint}") from exc
        try:
            self.model.to(self.device)
        except Exception as exc:
            raise BackendError(f"cannot move model {model!r} to device {self.device!r}: {exc}") from exc
        self.model.eval()

        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise BackendError(f"model {model!r} has no chat template in its tokenizer; use an instruct/chat model")
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.decoder = Decoder(self.model, tok, self.device, stop_strings=stop_strings,
                                     min_new_tokens=min_new_tokens, engine=engine)
        self.engine = self.decoder.engine
        self._identifier_ids: dict[tuple[str, tuple[str, ...]], list[int]] = {}

    def count_tokens(self, text: str) -> int | None:
        return hf_count_tokens(self._tokenizer(), text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return hf_truncate(self._tokenizer(), text, max_tokens)

    def _tokenizer(self) -> object:
        if self.tokenizer is None:
            raise BackendError(f"the {self.name} backend is closed")
        return self.tokenizer

    def prompt_ids(self, prompts: list[Messages]) -> list[list[int]]:
        """Token ids of chat prompts with the generation prompt appended, as ``complete`` feeds them."""
        return hf_chat_ids(self.tokenizer, prompts)

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        if not prompts:
            return []
        check_call(self.name, self.model, max_new_tokens)
        results: list[Completion] = []
        self.decoder.last_stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "total_s": 0.0}
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start:start + self.max_batch_size]
            started = time.perf_counter()
            rows = self.prompt_ids(chunk)
            try:
                outs = self.decoder.generate(rows, max_new_tokens)
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"generation with model {self.model_name!r} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            latency = time.perf_counter() - started
            self.decoder.last_stats["total_s"] += latency
            for prompt_ids, (ids, reason) in zip(rows, outs):
                results.append(Completion(text=self.decoder.text(ids), prompt_tokens=len(prompt_ids),
                                          completion_tokens=len(ids), finish_reason=reason, latency_s=latency))
        return results

    def identifier_token_ids(self, answer_prefix: str, identifiers: list[str]) -> list[int]:
        """The token id of each identifier where the answer's first identifier goes (after the generation prompt
        and ``answer_prefix``); a BackendError naming those that are not one token there."""
        key = (answer_prefix, tuple(identifiers))
        if key not in self._identifier_ids:
            self._identifier_ids[key] = single_token_ids(self._tokenizer(), answer_prefix, identifiers,
                                                         self.model_name)
        return self._identifier_ids[key]

    def score_identifiers(self, prompts: list[Messages], answer_prefix: str,
                          identifiers: list[str]) -> list[IdentifierScores]:
        check_call(self.name, self.model, 1)
        wanted = self.identifier_token_ids(answer_prefix, identifiers)  # checked even for no prompts
        if not prompts:
            return []
        results: list[IdentifierScores] = []
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start:start + self.max_batch_size]
            started = time.perf_counter()
            rows = first_token_rows(self.tokenizer, chunk, answer_prefix)
            try:
                scores = self.decoder.next_token_logprobs(rows, wanted)
            except Exception as exc:
                raise BackendError(f"scoring with model {self.model_name!r} failed: {type(exc).__name__}: {exc}") \
                    from exc
            latency = time.perf_counter() - started
            results.extend(IdentifierScores(logprobs=row, prompt_tokens=len(ids), latency_s=latency)
                           for ids, row in zip(rows, scores))
        return results

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        self.decoder.model = None
