"""The evaluate-model stage: one model reranks every dataset of the evaluation suite with the profile's window
settings; each dataset's metrics sit next to BM25's on the same queries, with the format-valid rate.

One backend serves the whole suite (the model loads once); each dataset is a rerank run and an evaluate run in
MLflow, resumable from its traces, and the suite's table is one more metrics file."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from rearank_core.backends.base import Backend
from rearank_core.config import EvalConfig, RerankConfig, SuiteConfig, TrackingConfig
from rearank_core.evaluation import evaluate
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.files import write_json
from rearank_core.io.requests import read_candidates
from rearank_core.mlops.tracking import stage_run
from rearank_core.prompts.parsing import OK
from rearank_core.records import requests_to_run
from rearank_core.rerank import Reranker
from rearank_core.stages.evaluate import evaluate_stage
from rearank_core.stages.rerank import rerank_stage

log = logging.getLogger(__name__)


def evaluate_model_stage(label: str, suite: SuiteConfig, cfg: RerankConfig, eval_cfg: EvalConfig,
                         tracking: TrackingConfig, show_progress: bool = True) -> dict[str, Any]:
    """Rerank and score each dataset of ``suite`` with ``cfg.model``; returns (and writes to
    ``<suite.metrics>/<label>.json``) one row per dataset: BM25's and the model's metrics, the format-valid rate
    (answers the parser used, repaired or not) and the exact rate (answers that needed no repair).
    Runs, traces and per-dataset metrics go to ``<suite.work>/<label>/``; a rerun resumes from the traces."""
    work = Path(suite.work) / label
    backend: Backend | None = None  # the first dataset's reranker loads it; the rest reuse it
    rows: dict[str, Any] = {}
    try:
        for dataset in suite.datasets:
            dataset_cfg = replace(cfg, top_k=dataset.top_k)
            reranker = Reranker(dataset_cfg, backend=backend)
            backend = reranker.backend
            requests = read_candidates(dataset.candidates)[:dataset.queries]
            qrels = read_any_qrels(dataset.qrels)
            bm25 = evaluate(requests_to_run(requests), qrels, eval_cfg.metrics, eval_cfg.rel_level)
            run = work / f"{dataset.name}.trec"
            summary = rerank_stage(dataset.candidates, run, dataset_cfg, tracking,
                                   traces_out=work / f"{dataset.name}.traces.jsonl",
                                   summary_out=work / f"{dataset.name}.summary.json", resume=True,
                                   limit=dataset.queries, name=f"{label}-{dataset.name}", show_progress=show_progress,
                                   reranker=reranker)
            result = evaluate_stage(run, dataset.qrels, eval_cfg, tracking, metrics_out=work / f"{dataset.name}.json",
                                    name=f"{label}-{dataset.name}")
            rows[dataset.name] = {
                "queries": len(requests), "top_k": dataset.top_k, "window": cfg.window, "step": cfg.step,
                "format_valid_rate": summary.format_valid_rate, "windows": summary.windows,
                "exact_rate": summary.status[OK] / summary.windows if summary.windows else None,
                "bm25": bm25.metrics, "reranked": result.metrics}
            log.info("%s on %s: nDCG@10 %.4f (BM25 %.4f), format-valid %s", label, dataset.name,
                     result.metrics.get("ndcg@10", float("nan")), bm25.metrics.get("ndcg@10", float("nan")),
                     summary.format_valid_rate)
    finally:
        if backend is not None:
            backend.close()
    report = {"label": label, "model": cfg.model, "suite": suite.name, "datasets": rows}
    out = Path(suite.metrics) / f"{label}.json"
    write_json(out, report)
    with stage_run(tracking, f"evaluate-model-{label}") as tracked:
        tracked.params({"label": label, "model": cfg.model, "suite": suite.name, "window": cfg.window,
                        "step": cfg.step, "prompt": cfg.prompt})
        for name, row in rows.items():  # ndcg_at_10_dl19, ...: the registry's tags use the same names
            tracked.metrics(row["reranked"], suffix=f"_{name}")
            if row["format_valid_rate"] is not None:
                tracked.metrics({"format_valid": row["format_valid_rate"]}, suffix=f"_{name}")
        tracked.artifact(out)
    return report
