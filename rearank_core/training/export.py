"""A trained LoRA adapter made shippable: its weights and config (naming the base as the user gave it) copied into
a folder of its own with a training card, so ``rearank rerank --model FOLDER`` loads it anywhere the base model
resolves (the embedded model needs no hub). Checkpoints, optimiser state and the tokenizer stay behind: the base
model brings its tokenizer."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rearank_core.backends.adapters import ADAPTER_CONFIG, adapter_base, is_adapter, set_adapter_base
from rearank_core.errors import InputError
from rearank_core.io.reports import report_table

ADAPTER_WEIGHTS = "adapter_model.safetensors"


# What a shipped adapter is, by the mode it reranks in, and how to run it.
KINDS = {"reasoning": ("a listwise reasoning reranker trained by `rearank` (cold-start SFT, then GRPO with the REARANK "
                       "reward)", ""),
         "first": ("a FIRST reranker (single-token listwise ranking: one forward pass a window, passages ordered by "
                   "their letters' logits) trained by `rearank` (LM loss on the gold order + weighted RankNet)",
                   " --mode first")}


def training_card(path: str, base: str, figures: dict[str, Any], settings: dict[str, Any],
                  evaluation: dict[str, Any] | None, schedule: str = "", mode: str = "reasoning") -> str:
    """The card: what the adapter at ``path`` is, how it was trained (figures and settings as run), how it
    scores."""
    what, flag = KINDS[mode]
    lines = [f"# {Path(path).name}", "", f"A LoRA adapter for `{base}`: {what}.", "",
             "```bash", f"rearank rerank{flag} --model {path} --candidates CANDIDATES --run RUN.trec", "```", "",
             "## Training", ""]
    if schedule:
        lines += [schedule.strip(), ""]
    for stage, values in figures.items():
        shown = {k: v for k, v in values.items() if not isinstance(v, (list, dict))}
        lines.append(f"- **{stage}**: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```", ""]
    lines += ["## Evaluation", ""]
    if evaluation is None:
        lines.append("Not evaluated.")
    else:
        lines += [f"Suite `{evaluation['suite']}`, reranked with the settings above (window, step, passage length):",
                  "", *report_table(evaluation)]
    return "\n".join(lines) + "\n"


def export_adapter(model_dir: str | Path, dest: str | Path, figures: dict[str, Any], settings: dict[str, Any],
                   evaluation: dict[str, Any] | None, schedule: str = "", mode: str = "reasoning",
                   base: str | None = None) -> dict[str, Any]:
    """Copy the adapter in ``model_dir`` to ``dest`` with its card; ``dest`` is replaced whole, so a crash half way
    leaves the previous export as it was. Returns the export's files and sizes. ``base``: the base model as users
    name it (default: the adapter's own record); a training checkpoint records the folder its base loaded from,
    which exists on the training machine only."""
    model_dir, dest = Path(model_dir), Path(dest)
    if not is_adapter(model_dir):
        raise InputError("not a LoRA adapter folder (no adapter_config.json): train with lora: true to ship an "
                         "adapter", model_dir)
    base = base or adapter_base(model_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the shipped folder private
    try:
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            shutil.copy2(model_dir / name, staging / name)
        set_adapter_base(staging, base)
        (staging / "README.md").write_text(training_card(str(dest), base, figures, settings, evaluation, schedule, mode),
                                           encoding="utf-8")
        previous = dest.with_name(f".{dest.name}.previous")
        if dest.exists():
            dest.rename(previous)
        staging.rename(dest)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sizes = {p.name: p.stat().st_size for p in sorted(dest.iterdir())}
    return {"base": base, "files": sizes, "bytes": sum(sizes.values())}
