"""The shipped embedded FIRST reranker's recipe: DL21 queries split into training and held-back validation queries,
REARANK-style windows drawn from the training queries, `rearank train sft --objective first` (the library's stage,
LoRA on the embedded SmolLM2-135M) with a checkpoint every --eval-every steps, and each checkpoint reranking the
held-back queries in first mode: the learning curve (loss, RankNet loss, validation nDCG@10 per checkpoint).

    .venv/bin/python bench/train_first.py --out work/first [--per-query 20] [--epochs 1] [--learning-rate 2e-4]
        [--eval-every 25] [--dtype auto] [--no-activation-checkpointing]

Everything lands under --out: the split candidates, the windows, the model (checkpoints kept: a rerun resumes the
same job), curve.csv and curve.json. It resumes: finished checkpoints' validation scores are read back."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rearank_core.config import DataConfig, RerankConfig, TrackingConfig, load_params  # noqa: E402
from rearank_core.data.augment import augment  # noqa: E402
from rearank_core.evaluation import evaluate  # noqa: E402
from rearank_core.io.auto import read_any_qrels  # noqa: E402
from rearank_core.io.files import write_json, write_jsonl  # noqa: E402
from rearank_core.io.requests import read_candidates, write_requests  # noqa: E402
from rearank_core.records import results_to_run  # noqa: E402
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
    parser.add_argument("--per-query", type=int, default=20)
    parser.add_argument("--hold-every", type=int, default=6, help="every N-th DL21 query is held back")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--no-activation-checkpointing", action="store_true",
                        help="keep activations instead of recomputing them (faster; more memory)")
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train, held = split(args.hold_every)
    write_requests(out / "train.candidates.jsonl", train)
    write_requests(out / "held.candidates.jsonl", held)
    qrels = read_any_qrels(DL21 / "qrels.dl21-passage.txt")
    data: DataConfig = replace(params.data, per_query=args.per_query)
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
    cfg = replace(params.sft, model="embedded", objective="first", epochs=args.epochs, max_steps=args.max_steps,
                  learning_rate=args.learning_rate, grad_accum=args.grad_accum, save_steps=args.eval_every,
                  save_total_limit=1000, dtype=args.dtype, warmup_ratio=0.05,
                  activation_checkpointing=not args.no_activation_checkpointing)
    started = time.perf_counter()
    figures = train_sft_stage(out / "windows.jsonl", out / "model", cfg, TrackingConfig(enabled=False),
                              params.rerank.model_cache, out / "first.json", out / "first_history.csv")
    print(f"trained {figures['steps']} steps in {time.perf_counter() - started:.0f} s", flush=True)
    for checkpoint in sorted((out / "model").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        step = checkpoint.name.split("-")[1]
        if step not in curve:
            ndcg, speed = validate(checkpoint, held, qrels, rerank)
            curve[step] = {"val_ndcg@10": ndcg, "windows_per_s": speed}
            write_json(curve_json, curve)
            print(f"step {step}: held-back DL21 nDCG@10 {ndcg:.4f}", flush=True)
    with (out / "first_history.csv").open(encoding="utf-8") as handle:
        losses = {row["step"]: row for row in csv.DictReader(handle) if row.get("loss")}
    with (out / "curve.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "ranknet_loss", "val_ndcg@10"])
        for step in sorted(set(curve) | set(losses), key=int):
            row = losses.get(step, {})
            writer.writerow([step, row.get("loss", ""), row.get("ranknet_loss", ""),
                             curve.get(step, {}).get("val_ndcg@10", "")])


if __name__ == "__main__":
    main()
