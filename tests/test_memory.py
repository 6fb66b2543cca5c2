"""The memory budget as a regression test: one SFT step and one GRPO step of the embedded profile (SmolLM2-135M,
the shipped LoRA adapter, params.yaml's windows, batch and group) in float32, the dtype of AVX2-only CPUs and the
largest, each as the CLI command `dvc repro` runs, in its own process; the peak resident size of its process tree
must stay under the budget every stage of the main job is held to (REARANK_MEMORY_BUDGET_GIB, default 6)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, DATA, ROOT

from rearank_core.config import load_params
from rearank_core.data.augment import augment
from rearank_core.data.build import build_records
from rearank_core.data.teacher import gold_answer
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.files import write_jsonl
from rearank_core.io.requests import read_candidates
from rearank_core.memory import GIB, PeakSampler
from rearank_core.prompts import load_template

BUDGET = float(os.environ.get("REARANK_MEMORY_BUDGET_GIB", "6"))
DL21 = DATA / "msmarco" / "dl21"


def peak_of(command: list[str], cwd: Path) -> tuple[int, subprocess.CompletedProcess]:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    with PeakSampler(process.pid) as sampler:
        out, err = process.communicate(timeout=1200)
    return sampler.peak, subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.integration
def test_one_sft_and_one_grpo_step_in_float32_stay_under_the_budget(tmp_path: Path, model_cache: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    requests = read_candidates(DL21 / "rank_llm_BM25_retrieve_results_dl21.json")[:3]
    windows = augment(requests, read_any_qrels(DL21 / "qrels.dl21-passage.txt"), "dl21", params.data)
    sft, grpo = build_records(windows, {w.id: gold_answer(w) for w in windows}, load_template(params.data.prompt))
    write_jsonl(tmp_path / "sft.jsonl", [r.to_dict() for r in sft])
    write_jsonl(tmp_path / "grpo.jsonl", [r.to_dict() for r in grpo])
    # SFT's step is one record: accumulation adds no memory (each record is its own forward/backward at the
    # profile's batch_size), so the profile's 8 accumulated records would only multiply the test's time.
    overlay = {"extends": str(ROOT / "params.yaml"), "tracking": {"enabled": False},
               "rerank": {"model_cache": str(model_cache)},
               "sft": {"dtype": "float32", "model": str(ROOT / params.sft.model), "grad_accum": 1},
               "grpo": {"dtype": "float32"}}
    (tmp_path / "float32.yaml").write_text(yaml.safe_dump(overlay))
    common = ["--params", str(tmp_path / "float32.yaml"), "--max-steps", "1", "-q"]
    peaks = {}
    for kind, extra in (("sft", []), ("grpo", ["--model", str(tmp_path / "sft")])):
        peak, result = peak_of([str(BIN / "rearank"), "train", kind, "--records", str(tmp_path / f"{kind}.jsonl"),
                                "--output", str(tmp_path / kind), "--metrics-out", str(tmp_path / f"{kind}.json"),
                                "--history-out", str(tmp_path / f"{kind}.csv"), *extra, *common], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert '"dtype": "float32"' in (tmp_path / f"{kind}.json").read_text()
        peaks[kind] = peak / GIB
    print(f"peak RSS (GiB, float32): {peaks}")
    assert all(peak < BUDGET for peak in peaks.values()), f"peak RSS over the {BUDGET} GiB budget: {peaks}"
