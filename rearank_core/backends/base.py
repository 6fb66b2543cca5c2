"""The one small interface every generation backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rearank_core.backends.embedded import looks_like_path, resolve_model
from rearank_core.errors import BackendError
from rearank_core.records import Messages


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (ended by itself or a stop string) or "length" (hit max_new_tokens)
    latency_s: float


@dataclass(frozen=True, slots=True)
class IdentifierScores:
    """First mode's reading of one window: how likely each identifier is as the answer's first one."""

    logprobs: list[float]  # per identifier asked for, in that order; -inf where the backend returned none
    prompt_tokens: int
    latency_s: float


def local_model(model: str, cache_dir: Path) -> str:
    """What a local backend loads: the embedded model's converted folder, a local folder, or a hub id.
    A path-like name that is no folder fails here, before any model code runs."""
    path = resolve_model(model, Path(cache_dir))
    if looks_like_path(path) and not Path(path).is_dir():
        raise BackendError(f"model {model!r}: no such model folder {path}")
    return path


def check_call(backend: str, engine: object, max_new_tokens: int) -> None:
    """What a local backend's ``complete`` refuses: a generation limit below 1, or a closed engine."""
    if max_new_tokens < 1:
        raise BackendError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if engine is None:
        raise BackendError(f"the {backend} backend is closed")


@runtime_checkable
class Backend(Protocol):
    """Generates completions for a batch of chat prompts, greedy.

    ``max_batch_size``: prompts per ``complete`` call (the transformers and vLLM backends batch them).
    ``max_parallel_calls``: ``complete`` calls the scheduler may keep in flight at once from threads
    (the HTTP backend: its concurrency limit; local backends: 1).
    ``has_tokenizer``: whether ``count_tokens`` and ``truncate`` work (the HTTP backend cannot reach the
    server's tokenizer). This is everything the reranker uses: no backend attribute outside it."""

    name: str
    max_batch_size: int
    max_parallel_calls: int
    has_tokenizer: bool

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        """One completion per prompt, in order; a ``BackendError`` when the backend fails for good."""
        ...

    def score_identifiers(self, prompts: list[Messages], answer_prefix: str,
                          identifiers: list[str]) -> list[IdentifierScores]:
        """First mode: per prompt, the log-probability of each of ``identifiers`` as the next token after the
        assistant's generation prompt and ``answer_prefix``; one forward pass, nothing generated. A
        ``BackendError`` when an identifier is not one token there or the backend cannot return them."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens in ``text`` under the model's tokenizer, or None when the backend has no tokenizer."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to its first ``max_tokens`` tokens under the model's tokenizer (unchanged when shorter);
        a ``BackendError`` when the backend has no tokenizer."""
        ...

    def close(self) -> None: ...


def hf_count_tokens(tokenizer: object, text: str) -> int:
    """Tokens in ``text`` under a Hugging Face tokenizer, special tokens left out (the chat template adds them)."""
    return len(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]


def hf_truncate(tokenizer: object, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens under a Hugging Face tokenizer."""
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])  # type: ignore[attr-defined]


def hf_chat_ids(tokenizer: Any, conversations: list[Messages], add_generation_prompt: bool = True) -> list[list[int]]:
    """Token ids of chat conversations as the model sees them: the chat template (which already holds the special
    tokens), then the tokenizer without adding any; with the assistant's generation prompt by default."""
    if not conversations:
        return []
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=add_generation_prompt, tokenize=False)
             for c in conversations]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def load_hf_tokenizer(model: str, cache_dir: Path) -> object:
    """The Hugging Face tokenizer of a model (the embedded one, a local folder or a cached hub id), without
    loading its weights: for counting and truncating tokens where no backend runs."""
    from transformers import AutoTokenizer

    path = local_model(model, cache_dir)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # OSError (missing / not cached), ValueError (no tokenizer files)
        raise BackendError(f"cannot load the tokenizer of {model!r} ({path}): {type(exc).__name__}: {exc}") from exc


def first_token_rows(tokenizer: Any, conversations: list[Messages], answer_prefix: str) -> list[list[int]]:
    """Token ids of chat prompts with the generation prompt and the answer's opening text: where the first
    identifier goes."""
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) + answer_prefix
             for c in conversations]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def single_token_ids(tokenizer: Any, answer_prefix: str, identifiers: list[str], model: str) -> list[int]:
    """Each identifier's token id right after ``answer_prefix`` at the start of an answer; a BackendError naming
    the identifiers this tokenizer does not keep as one token there (their logits would not rank them)."""
    head = _answer_start(tokenizer) + answer_prefix
    base = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids, split = [], []
    for ident in identifiers:
        row = tokenizer(head + ident, add_special_tokens=False)["input_ids"]
        if len(row) != len(base) + 1 or row[:-1] != base:
            split.append(ident)
        else:
            ids.append(row[-1])
    if split:
        raise BackendError(f"model {model!r}: the identifiers {split} are not one token each after "
                           f"{answer_prefix!r} in its tokenizer, so first mode cannot rank by their logits; "
                           "use a template with single-token identifiers (identifiers: letters), or reasoning mode")
    if len(set(ids)) != len(ids):
        raise BackendError(f"model {model!r}: two identifiers share a token id in its tokenizer")
    return ids


def prefix_token_count(tokenizer: Any, answer_prefix: str) -> int:
    """How many tokens ``answer_prefix`` takes at the start of an answer (after the generation prompt)."""
    head = _answer_start(tokenizer)
    return len(tokenizer(head + answer_prefix, add_special_tokens=False)["input_ids"]) - \
        len(tokenizer(head, add_special_tokens=False)["input_ids"])


def _answer_start(tokenizer: Any) -> str:
    """A chat prompt's text up to where the assistant's answer starts."""
    return tokenizer.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True,
                                         tokenize=False)
