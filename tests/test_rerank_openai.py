"""`rearank rerank --backend openai` end to end against a real HTTP server on 127.0.0.1: one request per
window, parser and window behaviour as with any backend, and a clean failure when the server is down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rearank_core.io.trec import read_run

DL19 = Path(__file__).resolve().parents[1] / "data" / "msmarco" / "dl19" / "rank_llm_BM25_retrieve_results_dl19.json"
QUERY = re.compile(r"Search Query: (.*?)\. \n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.per_query: Counter = Counter()
        self.queries_seen: list[str] = []
        self.fail = False
        self.sampling_keys: set[tuple[str, ...]] = set()  # which limit/temperature fields each request sent
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.fail:
            self.send_response(503)
            self.end_headers()
            return
        last = body["messages"][-1]["content"]
        query = QUERY.search(last).group(1)
        num = int(re.search(r"Rank the (\d+) passages", last).group(1))
        with self.server.lock:
            self.server.sampling_keys.add(tuple(sorted(k for k in body if "tokens" in k or k == "temperature")))
            self.server.per_query[query] += 1
            if query not in self.server.queries_seen:
                self.server.queries_seen.append(query)
            kind = self.server.queries_seen.index(query) % 3
        if kind == 0:  # a good answer: the window reversed
            text, finish = "<think>ok</think><answer>" + " > ".join(f"[{i}]" for i in range(num, 0, -1)) + "</answer>", "stop"
        elif kind == 1:  # needs repair: a duplicate, an out-of-range id, most ids missing
            text, finish = "<think>hm</think><answer>[2] > [2] > [99] > [1]</answer>", "stop"
        else:  # cut off inside the reasoning, with tempting numbers in it
            text, finish = "<think>[3] > [1] looks right but", "length"
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                 "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _rerank(server: _Server, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "rearank_core.cli", "rerank", "--candidates", str(DL19), "--run", str(tmp_path / "run.trec"),
           "--traces", str(tmp_path / "traces.jsonl"), "--backend", "openai", "--model", "served-model",
           "--base-url", f"http://127.0.0.1:{server.server_port}/v1", "--limit", "6", "--concurrency", "4",
           "--params", str(tmp_path / "none.yaml"), "-q", *extra]
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_one_request_per_window_and_parser_behaviour(server: _Server, tmp_path: Path) -> None:
    proc = _rerank(server, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(server.per_query) == 6 and set(server.per_query.values()) == {9}  # 100 candidates: 9 windows each
    traces = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 54
    by_kind = Counter(t["status"] for t in traces)
    assert by_kind == {"ok": 18, "repaired": 18, "truncated": 18}
    assert all(t["order"] == list(range(20)) for t in traces if t["status"] == "truncated")
    run = read_run(tmp_path / "run.trec")
    source = json.loads(DL19.read_text())[:6]
    assert len(run) == 6
    for entry in source:
        qid = str(entry["hits"][0]["qid"])
        assert sorted(d for d, _ in run[qid]) == sorted(h["docid"] for h in entry["hits"])
    assert "format-valid 66.7%" in proc.stderr and "repaired 33.3%" in proc.stderr


def test_top_k_and_window_options_change_the_request_count(server: _Server, tmp_path: Path) -> None:
    proc = _rerank(server, tmp_path, "--top-k", "30", "--window", "10", "--step", "5")
    assert proc.returncode == 0, proc.stderr
    assert set(server.per_query.values()) == {5}  # 30 ranked, window 10, step 5: 20-30, 15-25, ..., 0-10


def test_reasoning_model_flag_changes_the_request_fields(server: _Server, tmp_path: Path) -> None:
    assert _rerank(server, tmp_path, "--top-k", "20").returncode == 0
    assert server.sampling_keys == {("max_tokens", "temperature")}
    server.sampling_keys.clear()
    proc = _rerank(server, tmp_path, "--top-k", "20", "--reasoning-model", "--max-new-tokens", "4096")
    assert proc.returncode == 0, proc.stderr
    assert server.sampling_keys == {("max_completion_tokens",)}


def test_server_failure_is_a_clean_error_and_writes_no_run(server: _Server, tmp_path: Path) -> None:
    server.fail = True
    proc = _rerank(server, tmp_path, "--retries", "1")
    assert proc.returncode == 1
    assert "backend error" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run.trec").exists()
