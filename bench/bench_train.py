"""Benchmark training with the embedded CPU profile (params.yaml's sft and grpo sections) on this machine.

Phases run in separate processes so each one's peak RSS is its own:
  peak      fp32 and bf16 matmul throughput on this CPU (bench_rerank's measurement)
  sft       TRL SFTTrainer on the first --sft-samples SFT records (batch 1, one optimiser step per 2 samples):
            samples/s, trained tokens/s, achieved model FLOP rate
  grpo      TRL GRPOTrainer for --grpo-steps steps from the SFT model, twice: rollouts on the project's engine
            (TRL's rollout_func) and on TRL's own generate; seconds per step split into generation and the rest
            (log-probabilities, loss, backward, optimiser), generated tokens/s

    .venv/bin/python bench/bench_train.py [--sft-samples 4] [--grpo-steps 2] [--policy work/train/sft]

Generation time is measured by timing GRPOTrainer._generate (the one call that makes a step's completions); this
wrapper exists only in this benchmark process."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_rerank import peak_rss_mib, phase_peak  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _params():
    from rearank_core.config import load_params

    return load_params(ROOT / "params.yaml")


def _matmul_params(model_dir: str, cache: str) -> dict:
    """Parameters every token multiplies through: the decoder's linear layers and the LM head (tied to the
    embedding in SmolLM2, but a matmul over every position in training)."""
    from rearank_core.backends.adapters import load_causal_lm

    model = load_causal_lm(model_dir, Path(cache), None)
    embedding = model.get_input_embeddings().weight.numel()
    return {"linear_params": sum(p.numel() for p in model.parameters()) - embedding, "head_params": embedding}


def phase_sft(samples: int, work: Path) -> dict:
    from rearank_core.backends.base import hf_chat_ids, local_model
    from rearank_core.io.training_data import SFTRecord, read_records
    from rearank_core.training.setup import load_base
    from rearank_core.training.sft import run_sft

    p = _params()
    cfg = replace(p.sft, limit=samples, max_steps=max(1, samples // 2), batch_size=1, grad_accum=2,
                  save_steps=10_000, epochs=1.0)
    records_path = ROOT / p.data_job.sft
    records = read_records(records_path, SFTRecord)[:samples]
    _, tokenizer, dtype, _, _ = load_base(cfg.model, p.rerank.model_cache, cfg.dtype, False)
    tokens = sum(len(ids) for ids in hf_chat_ids(tokenizer, [r.messages for r in records], add_generation_prompt=False))
    figures = run_sft(cfg, records_path, work / "sft", p.rerank.model_cache)
    wall = figures["train_runtime_s"]
    shape = _matmul_params(local_model(cfg.model, Path(p.rerank.model_cache)), p.rerank.model_cache)
    # Forward 2 FLOPs per parameter per token; backward 2 more for activation gradients, and 2 more for weight
    # gradients only in a full fine-tune (LoRA's own weights are negligible).
    per_token = (4 if cfg.lora else 6) * (shape["linear_params"] + shape["head_params"])
    return {"samples": samples, "optimizer_steps": figures["steps"], "wall_s": wall, "samples_per_s": samples / wall,
            "tokens": tokens, "tokens_per_s": tokens / wall, "flops": per_token * tokens,
            "achieved_gflops": per_token * tokens / wall / 1e9, "lora": cfg.lora, "dtype": str(dtype).removeprefix("torch."),
            "peak_rss_mib": peak_rss_mib()}


def phase_grpo(steps: int, engine: str, policy: str, work: Path) -> dict:
    from trl import GRPOTrainer

    from rearank_core.training.grpo import run_grpo

    timings: list[float] = []
    original = GRPOTrainer._generate

    def timed(self, prompts):
        started = time.perf_counter()
        try:
            return original(self, prompts)
        finally:
            timings.append(time.perf_counter() - started)

    GRPOTrainer._generate = timed
    p = _params()
    cfg = replace(p.grpo, model=policy, max_steps=steps, rollout_engine=engine, save_steps=10_000, limit=steps)
    figures = run_grpo(cfg, p.rewards, ROOT / p.data_job.grpo, work / f"grpo-{engine}", p.rerank.model_cache)
    history = [h for h in figures["history"] if "completions/mean_length" in h]
    generated = sum(h["completions/mean_length"] * cfg.num_generations for h in history)
    wall, generation = figures["train_runtime_s"], sum(timings)
    return {"engine": figures["rollouts"], "steps": figures["steps"], "generations": cfg.num_generations,
            "max_completion_length": cfg.max_completion_length, "wall_s": wall, "s_per_step": wall / steps,
            "generation_s_per_step": generation / steps, "training_s_per_step": (wall - generation) / steps,
            "generated_tokens": generated, "generated_tokens_per_s": generated / generation if generation else None,
            "mean_completion_tokens": generated / max(1, steps * cfg.num_generations),
            "peak_rss_mib": peak_rss_mib()}


def run_phase(args: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--sft-samples", str(args.sft_samples), "--grpo-steps", str(args.grpo_steps),
           "--policy", args.policy, "--work", str(args.work), *extra]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(r: dict) -> str:
    s, peak = r["sft"], r["peak"]
    fp = peak["matmul_bf16_gflops"] if s["dtype"] == "bfloat16" else peak["matmul_fp32_gflops"]
    engine, trl = r["grpo_engine"], r["grpo_trl"]
    rows = [
        f"CPU: {r['machine']['cpu']}; {r['machine']['threads']} threads; {s['dtype']}; "
        f"LoRA {'on' if s['lora'] else 'off'}.", "",
        "| SFT (TRL SFTTrainer) | |", "|---|---:|",
        f"| samples (batch 1, 2 per optimiser step) | {s['samples']} |",
        f"| samples/s | {s['samples_per_s']:.3f} ({1 / s['samples_per_s']:.1f} s a sample) |",
        f"| trained tokens/s | {s['tokens_per_s']:.0f} ({s['tokens'] / s['samples']:.0f} tokens a sample) |",
        f"| achieved FLOP rate | {s['achieved_gflops']:.0f} GFLOP/s = {s['achieved_gflops'] / fp:.0%} of the "
        f"{fp:.0f} GFLOP/s {s['dtype']} matmul peak |",
        f"| peak RSS | {s['peak_rss_mib']:.0f} MiB |", "",
        f"| GRPO (TRL GRPOTrainer, {engine['generations']} generations, up to {engine['max_completion_length']} "
        f"tokens) | rollouts on the project's engine | rollouts on TRL's generate |", "|---|---:|---:|",
        f"| steps measured | {engine['steps']} | {trl['steps']} |",
        f"| seconds per step | {engine['s_per_step']:.1f} | {trl['s_per_step']:.1f} |",
        f"| of which generation | {engine['generation_s_per_step']:.1f} | {trl['generation_s_per_step']:.1f} |",
        f"| of which the rest (log-probs, loss, backward, optimiser) | {engine['training_s_per_step']:.1f} | "
        f"{trl['training_s_per_step']:.1f} |",
        f"| generated tokens/s | {engine['generated_tokens_per_s']:.1f} | {trl['generated_tokens_per_s']:.1f} |",
        f"| mean completion tokens | {engine['mean_completion_tokens']:.0f} | {trl['mean_completion_tokens']:.0f} |",
        f"| peak RSS | {engine['peak_rss_mib']:.0f} MiB | {trl['peak_rss_mib']:.0f} MiB |",
        f"| generation speed-up | **{trl['generation_s_per_step'] / engine['generation_s_per_step']:.2f}x** | 1x |",
    ]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("peak", "sft", "grpo"))
    parser.add_argument("--engine", choices=("engine", "trl"), default="engine")
    parser.add_argument("--sft-samples", type=int, default=4)
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--policy", default="work/train/sft", help="GRPO's starting policy (the SFT output)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.phase == "peak":
        print(json.dumps(phase_peak()))
        return
    if args.phase == "sft":
        print(json.dumps(phase_sft(args.sft_samples, args.work)))
        return
    if args.phase == "grpo":
        print(json.dumps(phase_grpo(args.grpo_steps, args.engine, args.policy, args.work)))
        return
    import torch

    print(f"CPU: {cpu_name()}", file=sys.stderr)
    results = {"machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "python": platform.python_version()},
               "peak": run_phase(args, "--phase", "peak"), "sft": run_phase(args, "--phase", "sft"),
               "grpo_engine": run_phase(args, "--phase", "grpo", "--engine", "engine"),
               "grpo_trl": run_phase(args, "--phase", "grpo", "--engine", "trl")}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    command = " ".join([".venv/bin/python bench/bench_train.py", *sys.argv[1:]])
    md = f"# Training benchmark: embedded CPU profile\n\nCommand: `{command}`\n\n" + table(results)
    (args.results / "train.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
