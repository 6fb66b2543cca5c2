"""Benchmark `rearank rerank` with the embedded model on all of DL19 against a naive fp32 loop.

Phases run in separate processes so each one's peak RSS is its own:
  peak       bf16 and fp32 matmul throughput on this CPU (the ceiling for any model here)
  optimized  the Reranker (cross-query batches, bf16 where the CPU has it) over DL19 queries x top-100,
             window 20 / step 10 (9 windows a query; all 43 queries = 387 windows), at most 256 new tokens
             per window; plus a prefill-only pass
  naive      one window at a time, fp32, plain ``model.generate`` with the same prompts and limits, on the
             first N windows of the same schedule (the whole set would take over an hour; throughput is a rate)

    .venv/bin/python bench/bench_rerank.py [--queries 43] [--naive-windows 12] [--batch-size 16]
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


def _requests(queries: int):
    from rearank_core.formats.requests import read_retrieve_results

    return read_retrieve_results(DL19 / "rank_llm_BM25_retrieve_results_dl19.json")[:queries]


def phase_optimized(queries: int, batch_size: int, work: Path) -> dict:
    from rearank_core.evaluation import evaluate
    from rearank_core.formats.trec import read_qrels
    from rearank_core.records import requests_to_run, results_to_run
    from rearank_core.rerank import RerankConfig, Reranker

    requests = _requests(queries)
    qrels = read_qrels(DL19 / "qrels.dl19-passage.txt")
    t = time.perf_counter()
    reranker = Reranker(RerankConfig(model="embedded", model_cache=str(ROOT / "work" / "models"),
                                     batch_size=batch_size, max_new_tokens=MAX_NEW))
    load_s = time.perf_counter() - t
    backend = reranker.backend
    # Prefill alone: one full batch of first-round windows with a single new token.
    prompts = [reranker.prompt_for(r, 80, 100) for r in requests[:batch_size]]
    t = time.perf_counter()
    backend.complete(prompts, 1)
    prefill_s = time.perf_counter() - t
    results, summary = reranker.rerank(requests, traces_path=work / "dl19.traces.jsonl", show_progress=True)
    s = summary.to_dict()
    params = sum(p.numel() for p in backend.model.parameters())
    tokens = summary.prompt_tokens + summary.completion_tokens
    return {
        "dtype": str(backend.dtype).replace("torch.", ""), "batch_size": batch_size, "load_s": load_s,
        "queries": summary.queries, "windows": summary.windows, "wall_s": summary.wall_s,
        "windows_per_s": summary.windows / summary.wall_s, "completion_tokens_per_s": s["completion_tokens_per_s"],
        "s_per_query": summary.wall_s / summary.queries, "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens, "format_valid_rate": summary.format_valid_rate,
        "status": s["status"], "prefill_batch_s": prefill_s, "prefill_batch_windows": len(prompts),
        "prefill_share_est": prefill_s * summary.windows / len(prompts) / summary.wall_s,
        "params": params, "achieved_gflops": 2 * params * tokens / summary.wall_s / 1e9,
        "ndcg10_bm25": evaluate(requests_to_run(requests), qrels).metrics["ndcg@10"],
        "ndcg10_reranked": evaluate(results_to_run(results), qrels).metrics["ndcg@10"],
        "peak_rss_mib": peak_rss_mib(),
    }


def phase_naive(windows: int) -> dict:
    """The loop a user writes first: fp32, one window per generate call, no cross-query batching."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearank_core.models import embedded_model_dir
    from rearank_core.prompts import load_template, render

    torch.set_num_threads(2)
    folder = embedded_model_dir(ROOT / "work" / "models")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    template = load_template("rearank")
    requests = _requests(windows)  # the first window of each query: the same first round the Reranker runs
    done = completion_tokens = 0
    t = time.perf_counter()
    for request in requests:
        messages = render(template, request.query.text, [c.contents for c in request.candidates[80:100]])
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id,
                                 stop_strings=["</answer>"], tokenizer=tok)
        completion_tokens += out.shape[1] - ids["input_ids"].shape[1]
        done += 1
    wall = time.perf_counter() - t
    return {"windows": done, "wall_s": wall, "windows_per_s": done / wall, "completion_tokens": completion_tokens,
            "completion_tokens_per_s": completion_tokens / wall, "peak_rss_mib": peak_rss_mib()}


def run_phase(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--queries", str(args.queries), "--batch-size", str(args.batch_size),
           "--naive-windows", str(args.naive_windows), "--work", str(args.work)]
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
        f"Prefill of one batch of {o['prefill_batch_windows']} windows: {o['prefill_batch_s']:.1f} s; scaled to all windows that is "
        f"{o['prefill_share_est']:.0%} of the wall time (over 100%: the measurement noise of a run that is all prefill).",
        f"Model compute achieved: {o['achieved_gflops']:.0f} GFLOP/s (2 x {o['params'] / 1e6:.0f}M params x tokens / wall), "
        f"{o['achieved_gflops'] / peak:.0%} of this CPU's {o['dtype']} matmul peak ({peak:.0f} GFLOP/s; "
        f"bf16 {p['matmul_bf16_gflops']:.1f}, fp32 {p['matmul_fp32_gflops']:.0f}).",
    ]
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("peak", "optimized", "naive"))
    parser.add_argument("--queries", type=int, default=43)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--naive-windows", type=int, default=12)
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.phase == "peak":
        print(json.dumps(phase_peak()))
        return
    if args.phase == "optimized":
        print(json.dumps(phase_optimized(args.queries, args.batch_size, args.work)))
        return
    if args.phase == "naive":
        print(json.dumps(phase_naive(args.naive_windows)))
        return
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
               "peak": run_phase("peak", args), "optimized": run_phase("optimized", args), "naive": run_phase("naive", args)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "rerank.json").write_text(json.dumps(results, indent=2) + "\n")
    results["command"] = " ".join([".venv/bin/python bench/bench_rerank.py", *sys.argv[1:]])
    md = f"# Reranking benchmark: embedded model on DL19\n\nCommand: `{results['command']}`\n\n" + table(results)
    (args.results / "rerank.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
