"""The ``rearank`` command line (typer). Every command is a thin call into a stage function."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rearank_core.backends.base import BackendError
from rearank_core.config import BM25Config, EvalConfig, TrackingConfig, load_params, section
from rearank_core.errors import InputError
from rearank_core.fileio import atomic_write

app = typer.Typer(help="Listwise reasoning rerankers: BM25, reranking, evaluation and MLOps.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)
out = Console()
F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read defaults from")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def user_errors(fn: F) -> F:
    """Bad input ends the command with a one-line message and exit code 2, a backend that failed for good
    (after its retries) with exit code 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except BackendError as exc:
            err.print(f"[bold red]backend error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    names = list(dict.fromkeys(k for r in rows.values() for k in r))
    table = Table(title=title)
    table.add_column("run")
    for n in names:
        table.add_column(n, justify="right")
    for label, values in rows.items():
        table.add_row(label, *(f"{values[n]:.4f}" if n in values else "not computed" for n in names))
    return table


def _percent(rate: float | None) -> str:
    """A rate for the closing line; None (no windows run) is "not computed", never 0 %."""
    return "not computed" if rate is None else f"{rate:.1%}"


@app.command()
@user_errors
def index(
    corpus: Annotated[Path, typer.Option(help="BEIR corpus.jsonl / BEIR folder, or JsonCollection JSONL file or folder")],
    index_dir: Annotated[Path, typer.Option("--index", help="output Lucene index folder")],
    threads: Annotated[int | None, typer.Option(help="indexing threads (default: params bm25.threads)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Build a Lucene BM25 index."""
    from rearank_core.stages import index_stage

    cfg = section(load_params(params), "bm25", BM25Config, params)
    stats = index_stage(corpus, index_dir, threads=threads or cfg.threads, show_progress=not quiet)
    err.print(f"indexed {stats.documents} documents into {index_dir} in {stats.seconds:.1f} s")


@app.command()
@user_errors
def retrieve(
    index_dir: Annotated[Path, typer.Option("--index", help="Lucene index folder")],
    topics: Annotated[Path, typer.Option(help="topics: TREC 'qid<TAB>text' or BEIR queries JSONL")],
    run: Annotated[Path, typer.Option(help="output TREC run")],
    k: Annotated[int | None, typer.Option(help="hits per query (default: params bm25.k)")] = None,
    candidates: Annotated[Path | None, typer.Option(help="also write rank_llm candidates JSONL with passage text")] = None,
    k1: Annotated[float | None, typer.Option(help="BM25 k1 (default: params bm25.k1)")] = None,
    b: Annotated[float | None, typer.Option(help="BM25 b (default: params bm25.b)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """BM25 top-k retrieval for a topics file."""
    from rearank_core.stages import retrieve_stage

    cfg = section(load_params(params), "bm25", BM25Config, params)
    cfg.k = k if k is not None else cfg.k
    cfg.k1 = k1 if k1 is not None else cfg.k1
    cfg.b = b if b is not None else cfg.b
    if cfg.k < 1:
        raise InputError(f"--k must be at least 1, got {cfg.k}")
    stats = retrieve_stage(index_dir, topics, run, cfg, candidates_out=candidates, show_progress=not quiet)
    err.print(f"retrieved {stats.hits} hits for {stats.queries} queries into {run}")
    if stats.queries_without_hits:
        err.print(f"[yellow]warning:[/] {len(stats.queries_without_hits)} queries had no hits: {stats.queries_without_hits[:5]}")


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Option(help="TREC run to score")],
    qrels: Annotated[Path, typer.Option(help="TREC or BEIR qrels")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    exclude: Annotated[Path | None, typer.Option(help="'qid docid' lines to remove from the run first (BRIGHT)")] = None,
    topics: Annotated[Path | None, typer.Option(help="fail if the run names a query these topics lack")] = None,
    rel_level: Annotated[int | None, typer.Option(help="minimum grade counted relevant by Recall/MRR (TREC DL: 2)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
    name: Annotated[str, typer.Option(help="dataset name for tracking")] = "",
    track: Annotated[bool | None, typer.Option("--track/--no-track", help="log to MLflow (default: params tracking.enabled)")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """nDCG@1/5/10, Recall@10/100, MRR@10 through ir-measures."""
    from rearank_core.stages import evaluate_stage

    p = load_params(params)
    cfg = section(p, "evaluate", EvalConfig, params)
    if rel_level is not None:
        cfg.rel_level = rel_level
    tracking = section(p, "tracking", TrackingConfig, params)
    if track is not None:
        tracking.enabled = track
    result = evaluate_stage(run, qrels, cfg, tracking, exclude=exclude, topics=topics, metrics_out=metrics_out, name=name)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    out.print(metrics_table(f"{run}", {run.name: result.metrics}))
    out.print(f"{result.queries_evaluated} queries evaluated; {len(result.run_queries_without_qrels)} run queries without "
              f"qrels; {len(result.judged_queries_missing_from_run)} judged queries missing from the run")


@app.command()
@user_errors
def rerank(
    candidates: Annotated[Path, typer.Option(help="rank_llm candidates JSONL or RankGPT retrieve-results JSON")],
    run: Annotated[Path, typer.Option(help="output TREC run (written when every query is done)")],
    traces: Annotated[Path | None, typer.Option(help="JSONL trace per window (written as windows finish)")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from --traces")] = False,
    window: Annotated[int | None, typer.Option(help="passages per window (default 20)")] = None,
    step: Annotated[int | None, typer.Option(help="window step (default 10)")] = None,
    top_k: Annotated[int | None, typer.Option(help="rerank only the first K candidates; the tail keeps its order")] = None,
    backend: Annotated[str | None, typer.Option(help="transformers | openai | vllm")] = None,
    model: Annotated[str | None, typer.Option(help="'embedded', a HF hub id or a local folder; for openai the served name")] = None,
    prompt: Annotated[str | None, typer.Option(help="rearank | reasonrank | rankgpt, or a template YAML path")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="generation limit per window")] = None,
    batch_size: Annotated[int | None, typer.Option(help="windows per generate call (transformers, vllm)")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | bfloat16 | float32 (transformers)")] = None,
    truncate_unit: Annotated[str | None, typer.Option(help="chars | words | tokens (default: the template's)")] = None,
    truncate_length: Annotated[int | None, typer.Option(help="passage length in that unit")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")] = None,
    concurrency: Annotated[int | None, typer.Option(help="openai: requests in flight")] = None,
    timeout: Annotated[float | None, typer.Option(help="openai: seconds per request")] = None,
    retries: Annotated[int | None, typer.Option(help="openai: retries on 429/5xx/connection errors")] = None,
    reasoning_model: Annotated[bool | None, typer.Option(
        "--reasoning-model/--no-reasoning-model",
        help="openai: a hosted reasoning model (o-series, gpt-5): send max_completion_tokens, no temperature")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N queries")] = None,
    summary_out: Annotated[Path | None, typer.Option(help="also write the closing summary as JSON")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Rerank candidates with a listwise LLM over sliding windows."""
    from rearank_core.rerank import RerankConfig
    from rearank_core.stages import rerank_stage

    cfg = section(load_params(params), "rerank", RerankConfig, params)
    overrides = {"window": window, "step": step, "top_k": top_k, "backend": backend, "model": model, "prompt": prompt,
                 "max_new_tokens": max_new_tokens, "batch_size": batch_size, "dtype": dtype,
                 "truncate_unit": truncate_unit, "truncate_length": truncate_length, "base_url": base_url,
                 "concurrency": concurrency, "timeout_s": timeout, "max_retries": retries,
                 "reasoning_model": reasoning_model}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    summary = rerank_stage(candidates, run, cfg, traces_out=traces, resume=resume, limit=limit, show_progress=not quiet)
    report = summary.to_dict()
    if summary_out is not None:
        with atomic_write(summary_out) as handle:
            json.dump(report, handle, indent=2)
    valid, repaired = _percent(summary.format_valid_rate), _percent(summary.repaired_rate)
    rate = report["windows_per_s"]
    err.print(f"reranked {summary.queries} queries, {summary.windows} windows ({summary.resumed_windows} resumed) in "
              f"{summary.wall_s:.1f} s{f' ({rate:.2f} windows/s)' if rate else ''}; format-valid {valid}, "
              f"repaired {repaired}; statuses {dict(summary.status)}; tokens: {summary.prompt_tokens} prompt, "
              f"{summary.completion_tokens} completion; run written to {run}")


@app.command()
@user_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="where the index, runs and metrics go")] = Path("work/demo"),
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """The main job on the embedded default: BM25 on BEIR SciFact, then a DL19 slice reranked by the embedded model."""
    from rearank_core.demo import run_demo

    rows, summary = run_demo(workdir, load_params(params), params, show_progress=not quiet, console=err)
    out.print(metrics_table("rearank demo (embedded default)", rows))
    valid = _percent(summary.format_valid_rate)
    out.print(f"reranker: {summary.windows} windows, format-valid rate {valid}, statuses {dict(summary.status)}, "
              f"{summary.completion_tokens} tokens generated in {summary.wall_s:.0f} s")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
