"""Draw the training curves of a run (the DVC plots' CSV files) as one PNG for the README.

    .venv/bin/python bench/plot_training.py [--sft metrics/train/sft_history.csv [MORE.csv ...]]
        [--grpo metrics/train/grpo_history.csv] [--out metrics/train/curves.png]

Left: SFT loss and token accuracy per optimiser step (several files: runs that continued one another, drawn one
after the other). Right: GRPO reward and the REARANK components per step
(answer format = the format-valid rate, strict format, normalised gain)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: Path) -> list[dict[str, float]]:
    with path.open(encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    points = [(row["step"], row[key]) for row in rows if key in row]
    return [p[0] for p in points], [p[1] for p in points]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, nargs="+", default=[Path("metrics/train/sft_history.csv")])
    parser.add_argument("--grpo", type=Path, default=Path("metrics/train/grpo_history.csv"))
    parser.add_argument("--out", type=Path, default=Path("metrics/train/curves.png"))
    args = parser.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sft: list[dict[str, float]] = []
    for path in args.sft:
        offset = sft[-1]["step"] if sft else 0.0
        if sft:
            left.axvline(offset + 0.5, color="grey", linestyle=":")  # where a continued run starts
        sft += [{**row, "step": row["step"] + offset} for row in read(path)]
    left.plot(*series(sft, "loss"), marker="o", label="loss")
    left.set_xlabel("SFT optimiser step")
    left.set_ylabel("loss")
    accuracy = left.twinx()
    accuracy.plot(*series(sft, "mean_token_accuracy"), color="tab:green", marker=".", label="token accuracy")
    accuracy.set_ylabel("token accuracy")
    left.set_title(f"cold-start SFT ({len(sft)} steps{', runs split by dotted lines' if len(args.sft) > 1 else ''})")
    grpo = read(args.grpo)
    for key, label in (("reward", "reward"), ("rearank/answer_format", "format-valid (answer format)"),
                       ("rearank/strict_format", "strict format"), ("rearank/gain", "normalised nDCG@10 gain")):
        right.plot(*series(grpo, key), marker="o", label=label)
    right.set_xlabel("GRPO step")
    right.set_title(f"GRPO, REARANK reward ({len(grpo)} steps)")
    right.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
