"""The shipped embedded FIRST reranker's recipe: DL21 queries split into training and held-back validation queries,
REARANK-style windows drawn from the training queries, `rearank train sft --objective first` (the library's stage,
LoRA on the embedded SmolLM2-135M) with a checkpoint every --eval-every steps, and each checkpoint reranking the
held-back queries in first mode: the learning curve (loss, RankNet loss, validation nDCG@10 per checkpoint).

    .venv/bin/python bench/train_first.py --out work/first [--per-query 20] [--epochs 1] [--learning-rate 2e-4]
        [--draw sliding --top-n 50 --step 5] [--eval-every 25] [--dtype auto] [--no-activation-checkpointing]
        [--full] [--evaluate-only]
        [--export models/first-smollm2-135m-lora [--export-step N] [--evaluation REPORT.json]]

Everything lands under --out: the split candidates, the windows, the model (checkpoints kept: a rerun resumes the
same job), curve.csv, curve.json and curve.png. It resumes: finished checkpoints' validation scores are read back.
--evaluate-only scores the checkpoints a stopped run left; --export DEST ships one with its card."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rearank_core.config import DataConfig, RerankConfig, TrackingConfig, load_params  # noqa: E402
from rearank_core.data.augment import augment  # noqa: E402
from rearank_core.evaluation import evaluate  # noqa: E402
from rearank_core.io.auto import read_any_qrels  # noqa: E402
from rearank_core.io.files import write_json, write_jsonl  # noqa: E402
from rearank_core.io.requests import read_candidates, write_requests  # noqa: E402
from rearank_core.records import requests_to_run, results_to_run  # noqa: E402
from rearank_core.rerank import Reranker  # noqa: E402
from rearank_core.stages.train import train_sft_stage  # noqa: E402

DL21 = ROOT / "data" / "msmarco" / "dl21"


def split(every: int) -> tuple[list, list]:
    """DL21's judged queries in qid order: every ``every``-th held back for validation, the rest for training."""
    requests = sorted(read_candidates(DL21 / "rank_llm_BM25_retrieve_results_dl21.json"), key=lambda r: r.query.qid)
    qrels = read_any_qrels(DL21 / "qrels.dl21-passage.txt")
    judged = [r for r in requests if r.query.qid in qrels]
    held = [r for i, r in enumerate(judged) if i % every == every - 1]
    return [r for r in judged if r not in held], held


def validate(model: str | Path, held: list, qrels: dict, rerank: RerankConfig) -> tuple[float, float]:
    """nDCG@10 of the held-back queries' top-30 reranked in first mode by ``model``, and windows/s."""
    reranker = Reranker(replace(rerank, model=str(model), mode="first", top_k=30))
    try:
        results, summary = reranker.rerank(held)
    finally:
        reranker.backend.close()
    return evaluate(results_to_run(results), qrels).metrics["ndcg@10"], summary.to_dict()["windows_per_s"] or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "first")
    parser.add_argument("--per-query", type=int, default=20, help="random windows per training query")
    parser.add_argument("--draw", choices=("random", "sliding"), default="random",
                        help="random: REARANK's windows; sliding: the reranker's own (first-stage order, --step)")
    parser.add_argument("--top-n", type=int, help="windows from each query's first N candidates (default: params)")
    parser.add_argument("--step", type=int, default=5, help="sliding: ranks between windows (the reranker's step)")
    parser.add_argument("--hold-every", type=int, default=6, help="every N-th DL21 query is held back")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--no-activation-checkpointing", action="store_true",
                        help="keep activations instead of recomputing them (faster; more memory)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of a LoRA adapter")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: score the checkpoints there are (a run stopped early)")
    parser.add_argument("--export", type=Path, help="ship a checkpoint's adapter here with its card")
    parser.add_argument("--export-step", help="the checkpoint to ship (default: the last)")
    parser.add_argument("--evaluation", type=Path, help="evaluate-model report for the card")
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train, held = split(args.hold_every)
    write_requests(out / "train.candidates.jsonl", train)
    write_requests(out / "held.candidates.jsonl", held)
    qrels = read_any_qrels(DL21 / "qrels.dl21-passage.txt")
    data: DataConfig = replace(params.data, per_query=args.per_query, draw=args.draw, step=args.step,
                               top_n=args.top_n or params.data.top_n)
    windows = augment(train, qrels, "dl21", data)
    write_jsonl(out / "windows.jsonl", [w.to_dict() for w in windows])
    print(f"{len(train)} training queries, {len(held)} held back; {len(windows)} windows", flush=True)

    rerank = replace(params.rerank, dtype=args.dtype)
    curve_json = out / "curve.json"
    curve = json.loads(curve_json.read_text()) if curve_json.is_file() else {}
    if "0" not in curve:
        ndcg, speed = validate("embedded", held, qrels, rerank)  # the base model, untrained
        curve["0"] = {"val_ndcg@10": ndcg, "windows_per_s": speed}
        write_json(curve_json, curve)
    cfg = replace(params.sft_first, model="embedded", epochs=args.epochs, max_steps=args.max_steps,
                  learning_rate=args.learning_rate, grad_accum=args.grad_accum, save_steps=args.eval_every,
                  save_total_limit=1000, dtype=args.dtype,
                  activation_checkpointing=not args.no_activation_checkpointing, lora=not args.full)
    if not args.evaluate_only:
        started = time.perf_counter()
        figures = train_sft_stage(out / "windows.jsonl", out / "model", cfg, TrackingConfig(enabled=False),
                                  params.rerank.model_cache, out / "first.json", out / "first_history.csv")
        print(f"trained {figures['steps']} steps in {time.perf_counter() - started:.0f} s", flush=True)
    checkpoints = sorted((out / "model").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for checkpoint in checkpoints:
        step = checkpoint.name.split("-")[1]
        if step not in curve:
            ndcg, speed = validate(checkpoint, held, qrels, rerank)
            curve[step] = {"val_ndcg@10": ndcg, "windows_per_s": speed}
            write_json(curve_json, curve)
            print(f"step {step}: held-back DL21 nDCG@10 {ndcg:.4f}", flush=True)
    bm25 = evaluate(requests_to_run(held), qrels).metrics["ndcg@10"]
    losses = {str(row["step"]): row for row in history(checkpoints[-1]) if "loss" in row} if checkpoints else {}
    write_curve(out, curve, losses, bm25)
    if args.export:
        step = args.export_step or checkpoints[-1].name.split("-")[1]
        export(out / "model" / f"checkpoint-{step}", args.export, cfg, losses, curve, len(train), len(held),
               len(windows), int(step), args.evaluation, data)


def history(checkpoint: Path) -> list[dict]:
    """The trainer's per-step log up to ``checkpoint`` (its trainer_state.json: loss, RankNet loss, lr)."""
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def write_curve(out: Path, curve: dict, losses: dict, bm25: float) -> None:
    """curve.csv (step, loss, RankNet loss, held-back nDCG@10) and curve.png: the learning curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(set(curve) | set(losses), key=int)
    with (out / "curve.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "ranknet_loss", "val_ndcg@10"])
        for step in steps:
            row = losses.get(step, {})
            writer.writerow([step, row.get("loss", ""), row.get("ranknet_loss", ""),
                             curve.get(step, {}).get("val_ndcg@10", "")])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    logged = sorted(losses, key=int)
    left.plot([int(s) for s in logged], [losses[s]["loss"] for s in logged], label="loss (LM + 10 x RankNet)")
    left.plot([int(s) for s in logged], [losses[s]["ranknet_loss"] for s in logged], label="RankNet loss")
    left.set_xlabel("optimiser step (4 windows)")
    left.set_title("FIRST training loss")
    left.legend(fontsize=8)
    points = sorted(curve, key=int)
    right.plot([int(s) for s in points], [curve[s]["val_ndcg@10"] for s in points], marker="o", label="FIRST model")
    right.axhline(bm25, color="grey", linestyle=":", label=f"BM25 {bm25:.4f}")
    right.set_xlabel("optimiser step")
    right.set_title("held-back DL21 queries, top-30, first mode: nDCG@10")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)


def export(checkpoint: Path, dest: Path, cfg, losses: dict, curve: dict, train: int, held: int, windows: int,
           step: int, evaluation: Path | None, data: DataConfig) -> None:
    """Ship ``checkpoint``'s adapter at ``dest`` with its training card (schedule, settings, learning curve)."""
    from rearank_core.training.export import export_adapter

    params = load_params(ROOT / "params.yaml")
    last = losses.get(str(step), {})
    figures = {"first": {"windows_per_epoch": windows, "training_queries": train, "held_back_queries": held,
                         "steps": step, "windows_seen": step * cfg.grad_accum * cfg.batch_size,
                         "last_loss": last.get("loss"), "last_ranknet_loss": last.get("ranknet_loss"),
                         "held_back_ndcg10": curve.get(str(step), {}).get("val_ndcg@10")}}
    settings = {"rerank": {k: getattr(params.rerank, k) for k in ("first_prompt", "window", "step", "truncate_unit",
                                                                  "truncate_length")},
                "data": {k: getattr(data, k) for k in ("draw", "per_query", "window", "step", "top_n", "min_ndcg",
                                                       "truncate_unit", "truncate_length")},
                "sft_first": asdict(cfg)}
    kind = f"LoRA r {cfg.lora_r}" if cfg.lora else "full fine-tuning"
    points = ", ".join(f"{s}: {v['val_ndcg@10']:.4f}" for s, v in sorted(curve.items(), key=lambda kv: int(kv[0])))
    drawn = (f"the sliding windows of their BM25 top-{data.top_n} in BM25 order (window {data.window}, step "
             f"{data.step})" if data.draw == "sliding" else
             f"REARANK's random windows ({data.per_query} a query from the top-{data.top_n}, window {data.window})")
    schedule = (f"`.venv/bin/python bench/train_first.py` (this project's recipe): DL21's judged queries, every 6th "
                f"held back ({held}); {windows} windows from the other {train}: {drawn}, "
                f"{data.truncate_length}-{str(data.truncate_unit).rstrip('s')} passages; "
                f"`rearank train sft --objective first`, {kind}, lr {cfg.learning_rate:g}, "
                f"batch {cfg.batch_size} x {cfg.grad_accum}; shipped: checkpoint {step} "
                f"({step * cfg.grad_accum} windows seen). Held-back DL21 nDCG@10 (top-30, first mode) per step: "
                f"{points}.")
    report = json.loads(evaluation.read_text()) if evaluation else None
    done = export_adapter(checkpoint, dest, figures, settings, report, schedule, mode="first", base=cfg.model)
    print(f"exported {checkpoint} to {dest}: {done['bytes'] / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
