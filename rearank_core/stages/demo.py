"""The main job on the embedded default (what the README's first command runs): the two jobs of params.yaml,
through the same stage functions and onto the same files as ``dvc repro`` and the Prefect flows."""

from __future__ import annotations

import logging
from dataclasses import replace

from rearank_core.config import Params
from rearank_core.evaluation import evaluate
from rearank_core.io.requests import read_candidates
from rearank_core.io.trec import read_qrels
from rearank_core.records import requests_to_run
from rearank_core.rerank import RerankSummary
from rearank_core.stages.bm25 import index_stage, retrieve_stage
from rearank_core.stages.evaluate import evaluate_stage
from rearank_core.stages.rerank import rerank_stage

log = logging.getLogger(__name__)


def run_demo(params: Params, show_progress: bool = True) -> tuple[dict[str, dict[str, float]], RerankSummary]:
    """The BM25 baseline job (index, retrieve, evaluate; BEIR SciFact by default), then the rerank job (a DL19
    slice by default) with the configured model. Returns {column label: metrics} and the rerank summary."""
    base, job = params.job("baseline"), params.job("rerank_job")
    stats = index_stage(base.corpus, base.index, threads=params.bm25.threads, show_progress=show_progress)
    log.info("indexed %d %s documents in %.1f s", stats.documents, base.name, stats.seconds)
    retrieved = retrieve_stage(base.index, base.topics, base.run, params.bm25, candidates_out=base.candidates,
                               show_progress=show_progress)
    log.info("retrieved the BM25 top-%d for %d queries", params.bm25.k, retrieved.queries)
    result = evaluate_stage(base.run, base.qrels, params.evaluate, params.tracking, metrics_out=base.metrics,
                            name=base.name)
    columns = {f"{base.name} BM25": result.metrics}

    summary = rerank_stage(job.candidates, job.run, replace(params.rerank, top_k=job.top_k), params.tracking,
                           traces_out=job.traces, summary_out=job.summary, limit=job.queries, name=job.name,
                           show_progress=show_progress)
    reranked = evaluate_stage(job.run, job.qrels, params.evaluate, params.tracking, metrics_out=job.metrics,
                              name=job.name)
    requests = read_candidates(job.candidates)[: job.queries]
    columns[f"{job.name} BM25"] = evaluate(requests_to_run(requests), read_qrels(job.qrels),
                                           params.evaluate.metrics, params.evaluate.rel_level).metrics
    columns[f"{job.name} reranked"] = reranked.metrics
    return columns, summary
