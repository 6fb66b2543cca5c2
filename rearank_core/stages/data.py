"""Training-data stages: augment -> teacher -> filter -> build -> validate. Each writes its records, a dataset
card (JSON + markdown) and an MLflow run with the card's figures."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rearank_core.backends.base import hf_chat_ids, hf_truncate, load_hf_tokenizer
from rearank_core.config import (
    DataConfig,
    DataSource,
    FilterConfig,
    TeacherConfig,
    TrackingConfig,
)
from rearank_core.data.augment import AugmentStats, augment
from rearank_core.data.build import build_records
from rearank_core.data.card import token_lengths, write_card
from rearank_core.data.filter import FilterStats, filter_records
from rearank_core.data.leakage import check_leakage, load_eval_queries
from rearank_core.data.teacher import TeacherStats, distill
from rearank_core.data.validation import ValidationReport, record_verdict, validate_file
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.files import write_jsonl
from rearank_core.io.requests import read_candidates
from rearank_core.io.training_data import TeacherRecord, WindowRecord, read_records
from rearank_core.mlops.tracking import stage_run
from rearank_core.prompts import load_template

log = logging.getLogger(__name__)


def _figures(card: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The card's numbers as flat MLflow metric names (``status.ok``, ``prompt_tokens.p95``)."""
    out: dict[str, float] = {}
    for key, value in card.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_figures(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _track(tracking: TrackingConfig, stage: str, params: dict[str, Any], card_path: Path, card: dict[str, Any],
           *artifacts: str | Path) -> None:
    with stage_run(tracking, f"data-{stage}") as tracked:
        tracked.params(params)
        tracked.metrics(_figures(card))
        for path in (card_path, card_path.with_suffix(".md"), *artifacts):
            tracked.artifact(path)


def augment_stage(sources: tuple[DataSource, ...], out: str | Path, cfg: DataConfig, tracking: TrackingConfig,
                  cards: str | Path) -> AugmentStats:
    """Windows of every source into one JSONL, after the leakage guard has passed on every source."""
    evals = load_eval_queries(cfg.eval_sets)
    loaded = []
    for source in sources:
        requests = read_candidates(source.candidates)
        check_leakage(requests, source.candidates, evals, cfg.eval_sets, source.id_namespace)
        loaded.append((source, requests, read_any_qrels(source.qrels)))
    stats = AugmentStats()
    windows: list[WindowRecord] = []
    for source, requests, qrels in loaded:
        windows += augment(requests, qrels, source.name, cfg, stats)
    write_jsonl(out, [w.to_dict() for w in windows])
    card = {"kind": "windows", "sources": {s.name: s.candidates for s in sources}, "seed": cfg.seed,
            "per_query": cfg.per_query, "window": cfg.window, "top_n": cfg.top_n, "min_ndcg": cfg.min_ndcg,
            "eval_sets_checked": [e.name for e in cfg.eval_sets], **stats.to_dict()}
    card_path = write_card(cards, "windows", card)
    _track(tracking, "augment", {k: v for k, v in card.items() if not isinstance(v, (dict, list))}, card_path, card)
    log.info("augment: %d of %d drawn windows kept from %d queries", stats.kept, stats.drawn, stats.queries)
    return stats


def teacher_stage(windows: str | Path, out: str | Path, cfg: TeacherConfig, tracking: TrackingConfig,
                  cards: str | Path, show_progress: bool = False) -> TeacherStats:
    """One teacher record per window (resumable for a model teacher)."""
    records = read_records(windows, WindowRecord)
    stats = distill(records, out, cfg, show_progress=show_progress)
    card = {"kind": "teacher", "windows_file": str(windows), **stats.to_dict()}
    card_path = write_card(cards, "teacher", card)
    params = {k: v for k, v in asdict(cfg).items() if not k.startswith("price")} | {"windows": str(windows)}
    _track(tracking, "teacher", params, card_path, card)
    return stats


def filter_stage(teacher: str | Path, out: str | Path, cfg: FilterConfig, tracking: TrackingConfig,
                 cards: str | Path, windows: str | Path | None = None) -> FilterStats:
    """The teacher records that pass the self-consistency filter (and the gold minimum, when set)."""
    records = read_records(teacher, TeacherRecord)
    by_id = {w.id: w for w in read_records(windows, WindowRecord)} if windows is not None else None
    kept, stats = filter_records(records, cfg, by_id)
    write_jsonl(out, [r.to_dict() for r in kept])
    card = {"kind": "filtered", "teacher_file": str(teacher), "alpha": cfg.alpha,
            "min_gold_ndcg": cfg.min_gold_ndcg, **stats.to_dict()}
    card_path = write_card(cards, "filtered", card)
    _track(tracking, "filter", {"alpha": cfg.alpha, "min_gold_ndcg": cfg.min_gold_ndcg, "teacher": str(teacher)},
           card_path, card)
    return stats


def build_stage(windows: str | Path, sft_out: str | Path, grpo_out: str | Path, cfg: DataConfig,
                tracking: TrackingConfig, cards: str | Path, model_cache: str | Path,
                teacher: str | Path | None = None) -> dict[str, Any]:
    """SFT and GRPO records with their cards (token lengths under ``cfg.tokenizer``)."""
    window_records = read_records(windows, WindowRecord)
    answers = {r.id: r for r in read_records(teacher, TeacherRecord)} if teacher is not None else None
    tokenizer = load_hf_tokenizer(cfg.tokenizer, Path(model_cache))
    template = load_template(cfg.prompt)
    sft, grpo = build_records(window_records, answers, template,
                              lambda text, n: hf_truncate(tokenizer, text, n))
    write_jsonl(sft_out, [r.to_dict() for r in sft])
    write_jsonl(grpo_out, [r.to_dict() for r in grpo])
    common = {"prompt_template": template.name, "tokenizer": cfg.tokenizer, "windows_file": str(windows),
              "teacher_file": str(teacher) if teacher is not None else None}
    teachers = sorted({r.teacher for r in sft})
    sft_card = {"kind": "sft", "records": len(sft), **common, "teachers": ", ".join(teachers) or None,
                **token_lengths(tokenizer, [r.messages[:-1] for r in sft], [r.messages[-1]["content"] for r in sft])}
    grades = Counter(grade for record in grpo for grade in record.labels)
    grpo_card = {"kind": "grpo", "records": len(grpo), **common,
                 "label_distribution": {str(g): grades[g] for g in sorted(grades)},
                 **token_lengths(tokenizer, [r.prompt for r in grpo])}
    for name, card, path in (("sft", sft_card, sft_out), ("grpo", grpo_card, grpo_out)):
        card_path = write_card(cards, name, card)
        _track(tracking, f"build-{name}", {k: v for k, v in common.items()} | {"output": str(path)}, card_path, card)
    return {"sft": sft_card, "grpo": grpo_card}


def validate_stage(path: str | Path, kind: str, cfg: DataConfig, tracking: TrackingConfig, model_cache: str | Path,
                   report_dir: str | Path | None = None, verdict: str | Path | None = None) -> ValidationReport:
    """The great-expectations gate for one dataset, its outcome merged into ``verdict`` when given (what the
    trainers depend on); the caller stops the pipeline when it fails."""
    evals = load_eval_queries(cfg.eval_sets)
    count = None
    if kind in ("sft", "grpo"):
        tokenizer = load_hf_tokenizer(cfg.tokenizer, Path(model_cache))

        def count(messages: list[dict[str, str]]) -> int:
            return len(hf_chat_ids(tokenizer, [messages])[0])

    report = validate_file(path, kind, max_prompt_tokens=cfg.max_prompt_tokens if count else None,
                           count_tokens=count, evals=evals,
                           namespaces={s.name: s.id_namespace for s in cfg.sources},
                           report_dir=report_dir)
    if verdict is not None:
        record_verdict(verdict, report)
    with stage_run(tracking, f"data-validate-{kind}") as tracked:
        tracked.params({"file": str(path), "kind": kind, "max_prompt_tokens": cfg.max_prompt_tokens})
        tracked.metrics({"records": report.records, "success": float(report.success),
                         "failed_expectations": len(report.failures)})
        if report_dir is not None:
            for name in ("summary.txt", "report.json"):
                tracked.artifact(Path(report_dir) / name)
    return report
