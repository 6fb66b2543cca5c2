"""The flow's cache check against dvc.yaml's declarations: a stage's cached result stands only while its outputs
are, file by file, what its run for that fingerprint wrote (params P1 -> P2 -> P1 must run the stage again)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rearank_core.errors import InputError
from rearank_core.config import load_params
from rearank_core.mlops.pipeline_stages import StageSpec, outputs_current, read_stages, record_outputs

SPEC = StageSpec("grpo", deps=("data.jsonl",), params=("grpo",), outs=("model", "metrics.json"))


def write_outputs(project: Path, weights: bytes) -> None:
    (project / "model" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
    (project / "model" / "weights.bin").write_bytes(weights)
    (project / "model" / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    (project / "metrics.json").write_text("{}")


def test_cached_result_stands_only_for_the_outputs_its_run_wrote(tmp_path: Path) -> None:
    assert not outputs_current(SPEC, "p1", tmp_path)  # nothing ran yet
    write_outputs(tmp_path, b"p1 weights")
    assert not outputs_current(SPEC, "p1", tmp_path)  # outputs without a record: not known to be p1's
    record_outputs(SPEC, "p1", tmp_path)
    assert outputs_current(SPEC, "p1", tmp_path)

    write_outputs(tmp_path, b"p2 weights")  # a run with params P2 replaces the files
    record_outputs(SPEC, "p2", tmp_path)
    assert not outputs_current(SPEC, "p1", tmp_path)  # back to P1: P2's files are there, so the stage runs
    assert outputs_current(SPEC, "p2", tmp_path)


def test_an_edited_missing_or_added_output_file_invalidates_the_cache(tmp_path: Path) -> None:
    write_outputs(tmp_path, b"weights")
    record_outputs(SPEC, "k", tmp_path)
    weights = tmp_path / "model" / "weights.bin"

    stat = weights.stat()
    weights.write_bytes(b"WEIGHTS")  # same size, another mtime: the content is hashed again
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert not outputs_current(SPEC, "k", tmp_path)

    write_outputs(tmp_path, b"weights")
    assert outputs_current(SPEC, "k", tmp_path)  # same bytes again, new mtimes: the hashes decide
    (tmp_path / "model" / "extra.bin").write_bytes(b"x")
    assert not outputs_current(SPEC, "k", tmp_path)
    (tmp_path / "model" / "extra.bin").unlink()
    (tmp_path / "metrics.json").unlink()
    assert not outputs_current(SPEC, "k", tmp_path)


def test_recording_a_stage_without_its_outputs_names_them(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(InputError, match=r"grpo.*metrics\.json"):
        record_outputs(SPEC, "k", tmp_path)


def test_training_depends_on_the_validation_verdict_not_on_the_data_docs(root: Path) -> None:
    """Re-validating unchanged data rewrites the Data Docs (run times) and the same verdict bytes
    (test_data_validation): with only the verdict among the trainers' deps, it retrains nothing."""
    specs = read_stages(root)
    params = load_params(root / "params.yaml")
    job = params.job("data_job")
    for stage in ("sft", "grpo"):
        assert job.verdict in specs[stage].deps and job.reports not in specs[stage].deps
    assert job.verdict in specs["validate"].outs
