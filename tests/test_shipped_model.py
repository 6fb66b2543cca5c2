"""The reranker that ships in models/: it loads on the embedded base with no other setting and answers a DL19
window in the trained format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DL19_CANDIDATES

from rearank_core.config import load_params
from rearank_core.io.requests import read_candidates
from rearank_core.prompts.parsing import OK, REPAIRED
from rearank_core.rerank import Reranker


@pytest.mark.integration  # the shipped adapter reasons about a real window at batch 1: ~35 s of decoding
def test_shipped_adapter_reranks_a_dl19_window(root: Path, model_cache: Path) -> None:
    params = load_params(root / "params.yaml")
    shipped = root / params.job("train_job").export
    config = json.loads((shipped / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "embedded"  # portable: resolves on any machine with the package
    assert sum(p.stat().st_size for p in shipped.iterdir()) < 50 * 2 ** 20
    assert "## Evaluation" in (shipped / "README.md").read_text()
    cfg = replace(params.rerank, model=str(shipped), model_cache=str(model_cache), top_k=params.rerank.window)
    request = read_candidates(DL19_CANDIDATES)[0]
    (result,), summary = Reranker(cfg).rerank([request])
    (trace,) = result.traces
    assert trace.status in (OK, REPAIRED), trace
    assert "<answer>" in trace.completion and "</answer>" in trace.completion
    assert sorted(c.docid for c in result.candidates[:cfg.window]) == \
        sorted(c.docid for c in request.candidates[:cfg.window])


def test_shipped_first_model_reranks_a_dl19_window_in_first_mode(root: Path, model_cache: Path) -> None:
    """The fast mode's trained model: a small adapter on the embedded base, with its card, that changes the base's
    letter log-probabilities (the adapter is applied) and orders a window by them."""
    params = load_params(root / "params.yaml")
    shipped = root / "models" / "first-smollm2-135m-lora"
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == "embedded"
    assert sum(p.stat().st_size for p in shipped.iterdir()) < 50 * 2 ** 20
    card = (shipped / "README.md").read_text()
    assert "a FIRST reranker" in card and "--mode first" in card and "## Evaluation" in card
    request = read_candidates(DL19_CANDIDATES)[0]
    traces = {}
    for model in (str(shipped), "embedded"):
        cfg = replace(params.rerank, model=model, mode="first", model_cache=str(model_cache),
                      top_k=params.rerank.window)
        (result,), summary = Reranker(cfg).rerank([request])
        (traces[model],) = result.traces
        assert summary.generated_tokens == 0
    trace = traces[str(shipped)]
    assert sorted(trace.order) == list(range(params.rerank.window)) and trace.status == OK
    scores = [trace.logprobs[i] for i in trace.order]
    assert scores == sorted(scores, reverse=True)
    assert max(abs(a - b) for a, b in zip(trace.logprobs, traces["embedded"].logprobs, strict=True)) > 0.01
