"""bench/bench_serve.py's load, as the benchmark runs it: `rearank serve` as a subprocess (here on the openai
backend against the local ranking server, so the test takes seconds) under 50 concurrent clients of this process.
Every request is answered with a full ranking, none is lost, and the server batches requests that wait together."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from conftest import RankingServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_serve  # noqa: E402

DOCS = [f"passage {i}: {'rivers and lakes' if i % 3 == 0 else 'mountains'} number {i}" for i in range(10)]


@pytest.mark.integration
def test_fifty_concurrent_clients_get_every_answer_from_the_cli_server(ranking_server: RankingServer,
                                                                       tmp_path: Path) -> None:
    args = ["--backend", "openai", "--model", "served-model", "--window", "4", "--step", "2", "--concurrency", "8",
            "--base-url", f"http://127.0.0.1:{ranking_server.server_port}/v1", "--params", str(tmp_path / "none.yaml")]
    process, url = bench_serve.start_serve(args, tmp_path / "serve.log", timeout_s=180)
    try:
        work = [{"query": f"which passage talks about rivers {i}", "documents": DOCS} for i in range(200)]
        load = bench_serve.run_load(url, work, clients=50)
        batcher = httpx.get(f"{url}/health").json()["batcher"]
    finally:
        bench_serve.stop(process)
    summary = bench_serve.summarize(load, len(work), len(DOCS))
    assert (summary["sent"], summary["answered"], summary["ok"], summary["lost"]) == (200, 200, 200, 0)
    assert summary["errors"] == {}
    assert summary["p50_s"] <= summary["p95_s"] <= summary["max_s"]
    assert batcher["requests"] == 200 and batcher["calls"] < 200 and batcher["largest_call"] > 1
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()
    assert len(ranking_server.queries_seen) >= 200


def test_an_answer_that_is_not_a_full_ranking_is_an_error() -> None:
    body = {"query": "q", "documents": ["a", "b", "c"]}
    full = {"results": [{"index": 2, "relevance_score": 1.0}, {"index": 0, "relevance_score": 0.5},
                        {"index": 1, "relevance_score": 1 / 3}]}
    assert bench_serve.answer_error(body, full) is None
    assert "permutation" in bench_serve.answer_error(body, {"results": full["results"][:2]})
    tied = {"results": [{**r, "relevance_score": 0.5} for r in full["results"]]}
    assert "decrease" in bench_serve.answer_error(body, tied)
    assert bench_serve.answer_error(body, {"error": "x"}) == "no results list"
