"""Backend for any OpenAI-compatible Chat Completions server (vLLM's server, hosted APIs, hosted reasoning models).

Retries (429, 408, 409, 5xx, connection errors, timeouts; exponential backoff, Retry-After honoured) and
timeouts are the ``openai`` client's own; this module only configures them and turns what is left into
``BackendError``."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx
import openai

from rearank_core.backends.base import Completion, IdentifierScores
from rearank_core.errors import BackendError
from rearank_core.records import Messages

TOP_LOGPROBS_CAP = 20  # the OpenAI API's maximum top_logprobs; it bounds a first-mode window over this backend


class OpenAIBackend:
    name = "openai"
    max_batch_size = 1
    has_tokenizer = False  # the server's tokenizer is not reachable through the Chat Completions API

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120,
        max_retries: int = 5,
        temperature: float = 0.0,
        extra_body: dict[str, Any] | None = None,
        reasoning_model: bool = False,
    ) -> None:
        """``reasoning_model``: the served model is a hosted reasoning model (OpenAI o-series, gpt-5), which
        rejects ``max_tokens`` and a non-default temperature: send ``max_completion_tokens`` (hidden reasoning
        tokens count against it) and no temperature."""
        if concurrency < 1:
            raise BackendError(f"concurrency must be at least 1, got {concurrency}")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if base_url is None:
                raise BackendError(
                    "no API key for the OpenAI API: set OPENAI_API_KEY, or give a base_url for a server "
                    "that needs no key (e.g. vLLM's)"
                )
            api_key = "EMPTY"  # vLLM and similar servers accept any key, but the client insists on one
        self.model = model
        self.max_parallel_calls = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self._extra_body = extra_body
        self._sampling: dict[str, Any] = {} if reasoning_model else {"temperature": temperature}
        self._limit_field = "max_completion_tokens" if reasoning_model else "max_tokens"
        # The client hides how many attempts a failed call took; a request hook counts them per thread
        # (httpx's sync client runs hooks in the calling thread, and each complete() call has its own).
        self._attempts = threading.local()
        http_client = openai.DefaultHttpxClient(event_hooks={"request": [self._count_attempt]})
        # One client for all threads: httpx.Client is thread-safe and pools connections.
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )
        self.base_url = str(self._client.base_url)

    def _count_attempt(self, request: httpx.Request) -> None:
        self._attempts.n = getattr(self._attempts, "n", 0) + 1

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        return [self._complete_one(messages, max_new_tokens) for messages in prompts]

    def _request(self, messages: Messages, max_new_tokens: int, **extra: Any) -> tuple[Any, int, float]:
        """One Chat Completions call: the JSON body, the HTTP status and the latency; failures as BackendError."""
        self._attempts.n = 0
        start = time.perf_counter()
        try:
            # The raw response lets us parse the body ourselves: servers differ in extra fields and in
            # how they fail, and the client's lenient model building would hide a malformed body.
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]  # plain role/content dicts
                extra_body=self._extra_body,
                **{self._limit_field: max_new_tokens},
                **self._sampling,
                **extra,
            )
        except openai.APITimeoutError as e:
            raise self._error(f"timed out (timeout {self.timeout_s:g} s per attempt)") from e
        except openai.APIConnectionError as e:
            raise self._error(f"could not connect ({e.__cause__ or e})") from e
        except openai.APIStatusError as e:
            raise self._error(f"HTTP {e.status_code}: {_snippet(e.response.text)}") from e
        latency = time.perf_counter() - start
        http = raw.http_response
        try:
            return http.json(), http.status_code, latency
        except ValueError as e:
            raise self._error(f"HTTP {http.status_code} with a body that is not JSON: {_snippet(http.text)}") from e

    def _complete_one(self, messages: Messages, max_new_tokens: int) -> Completion:
        return self._parse(*self._request(messages, max_new_tokens))

    def _parse(self, body: Any, status: int, latency: float) -> Completion:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise self._error(f"HTTP {status} with no choices in the response: {_snippet(str(body))}")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._error(f"HTTP {status} with no message in choices[0]: {_snippet(str(body))}")
        text = message.get("content") or ""
        # vLLM's reasoning parsers (reasoning_content) and some hosts (reasoning) split the reasoning off;
        # put it back so the rest of the project parses one text, as from a local backend.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            text = f"<think>{reasoning}</think>{text}"
        usage = body.get("usage")
        if not isinstance(usage, dict):
            usage = {}  # some servers send no usage; the token counts are then unknown, reported as 0
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason="length" if choices[0].get("finish_reason") == "length" else "stop",
            latency_s=latency,
        )

    def score_identifiers(self, prompts: list[Messages], answer_prefix: str,
                          identifiers: list[str]) -> list[IdentifierScores]:
        """First mode over Chat Completions: a few greedy tokens with ``top_logprobs``; the position after the
        answer's opening text (``answer_prefix``) holds the identifiers' log-probabilities. The API cannot end the
        prompt inside the answer, so the server's own first tokens are read past; an identifier outside the
        server's top_logprobs there has none (it keeps its input order after the others)."""
        if len(identifiers) > TOP_LOGPROBS_CAP:
            raise BackendError(f"first mode over an OpenAI-compatible server reads top_logprobs, which the OpenAI "
                               f"API caps at {TOP_LOGPROBS_CAP} (many hosts do too): a window of "
                               f"{len(identifiers)} passages cannot be scored; use --window {TOP_LOGPROBS_CAP} "
                               "or less")
        return [self._score_one(messages, answer_prefix, identifiers) for messages in prompts]

    def _score_one(self, messages: Messages, answer_prefix: str, identifiers: list[str]) -> IdentifierScores:
        body, status, latency = self._request(messages, len(answer_prefix) + 2, logprobs=True,
                                              top_logprobs=TOP_LOGPROBS_CAP)
        try:
            content = body["choices"][0]["logprobs"]["content"]
            usage = body.get("usage") or {}
        except (KeyError, IndexError, TypeError) as e:
            raise self._error(f"HTTP {status} with no logprobs in the response (does the server return "
                              f"top_logprobs?): {_snippet(str(body))}") from e
        logprobs = [float("-inf")] * len(identifiers)
        position = {ident: i for i, ident in enumerate(identifiers)}
        said = ""
        for token in content:
            if said.strip() == answer_prefix.strip():  # the answer's first identifier goes here
                for alternative in token.get("top_logprobs") or []:
                    i = position.get(str(alternative.get("token", "")).strip())
                    if i is not None:
                        logprobs[i] = max(logprobs[i], float(alternative["logprob"]))
                break
            said += str(token.get("token", ""))
        return IdentifierScores(logprobs=logprobs, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                latency_s=latency)

    def _error(self, what: str) -> BackendError:
        attempts = getattr(self._attempts, "n", 0)
        return BackendError(
            f"OpenAI-compatible server {self.base_url} (model {self.model!r}): {what}; "
            f"{attempts} attempt(s) made (max_retries={self.max_retries})"
        )

    def count_tokens(self, text: str) -> int | None:
        return None

    def truncate(self, text: str, max_tokens: int) -> str:
        raise BackendError(f"the openai backend has no tokenizer for model {self.model!r}: token truncation "
                           "needs a local backend (transformers, vllm); use --truncate-unit chars or words")

    def close(self) -> None:
        self._client.close()


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
