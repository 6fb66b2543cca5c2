"""Shared test set-up: offline, telemetry off, every tool's state under the test's own folders."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
DL19 = DATA / "msmarco" / "dl19"
DL19_CANDIDATES = DL19 / "rank_llm_BM25_retrieve_results_dl19.json"
DL19_QRELS = DL19 / "qrels.dl19-passage.txt"
BIN = Path(sys.executable).parent

for key, value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(key, value)


# The longest modules (minutes each: servers, flows, training), longest first. `.ci/run` runs the suite on two
# pytest-xdist workers, a module to a worker (--dist loadfile, in collection order): started first, the long
# modules run beside each other and the short ones fill in, so both workers end together.
LONGEST_FIRST = ("test_topology.py", "test_pipeline.py", "test_memory.py", "test_mlops_pipeline.py",
                 "test_deployments.py", "test_supervise.py", "test_registry.py", "test_dvc.py",
                 "test_first_training.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's own order stays


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded-model cache per test session: the first user converts the GGUF, every later one reuses it
    (subprocess tests too, through params.yaml's rerank.model_cache). Under pytest-xdist the workers share it: the
    conversion holds a file lock."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "rearank-models"


@pytest.fixture(scope="session")
def embedded_dir(model_cache: Path) -> Path:
    """The converted embedded model folder (SmolLM2-135M-Instruct)."""
    from rearank_core.backends.embedded import embedded_model_dir

    return embedded_model_dir(model_cache)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, embedded_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) saved with the real SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                         initializer_range=0.2)  # large enough that the output depends on the prompt
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


QUERY = re.compile(r"Search Query: (.*?)\. ?\n")


class RankingServer(ThreadingHTTPServer):
    """An OpenAI-compatible Chat Completions server on 127.0.0.1 answering REARANK-prompt windows: per query in
    turn a good answer, one that needs repair, one cut off inside its reasoning (or 503 when ``fail``, or for
    a query containing ``fail_on``). Asked for logprobs (first mode), it answers "[" then the identifiers with
    the window reversed in its top_logprobs, as many as asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RankingHandler)
        self.per_query: Counter = Counter()
        self.queries_seen: list[str] = []
        self.fail = False
        self.fail_on: str | None = None  # 503 for a query containing this text
        self.sampling_keys: set[tuple[str, ...]] = set()  # which limit/temperature fields each request sent
        self.lock = threading.Lock()


class _RankingHandler(BaseHTTPRequestHandler):
    server: RankingServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = body["messages"][-1]["content"]
        query = QUERY.search(last).group(1)
        if self.server.fail or (self.server.fail_on is not None and self.server.fail_on in query):
            self.send_response(503)
            self.end_headers()
            return
        num = int(re.search(r"Rank the (\d+) passages", last).group(1))
        with self.server.lock:
            self.server.sampling_keys.add(tuple(sorted(k for k in body if "tokens" in k or k == "temperature")))
            self.server.per_query[query] += 1
            if query not in self.server.queries_seen:
                self.server.queries_seen.append(query)
            kind = self.server.queries_seen.index(query) % 3
        if body.get("logprobs"):  # first mode: "[", then the identifiers, the window reversed, capped as asked
            letters = [chr(ord("A") + i) for i in range(num)][::-1][:body.get("top_logprobs", 0)]
            tokens = [{"token": "[", "logprob": -0.01, "top_logprobs": [{"token": "[", "logprob": -0.01}]},
                      {"token": letters[0], "logprob": -0.5,
                       "top_logprobs": [{"token": f"{' ' * (i % 2)}{letter}", "logprob": -0.5 - i}
                                        for i, letter in enumerate(letters)]}]
            reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": f"[{letters[0]}"},
                                  "logprobs": {"content": tokens}, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 900, "completion_tokens": 2, "total_tokens": 902}}
            self._send(reply)
            return
        if kind == 0:  # a good answer: the window reversed
            text, finish = "<think>ok</think><answer>" + " > ".join(f"[{i}]" for i in range(num, 0, -1)) + "</answer>", "stop"
        elif kind == 1:  # needs repair: a duplicate, an out-of-range id, most ids missing
            text, finish = "<think>hm</think><answer>[2] > [2] > [99] > [1]</answer>", "stop"
        else:  # cut off inside the reasoning, with tempting numbers in it
            text, finish = "<think>[3] > [1] looks right but", "length"
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                 "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}}
        self._send(reply)

    def _send(self, reply: dict) -> None:
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def ranking_server() -> Iterator[RankingServer]:
    srv = RankingServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
