"""Benchmark `rearank rerank` with the embedded model on all of DL19 against a naive fp32 loop.

Phases run in separate processes so each one's peak RSS is its own:
  peak       bf16 and fp32 matmul throughput on this CPU (the ceiling for any model here)
  optimized  the Reranker (cross-query batches, bf16 where the CPU has it) over DL19 queries x top-100,
             window 20 / step 10 (9 windows a query; all 43 queries = 387 windows), at most 256 new tokens
             per window
  naive      one window at a time, fp32, plain ``model.generate`` with the same prompts and limits, on the
             first N windows of the same schedule (the whole set would take over an hour; throughput is a rate)
  reasoning  the same two engines when every window decodes all 256 tokens (EOS suppressed, HF's
             ``min_new_tokens``), as a trained reasoning reranker's would: one batch of the first windows
             of --batch-size queries against the naive loop on --naive-reasoning of them

    .venv/bin/python bench/bench_rerank.py [--queries 43] [--naive-windows 12] [--batch-size 16] [--naive-reasoning 3]

--modes instead compares the two scoring modes on the same windows, in one process, with params.yaml's rerank
settings (window 10 of 48-word passages): the reasoning model (--reasoning-model, generate and parse) and the FIRST
model (--first-model, one forward pass a window) each score the first --windows windows of DL19's top-30 (BM25
order, so both read the same prompts' passages) one window per call (batch 1: a single request's cost) and
--batch-size windows per call; windows/s, ms/window and prompt tokens/s per mode, in bench/results/modes.*:

    .venv/bin/python bench/bench_rerank.py --modes [--windows 20] [--batch-size 16] [--dtype auto|float32]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DL19 = ROOT / "data" / "msmarco" / "dl19"
MAX_NEW = 256


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_peak() -> dict:
    """Matmul GFLOP/s per dtype, each measured for about two seconds (emulated bf16 can be 200x slower)."""
    import torch

    torch.set_num_threads(2)
    out = {}
    n = 1024
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < 2.0:
            a @ b
            reps += 1
        out[f"matmul_{name}_gflops"] = 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9
    return out


def _model_shape(model) -> dict:
    """What the FLOP count needs: matmul parameters outside the embedding/LM head, head sizes, layers."""
    c = model.config
    embedding = model.get_input_embeddings().weight
    return {"linear_params": sum(p.numel() for p in model.parameters()) - embedding.numel(),
            "head_params": embedding.numel(), "attn_width": c.num_attention_heads * (c.hidden_size // c.num_attention_heads),
            "layers": c.num_hidden_layers}


def window_flops(shape: dict, prompt: int, generated: int) -> float:
    """Matmul FLOPs of one window: projections and MLP for every token fed, the LM head for every token
    produced, causal attention over the prompt (2 L^2 width per layer) and each decoded token's attention."""
    linear = 2 * shape["linear_params"] * (prompt + max(generated - 1, 0))
    head = 2 * shape["head_params"] * generated
    decode_ctx = sum(prompt + i for i in range(max(generated - 1, 0)))
    attention = shape["layers"] * shape["attn_width"] * (2 * prompt ** 2 + 4 * decode_ctx)
    return float(linear + head + attention)


def _requests(queries: int):
    from rearank_core.io.requests import read_retrieve_results

    return read_retrieve_results(DL19 / "rank_llm_BM25_retrieve_results_dl19.json")[:queries]


def phase_optimized(queries: int, batch_size: int, work: Path) -> dict:
    from rearank_core.config import RerankConfig
    from rearank_core.evaluation import evaluate
    from rearank_core.io.trec import read_qrels
    from rearank_core.records import requests_to_run, results_to_run
    from rearank_core.rerank import Reranker

    requests = _requests(queries)
    qrels = read_qrels(DL19 / "qrels.dl19-passage.txt")
    t = time.perf_counter()
    reranker = Reranker(RerankConfig(model="embedded", model_cache=str(ROOT / "work" / "models"),
                                     batch_size=batch_size, max_new_tokens=MAX_NEW))
    load_s = time.perf_counter() - t
    backend = reranker.backend
    traces = work / "dl19.traces.jsonl"
    traces.unlink(missing_ok=True)
    results, summary = reranker.rerank(requests, traces_path=traces, show_progress=True)
    s = summary.to_dict()
    shape = _model_shape(backend.model)
    flops = sum(window_flops(shape, trace["prompt_tokens"], trace["completion_tokens"])
                for trace in map(json.loads, traces.read_text().splitlines()))
    return {
        "dtype": str(backend.dtype).replace("torch.", ""), "batch_size": batch_size, "load_s": load_s,
        "queries": summary.queries, "windows": summary.windows, "wall_s": summary.wall_s,
        "windows_per_s": summary.windows / summary.wall_s, "completion_tokens_per_s": s["completion_tokens_per_s"],
        "s_per_query": summary.wall_s / summary.queries, "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens, "format_valid_rate": summary.format_valid_rate,
        "status": s["status"],
        "flops": flops, "achieved_gflops": flops / summary.wall_s / 1e9,
        "ndcg10_bm25": evaluate(requests_to_run(requests), qrels).metrics["ndcg@10"],
        "ndcg10_reranked": evaluate(results_to_run(results), qrels).metrics["ndcg@10"],
        "peak_rss_mib": peak_rss_mib(),
    }


def naive_loop(prompts: list, min_new_tokens: int = 0) -> dict:
    """The loop a user writes first: fp32, one window per ``model.generate`` call, no cross-query batching."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearank_core.backends.embedded import embedded_model_dir

    torch.set_num_threads(2)
    folder = embedded_model_dir(ROOT / "work" / "models")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    generated = 0
    t = time.perf_counter()
    for messages in prompts:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=MAX_NEW, min_new_tokens=min_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, stop_strings=["</answer>"], tokenizer=tok)
        generated += out.shape[1] - ids["input_ids"].shape[1]
    wall = time.perf_counter() - t
    return {"windows": len(prompts), "wall_s": wall, "windows_per_s": len(prompts) / wall,
            "completion_tokens": generated, "completion_tokens_per_s": generated / wall, "peak_rss_mib": peak_rss_mib()}


def first_windows(queries: int) -> list:
    """The first window (ranks 81-100) of each query: the round the Reranker starts with."""
    from rearank_core.prompts import load_template, render

    template = load_template("rearank")
    return [render(template, r.query.text, [c.contents for c in r.candidates[80:100]]) for r in _requests(queries)]


def phase_reasoning(batch_size: int, naive_windows: int) -> dict:
    """Decode-heavy: every window generates exactly MAX_NEW tokens, one batch of the engine vs the naive loop."""
    from rearank_core.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend("embedded", cache_dir=ROOT / "work" / "models", batch_size=batch_size,
                                  min_new_tokens=MAX_NEW)
    prompts = first_windows(batch_size)
    t = time.perf_counter()
    done = backend.complete(prompts, MAX_NEW)
    wall = time.perf_counter() - t
    stats = dict(backend.decoder.last_stats)
    backend.close()
    generated = sum(c.completion_tokens for c in done)
    optimized = {"windows": len(done), "wall_s": wall, "windows_per_s": len(done) / wall,
                 "completion_tokens": generated, "completion_tokens_per_s": generated / wall,
                 "prefill_s": stats["prefill_s"], "decode_s": stats["decode_s"],
                 "decode_tokens_per_s": generated / stats["decode_s"]}
    return {"optimized": optimized, "naive": naive_loop(prompts[:naive_windows], min_new_tokens=MAX_NEW)}


def mode_prompts(reranker, windows: int) -> list:
    """The first ``windows`` windows of DL19's BM25 top-30 under ``reranker``'s settings, over the BM25 order."""
    from rearank_core.rerank.window import window_spans

    cfg = reranker.config
    spans = [(r, start, end) for r in _requests(43)
             for start, end in window_spans(len(r.candidates), cfg.window, cfg.step, 30)]
    return [reranker.prompt_for(r, start, end) for r, start, end in spans[:windows]]


def phase_modes(windows: int, batch_size: int, reasoning_model: str, first_model: str, dtype: str) -> dict:
    """Each mode's model on the same windows, one window per call and ``batch_size`` per call."""
    from dataclasses import replace

    from rearank_core.config import load_params
    from rearank_core.rerank import Reranker

    rerank = load_params(ROOT / "params.yaml").rerank
    out: dict = {}
    for mode, model in (("reasoning", reasoning_model), ("first", first_model)):
        reranker = Reranker(replace(rerank, mode=mode, model=model, batch_size=batch_size, dtype=dtype))
        backend = reranker.backend
        if mode == "first":
            def call(prompts: list) -> list:
                return backend.score_identifiers(prompts, reranker.template.answer_prefix, reranker.identifiers)
        else:
            def call(prompts: list) -> list:
                return backend.complete(prompts, reranker.config.max_new_tokens)
        prompts = mode_prompts(reranker, windows)
        call(prompts[:1])  # warm-up: the first call pays one-off costs
        runs = {"dtype": str(getattr(backend, "dtype", dtype)).replace("torch.", "")}
        for label, size in (("batch_1", 1), ("batched", batch_size)):
            started = time.perf_counter()
            answers = [a for i in range(0, len(prompts), size) for a in call(prompts[i:i + size])]
            wall = time.perf_counter() - started
            prompt_tokens = sum(a.prompt_tokens for a in answers)
            runs[label] = {"windows": len(answers), "windows_per_call": size, "wall_s": wall,
                           "windows_per_s": len(answers) / wall, "ms_per_window": 1000 * wall / len(answers),
                           "prompt_tokens": prompt_tokens, "prompt_tokens_per_s": prompt_tokens / wall,
                           "completion_tokens": sum(getattr(a, "completion_tokens", 0) for a in answers)}
        backend.close()
        out[mode] = {"model": model, **runs}
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def modes_table(r: dict) -> str:
    rows = ["| | reasoning | first | first / reasoning |", "|---|---:|---:|---:|",
            f"| model | `{r['reasoning']['model']}` | `{r['first']['model']}` | |",
            f"| dtype | {r['reasoning']['dtype']} | {r['first']['dtype']} | |"]
    for label, name in (("batch_1", "one window per call"), ("batched", f"{r['batch_size']} windows per call")):
        a, b = r["reasoning"][label], r["first"][label]
        rows += [f"| {name}: windows/s | {a['windows_per_s']:.3f} | {b['windows_per_s']:.3f} | "
                 f"**{b['windows_per_s'] / a['windows_per_s']:.1f}x** |",
                 f"| {name}: ms/window | {a['ms_per_window']:.0f} | {b['ms_per_window']:.0f} | "
                 f"{b['ms_per_window'] / a['ms_per_window']:.3f} |",
                 f"| {name}: prompt tokens/s | {a['prompt_tokens_per_s']:.0f} | {b['prompt_tokens_per_s']:.0f} | |",
                 f"| {name}: generated tokens | {a['completion_tokens']} | {b['completion_tokens']} | |"]
    return (f"{r['windows']} windows of DL19's BM25 top-30 (window 10, 48-word passages), the same prompts' passages "
            f"in both modes; {r['cpu']}, {r['cores']} cores; peak RSS {r['peak_rss_mib']:.0f} MiB.\n\n"
            + "\n".join(rows) + "\n")


def run_phase(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--queries", str(args.queries), "--batch-size", str(args.batch_size),
           "--naive-windows", str(args.naive_windows), "--naive-reasoning", str(args.naive_reasoning),
           "--work", str(args.work)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(r: dict) -> str:
    o, n, p = r["optimized"], r["naive"], r["peak"]
    ratio = o["windows_per_s"] / n["windows_per_s"]
    peak = p["matmul_bf16_gflops"] if o["dtype"] == "bfloat16" else p["matmul_fp32_gflops"]
    rows = [
        "| | rearank (Reranker) | naive loop |", "|---|---:|---:|",
        f"| dtype, windows per generate call | {o['dtype']}, up to {o['batch_size']} | float32, 1 |",
        f"| windows measured | {o['windows']} ({o['queries']} queries x 9) | {n['windows']} (first window of {n['windows']} queries) |",
        f"| wall time | {o['wall_s']:.0f} s | {n['wall_s']:.0f} s |",
        f"| windows/s | {o['windows_per_s']:.3f} | {n['windows_per_s']:.3f} |",
        f"| generated tokens/s | {o['completion_tokens_per_s']:.1f} | {n['completion_tokens_per_s']:.1f} |",
        f"| seconds/query (9 windows) | {o['s_per_query']:.1f} | {9 / n['windows_per_s']:.1f} (projected) |",
        f"| whole DL19 (387 windows) | {387 / o['windows_per_s'] / 60:.1f} min{'' if o['windows'] == 387 else ' (projected)'} | "
        f"{387 / n['windows_per_s'] / 60:.1f} min (projected) |",
        f"| peak RSS | {o['peak_rss_mib']:.0f} MiB | {n['peak_rss_mib']:.0f} MiB |",
        f"| format-valid rate | {o['format_valid_rate']:.1%} | |",
        f"| nDCG@10 (BM25 {o['ndcg10_bm25']:.4f}) | {o['ndcg10_reranked']:.4f} | |",
        f"| throughput ratio | **{ratio:.1f}x** | 1x |",
    ]
    notes = [
        f"Prompt tokens {o['prompt_tokens']:,}, generated tokens {o['completion_tokens']:,}; statuses {o['status']}.",
        f"Prefill of one batch of {r['reasoning']['optimized']['windows']} first windows: {r['reasoning']['optimized']['prefill_s']:.0f} s "
        f"(decode-heavy run below); scaled to all {o['windows']} windows that is "
        f"{r['reasoning']['optimized']['prefill_s'] / r['reasoning']['optimized']['windows'] * o['windows'] / o['wall_s']:.0%} "
        f"of the wall time.",
        f"Model compute achieved: {o['achieved_gflops']:.0f} GFLOP/s ({o['flops'] / 1e12:.0f} TFLOP of matmuls: projections, "
        f"MLP, causal attention, LM head on generated tokens; / wall time), {o['achieved_gflops'] / peak:.0%} of this CPU's "
        f"{o['dtype']} matmul peak ({peak:.0f} GFLOP/s; bf16 {p['matmul_bf16_gflops']:.1f}, fp32 {p['matmul_fp32_gflops']:.0f}).",
    ]
    ro, rn = r["reasoning"]["optimized"], r["reasoning"]["naive"]
    reasoning = [
        "", f"Decode-heavy: every window generates all {MAX_NEW} tokens (EOS suppressed), as a trained reasoning model's would.",
        "", "| | rearank engine | naive loop |", "|---|---:|---:|",
        f"| windows (first window of each query) | {ro['windows']} in one batch | {rn['windows']}, one at a time |",
        f"| wall time | {ro['wall_s']:.0f} s (prefill {ro['prefill_s']:.0f} s, decode {ro['decode_s']:.0f} s) | {rn['wall_s']:.0f} s |",
        f"| windows/s | {ro['windows_per_s']:.3f} | {rn['windows_per_s']:.3f} |",
        f"| generated tokens/s | {ro['completion_tokens_per_s']:.1f} (decode phase alone {ro['decode_tokens_per_s']:.1f}) | "
        f"{rn['completion_tokens_per_s']:.1f} |",
        f"| throughput ratio | **{ro['windows_per_s'] / rn['windows_per_s']:.1f}x** | 1x |",
    ]
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" + "\n".join(reasoning) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("peak", "optimized", "naive", "reasoning"))
    parser.add_argument("--queries", type=int, default=43)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--naive-windows", type=int, default=12)
    parser.add_argument("--naive-reasoning", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--modes", action="store_true", help="compare reasoning and first mode on the same windows")
    parser.add_argument("--windows", type=int, default=20, help="--modes: windows per mode and batch size")
    parser.add_argument("--reasoning-model", default="models/rearank-smollm2-135m-lora")
    parser.add_argument("--first-model", default="models/first-smollm2-135m-lora")
    parser.add_argument("--dtype", default="auto", help="--modes: auto (bf16 where the CPU has it) or float32")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.modes:
        import os

        from bench_train import cpu_name

        results = {"command": " ".join([".venv/bin/python bench/bench_rerank.py", *sys.argv[1:]]),
                   "cpu": cpu_name(), "cores": os.cpu_count(), "windows": args.windows, "batch_size": args.batch_size,
                   **phase_modes(args.windows, args.batch_size, args.reasoning_model, args.first_model, args.dtype)}
        args.results.mkdir(parents=True, exist_ok=True)
        suffix = "" if args.dtype == "auto" else f".{args.dtype}"
        (args.results / f"modes{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
        md = f"# Reasoning vs first mode\n\nCommand: `{results['command']}`\n\n" + modes_table(results)
        (args.results / f"modes{suffix}.md").write_text(md)
        print(md)
        return
    if args.phase == "peak":
        print(json.dumps(phase_peak()))
        return
    if args.phase == "optimized":
        print(json.dumps(phase_optimized(args.queries, args.batch_size, args.work)))
        return
    if args.phase == "naive":
        print(json.dumps(naive_loop(first_windows(args.naive_windows))))
        return
    if args.phase == "reasoning":
        print(json.dumps(phase_reasoning(args.batch_size, args.naive_reasoning)))
        return
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
               "peak": run_phase("peak", args), "optimized": run_phase("optimized", args), "naive": run_phase("naive", args),
               "reasoning": run_phase("reasoning", args)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "rerank.json").write_text(json.dumps(results, indent=2) + "\n")
    results["command"] = " ".join([".venv/bin/python bench/bench_rerank.py", *sys.argv[1:]])
    md = f"# Reranking benchmark: embedded model on DL19\n\nCommand: `{results['command']}`\n\n" + table(results)
    (args.results / "rerank.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
