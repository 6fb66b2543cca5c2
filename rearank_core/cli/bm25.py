"""Commands of the BM25 baseline and evaluation: ``index``, ``retrieve``, ``evaluate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rearank_core.cli.common import (
    ParamsOpt,
    QuietOpt,
    app,
    err,
    metrics_table,
    out,
    start,
    user_errors,
)
from rearank_core.config import (
    BM25Config,
    EvalConfig,
    TrackingConfig,
    field_help,
    override,
)

BM25 = field_help(BM25Config)


@app.command()
@user_errors
def index(
    corpus: Annotated[Path, typer.Option(help="BEIR corpus.jsonl / BEIR folder, or JsonCollection JSONL file or folder")],
    index_dir: Annotated[Path, typer.Option("--index", help="output Lucene index folder")],
    threads: Annotated[int | None, typer.Option(help=f"{BM25['threads']} (default: params bm25.threads)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Build a Lucene BM25 index."""
    cfg = override(start(params, quiet).bm25, "bm25", threads=threads)
    from rearank_core.stages import index_stage

    stats = index_stage(corpus, index_dir, threads=cfg.threads, show_progress=not quiet)
    err.print(f"indexed {stats.documents} documents into {index_dir} in {stats.seconds:.1f} s")


@app.command()
@user_errors
def retrieve(
    index_dir: Annotated[Path, typer.Option("--index", help="Lucene index folder")],
    topics: Annotated[Path, typer.Option(help="topics: TREC 'qid<TAB>text' or BEIR queries JSONL")],
    run: Annotated[Path, typer.Option(help="output TREC run")],
    k: Annotated[int | None, typer.Option(help=f"{BM25['k']} (default: params bm25.k)")] = None,
    candidates: Annotated[Path | None, typer.Option(help="also write rank_llm candidates JSONL with passage text")] = None,
    k1: Annotated[float | None, typer.Option(help=f"{BM25['k1']} (default: params bm25.k1)")] = None,
    b: Annotated[float | None, typer.Option(help=f"{BM25['b']} (default: params bm25.b)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """BM25 top-k retrieval for a topics file."""
    cfg = override(start(params, quiet).bm25, "bm25", k=k, k1=k1, b=b)
    from rearank_core.stages import retrieve_stage

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
    rel_level: Annotated[int | None, typer.Option(help=f"{field_help(EvalConfig)['rel_level']} "
                                                       "(default: params evaluate.rel_level)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
    name: Annotated[str, typer.Option(help="dataset name for tracking")] = "",
    track: Annotated[bool | None, typer.Option("--track/--no-track", help=f"{field_help(TrackingConfig)['enabled']} "
                                                                         "(default: params tracking.enabled)")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """nDCG@1/5/10, Recall@10/100, MRR@10 through ir-measures."""
    p = start(params, quiet=as_json)
    cfg = override(p.evaluate, "evaluate", rel_level=rel_level)
    tracking = override(p.tracking, "tracking", enabled=track)
    from rearank_core.stages import evaluate_stage

    result = evaluate_stage(run, qrels, cfg, tracking, exclude=exclude, topics=topics, metrics_out=metrics_out, name=name)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    out.print(metrics_table(f"{run}", {run.name: result.metrics}))
    out.print(f"{result.queries_evaluated} queries evaluated; {len(result.run_queries_without_qrels)} run queries without "
              f"qrels; {len(result.judged_queries_missing_from_run)} judged queries missing from the run")
