"""params.yaml is validated on load: types, ranges, unknown keys and sections, each error naming the file, the
line and the key; command-line overrides pass the same checks; MLflow's environment variable wins."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rearank_core.config import (
    SECTIONS,
    RerankConfig,
    TrackingConfig,
    load_params,
    override,
    section,
    validated,
)
from rearank_core.errors import InputError
from rearank_core.mlops.tracking import tracking_uri


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_shipped_params_file_loads(root: Path) -> None:
    params = load_params(root / "params.yaml")
    assert params.rerank.window == 10 and params.bm25.k1 == 0.9
    assert params.job("baseline").corpus == "data/beir/scifact/corpus.jsonl"
    assert params.job("rerank_job").queries == 5
    for cls in SECTIONS.values():  # every field documents itself
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls


@pytest.mark.parametrize("text, line, key, says", [
    ("rerank:\n  window: \"20\"\n", 2, "rerank.window", "expected an integer, got '20' (str)"),
    ("bm25:\n  k1: 0.9\n  k: 1.5\n", 3, "bm25.k", "expected an integer, got 1.5 (float)"),
    ("bm25:\n  k: true\n", 2, "bm25.k", "expected an integer, got True (bool)"),
    ("tracking:\n  enabled: \"yes\"\n", 2, "tracking.enabled", "expected true or false"),
    ("rerank:\n  top_k: -3\n", 2, "rerank.top_k", "must be at least 1, got -3"),
    ("bm25:\n  b: 1.5\n", 2, "bm25.b", "must be at most 1, got 1.5"),
    ("rerank:\n  backend: tensorrt\n", 2, "rerank.backend", "expected one of transformers, openai, vllm"),
    ("rerank:\n  windw: 20\n", 2, "rerank.windw", "unknown key; known: backend"),
    ("evaluate:\n  metrics: ndcg@10\n", 2, "evaluate.metrics", "expected a list of strings"),
    ("evaluate:\n  metrics: [ndcg@10, ndcg10]\n", 2, "evaluate.metrics", "'ndcg10' does not match"),
    ("\n\nreranker:\n  window: 20\n", 3, "reranker", "unknown section"),
    ("bm25: 3\n", 1, "bm25", "expected a mapping of keys"),
    ("rerank_job:\n  name: x\n", 1, "rerank_job.candidates", "missing key(s): candidates"),
])
def test_bad_values_name_the_file_line_and_key(tmp_path: Path, text: str, line: int, key: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: field '{key}': "), message
    assert says in message
    assert "\n" not in message


def test_the_first_models_section_trains_the_first_objective(tmp_path: Path, root: Path) -> None:
    shipped = load_params(root / "params.yaml")
    assert shipped.sft.objective == "generation" and shipped.sft_first.objective == "first"
    assert load_params(write(tmp_path, "sft_first:\n  max_steps: 3\n")).sft_first.objective == "first"
    path = write(tmp_path, "sft_first:\n  max_steps: 3\n  objective: generation\n")
    with pytest.raises(InputError, match=rf"^{path}:3: field 'sft_first.objective': .*objective is first"):
        load_params(path)


def test_section_builds_one_config_and_converts_values() -> None:
    cfg = section({"k1": 1, "k": 50}, "bm25", SECTIONS["bm25"])
    assert cfg.k1 == 1.0 and isinstance(cfg.k1, float) and cfg.k == 50
    assert section({"metrics": ["ndcg@10"]}, "evaluate", SECTIONS["evaluate"]).metrics == ("ndcg@10",)
    with pytest.raises(InputError, match="field 'rerank.window'"):
        section({"window": None}, "rerank", RerankConfig)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_params(write(tmp_path, "bm25:\n  k: 1\n  b: [0.4\ntracking: {}\n"))
    assert str(caught.value).startswith(f"{tmp_path / 'params.yaml'}:4: invalid YAML: while parsing a flow sequence")
    assert "\n" not in str(caught.value)


def test_a_missing_file_gives_defaults_and_no_jobs(tmp_path: Path) -> None:
    params = load_params(tmp_path / "none.yaml")
    assert params.rerank == RerankConfig()
    with pytest.raises(InputError, match="field 'baseline': no such section"):
        params.job("baseline")


def test_overrides_are_checked_and_name_the_option() -> None:
    cfg = RerankConfig()
    assert override(cfg, "rerank", top_k=30, model=None).top_k == 30
    with pytest.raises(InputError, match=r"field '--top-k': must be at least 1, got -3"):
        override(cfg, "rerank", top_k=-3)
    with pytest.raises(InputError, match=r"field '--dtype': expected one of auto"):
        override(cfg, "rerank", dtype="int3")


def test_configs_built_in_python_are_validated_by_the_reranker() -> None:
    with pytest.raises(InputError, match="window"):
        validated(RerankConfig(window="20"), "rerank")  # type: ignore[arg-type]


def test_cli_reports_a_bad_params_value_in_one_line_before_any_work(tmp_path: Path, root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rerank"]["window"] = "20"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), start=1) if text.strip().startswith("window:"))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "rearank_core.cli", "rerank", "--candidates", "missing.jsonl",
                             "--run", "out.trec", "--params", str(path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"error: {path}:{line}: field 'rerank.window': expected an integer, "
                                     "got '20' (str)")


def test_cli_rejects_a_bad_option_before_loading_the_model(tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "rearank_core.cli", "rerank", "--candidates", "missing.jsonl",
                             "--run", "out.trec", "--top-k", "-3", "--model", "./no-such-model"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: field '--top-k': must be at least 1, got -3"


def test_mlflow_environment_variable_wins_over_params(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = TrackingConfig(uri="http://127.0.0.1:5999")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert tracking_uri(cfg, tmp_path) == "sqlite:////tmp/elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(cfg, tmp_path) == "http://127.0.0.1:5999"
    assert tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
