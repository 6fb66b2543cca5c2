"""Greedy generation with the vLLM offline engine (GPU machines; the optional ``vllm`` extra).

vLLM is imported only where an engine is built or sampled, so this module imports (and the CLI lists the backend) on
machines without it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rearank_core.backends.base import (
    Completion,
    IdentifierScores,
    check_call,
    first_token_rows,
    hf_count_tokens,
    hf_truncate,
    local_model,
    single_token_ids,
)
from rearank_core.errors import BackendError
from rearank_core.records import Messages

INSTALL_HINT = "install the vllm extra: pip install 'rearank[vllm]'"
FIRST_MAX_WINDOW = 26  # first mode's largest window (identifiers [A]..[Z]): the log-probabilities one call returns


class VLLMBackend:
    """One vLLM ``LLM`` engine; ``complete`` sends the whole batch to ``LLM.chat`` (vLLM schedules it)."""

    name = "vllm"
    max_parallel_calls = 1
    has_tokenizer = True

    def __init__(self, model: str, cache_dir: Path = Path("work/models"), batch_size: int = 256,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = 8192, stop_strings: tuple[str, ...] = ("</answer>",),
                 dtype: str = "auto", seed: int = 0):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendError(f"the vllm backend needs the vllm package; {INSTALL_HINT} ({exc})") from exc
        self._configure(model, batch_size, stop_strings)
        self.path = local_model(model, cache_dir)
        kwargs = {"model": self.path, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size,
                  "gpu_memory_utilization": gpu_memory_utilization, "enable_prefix_caching": True, "seed": seed,
                  # first mode: the identifiers' log-probabilities after allowed_token_ids, a window's worth
                  "logprobs_mode": "processed_logprobs", "max_logprobs": FIRST_MAX_WINDOW}
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:
            raise BackendError(f"vLLM cannot load model {model!r} ({self.path}): {type(exc).__name__}: {exc}") from exc

    @classmethod
    def from_engine(cls, llm: object, model: str, batch_size: int = 256,
                    stop_strings: tuple[str, ...] = ("</answer>",)) -> VLLMBackend:
        """A backend over an engine that is already loaded (e.g. the vLLM engine a GRPO trainer colocates),
        so a second copy of the weights never loads. ``llm`` needs ``chat`` and ``get_tokenizer``."""
        backend = cls.__new__(cls)
        backend._configure(model, batch_size, stop_strings)
        backend.path = model
        backend.llm = llm
        return backend

    def _configure(self, model: str, batch_size: int, stop_strings: tuple[str, ...]) -> None:
        if batch_size < 1:
            raise BackendError(f"batch_size must be at least 1, got {batch_size}")
        self.model_name = model
        self.max_batch_size = batch_size
        self.stop_strings = tuple(s for s in stop_strings if s)

    def _params(self, max_new_tokens: int):
        from vllm import SamplingParams

        # Explicit greedy settings: vLLM uses these as given (no model generation_config defaults mixed in).
        return SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens,
                                    stop=list(self.stop_strings) or None, include_stop_str_in_output=True,
                                    repetition_penalty=1.0, skip_special_tokens=True)

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        if not prompts:
            return []
        check_call(self.name, self.llm, max_new_tokens)
        outputs, latency = self._run("generation", len(prompts), lambda: self.llm.chat(
            prompts, sampling_params=self._params(max_new_tokens), use_tqdm=False))
        results = []
        for request in outputs:
            out = request.outputs[0]
            results.append(Completion(
                text=out.text,
                prompt_tokens=len(request.prompt_token_ids or []),
                completion_tokens=len(out.token_ids),
                finish_reason="length" if out.finish_reason == "length" else "stop",
                latency_s=latency))
        return results

    def score_identifiers(self, prompts: list[Messages], answer_prefix: str,
                          identifiers: list[str]) -> list[IdentifierScores]:
        """First mode: one token per prompt (the prompt ends inside the answer, after ``answer_prefix``),
        restricted to the identifiers' tokens, with their log-probabilities. The engine this backend builds
        returns them after that restriction (``logprobs_mode="processed_logprobs"``); over another engine (the
        colocated GRPO one) raw log-probabilities come back, and an identifier outside the top ones has none."""
        wanted = single_token_ids(self._tokenizer(), answer_prefix, identifiers, self.model_name)
        if not prompts:
            return []
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        rows = first_token_rows(self._tokenizer(), prompts, answer_prefix)
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=len(wanted), allowed_token_ids=wanted)
        outputs, latency = self._run("scoring", len(prompts), lambda: self.llm.generate(
            [TokensPrompt(prompt_token_ids=row) for row in rows], params, use_tqdm=False))
        results = []
        for row, request in zip(rows, outputs):
            first = (request.outputs[0].logprobs or [{}])[0]
            results.append(IdentifierScores(
                logprobs=[first[t].logprob if t in first else float("-inf") for t in wanted],
                prompt_tokens=len(row), latency_s=latency))
        return results

    def _run(self, what: str, expected: int, call: Callable[[], list]) -> tuple[list, float]:
        """One engine call, timed; its failure, or a wrong number of outputs, as a BackendError."""
        started = time.perf_counter()
        try:
            outputs = call()
        except Exception as exc:
            raise BackendError(f"vLLM {what} with model {self.model_name!r} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        if len(outputs) != expected:
            raise BackendError(f"vLLM returned {len(outputs)} outputs for {expected} prompts")
        return outputs, time.perf_counter() - started

    def _tokenizer(self) -> object:
        if self.llm is None:
            raise BackendError(f"the {self.name} backend is closed")
        return self.llm.get_tokenizer()

    def count_tokens(self, text: str) -> int | None:
        return hf_count_tokens(self._tokenizer(), text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return hf_truncate(self._tokenizer(), text, max_tokens)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        del llm
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass
