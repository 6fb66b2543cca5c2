"""DVC beyond `dvc repro`: the default remote (a local folder) round-trips the pipeline's outputs with `dvc push` /
`dvc pull`, and `dvc exp run -S key=value` makes a variant that `dvc exp show` compares with the baseline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN
from test_pipeline import make_project, project_env

pytestmark = pytest.mark.integration


def dvc(project: Path, *args: str) -> str:
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=project_env(project), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_remote_round_trip_and_experiments(tmp_path: Path, root: Path, model_cache: Path) -> None:
    project = make_project(tmp_path, root, model_cache)
    dvc(project, "repro", "-q", "evaluate")
    index = project / "work" / "scifact" / "index"
    run = (project / "work" / "scifact" / "bm25.trec").read_bytes()
    files = {p.relative_to(index): p.read_bytes() for p in index.rglob("*") if p.is_file()}
    dvc(project, "push", "--with-deps", "evaluate")
    assert any((project / "dvc-remote").rglob("*")), "the default remote is the project's dvc-remote/ folder"

    shutil.rmtree(project / "work")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, "pull", "--with-deps", "evaluate")
    assert (project / "work" / "scifact" / "bm25.trec").read_bytes() == run
    assert {p.relative_to(index): p.read_bytes() for p in index.rglob("*") if p.is_file()} == files
    assert "up to date" in dvc(project, "status", "evaluate")

    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], cwd=project,
                   check=True)
    dvc(project, "exp", "run", "-q", "-n", "k1-1.2", "-S", "bm25.k1=1.2", "evaluate")
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    rows = {}
    for commit in shown:
        for entry in [commit, *(e for e in commit.get("experiments") or [] for e in e.get("revs", []))]:
            data = entry.get("data") or {}
            name = entry.get("name") or data.get("name") or entry.get("rev")
            metrics = data.get("metrics", {}).get("metrics/scifact_bm25.json", {}).get("data", {})
            k1 = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("bm25", {}).get("k1")
            if metrics:
                rows[name] = (k1, metrics["ndcg@10"])
    assert ("k1-1.2" in rows) and rows["k1-1.2"][0] == 1.2, rows
    baseline = {value for value in rows.values() if value[0] == 0.9}  # the committed params (the workspace shows the
    assert len(baseline) == 1 and baseline.pop()[1] != rows["k1-1.2"][1]  # last experiment applied)
