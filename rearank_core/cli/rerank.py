"""The ``rerank`` command: listwise reranking of a candidates file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rearank_core.cli.common import (
    ParamsOpt,
    QuietOpt,
    TrackOpt,
    app,
    err,
    percent,
    start,
    user_errors,
)
from rearank_core.cli.options import (
    BackendOpt,
    BaseUrlOpt,
    BatchSizeOpt,
    ConcurrencyOpt,
    DtypeOpt,
    FirstPromptOpt,
    MaxNewTokensOpt,
    ModeOpt,
    ModelOpt,
    PromptOpt,
    ReasoningModelOpt,
    RetriesOpt,
    StepOpt,
    TimeoutOpt,
    TopKOpt,
    TruncateLengthOpt,
    TruncateUnitOpt,
    WindowOpt,
    rerank_config,
)
from rearank_core.config import override


@app.command()
@user_errors
def rerank(
    candidates: Annotated[Path, typer.Option(help="rank_llm candidates JSONL or RankGPT retrieve-results JSON")],
    run: Annotated[Path, typer.Option(help="output TREC run (written when every query is done)")],
    traces: Annotated[Path | None, typer.Option(help="JSONL trace per window (written as windows finish)")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from --traces")] = False,
    window: WindowOpt = None,
    step: StepOpt = None,
    top_k: TopKOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    mode: ModeOpt = None,
    prompt: PromptOpt = None,
    first_prompt: FirstPromptOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    batch_size: BatchSizeOpt = None,
    dtype: DtypeOpt = None,
    truncate_unit: TruncateUnitOpt = None,
    truncate_length: TruncateLengthOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    reasoning_model: ReasoningModelOpt = None,
    limit: Annotated[int | None, typer.Option(help="only the first N queries")] = None,
    summary_out: Annotated[Path | None, typer.Option(help="also write the closing summary as JSON")] = None,
    name: Annotated[str, typer.Option(help="dataset name for tracking")] = "",
    track: TrackOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Rerank candidates with a listwise LLM over sliding windows."""
    p = start(params, quiet)
    cfg = rerank_config(p.rerank, window=window, step=step, top_k=top_k, backend=backend, model=model, mode=mode,
                        prompt=prompt, first_prompt=first_prompt, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        dtype=dtype, truncate_unit=truncate_unit, truncate_length=truncate_length, base_url=base_url,
                        concurrency=concurrency, timeout=timeout, retries=retries, reasoning_model=reasoning_model)
    tracking = override(p.tracking, "tracking", enabled=track)
    from rearank_core.stages import rerank_stage

    summary = rerank_stage(candidates, run, cfg, tracking, traces_out=traces, summary_out=summary_out, resume=resume,
                           limit=limit, name=name, show_progress=not quiet)
    rate = summary.to_dict()["windows_per_s"]
    answers = (f"format-valid {percent(summary.format_valid_rate)}, repaired {percent(summary.repaired_rate)}"
               if cfg.mode == "reasoning" else "first mode: orders from identifier log-probabilities")
    err.print(f"reranked {summary.queries} queries, {summary.windows} windows ({summary.resumed_windows} resumed) in "
              f"{summary.wall_s:.1f} s{f' ({rate:.2f} windows/s)' if rate else ''}; {answers}; statuses "
              f"{dict(summary.status)}; tokens: {summary.prompt_tokens} prompt, {summary.completion_tokens} "
              f"completion; run written to {run}")


@app.command("evaluate-model")
@user_errors
def evaluate_model(
    model: ModelOpt = None,
    label: Annotated[str, typer.Option(help="name of this model's results: <suite.metrics>/<suite>/<label>.json")] = "model",
    suite: Annotated[str | None, typer.Option(help="a suite of params.yaml's suites (default: params suite.name)")] = None,
    backend: BackendOpt = None,
    mode: ModeOpt = None,
    base_url: BaseUrlOpt = None,
    batch_size: BatchSizeOpt = None,
    track: TrackOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Rerank and score every dataset of a suite with one model, next to its first stage on the same queries."""
    p = start(params, quiet)
    cfg = rerank_config(p.rerank, model=model, backend=backend, mode=mode, base_url=base_url, batch_size=batch_size)
    tracking = override(p.tracking, "tracking", enabled=track)
    chosen = p.evaluation_suite(suite, option="--suite")
    from rearank_core.io.reports import NOT_EVALUATED
    from rearank_core.stages.evaluate_model import evaluate_model_stage

    report = evaluate_model_stage(label, chosen, p.suite, cfg, p.evaluate, tracking, p.bm25, show_progress=not quiet)
    table = Table(title=f"{cfg.model} ({chosen.name} suite, window {cfg.window} step {cfg.step})")
    for column in ("dataset", "first stage", "queries", "top-k", "first stage nDCG@10", f"{label} nDCG@10",
                   "format-valid"):
        table.add_column(column, justify="left" if column in ("dataset", "first stage") else "right")
    for name, row in report["datasets"].items():
        stage = row["first_stage"]
        if row.get("status") == NOT_EVALUATED:
            table.add_row(name, stage, "", "", NOT_EVALUATED, f"{NOT_EVALUATED} ({row['reason']})", "")
            continue
        table.add_row(name, stage, str(row["queries"]), str(row["top_k"]), f"{row[stage]['ndcg@10']:.4f}",
                      f"{row['reranked']['ndcg@10']:.4f}", percent(row["format_valid_rate"]))
    err.print(table)
    err.print(f"written to {p.suite.report(label, chosen.name)}")


@app.command("compare")
@user_errors
def compare(
    labels: Annotated[list[str], typer.Argument(help="two or more evaluate-model labels, e.g. trained first")],
    suite: Annotated[str | None, typer.Option(help="a suite of params.yaml's suites (default: params suite.name)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Models side by side on one suite's candidates: each dataset's first stage, each model's nDCG@10, format-valid
    rate and windows/s, from their evaluate-model reports (<suite.metrics>/<suite>/compare.md)."""
    p = start(params, quiet)
    chosen = p.evaluation_suite(suite, option="--suite")
    from rearank_core.stages.evaluate_model import compare_stage

    out = compare_stage(labels, chosen.name, p.suite)
    typer.echo(out.read_text(encoding="utf-8"))
    err.print(f"written to {out}")
