"""``rearank train``: SFT and GRPO. Paths default to params.yaml's ``data_job`` and ``train_job``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rearank_core.cli.common import (
    ParamsOpt,
    QuietOpt,
    app,
    err,
    job_path,
    start,
    user_errors,
)
from rearank_core.config import (
    GRPOTrainConfig,
    Params,
    SFTTrainConfig,
    field_help,
    override,
)

train_app = typer.Typer(help="Training with TRL: cold-start SFT, then GRPO.", no_args_is_help=True)
app.add_typer(train_app, name="train")

S = {k: f"{v} (default: params sft.{k})" for k, v in field_help(SFTTrainConfig).items()}
G = {k: f"{v} (default: params grpo.{k})" for k, v in field_help(GRPOTrainConfig).items()}


def _paths(p: Params, records: Path | None, output: Path | None, metrics_out: Path | None, history_out: Path | None,
           kind: str, records_key: str | None = None) -> tuple[Path, Path, Path, Path]:
    """Records, output folder, metrics file and per-step log, or their ``data_job`` / ``train_job`` defaults."""
    return (job_path(records, p, "data_job", records_key or kind, "--records"),
            job_path(output, p, "train_job", f"{kind}_dir", "--output"),
            job_path(metrics_out, p, "train_job", f"{kind}_metrics", "--metrics-out"),
            job_path(history_out, p, "train_job", f"{kind}_history", "--history-out"))


@train_app.command()
@user_errors
def sft(
    records: Annotated[Path | None, typer.Option(help="SFT records JSONL (default: params data_job.sft; objective "
                                                      "first: window records, data_job.windows)")] = None,
    output: Annotated[Path | None, typer.Option(help="checkpoints and final model (default: params train_job.sft_dir"
                                                     "; objective first: train_job.first_dir)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="figures JSON (default: params train_job.sft_metrics; "
                                                          "objective first: train_job.first_metrics)")] = None,
    history_out: Annotated[Path | None, typer.Option(help="per-step log CSV (default: params train_job.sft_history;"
                                                          " objective first: train_job.first_history)")] = None,
    objective: Annotated[str | None, typer.Option(help=f"{S['objective']}; first takes its other knobs from params "
                                                       "sft_first where that section exists")] = None,
    model: Annotated[str | None, typer.Option(help=S["model"])] = None,
    limit: Annotated[int | None, typer.Option(help=S["limit"])] = None,
    epochs: Annotated[float | None, typer.Option(help=S["epochs"])] = None,
    max_steps: Annotated[int | None, typer.Option(help=S["max_steps"])] = None,
    learning_rate: Annotated[float | None, typer.Option(help=S["learning_rate"])] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help=S["lora"])] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Cold-start SFT on teacher records with TRL's SFTTrainer; rerun to resume from the last checkpoint."""
    p = start(params, quiet)
    # --objective first trains with the FIRST model's own section where params.yaml has one (dvc.yaml's sft_first)
    name, base = ("sft_first", p.sft_first) if objective == "first" and p.sft_first is not None else ("sft", p.sft)
    cfg = override(base, name, model=model, limit=limit, epochs=epochs, max_steps=max_steps,
                   learning_rate=learning_rate, lora=lora, objective=objective)
    first = cfg.objective == "first"
    records, output, metrics_out, history_out = _paths(p, records, output, metrics_out, history_out,
                                                       "first" if first else "sft", "windows" if first else None)
    from rearank_core.stages.train import train_sft_stage

    figures = train_sft_stage(records, output, cfg, p.tracking, p.rerank.model_cache, metrics_out, history_out)
    use = f"rearank rerank{' --mode first' if first else ''} --model {output}"
    err.print(f"SFT{' (FIRST objective)' if first else ''}: {figures['records']} records, {figures['steps']} steps, loss "
              f"{figures['train_loss']:.4f}, {figures['train_runtime_s']} s; model saved to {output} ({use})")


@train_app.command()
@user_errors
def grpo(
    records: Annotated[Path | None, typer.Option(help="GRPO records JSONL (default: params data_job.grpo)")] = None,
    output: Annotated[Path | None, typer.Option(help="checkpoints and final model (default: params train_job.grpo_dir)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="figures JSON (default: params train_job.grpo_metrics)")] = None,
    history_out: Annotated[Path | None, typer.Option(help="per-step log CSV (default: params train_job.grpo_history)")] = None,
    model: Annotated[str | None, typer.Option(help=G["model"])] = None,
    reward: Annotated[str | None, typer.Option(help=G["reward"])] = None,
    limit: Annotated[int | None, typer.Option(help=G["limit"])] = None,
    max_steps: Annotated[int | None, typer.Option(help=G["max_steps"])] = None,
    learning_rate: Annotated[float | None, typer.Option(help=G["learning_rate"])] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help=G["lora"])] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """GRPO with TRL's GRPOTrainer and REARANK's or ReasonRank's reward; rerun to resume."""
    p = start(params, quiet)
    cfg = override(p.grpo, "grpo", model=model, reward=reward, limit=limit, max_steps=max_steps,
                   learning_rate=learning_rate, lora=lora)
    records, output, metrics_out, history_out = _paths(p, records, output, metrics_out, history_out, "grpo")
    from rearank_core.stages.train import train_grpo_stage

    figures = train_grpo_stage(records, output, cfg, p.rewards, p.tracking, p.rerank.model_cache, metrics_out,
                               history_out)
    err.print(f"GRPO: {figures['records']} records, {figures['steps']} steps, reward {figures['first_reward']} -> "
              f"{figures['last_reward']}, {figures['train_runtime_s']} s; model saved to {output}")


@train_app.command()
@user_errors
def export(
    model: Annotated[Path | None, typer.Option(help="trained adapter folder (default: params train_job.grpo_dir)")] = None,
    to: Annotated[Path | None, typer.Option(help="shipped folder (default: params train_job.export)")] = None,
    schedule: Annotated[Path | None, typer.Option(help="markdown file: the training commands as run, for the "
                                                       "card (where they differ from params.yaml)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Ship a trained LoRA adapter: weights, config and a training card in a folder of its own."""
    p = start(params, quiet)
    model = job_path(model, p, "train_job", "grpo_dir", "--model")
    to = job_path(to, p, "train_job", "export", "--to")
    from rearank_core.stages.train import export_stage

    note = schedule.read_text(encoding="utf-8") if schedule is not None else ""
    report = export_stage(model, to, p, p.tracking, note)
    err.print(f"exported {model} to {to}: {report['bytes'] / 1e6:.1f} MB, base {report['base']} "
              f"(rearank rerank --model {to})")
