"""The evaluate-model stage: one model reranks every dataset of a named evaluation suite with the profile's window
settings; each dataset's metrics sit next to its first stage's on the same queries, with the format-valid rate.

One backend serves the whole suite (the model loads once, and only if some dataset can be evaluated); each dataset
is a rerank run and an evaluate run in MLflow, resumable from its traces. A BRIGHT dataset whose documents are not
available is reported "not evaluated" with the reason, never given a number."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from rearank_core.backends.base import Backend
from rearank_core.config import (
    BM25Config,
    EvalConfig,
    EvalDataset,
    EvalSuite,
    RerankConfig,
    SuiteConfig,
    TrackingConfig,
)
from rearank_core.errors import InputError
from rearank_core.evaluation import evaluate
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.files import atomic_write, write_json
from rearank_core.io.reports import NOT_EVALUATED, comparison_table, first_stage, report_markdown
from rearank_core.mlops.tracking import stage_run
from rearank_core.prompts.parsing import OK
from rearank_core.records import requests_to_run
from rearank_core.rerank import Reranker
from rearank_core.stages.evaluate import evaluate_stage
from rearank_core.stages.rerank import rerank_stage
from rearank_core.stages.suite_inputs import DatasetInputs, NotEvaluated, dataset_inputs

log = logging.getLogger(__name__)


def evaluate_model_stage(label: str, suite: EvalSuite, settings: SuiteConfig, cfg: RerankConfig, eval_cfg: EvalConfig,
                         tracking: TrackingConfig, bm25: BM25Config | None = None,
                         show_progress: bool = True) -> dict[str, Any]:
    """Rerank and score each dataset of ``suite`` with ``cfg.model``; returns (and writes to
    ``<settings.metrics>/<suite>/<label>.json``, with a markdown table beside it) one row per dataset: its first
    stage's and the model's metrics, the format-valid rate (answers the parser used, repaired or not) and the exact
    rate (answers that needed no repair), or ``{"status": "not evaluated", "reason": ...}``. Each dataset's metrics
    go to ``<settings.metrics>/<suite>/<label>/<dataset>.json``, runs and traces to
    ``<settings.work>/<suite>/<label>/``; a rerun resumes from the traces. ``bm25``: the settings of BRIGHT's BM25
    first stage (default: Lucene's k1 0.9, b 0.4, top-100)."""
    bm25 = bm25 or BM25Config()
    work = Path(settings.work) / suite.name / label
    metrics = Path(settings.metrics) / suite.name / label
    backend: Backend | None = None  # the first evaluated dataset's reranker loads it; the rest reuse it
    rows: dict[str, Any] = {}
    try:
        for dataset in suite.datasets:
            inputs = dataset_inputs(dataset, settings, bm25, work, show_progress)
            if isinstance(inputs, NotEvaluated):
                log.warning("%s: %s: %s", dataset.name, NOT_EVALUATED, inputs.reason)
                rows[dataset.name] = {"status": NOT_EVALUATED, "reason": inputs.reason,
                                      "first_stage": dataset.first_stage}
                continue
            reranker = Reranker(replace(cfg, top_k=dataset.top_k), backend=backend)
            backend = reranker.backend
            rows[dataset.name] = _evaluate_dataset(label, dataset, inputs, reranker, eval_cfg, tracking, work,
                                                   metrics, show_progress)
    finally:
        if backend is not None:
            backend.close()
    report = {"label": label, "model": cfg.model, "mode": cfg.mode, "suite": suite.name, "datasets": rows}
    out = settings.report(label, suite.name)
    write_json(out, report)
    table = out.with_suffix(".md")
    with atomic_write(table) as handle:
        handle.write(report_markdown(report))
    with stage_run(tracking, f"evaluate-model-{label}") as tracked:
        tracked.params({"label": label, "model": cfg.model, "mode": cfg.mode, "suite": suite.name,
                        "window": cfg.window, "step": cfg.step, "prompt": cfg.template})
        for name, row in rows.items():  # ndcg_at_10_dl19, ...: the registry's tags use the same names
            if row.get("status") == NOT_EVALUATED:
                tracked.tags({f"not_evaluated_{name}": row["reason"]})
                continue
            tracked.metrics(row["reranked"], suffix=f"_{name}")
            if row["format_valid_rate"] is not None:
                tracked.metrics({"format_valid": row["format_valid_rate"]}, suffix=f"_{name}")
        tracked.artifact(out)
        tracked.artifact(table)
    return report


def _evaluate_dataset(label: str, dataset: EvalDataset, inputs: DatasetInputs, reranker: Reranker,
                      eval_cfg: EvalConfig, tracking: TrackingConfig, work: Path, metrics: Path,
                      show_progress: bool) -> dict[str, Any]:
    """One dataset reranked (resuming from its traces) and scored; its row of the report."""
    cfg = reranker.config
    first = evaluate(requests_to_run(inputs.requests), read_any_qrels(inputs.qrels), eval_cfg.metrics,
                     eval_cfg.rel_level)
    run = work / f"{dataset.name}.trec"
    summary = rerank_stage(inputs.candidates, run, cfg, tracking, traces_out=work / f"{dataset.name}.traces.jsonl",
                           summary_out=work / f"{dataset.name}.summary.json", resume=True, limit=dataset.queries,
                           name=f"{label}-{dataset.name}", show_progress=show_progress, reranker=reranker)
    result = evaluate_stage(run, inputs.qrels, eval_cfg, tracking, metrics_out=metrics / f"{dataset.name}.json",
                            name=f"{label}-{dataset.name}")
    stage = str(dataset.first_stage)
    generated = cfg.mode == "reasoning"  # a first-mode order is always complete: no answer to parse or repair
    row: dict[str, Any] = {
        "first_stage": stage, "queries": len(inputs.requests), "top_k": dataset.top_k, "window": cfg.window,
        "step": cfg.step, "format_valid_rate": summary.format_valid_rate if generated else None,
        "windows": summary.windows,
        "exact_rate": summary.status[OK] / summary.windows if summary.windows and generated else None,
        stage: first.metrics, "reranked": result.metrics}
    if inputs.excluded_removed is not None:
        row["excluded_removed"] = inputs.excluded_removed
    log.info("%s on %s: nDCG@10 %.4f (%s %.4f), format-valid %s", label, dataset.name,
             result.metrics.get("ndcg@10", float("nan")), stage, first.metrics.get("ndcg@10", float("nan")),
             row["format_valid_rate"] if generated else "not computed (first mode)")
    return row


# What makes two reports' rows the same candidates reranked the same way.
SAME_CANDIDATES = ("first_stage", "queries", "top_k", "window", "step")


def _candidates_key(row: dict[str, Any], key: str) -> Any:
    return first_stage(row) if key == "first_stage" else row.get(key)


def compare_stage(labels: list[str], suite: str, settings: SuiteConfig) -> Path:
    """The models ``labels`` side by side on ``suite``: their evaluate-model reports (each dataset's first stage,
    each model's nDCG@10 and format-valid rate) and the windows/s of each dataset's rerun summary beside its traces.
    Writes ``<metrics>/<suite>/compare.md`` and returns its path. Reports of other candidates (another first stage,
    query count, top-k, window or step) are an error naming the report and the field, not a row."""
    if len(labels) < 2:
        raise InputError("compare needs at least two labels", field="labels")
    reports: dict[str, dict[str, Any]] = {}
    speeds: dict[str, dict[str, float | None]] = {}
    for label in labels:
        path = settings.report(label, suite)
        if not path.is_file():
            raise InputError(f"no report of {label!r} on suite {suite!r}: run `rearank evaluate-model --label {label} "
                             f"--suite {suite}` first", path)
        reports[label] = json.loads(path.read_text(encoding="utf-8"))
        base, rows = reports[labels[0]]["datasets"], reports[label]["datasets"]
        if set(rows) != set(base):
            raise InputError(f"datasets {sorted(rows)} differ from {labels[0]!r}'s {sorted(base)}", path,
                             field="datasets")
        speeds[label] = {}
        for name, row in rows.items():
            if (row.get("status") == NOT_EVALUATED) != (base[name].get("status") == NOT_EVALUATED):
                raise InputError(f"{name} is evaluated in one report and not in the other", path,
                                 field=f"datasets.{name}")
            if row.get("status") == NOT_EVALUATED:
                continue
            for key in SAME_CANDIDATES:
                mine, theirs = _candidates_key(row, key), _candidates_key(base[name], key)
                if mine != theirs:
                    raise InputError(f"{name}: {key} {mine!r} differs from {labels[0]!r}'s {theirs!r}: not the "
                                     "same candidates", path, field=f"datasets.{name}.{key}")
            summary = Path(settings.work) / suite / label / f"{name}.summary.json"
            speeds[label][name] = (json.loads(summary.read_text(encoding="utf-8")).get("windows_per_s")
                                   if summary.is_file() else None)
    out = Path(settings.metrics) / suite / "compare.md"
    title = f"# {' / '.join(labels)} on suite `{suite}`, same candidates"
    with atomic_write(out) as handle:
        handle.write("\n".join([title, "", *comparison_table(reports, speeds)]) + "\n")
    return out
