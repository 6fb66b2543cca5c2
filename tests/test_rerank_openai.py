"""`rearank rerank --backend openai` end to end against a real HTTP server on 127.0.0.1: one request per
window, parser and window behaviour as with any backend, and a clean failure when the server is down."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import DL19_CANDIDATES, RankingServer
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.io.trec import read_run


@pytest.fixture
def server(ranking_server: RankingServer) -> RankingServer:
    return ranking_server


def _rerank(server: RankingServer, tmp_path: Path, *extra: str,
            in_process: bool = False) -> subprocess.CompletedProcess[str]:
    """The command as a subprocess, or in this process (Typer's runner) where a fresh Python start-up would
    prove nothing more than the subprocess tests here."""
    args = ["rerank", "--candidates", str(DL19_CANDIDATES), "--run", str(tmp_path / "run.trec"),
            "--traces", str(tmp_path / "traces.jsonl"), "--backend", "openai", "--model", "served-model",
            "--base-url", f"http://127.0.0.1:{server.server_port}/v1", "--limit", "6", "--concurrency", "4",
            "--params", str(tmp_path / "none.yaml"), "-q", *extra]
    if in_process:
        with contextlib.chdir(tmp_path):
            done = CliRunner().invoke(cli, args, env={"OPENAI_API_KEY": "test-key"})
        return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    return subprocess.run([sys.executable, "-m", "rearank_core.cli", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_one_request_per_window_and_parser_behaviour(server: RankingServer, tmp_path: Path) -> None:
    proc = _rerank(server, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(server.per_query) == 6 and set(server.per_query.values()) == {9}  # 100 candidates: 9 windows each
    traces = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 54
    by_kind = Counter(t["status"] for t in traces)
    assert by_kind == {"ok": 18, "repaired": 18, "truncated": 18}
    assert all(t["order"] == list(range(20)) for t in traces if t["status"] == "truncated")
    run = read_run(tmp_path / "run.trec")
    source = json.loads(DL19_CANDIDATES.read_text())[:6]
    assert len(run) == 6
    for entry in source:
        qid = str(entry["hits"][0]["qid"])
        assert sorted(d for d, _ in run[qid]) == sorted(h["docid"] for h in entry["hits"])
    assert "format-valid 66.7%" in proc.stderr and "repaired 33.3%" in proc.stderr


def test_top_k_and_window_options_change_the_request_count(server: RankingServer, tmp_path: Path) -> None:
    proc = _rerank(server, tmp_path, "--top-k", "30", "--window", "10", "--step", "5", in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert set(server.per_query.values()) == {5}  # 30 ranked, window 10, step 5: 20-30, 15-25, ..., 0-10


def test_reasoning_model_flag_changes_the_request_fields(server: RankingServer, tmp_path: Path) -> None:
    assert _rerank(server, tmp_path, "--top-k", "20", in_process=True).returncode == 0
    assert server.sampling_keys == {("max_tokens", "temperature")}
    server.sampling_keys.clear()
    proc = _rerank(server, tmp_path, "--top-k", "20", "--reasoning-model", "--max-new-tokens", "4096",
                   in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert server.sampling_keys == {("max_completion_tokens",)}


def test_server_failure_is_a_clean_error_and_writes_no_run(server: RankingServer, tmp_path: Path) -> None:
    server.fail = True
    proc = _rerank(server, tmp_path, "--retries", "1")
    assert proc.returncode == 1
    assert "backend error" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run.trec").exists()
