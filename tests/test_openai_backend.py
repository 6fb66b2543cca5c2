"""OpenAIBackend against a real HTTP server on 127.0.0.1: parsing, retries, timeouts, errors, concurrency."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rearank_core.backends.openai_backend import OpenAIBackend
from rearank_core.errors import BackendError

MakeBackend = Callable[..., OpenAIBackend]

PROMPT = [{"role": "system", "content": "You rank passages."}, {"role": "user", "content": "Rank [1] and [2]."}]


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = b""
    delay_s: float = 0.0


@dataclass
class FakeServer:
    """What the handler answers (``respond``, given the request's 0-based index) and what it saw."""

    url: str
    respond: Callable[[int], Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def chat_body(content: str | None = "[2] > [1]", finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def make_handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                index = len(state.requests)
                state.requests.append(body)
                state.headers.append({k.lower(): v for k, v in self.headers.items()})
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                reply = state.respond(index) if self.path == "/v1/chat/completions" else Reply(404, b"not found")
                if state.stop.wait(reply.delay_s):
                    return  # test over: do not keep a slow handler alive
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    return Handler


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell, or the JVM start-up elsewhere in the process, may have set these.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer(url="", respond=lambda i: Reply(body=chat_body()))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def backend() -> Iterator[MakeBackend]:
    made: list[OpenAIBackend] = []

    def make(server_url: str, **kwargs: Any) -> OpenAIBackend:
        kwargs.setdefault("max_retries", 0)
        made.append(OpenAIBackend("test-model", base_url=server_url, **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_well_formed_response(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(body=chat_body("[2] > [1]", "stop") if i == 0 else chat_body("[1", "length"))
    b = backend(server.url)
    first, second = b.complete([PROMPT], 64) + b.complete([PROMPT], 64)
    assert (first.text, first.prompt_tokens, first.completion_tokens) == ("[2] > [1]", 11, 7)
    assert first.finish_reason == "stop"
    assert (second.text, second.finish_reason) == ("[1", "length")
    assert first.latency_s > 0
    assert (b.name, b.max_batch_size, b.count_tokens("x")) == ("openai", 1, None)


def test_other_finish_reasons_no_usage_and_null_content(server: FakeServer, backend: MakeBackend) -> None:
    body = chat_body(None, "content_filter")
    del body["usage"]
    server.respond = lambda i: Reply(body=body)
    (c,) = backend(server.url).complete([PROMPT], 64)
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("", 0, 0, "stop")


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_is_prepended_as_think(server: FakeServer, key: str, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(body=chat_body("<answer>[2] > [1]</answer>", **{key: "2 is closer."}))
    (c,) = backend(server.url).complete([PROMPT], 64)
    assert c.text == "<think>2 is closer.</think><answer>[2] > [1]</answer>"


def test_request_body_and_extra_body(server: FakeServer, backend: MakeBackend) -> None:
    backend(server.url, extra_body={"top_k": 1}).complete([PROMPT], 321)
    (sent,) = server.requests
    assert sent["model"] == "test-model"
    assert sent["messages"] == PROMPT
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"]) == (321, 0, 1)


def test_reasoning_model_sends_max_completion_tokens_and_no_temperature(
    server: FakeServer, backend: MakeBackend
) -> None:
    backend(server.url, reasoning_model=True).complete([PROMPT], 4096)
    (sent,) = server.requests
    assert sent["max_completion_tokens"] == 4096
    assert "max_tokens" not in sent and "temperature" not in sent


def test_api_key_from_env_sent_as_bearer(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, backend: MakeBackend
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    backend(server.url).complete([PROMPT], 8)
    assert server.headers[0]["authorization"] == "Bearer sk-test-123"


def test_no_key_placeholder_for_own_server_error_for_official_api(server: FakeServer, backend: MakeBackend) -> None:
    backend(server.url).complete([PROMPT], 8)
    assert server.headers[0]["authorization"] == "Bearer EMPTY"
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-x")


def test_malformed_json_body(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(body=b"<html>oops</html>")
    with pytest.raises(BackendError, match=r"not JSON.*oops") as err:
        backend(server.url).complete([PROMPT], 8)
    assert server.url in str(err.value) and "test-model" in str(err.value)


@pytest.mark.parametrize(
    "body, what",
    [({"object": "chat.completion", "choices": []}, "no choices"), ({"choices": [{"index": 0}]}, "no message")],
)
def test_missing_choices_or_message(server: FakeServer, body: dict[str, Any], what: str, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(body=body)
    with pytest.raises(BackendError, match=what):
        backend(server.url).complete([PROMPT], 8)


def test_429_twice_then_success(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(429, {"error": {"message": "slow down"}}) if i < 2 else Reply(body=chat_body())
    (c,) = backend(server.url, max_retries=2).complete([PROMPT], 8)
    assert c.text == "[2] > [1]"
    assert len(server.requests) == 3
    # The client numbers its attempts in a header: proof these were its retries, not ours.
    assert [h["x-stainless-retry-count"] for h in server.headers] == ["0", "1", "2"]


def test_500_always_fails_after_all_retries(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(500, {"error": {"message": "engine dead"}})
    with pytest.raises(BackendError, match=r"HTTP 500.*engine dead.*3 attempt") as err:
        backend(server.url, max_retries=2).complete([PROMPT], 8)
    assert len(server.requests) == 3
    assert isinstance(err.value.__cause__, Exception)  # the openai error is chained, not shown


def test_400_is_not_retried(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(400, {"error": {"message": "prompt too long"}})
    with pytest.raises(BackendError, match=r"HTTP 400.*prompt too long.*1 attempt"):
        backend(server.url, max_retries=3).complete([PROMPT], 8)
    assert len(server.requests) == 1


def test_slow_server_times_out_after_retries(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(body=chat_body(), delay_s=5)
    with pytest.raises(BackendError, match=r"timed out.*2 attempt"):
        backend(server.url, timeout_s=0.5, max_retries=1).complete([PROMPT], 8)
    assert len(server.requests) == 2


def test_connection_refused(backend: MakeBackend) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}.*could not connect.*2 attempt"):
        backend(f"http://127.0.0.1:{port}/v1", max_retries=1).complete([PROMPT], 8)


def test_concurrent_calls_share_one_client(server: FakeServer, backend: MakeBackend) -> None:
    server.respond = lambda i: Reply(body=chat_body(f"[{i}]"), delay_s=0.3)
    b = backend(server.url, concurrency=4)
    assert b.max_parallel_calls == 4
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: b.complete([PROMPT], 8)[0], range(8)))
    elapsed = time.perf_counter() - start
    assert sorted(c.text for c in results) == sorted(f"[{i}]" for i in range(8))
    assert elapsed < 1.8  # 8 x 0.3 s = 2.4 s one at a time; about 0.6 s four at a time
    assert 2 <= server.max_in_flight <= 4
