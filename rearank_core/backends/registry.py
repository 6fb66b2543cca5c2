"""``make_backend``: the backend a rerank config names, built with that config's settings."""

from __future__ import annotations

from pathlib import Path

from rearank_core.backends.base import Backend
from rearank_core.config import BACKENDS, RerankConfig
from rearank_core.errors import InputError


def make_backend(cfg: RerankConfig, stop_strings: tuple[str, ...] = ()) -> Backend:
    if cfg.backend == "transformers":
        from rearank_core.backends.transformers_backend import TransformersBackend

        return TransformersBackend(cfg.model, cache_dir=Path(cfg.model_cache), batch_size=cfg.batch_size,
                                   dtype=cfg.dtype, stop_strings=stop_strings)
    if cfg.backend == "openai":
        from rearank_core.backends.openai_backend import OpenAIBackend

        if cfg.model == "embedded":
            raise InputError("the openai backend needs --model NAME (the served model's name)", field="model")
        return OpenAIBackend(cfg.model, base_url=cfg.base_url, concurrency=cfg.concurrency, timeout_s=cfg.timeout_s,
                             max_retries=cfg.max_retries, reasoning_model=cfg.reasoning_model)
    if cfg.backend == "vllm":
        from rearank_core.backends.vllm_backend import VLLMBackend

        return VLLMBackend(cfg.model, cache_dir=Path(cfg.model_cache), batch_size=cfg.batch_size, stop_strings=stop_strings)
    raise InputError(f"unknown backend {cfg.backend!r}; one of {', '.join(BACKENDS)}", field="backend")
