"""Resumable work (checkpoints, traces) is resumed only by the job that wrote it; any other job starts afresh."""

from __future__ import annotations

from pathlib import Path

from rearank_core.io.jobs import claim, job_identity, local_inputs


def test_the_same_job_resumes_and_another_starts_afresh(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text('{"id": 1}\n')
    model = tmp_path / "model"
    (model / "checkpoint-5").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"w1")
    partial = tmp_path / "out" / "checkpoint-1"
    partial.mkdir(parents=True)
    marker = tmp_path / "out" / "job.txt"

    job = job_identity({"lr": 1e-3}, local_inputs(records, model, "a-hub/id", None))
    assert not claim(marker, job, [partial]) and not partial.exists()  # no marker: someone else's partial work
    partial.mkdir()
    assert claim(marker, job, [partial]) and partial.exists()  # the same job: resume

    # The training history of the starting model is not its identity; its weights, the records and settings are.
    (model / "checkpoint-5" / "state.json").write_text("{}")
    assert job_identity({"lr": 1e-3}, [records, model]) == job
    for changed in (lambda: records.write_text('{"id": 2}\n'), lambda: (model / "weights.bin").write_bytes(b"w2")):
        changed()
        assert job_identity({"lr": 1e-3}, [records, model]) != job
    assert job_identity({"lr": 5e-4}, []) != job_identity({"lr": 1e-3}, [])
    assert not claim(marker, job_identity({"lr": 5e-4}, []), [partial]) and not partial.exists()
