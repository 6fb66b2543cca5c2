"""The one small interface every generation backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# A chat prompt: [{"role": "system"|"user"|"assistant", "content": str}, ...]
Messages = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (ended by itself or a stop string) or "length" (hit max_new_tokens)
    latency_s: float


class BackendError(RuntimeError):
    """A backend failed for good (after its retries); the message says what and where."""


class Backend(Protocol):
    """Generates completions for a batch of chat prompts, greedy.

    ``max_batch_size``: prompts per ``complete`` call (the transformers and vLLM backends batch them).
    ``max_parallel_calls``: ``complete`` calls the scheduler may keep in flight at once from threads
    (the HTTP backend: its concurrency limit; local backends: 1)."""

    name: str
    max_batch_size: int
    max_parallel_calls: int

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens in ``text`` under the model's tokenizer, or None when the backend has no tokenizer."""
        ...

    def close(self) -> None: ...
