"""First mode (FIRST, Reddy et al. 2024): a window is ordered by the log-probabilities of its identifiers as the
answer's first token, one forward pass and nothing generated, on every backend."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
from conftest import DL19_CANDIDATES, RankingServer

from rearank_core.backends.base import first_token_rows, single_token_ids
from rearank_core.backends.transformers_backend import TransformersBackend
from rearank_core.backends.vllm_backend import VLLMBackend
from rearank_core.config import RerankConfig
from rearank_core.errors import BackendError, InputError
from rearank_core.io.requests import read_candidates
from rearank_core.io.traces import read_traces
from rearank_core.prompts import LETTERS
from rearank_core.rerank import Reranker

FIRST = RerankConfig(mode="first", window=5, step=5, top_k=10, dtype="float32")


@pytest.fixture(scope="module")
def requests() -> list:
    return read_candidates(DL19_CANDIDATES)[:2]


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> TransformersBackend:
    return TransformersBackend(str(tiny_dir), dtype="float32", batch_size=4, device="cpu")


def by_hand(model_dir: Path, reranker: Reranker, request, start: int, end: int) -> list[float]:
    """The identifiers' log-probabilities from a plain Hugging Face forward over the whole prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    messages = reranker.prompt_for(request, start, end)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + "["
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    letters = [tok(text + letter, add_special_tokens=False)["input_ids"][-1] for letter in LETTERS[:end - start]]
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
    return [logprobs[i].item() for i in letters]


def test_a_window_is_ordered_by_its_identifiers_logprobs_as_a_plain_forward_gives_them(
        tiny: TransformersBackend, tiny_dir: Path, requests: list, tmp_path: Path) -> None:
    reranker = Reranker(FIRST, backend=tiny)
    results, summary = reranker.rerank(requests[:1], traces_path=tmp_path / "traces.jsonl")
    first = results[0].traces[0]  # the last span of the top-10 runs first: [5, 10)
    expected = by_hand(tiny_dir, reranker, requests[0], first.start, first.end)
    assert first.logprobs == pytest.approx(expected, abs=1e-4)
    assert first.order == sorted(range(5), key=lambda i: -expected[i])
    assert (first.status, first.completion, first.completion_tokens) == ("ok", "", 0)
    assert summary.windows == 2 and summary.generated_tokens == 0 and summary.status["ok"] == 2
    assert [t.logprobs for t in read_traces(tmp_path / "traces.jsonl")] == [t.logprobs for t in results[0].traces]
    # An interrupted run resumes from its traces: every window replayed, nothing scored again.
    again, resumed = reranker.rerank(requests[:1], traces_path=tmp_path / "traces.jsonl", resume=True)
    assert resumed.resumed_windows == 2 and [c.docid for c in again[0].candidates] == \
        [c.docid for c in results[0].candidates]


def test_both_engines_score_alike_and_batching_changes_nothing(tiny_dir: Path, tiny: TransformersBackend,
                                                               requests: list) -> None:
    padded = TransformersBackend(str(tiny_dir), dtype="float32", batch_size=4, device="cpu", engine="generate")
    prompts = [Reranker(FIRST, backend=tiny).prompt_for(r, 0, 5) for r in requests]
    prompts.append(prompts[0][:1] + [{"role": "user", "content": "a much shorter prompt, padded in a batch"}])
    loop = tiny.score_identifiers(prompts, "[", list(LETTERS[:5]))
    batched = padded.score_identifiers(prompts, "[", list(LETTERS[:5]))
    alone = [padded.score_identifiers([p], "[", list(LETTERS[:5]))[0] for p in prompts]
    for a, b, c in zip(loop, batched, alone):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4) == c.logprobs
        assert a.prompt_tokens == b.prompt_tokens
    assert loop[0].prompt_tokens > 100 > loop[2].prompt_tokens


def test_identifiers_that_are_not_one_token_are_refused_before_any_window(tiny: TransformersBackend) -> None:
    # rankgpt numbers its passages: "10", "11", "12" are two tokens each in SmolLM2's tokenizer.
    cfg = RerankConfig(mode="first", first_prompt="rankgpt", window=12, step=6, dtype="float32")
    with pytest.raises(BackendError, match=r"\['10', '11', '12'\] are not one token"):
        Reranker(cfg, backend=tiny)
    with pytest.raises(InputError, match="at most 26, got 27"):
        Reranker(RerankConfig(mode="first", window=27, step=5), backend=tiny)


def test_the_embedded_model_ranks_a_dl19_window_in_first_mode(embedded_dir: Path, requests: list) -> None:
    reranker = Reranker(RerankConfig(mode="first", model=str(embedded_dir), window=20, step=10, top_k=20,
                                     dtype="float32"))
    results, summary = reranker.rerank(requests[:1])
    (trace,) = results[0].traces
    assert sorted(trace.order) == list(range(20)) and trace.status == "ok" and summary.generated_tokens == 0
    scores = [trace.logprobs[i] for i in trace.order]
    assert all(math.isfinite(s) and s < 0 for s in scores) and scores == sorted(scores, reverse=True)
    assert math.fsum(math.exp(s) for s in scores) < 1  # log-probabilities over the whole vocabulary
    assert 1500 < trace.prompt_tokens < 3000  # 20 passages of 400 characters


def test_an_openai_compatible_server_ranks_by_its_top_logprobs(ranking_server: RankingServer, requests: list,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    url = f"http://127.0.0.1:{ranking_server.server_port}/v1"
    cfg = RerankConfig(mode="first", backend="openai", model="served", base_url=url, window=5, step=5, top_k=10)
    results, summary = Reranker(cfg).rerank(requests[:1])
    # The server puts the window reversed in its top_logprobs, some tokens with a leading space.
    original = [c.docid for c in requests[0].candidates]
    assert [c.docid for c in results[0].candidates][:10] == original[:5][::-1] + original[5:10][::-1]
    last = results[0].traces[-1]
    assert last.order == [4, 3, 2, 1, 0] and last.status == "ok" and summary.status["ok"] == 2
    assert last.logprobs == [-4.5, -3.5, -2.5, -1.5, -0.5]
    with pytest.raises(BackendError, match="caps at 20"):
        Reranker(RerankConfig(mode="first", backend="openai", model="served", base_url=url, window=21, step=10))


def test_an_identifier_the_server_leaves_out_keeps_its_place_after_the_others(
        ranking_server: RankingServer, requests: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from rearank_core.backends.openai_backend import OpenAIBackend

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    backend = OpenAIBackend("served", base_url=f"http://127.0.0.1:{ranking_server.server_port}/v1")
    prompt = Reranker(RerankConfig(mode="first", window=5, step=5), backend=backend).prompt_for(requests[0], 0, 5)
    (scores,) = backend.score_identifiers([prompt], "[", list(LETTERS[:6]))  # the server knows 5 passages
    assert scores.logprobs[:5] == [-4.5, -3.5, -2.5, -1.5, -0.5] and scores.logprobs[5] == float("-inf")


class FakeVLLM:
    """A vLLM ``LLM`` as far as first mode uses it: ``generate`` on token prompts with sampling params that
    allow only the identifiers' tokens, returning their log-probabilities (here: later identifiers higher)."""

    def __init__(self, tokenizer: object):
        self.tokenizer, self.calls = tokenizer, []

    def get_tokenizer(self) -> object:
        return self.tokenizer

    def generate(self, prompts: list, params: object, use_tqdm: bool = False) -> list:
        self.calls.append((prompts, params))
        allowed = params.allowed_token_ids
        logprobs = {t: types.SimpleNamespace(logprob=-float(len(allowed) - i)) for i, t in enumerate(allowed)}
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(logprobs=[logprobs])]) for _ in prompts]


def test_vllm_scores_token_prompts_restricted_to_the_identifiers(embedded_dir: Path, requests: list,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: vLLM's two classes the backend builds are stand-ins that keep what they are given."""
    from transformers import AutoTokenizer

    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    fake.inputs = types.ModuleType("vllm.inputs")
    fake.inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake.inputs)
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    engine = FakeVLLM(tok)
    backend = VLLMBackend.from_engine(engine, str(embedded_dir), batch_size=4)
    results, _ = Reranker(RerankConfig(mode="first", backend="vllm", window=5, step=5, top_k=10),
                          backend=backend).rerank(requests[:1])
    assert results[0].traces[0].order == [4, 3, 2, 1, 0]
    prompts, params = engine.calls[0]
    wanted = single_token_ids(tok, "[", list(LETTERS[:5]), "smol")
    assert params.allowed_token_ids == wanted and params.logprobs == 5 and params.max_tokens == 1
    reranker = Reranker(RerankConfig(mode="first", window=5, step=5, top_k=10), backend=backend)
    expected = first_token_rows(tok, [reranker.prompt_for(requests[0], 5, 10)], "[")
    assert prompts[0]["prompt_token_ids"] == expected[0] and tok.decode(expected[0][-1:]) == "["


def test_the_cli_reranks_in_first_mode(tiny_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rearank_core.cli import app as cli

    run, summary = tmp_path / "run.trec", tmp_path / "summary.json"
    done = CliRunner().invoke(cli, ["rerank", "--candidates", str(DL19_CANDIDATES), "--run", str(run), "--model",
                                    str(tiny_dir), "--mode", "first", "--window", "5", "--step", "5", "--top-k", "10",
                                    "--limit", "2", "--dtype", "float32", "--summary-out", str(summary),
                                    "--no-track"], env={"NO_COLOR": "1", "COLUMNS": "160"})
    assert done.exit_code == 0, done.stderr[-2000:]
    written = json.loads(summary.read_text())
    assert written["windows"] == 4 and written["completion_tokens"] == 0 and written["status"] == {"ok": 4}
    assert len(run.read_text().splitlines()) == 200
    bad = CliRunner().invoke(cli, ["rerank", "--candidates", str(DL19_CANDIDATES), "--run", str(run), "--mode",
                                   "fast"], env={"NO_COLOR": "1", "COLUMNS": "160"})
    assert bad.exit_code == 2 and "--mode" in bad.stderr
