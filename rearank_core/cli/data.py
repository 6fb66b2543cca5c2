"""``rearank data``: augment, teacher, filter, build, validate. Paths default to params.yaml's ``data_job``."""

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
    DataConfig,
    DataSource,
    FilterConfig,
    Params,
    TeacherConfig,
    field_help,
    override,
)
from rearank_core.errors import InputError

data_app = typer.Typer(help="Training data: augmentation, teacher distillation, filter, records, validation.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

D = {k: f"{v} (default: params data.{k})" for k, v in field_help(DataConfig).items()}
T = {k: f"{v} (default: params teacher.{k})" for k, v in field_help(TeacherConfig).items()}
F = {k: f"{v} (default: params filter.{k})" for k, v in field_help(FilterConfig).items()}


def _path(given: Path | None, params: Params, key: str, option: str) -> Path:
    return job_path(given, params, "data_job", key, option)


def _cards(params: Params, cards: Path | None, out: Path) -> Path:
    """The dataset card folder: --cards, else params data_job.cards, else ``cards/`` beside the command's output
    (a data command runs anywhere, params.yaml's project or not)."""
    if cards is not None:
        return cards
    return Path(params.data_job.cards) if params.data_job is not None else out.parent / "cards"


CardsOpt = Annotated[Path | None, typer.Option(help="dataset card folder (default: params data_job.cards, or "
                                                    "cards/ beside the output outside a project)")]


@data_app.command()
@user_errors
def augment(
    candidates: Annotated[Path | None, typer.Option(help="one source's candidates (default: params data.sources)")] = None,
    qrels: Annotated[Path | None, typer.Option(help="that source's graded qrels")] = None,
    source: Annotated[str | None, typer.Option(help="that source's name (default: the candidates file's stem)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="windows JSONL (default: params data_job.windows)")] = None,
    draw: Annotated[str | None, typer.Option(help=D["draw"])] = None,
    per_query: Annotated[int | None, typer.Option(help=D["per_query"])] = None,
    window: Annotated[int | None, typer.Option(help=D["window"])] = None,
    step: Annotated[int | None, typer.Option(help=D["step"])] = None,
    top_n: Annotated[int | None, typer.Option(help=D["top_n"])] = None,
    min_ndcg: Annotated[float | None, typer.Option(help=D["min_ndcg"])] = None,
    seed: Annotated[int | None, typer.Option(help=D["seed"])] = None,
    truncate_unit: Annotated[str | None, typer.Option(help=D["truncate_unit"])] = None,
    truncate_length: Annotated[int | None, typer.Option(help=D["truncate_length"])] = None,
    cards: CardsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """REARANK augmentation: K random windows per labelled query (or the sliding windows), filtered, leakage-checked."""
    p = start(params, quiet)
    cfg = override(p.data, "data", draw=draw, per_query=per_query, window=window, step=step, top_n=top_n,
                   min_ndcg=min_ndcg, seed=seed, truncate_unit=truncate_unit, truncate_length=truncate_length)
    if (candidates is None) != (qrels is None):
        raise InputError("give --candidates and --qrels together (or neither, for params data.sources)")
    sources = (DataSource(source or candidates.stem, str(candidates), str(qrels)),) if candidates and qrels \
        else cfg.sources
    if not sources:
        raise InputError("no training source: give --candidates and --qrels, or list data.sources", p.path,
                         field="data.sources")
    target = _path(out_path, p, "windows", "--out")
    from rearank_core.stages.data import augment_stage

    stats = augment_stage(sources, target, cfg, p.tracking, _cards(p, cards, target))
    err.print(f"{stats.kept} windows kept of {stats.drawn} drawn ({stats.dropped_no_relevant} without a relevant "
              f"passage, {stats.dropped_low_ndcg} below nDCG@10 {cfg.min_ndcg:g}) from {stats.queries} queries; "
              f"written to {target}")


@data_app.command()
@user_errors
def teacher(
    windows: Annotated[Path | None, typer.Option(help="windows JSONL (default: params data_job.windows)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="teacher JSONL (default: params data_job.teacher)")] = None,
    model: Annotated[str | None, typer.Option("--model", "--teacher", help=T["model"])] = None,
    base_url: Annotated[str | None, typer.Option(help=T["base_url"])] = None,
    prompt: Annotated[str | None, typer.Option(help=T["prompt"])] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help=T["max_new_tokens"])] = None,
    concurrency: Annotated[int | None, typer.Option(help=T["concurrency"])] = None,
    timeout: Annotated[float | None, typer.Option(help=T["timeout_s"])] = None,
    retries: Annotated[int | None, typer.Option(help=T["max_retries"])] = None,
    reasoning_model: Annotated[bool | None, typer.Option("--reasoning-model/--no-reasoning-model",
                                                         help=T["reasoning_model"])] = None,
    cards: CardsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Teacher distillation: one record per window; rerun the same command to resume."""
    p = start(params, quiet)
    cfg = override(p.teacher, "teacher", model=model, base_url=base_url, prompt=prompt, max_new_tokens=max_new_tokens,
                   concurrency=concurrency, timeout_s=timeout, max_retries=retries, reasoning_model=reasoning_model)
    source, target = _path(windows, p, "windows", "--windows"), _path(out_path, p, "teacher", "--out")
    from rearank_core.stages.data import teacher_stage

    stats = teacher_stage(source, target, cfg, p.tracking, _cards(p, cards, target), show_progress=not quiet)
    cost = f", cost {stats.cost:g}" if stats.cost is not None else ""
    err.print(f"teacher {stats.teacher}: {stats.windows} windows ({stats.resumed} resumed), statuses "
              f"{dict(stats.status)}; tokens {stats.prompt_tokens} prompt, {stats.completion_tokens} completion"
              f"{cost}; written to {target}")


@data_app.command("filter")
@user_errors
def filter_(
    teacher_path: Annotated[Path | None, typer.Option("--teacher", help="teacher JSONL (default: params data_job.teacher)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="kept records (default: params data_job.filtered)")] = None,
    windows: Annotated[Path | None, typer.Option(help="windows JSONL, needed for --min-gold-ndcg")] = None,
    alpha: Annotated[float | None, typer.Option(help=F["alpha"])] = None,
    min_gold_ndcg: Annotated[float | None, typer.Option(help=F["min_gold_ndcg"])] = None,
    cards: CardsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """ReasonRank's self-consistency filter."""
    p = start(params, quiet)
    cfg = override(p.filter, "filter", alpha=alpha, min_gold_ndcg=min_gold_ndcg)
    if cfg.min_gold_ndcg is not None and windows is None:
        windows = _path(None, p, "windows", "--windows")
    source, target = _path(teacher_path, p, "teacher", "--teacher"), _path(out_path, p, "filtered", "--out")
    from rearank_core.stages.data import filter_stage

    stats = filter_stage(source, target, cfg, p.tracking, _cards(p, cards, target), windows=windows)
    err.print(f"kept {stats.kept} of {stats.records} teacher records (alpha {cfg.alpha:g}); written to {target}")


@data_app.command()
@user_errors
def build(
    windows: Annotated[Path | None, typer.Option(help="windows JSONL (default: params data_job.windows)")] = None,
    teacher_path: Annotated[Path | None, typer.Option("--teacher", help="filtered teacher JSONL "
                                                      "(default: params data_job.filtered; 'none' for GRPO only)")] = None,
    sft: Annotated[Path | None, typer.Option(help="SFT JSONL (default: params data_job.sft)")] = None,
    grpo: Annotated[Path | None, typer.Option(help="GRPO JSONL (default: params data_job.grpo)")] = None,
    cards: CardsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """SFT and GRPO records, rendered with the reranker's prompt template, with their dataset cards."""
    p = start(params, quiet)
    answers = None if teacher_path == Path("none") else _path(teacher_path, p, "filtered", "--teacher")
    from rearank_core.stages.data import build_stage

    sft_out = _path(sft, p, "sft", "--sft")
    built = build_stage(_path(windows, p, "windows", "--windows"), sft_out, _path(grpo, p, "grpo", "--grpo"), p.data,
                        p.tracking, _cards(p, cards, sft_out), p.rerank.model_cache, teacher=answers)
    err.print(f"{built['sft']['records']} SFT records, {built['grpo']['records']} GRPO records")


@data_app.command()
@user_errors
def validate(
    path: Annotated[Path, typer.Argument(help="JSONL file to validate")],
    kind: Annotated[str, typer.Option(help="windows | teacher | sft | grpo")],
    report: Annotated[Path | None, typer.Option(help="folder for the report and GX Data Docs")] = None,
    verdict: Annotated[Path | None, typer.Option(
        help="JSON file the verdict is merged into under the kind (the file's SHA-256, passed or not)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """The great-expectations gate: exit 0 when every expectation holds, 3 otherwise (with a report)."""
    p = start(params, quiet)
    from rearank_core.stages.data import validate_stage

    result = validate_stage(path, kind, p.data, p.tracking, p.rerank.model_cache, report_dir=report,
                            verdict=verdict)
    typer.echo(result.summary())
    if not result.success:
        raise typer.Exit(3)
