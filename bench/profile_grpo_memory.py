"""Where a GRPO step's memory goes: the embedded profile's GRPO (params.yaml, the shipped adapter as the policy)
for a few steps, printing the process's resident size and its running peak on entering and leaving TRL's
generation, loss and training-step methods. Settings of the grpo section can be overridden to compare them.

    .venv/bin/python bench/profile_grpo_memory.py [--dtype float32] [--steps 2] [micro_batch=4 activation_checkpointing=0]

Needs the GRPO records of the data stages (work/data/grpo.jsonl: `dvc repro build`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rearank_core.memory import GIB, PeakSampler, tree_rss  # noqa: E402

METHODS = ("training_step", "_generate_and_score_completions", "_generate", "_compute_loss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--records", type=Path, default=ROOT / "work" / "data" / "grpo.jsonl")
    parser.add_argument("overrides", nargs="*", help="grpo settings as key=value (integers; booleans as 0/1)")
    args = parser.parse_args()

    import trl.trainer.grpo_trainer as grpo_trainer

    from rearank_core.config import load_params
    from rearank_core.training.grpo import run_grpo

    sampler = PeakSampler(interval=0.02).start()

    def mark(what: str) -> None:
        print(f"{what}: resident {tree_rss(sampler.pid) / GIB:.2f} GiB, peak so far {sampler.peak / GIB:.2f} GiB",
              flush=True)

    def traced(name: str, method):  # noqa: ANN001, ANN202
        def wrapper(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            mark(f"enter {name}")
            result = method(self, *a, **k)
            mark(f"leave {name}")
            return result
        return wrapper

    for name in METHODS:
        setattr(grpo_trainer.GRPOTrainer, name, traced(name, getattr(grpo_trainer.GRPOTrainer, name)))
    params = load_params(ROOT / "params.yaml")
    changes = {}
    for item in args.overrides:
        key, value = item.split("=", 1)
        changes[key] = bool(int(value)) if isinstance(getattr(params.grpo, key), bool) else int(value)
    cfg = dataclasses.replace(params.grpo, dtype=args.dtype, max_steps=args.steps,
                              model=str(ROOT / params.sft.model), **changes)
    print(f"grpo: dtype {args.dtype}, micro_batch {cfg.micro_batch}, activation_checkpointing "
          f"{cfg.activation_checkpointing}, {args.steps} steps", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run_grpo(cfg, params.rewards, args.records, out, ROOT / params.rerank.model_cache)
    mark(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
