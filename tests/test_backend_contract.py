"""One contract for every backend that can be built here (transformers on the embedded model, openai against a
real 127.0.0.1 server, vLLM over an engine's tokenizer without a GPU), built through ``make_backend`` where
possible; the reranker uses nothing outside ``base.Backend``."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DL19_CANDIDATES, RankingServer

from rearank_core.backends.base import Backend, Completion, hf_count_tokens
from rearank_core.backends.openai_backend import OpenAIBackend
from rearank_core.backends.registry import make_backend
from rearank_core.backends.transformers_backend import TransformersBackend
from rearank_core.backends.vllm_backend import VLLMBackend
from rearank_core.config import RerankConfig
from rearank_core.errors import BackendError, InputError
from rearank_core.io.requests import read_candidates
from rearank_core.prompts import clean_passage
from rearank_core.rerank import Reranker

HAS_VLLM = importlib.util.find_spec("vllm") is not None
TEXT = "Fleas live for up to a year; their life cycle has four stages: egg, larva, pupa and adult."


class TokenizerEngine:
    """What ``VLLMBackend`` needs of a vLLM ``LLM`` besides ``chat``: ``get_tokenizer()``, here the embedded
    model's real Hugging Face tokenizer (what vLLM returns for it). Generation needs vLLM and a GPU."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def get_tokenizer(self) -> object:
        return self.tokenizer


@pytest.fixture(scope="module")
def requests() -> list:
    return read_candidates(DL19_CANDIDATES)[:2]


@pytest.fixture(params=["transformers", "openai", "vllm"])
def backend(request: pytest.FixtureRequest, embedded_dir: Path, ranking_server: RankingServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    url = f"http://127.0.0.1:{ranking_server.server_port}/v1"
    if request.param == "vllm":
        built: Backend = VLLMBackend.from_engine(TokenizerEngine(embedded_dir), str(embedded_dir), batch_size=4)
    else:
        built = make_backend(RerankConfig(backend=request.param, model=str(embedded_dir) if request.param ==
                                          "transformers" else "served-model", base_url=url, batch_size=4))
    yield built
    built.close()


def test_every_backend_holds_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.name, str) and backend.name
    assert backend.max_batch_size >= 1 and backend.max_parallel_calls >= 1
    assert isinstance(backend.has_tokenizer, bool)


def test_tokenizer_methods_follow_has_tokenizer(backend: Backend) -> None:
    if backend.has_tokenizer:
        count = backend.count_tokens(TEXT)
        assert isinstance(count, int) and count > 5
        cut = backend.truncate(TEXT, 5)
        assert TEXT.startswith(cut) and len(cut) < len(TEXT) and backend.count_tokens(cut) <= 5
        assert backend.truncate(TEXT, 1000) == TEXT
    else:
        assert backend.count_tokens(TEXT) is None
        with pytest.raises(BackendError, match="tokenizer"):
            backend.truncate(TEXT, 5)


def test_complete_gives_one_completion_per_prompt(backend: Backend, requests: list) -> None:
    if backend.name == "vllm" and not HAS_VLLM:
        pytest.skip("vLLM generation needs the vllm package (and a GPU)")
    reranker = Reranker(RerankConfig(window=5, step=5, max_new_tokens=8), backend=backend)
    prompts = [reranker.prompt_for(r, 0, 5) for r in requests]
    assert backend.complete([], 8) == []
    completions = backend.complete(prompts, 8)
    assert len(completions) == len(prompts)
    for c in completions:
        assert isinstance(c, Completion) and isinstance(c.text, str)
        assert c.finish_reason in ("stop", "length") and c.prompt_tokens >= 0 and 0 <= c.completion_tokens


def test_token_truncation_uses_the_backends_tokenizer_or_fails_before_any_window(backend: Backend,
                                                                                 requests: list) -> None:
    cfg = RerankConfig(backend=backend.name, prompt="reasonrank")
    if not backend.has_tokenizer:
        with pytest.raises(InputError, match="no tokenizer"):
            Reranker(cfg, backend=backend)
        return
    messages = Reranker(cfg, backend=backend).prompt_for(requests[0], 0, 20)
    lines = [line for line in messages[-1]["content"].split("\n") if line.startswith("[")]
    assert len(lines) == 20
    for line, candidate in zip(lines, requests[0].candidates[:20], strict=True):
        content = line.split("] ", 1)[1]
        assert clean_passage(candidate.contents).startswith(content)
        assert backend.count_tokens(content) <= 100  # reasonrank's template: 100 tokens a passage


def test_vllm_reasonrank_prompts_truncate_with_the_engines_tokenizer(embedded_dir: Path, requests: list) -> None:
    """`--backend vllm --prompt reasonrank` renders its prompts through VLLMBackend.truncate (the engine's own
    tokenizer), never a ``backend.tokenizer`` attribute outside the Protocol."""
    engine = TokenizerEngine(embedded_dir)
    backend = VLLMBackend.from_engine(engine, "served")
    assert not hasattr(backend, "tokenizer")
    messages = Reranker(RerankConfig(backend="vllm", prompt="reasonrank"), backend=backend).prompt_for(requests[0], 0, 20)
    passages = [line.split("] ", 1)[1] for line in messages[-1]["content"].split("\n") if line.startswith("[")]
    full = [clean_passage(c.contents) for c in requests[0].candidates[:20]]
    assert max(hf_count_tokens(engine.tokenizer, p) for p in passages) == 100  # long passages are cut at 100
    assert any(len(p) < len(f) for p, f in zip(passages, full, strict=True))


def test_make_backend_builds_each_kind_and_refuses_the_rest(embedded_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = make_backend(RerankConfig(model=str(embedded_dir), batch_size=3))
    assert isinstance(built, TransformersBackend) and built.max_batch_size == 3
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    http = make_backend(RerankConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", concurrency=3))
    assert isinstance(http, OpenAIBackend) and http.max_parallel_calls == 3
    with pytest.raises(InputError, match="needs --model"):
        make_backend(RerankConfig(backend="openai"))
    with pytest.raises(InputError, match="unknown backend 'tensorrt'"):
        make_backend(RerankConfig(backend="tensorrt"))
    if not HAS_VLLM:
        with pytest.raises(BackendError, match=r"pip install 'rearank\[vllm\]'"):
            make_backend(RerankConfig(backend="vllm"))


def test_a_backend_that_breaks_the_contract_is_a_backend_error(requests: list) -> None:
    class Short:
        name, max_batch_size, max_parallel_calls, has_tokenizer = "short", 2, 1, False

        def complete(self, prompts: list, max_new_tokens: int) -> list[Completion]:
            return []

        def count_tokens(self, text: str) -> None:
            return None

        def truncate(self, text: str, max_tokens: int) -> str:
            raise BackendError("no tokenizer")

        def close(self) -> None:
            pass

    with pytest.raises(BackendError, match="returned 0 completions for 2 prompts"):
        Reranker(RerankConfig(top_k=20), backend=Short()).rerank(requests)
