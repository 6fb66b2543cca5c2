"""The ``demo`` command: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

from rearank_core.cli.common import (
    ParamsOpt,
    QuietOpt,
    app,
    metrics_table,
    out,
    percent,
    start,
    user_errors,
)


@app.command()
@user_errors
def demo(params: ParamsOpt = Path("params.yaml"), quiet: QuietOpt = False) -> None:
    """The main job: the BM25 baseline on BEIR SciFact, then a DL19 slice reranked by the shipped reranker (a
    LoRA adapter on the embedded model; the two jobs of params.yaml, onto the same files as dvc repro)."""
    p = start(params, quiet)
    from rearank_core.stages import run_demo

    columns, summary = run_demo(p, show_progress=not quiet)
    out.print(metrics_table("rearank demo (embedded default)", columns))
    out.print(f"reranker: {p.rerank.model}")
    out.print(f"{summary.windows} windows, format-valid rate {percent(summary.format_valid_rate)}, "
              f"{summary.completion_tokens} tokens generated in {summary.wall_s:.0f} s")
    out.print(f"window statuses: {dict(summary.status)}")
