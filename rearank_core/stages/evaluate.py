"""The evaluate stage every job ends with: a run scored by ir-measures, a metrics file, an MLflow run."""

from __future__ import annotations

from pathlib import Path

from rearank_core.config import EvalConfig, TrackingConfig
from rearank_core.evaluation import Evaluation, evaluate
from rearank_core.io.auto import read_any_qrels, read_any_topics
from rearank_core.io.files import write_json
from rearank_core.io.trec import check_run_queries, read_exclusions, read_run
from rearank_core.mlops.tracking import stage_run


def evaluate_stage(run_path: str | Path, qrels_path: str | Path, cfg: EvalConfig, tracking: TrackingConfig,
                   exclude: str | Path | None = None, topics: str | Path | None = None,
                   metrics_out: str | Path | None = None, name: str = "") -> Evaluation:
    """Score a run; write the metrics JSON (a DVC metrics file) and log params and metrics to MLflow."""
    run = read_run(run_path)
    if topics is not None:
        check_run_queries(run, read_any_topics(topics), run_path, topics)
    qrels = read_any_qrels(qrels_path)
    excluded = read_exclusions(exclude) if exclude is not None else None
    result = evaluate(run, qrels, cfg.metrics, cfg.rel_level, excluded)
    if metrics_out is not None:
        write_json(metrics_out, result.to_dict())
    with stage_run(tracking, f"evaluate{'-' + name if name else ''}") as tracked:
        tracked.params({"run": str(run_path), "qrels": str(qrels_path), "rel_level": cfg.rel_level,
                        "exclude": str(exclude) if exclude else "", "dataset": name})
        tracked.metrics(result.metrics)
        tracked.metrics({"queries_evaluated": result.queries_evaluated})
        if metrics_out is not None:
            tracked.artifact(metrics_out)
    return result
