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
