"""The rerank stage: a candidates file reranked into a TREC run, with traces, a summary and an MLflow run."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from rearank_core.backends.embedded import is_embedded, resolve_model
from rearank_core.config import RerankConfig, TrackingConfig
from rearank_core.errors import InputError
from rearank_core.io.files import write_json
from rearank_core.io.jobs import claim, job_identity, local_inputs
from rearank_core.io.requests import read_candidates
from rearank_core.io.trec import write_run
from rearank_core.mlops.tracking import stage_run
from rearank_core.prompts import load_template
from rearank_core.records import results_to_run
from rearank_core.rerank import Reranker, RerankSummary

log = logging.getLogger(__name__)


def rerank_stage(candidates: str | Path, run_out: str | Path, cfg: RerankConfig, tracking: TrackingConfig,
                 traces_out: str | Path | None = None, summary_out: str | Path | None = None, resume: bool = False,
                 limit: int | None = None, name: str = "", show_progress: bool = True,
                 reranker: Reranker | None = None) -> RerankSummary:
    """Rerank a candidates file (rank_llm JSONL or RankGPT retrieve-results JSON) into a TREC run, with a trace
    line per window. The run is written only once every query is done; traces are kept as windows finish, and with
    ``resume`` a rerun of the same job (settings, candidates, model) replays them.

    Tracked as one MLflow run: the config as params, the summary's figures as metrics, traces and summary as
    artifacts."""
    if limit is not None and limit < 1:
        raise InputError(f"must be at least 1, got {limit}", field="--limit")
    requests = read_candidates(candidates)
    if limit is not None:
        requests = requests[:limit]
    reranker = reranker or Reranker(cfg)
    if traces_out is not None:
        # Traces are replayed only by the job that wrote them: a changed setting, prompt template (its contents, as
        # loaded), candidates file or model (a retrained checkpoint in the same folder) starts them afresh. The
        # embedded model is fixed by its package.
        model = None if is_embedded(cfg.model) else resolve_model(cfg.model, Path(cfg.model_cache))
        identity = job_identity({"rerank": asdict(cfg), "template": asdict(load_template(cfg.template)), "limit": limit},
                                local_inputs(candidates, model))
        resume = claim(f"{traces_out}.job", identity, [traces_out] if resume else []) and resume
    log.info("reranking the top-%d of %d queries from %s with model %r (%s backend, %s mode, prompt %s)", cfg.top_k,
             len(requests), candidates, cfg.model, cfg.backend, cfg.mode, cfg.template)
    with stage_run(tracking, f"rerank{'-' + name if name else ''}") as tracked:
        tracked.params({**asdict(cfg), "candidates": str(candidates), "limit": limit or "", "dataset": name})
        results, summary = reranker.rerank(requests, traces_path=traces_out, resume=resume,
                                           show_progress=show_progress)
        write_run(run_out, results_to_run(results), tag=f"rearank-{cfg.template}")
        report = summary.to_dict()
        if summary_out is not None:
            write_json(summary_out, report)
        tracked.metrics({key: value for key, value in report.items() if isinstance(value, (int, float))})
        tracked.metrics({f"windows_{status}": count for status, count in summary.status.items()})
        for path in (traces_out, summary_out, run_out):
            if path is not None:
                tracked.artifact(path)
    return summary
