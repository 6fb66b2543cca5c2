"""`rearank serve` over real HTTP on 127.0.0.1: the rerank API in process (uvicorn in a thread) and as the CLI
subprocess, on the openai backend against the local ranking server and on a tiny local transformers model.

Answers keep the Reranker's order, requests that arrive while the model is busy share one rerank call, and
every refusal is a 4xx/5xx JSON body that names the field (never a traceback)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import RankingServer
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.config import RerankConfig
from rearank_core.records import Candidate, Query, Request
from rearank_core.rerank import Reranker
from rearank_core.serving import base_url, bind_socket, create_app

QUERY = "which passage talks about rivers"
DOCS = [f"passage {i}: {'rivers and lakes' if i % 3 == 0 else 'mountains'} number {i}" for i in range(10)]
KEY = "test-secret-key"


def openai_config(server: RankingServer, **changes: Any) -> RerankConfig:
    return RerankConfig(backend="openai", model="served-model", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                        window=4, step=2, max_retries=0, **changes)


def direct_order(reranker: Reranker, query: str, documents: list[str]) -> list[int]:
    """What ``Reranker.rerank`` itself makes of a query and its documents, in their given order."""
    candidates = [Candidate(str(i), 0.0, {"contents": d}) for i, d in enumerate(documents)]
    results, _ = reranker.rerank([Request(Query("direct", query), candidates)])
    return [int(c.docid) for c in results[0].candidates]


@contextmanager
def serving(reranker: Reranker, **options: Any) -> Iterator[tuple[str, Any]]:
    """The app on a free port of 127.0.0.1, served by uvicorn in a thread; yields its URL and the app."""
    sock = bind_socket("127.0.0.1", 0)
    api = create_app(reranker, model_name="served-model", **options)
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield base_url(sock), api
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def post(url: str, body: Any, key: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=60, **kwargs)


@pytest.fixture
def openai_reranker(ranking_server: RankingServer) -> Reranker:
    return Reranker(openai_config(ranking_server))


def test_a_request_gets_the_rerankers_order_with_decreasing_scores(openai_reranker: Reranker) -> None:
    expected = direct_order(openai_reranker, QUERY, DOCS)
    assert expected != list(range(len(DOCS)))  # the ranking server's first query: every window reversed
    with serving(openai_reranker) as (url, _):
        response = post(url, {"query": QUERY, "documents": DOCS, "model": "rerank-english-v3.0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "served-model" and body["id"]
    assert [r["index"] for r in body["results"]] == expected
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == [1 / (1 + rank) for rank in range(len(DOCS))]
    assert all(0 < s <= 1 for s in scores) and all(a > b for a, b in pairwise(scores))
    assert all("document" not in r for r in body["results"])
    assert body["meta"]["windows"] == 4 and body["meta"]["format_valid_rate"] == 1.0  # 10 passages, window 4, step 2
    assert body["meta"]["batch_queries"] == 1 and body["meta"]["latency_s"] >= 0


def test_top_n_return_documents_and_document_objects(openai_reranker: Reranker) -> None:
    with serving(openai_reranker) as (url, _):
        full = post(url, {"query": QUERY, "documents": DOCS}).json()["results"]
        top = post(url, {"query": QUERY, "documents": [{"text": d} for d in DOCS], "top_n": 3,
                         "return_documents": True}).json()["results"]
        beyond = post(url, {"query": QUERY, "documents": DOCS, "top_n": 50}).json()["results"]
        single = post(url, {"query": QUERY, "documents": ["alone"]}).json()
    assert [r["index"] for r in top] == [r["index"] for r in full[:3]]
    assert [r["document"]["text"] for r in top] == [DOCS[r["index"]] for r in top]
    assert len(beyond) == len(DOCS)
    assert single["results"] == [{"index": 0, "relevance_score": 1.0}]
    assert single["meta"]["windows"] == 0 and single["meta"]["format_valid_rate"] is None  # nothing to rank


class GatedBackend:
    """The real backend behind a gate that opens once ``release()`` is true: the first call's windows wait for it,
    so the requests sent meanwhile queue up behind the model as they would behind a busy one."""

    def __init__(self, backend: Any, release: Callable[[], bool]) -> None:
        self._backend = backend
        self._release = release
        self._open = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def complete(self, prompts: list, max_new_tokens: int) -> list:
        deadline = time.monotonic() + 20
        while not self._open.is_set() and not self._release() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._open.set()
        return self._backend.complete(prompts, max_new_tokens)


def test_concurrent_requests_are_batched_and_identical_queries_do_not_collide(openai_reranker: Reranker) -> None:
    queries = [QUERY] * 4 + [f"other question {i}" for i in range(4)]  # four identical requests among eight
    with serving(openai_reranker) as (url, api):
        batcher = api.state.batcher
        openai_reranker.backend = GatedBackend(openai_reranker.backend,
                                               lambda: sum(batcher.stats()[k] for k in ("in_call", "queued")) >= 8)
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda q: post(url, {"query": q, "documents": DOCS}), queries))
        health = httpx.get(f"{url}/health", timeout=10).json()
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    orders = [[x["index"] for x in r.json()["results"]] for r in responses]
    assert all(sorted(order) == list(range(len(DOCS))) for order in orders)
    assert orders[0] == orders[1] == orders[2] == orders[3]
    stats = health["batcher"]
    assert stats["requests"] == 8 and stats["calls"] <= 2 and stats["largest_call"] >= 4, stats
    assert max(r.json()["meta"]["batch_queries"] for r in responses) == stats["largest_call"]


def test_a_backend_failure_is_a_502_and_the_server_carries_on(openai_reranker: Reranker,
                                                              ranking_server: RankingServer) -> None:
    with serving(openai_reranker) as (url, _):
        ranking_server.fail = True
        failed = post(url, {"query": QUERY, "documents": DOCS})
        ranking_server.fail = False
        recovered = post(url, {"query": QUERY, "documents": DOCS})
    assert failed.status_code == 502
    assert "backend" in failed.json()["message"] and "Traceback" not in failed.text
    assert recovered.status_code == 200, recovered.text


def test_a_full_queue_refuses_with_503_and_loses_none_of_the_queued(openai_reranker: Reranker) -> None:
    """Six requests at once against a queue of two behind a busy model: each is answered or refused with
    Retry-After, never lost; the model answers every request it took."""
    with serving(openai_reranker, max_queue=2, max_batch_queries=1) as (url, api):
        batcher = api.state.batcher
        arrived = lambda: sum(batcher.stats()[k] for k in ("in_call", "queued", "refused_queue_full"))  # noqa: E731
        openai_reranker.backend = GatedBackend(openai_reranker.backend, lambda: arrived() >= 6)
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda i: post(url, {"query": f"question {i}", "documents": DOCS}), range(6)))
        stats = httpx.get(f"{url}/health", timeout=10).json()["batcher"]
    codes = sorted(r.status_code for r in responses)
    refused = [r for r in responses if r.status_code == 503]
    assert set(codes) == {200, 503} and codes.count(200) == stats["requests"] >= 2, codes
    assert len(refused) == stats["refused_queue_full"] and stats["max_queue"] == 2
    assert all(r.headers["Retry-After"] == "5" and "queued" in r.json()["message"] for r in refused)


def test_a_request_that_fails_the_backend_fails_alone(openai_reranker: Reranker,
                                                      ranking_server: RankingServer) -> None:
    """Two requests reranked in one call, one of whose query the backend refuses: the call is retried request by
    request, so only that one fails (502) and the other is answered."""
    ranking_server.fail_on = "poison"
    with serving(openai_reranker) as (url, api):
        batcher = api.state.batcher  # a first request holds the model until the two others wait for its next call
        openai_reranker.backend = GatedBackend(openai_reranker.backend, lambda: batcher.stats()["queued"] >= 2)
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, url, {"query": "a first question", "documents": DOCS})
            time.sleep(0.2)
            good, bad = pool.map(lambda q: post(url, {"query": q, "documents": DOCS}),
                                 ["a good question", "a poison question"])
            assert first.result().status_code == 200
        stats = httpx.get(f"{url}/health", timeout=10).json()["batcher"]
    assert good.status_code == 200 and good.json()["meta"]["batch_queries"] == 1, good.text
    assert bad.status_code == 502 and "backend" in bad.json()["message"]
    assert stats["retried_alone"] == 2 and stats["largest_call"] == 2, stats


def test_a_request_past_its_timeout_is_a_504_and_dropped_unanswered(openai_reranker: Reranker) -> None:
    started = time.monotonic()
    with serving(openai_reranker, request_timeout_s=0.5) as (url, api):
        batcher = api.state.batcher
        openai_reranker.backend = GatedBackend(openai_reranker.backend, lambda: time.monotonic() > started + 2)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, url, {"query": "first", "documents": DOCS})
            time.sleep(0.2)  # the first is in the model's call; the second waits in the queue
            second = pool.submit(post, url, {"query": "second", "documents": DOCS})
            responses = [first.result(), second.result()]
        deadline = time.monotonic() + 10
        while batcher.stats()["dropped"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = batcher.stats()
    assert [r.status_code for r in responses] == [504, 504], [r.text for r in responses]
    assert "request timeout of 0.5 s" in responses[1].json()["message"]
    assert stats["dropped"] == 1 and stats["requests"] == 1  # the second never reached the model


@pytest.fixture
def guarded(openai_reranker: Reranker) -> Iterator[str]:
    """An API with a key and small limits: 5 documents, 100 characters each, 2000-byte bodies."""
    limits = {"max_documents": 5, "max_document_chars": 100, "max_body_bytes": 2000}
    with serving(openai_reranker, api_key=KEY, **limits) as (url, _):
        yield url


@pytest.mark.parametrize("body, field", [
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": ["a", "b"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["a", 5]}, "documents[1]"),
    ({"query": "q", "documents": ["a", "b", {"text": 3}]}, "documents[2]"),
    ({"query": "  ", "documents": ["a"]}, "query"),
    ({"documents": ["a"]}, "query"),
    ({"query": "q", "documents": ["a"] * 6}, "documents"),
    ({"query": "q", "documents": ["a", "b", "c", "x" * 101]}, "documents[3]"),
])
def test_a_bad_request_is_a_422_naming_the_field(guarded: str, body: dict, field: str) -> None:
    response = post(guarded, body, KEY)
    assert response.status_code == 422, response.text
    error = response.json()
    assert [e["field"] for e in error["errors"]] == [field]
    assert error["message"].startswith(f"{field}: ")


def test_invalid_json_is_a_422_naming_the_body(guarded: str) -> None:
    response = httpx.post(f"{guarded}/v1/rerank", content=b'{"query": ', timeout=10,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body"


def test_a_body_over_the_limit_is_a_413_declared_or_chunked(guarded: str) -> None:
    declared = post(guarded, {"query": "q", "documents": ["y" * 90] * 30}, KEY)
    chunked = httpx.post(f"{guarded}/v1/rerank", content=iter([b" " * 1000] * 3), timeout=10,
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.json()["errors"][0]["field"] == "body" and "2000 bytes" in response.json()["message"]


def test_the_api_key_is_required_on_v1_only(guarded: str) -> None:
    body = {"query": QUERY, "documents": DOCS[:5]}
    assert post(guarded, body).status_code == 401
    assert post(guarded, body, "wrong-key").status_code == 401
    assert httpx.post(f"{guarded}/v1/rerank", json=body, headers={"Authorization": KEY}, timeout=10).status_code == 401
    assert post(guarded, {"query": "q", "documents": []}).status_code == 401  # the key is checked before the body
    assert post(guarded, body, KEY).status_code == 200
    health = httpx.get(f"{guarded}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["model"] == "served-model"


def serve_five(reranker: Reranker) -> tuple[httpx.Response, dict, list[int]]:
    """Five documents reranked over HTTP: the response, /health, and the order the reranker gives them directly."""
    docs = DOCS[:5]
    expected = direct_order(reranker, QUERY, docs)
    try:
        with serving(reranker) as (url, _):
            response = post(url, {"query": QUERY, "documents": docs})
            health = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        reranker.backend.close()
    return response, health, expected


def test_a_tiny_local_transformers_model_serves(tiny_dir: Path) -> None:
    response, health, expected = serve_five(Reranker(RerankConfig(
        backend="transformers", model=str(tiny_dir), window=3, step=2, max_new_tokens=8, dtype="float32",
        batch_size=4)))
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["results"]] == expected
    assert response.json()["meta"]["windows"] == 2  # 5 passages, window 3, step 2
    assert health["backend"] == "transformers"


def test_first_mode_serves_with_its_settings_in_health_and_meta(tiny_dir: Path) -> None:
    response, health, expected = serve_five(Reranker(RerankConfig(
        backend="transformers", model=str(tiny_dir), mode="first", window=3, step=2, dtype="float32", batch_size=4)))
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["results"]] == expected
    meta = response.json()["meta"]
    assert meta["windows"] == 2 and meta["settings"]["mode"] == "first" == health["settings"]["mode"]
    assert meta["settings"]["first_prompt"] == "first"
    assert meta["format_valid_rate"] is None  # no answer is parsed in first mode


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["serve", *args], env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.mark.parametrize("args, option", [
    (["--window", "1"], "--window"),
    (["--max-documents", "0"], "--max-documents"),
    (["--max-queue", "0"], "--max-queue"),
    (["--request-timeout", "0"], "--request-timeout"),
    (["--port", "70000"], "port"),
    (["--backend", "nope"], "--backend"),
])
def test_the_cli_refuses_a_bad_option_with_exit_code_2(tmp_path: Path, args: list[str], option: str) -> None:
    result = invoke(*args, "--params", str(tmp_path / "none.yaml"))
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and option in result.stderr and "Traceback" not in result.stderr


def test_help_shows_the_loopback_default() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert re.search(r"--host\s.*\[default: 127\.0\.0\.1\]", result.output, re.DOTALL)


@pytest.mark.integration
def test_the_cli_serves_with_a_key_from_the_environment(ranking_server: RankingServer, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "rearank_core.cli", "serve", "--port", "0", "--backend", "openai", "--model",
           "served-model", "--base-url", f"http://127.0.0.1:{ranking_server.server_port}/v1", "--window", "4",
           "--step", "2", "--params", str(tmp_path / "none.yaml")]
    env = {**os.environ, "REARANK_API_KEY": KEY, "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    seen: list[str] = []
    try:
        url = None
        while url is None:
            seen.append(lines.get(timeout=180))
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1/rerank \(API key required\)", seen[-1])
            url = match and match.group(1)
        assert post(url, {"query": QUERY, "documents": DOCS}).status_code == 401
        response = post(url, {"query": QUERY, "documents": DOCS}, KEY)
        assert response.status_code == 200, response.text
        assert sorted(r["index"] for r in response.json()["results"]) == list(range(len(DOCS)))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    while not lines.empty():
        seen.append(lines.get())
    assert KEY not in "".join(seen) and "Traceback" not in "".join(seen)
