"""ReasonRank's self-consistency filter: keep a teacher sample only if its own ranking agrees with its own
relevant set (nDCG@10 >= alpha), and optionally with the graded qrels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rearank_core.config import FilterConfig
from rearank_core.errors import InputError
from rearank_core.evaluation import window_ndcg
from rearank_core.io.training_data import TEACHER_OK, TeacherRecord, WindowRecord


@dataclass
class FilterStats:
    records: int = 0
    dropped_status: Counter = field(default_factory=Counter)  # records without an answer, by status
    dropped_self: int = 0
    dropped_gold: int = 0
    kept: int = 0

    def to_dict(self) -> dict[str, object]:
        answered = self.records - sum(self.dropped_status.values())
        return {"records": self.records, "answered": answered, "dropped_without_answer": dict(self.dropped_status),
                "dropped_self_consistency": self.dropped_self, "dropped_gold": self.dropped_gold, "kept": self.kept,
                "pass_rate": round(self.kept / self.records, 4) if self.records else None,
                "pass_rate_of_answered": round(self.kept / answered, 4) if answered else None}


def self_consistency(records: list[TeacherRecord]) -> list[float]:
    """nDCG@10 of each teacher ranking against the teacher's own relevant set (binary gains)."""
    if not records:
        return []
    labels = [[1 if i in set(r.relevant) else 0 for i in range(1, len(r.final) + 1)] for r in records]
    return window_ndcg(labels, [[i - 1 for i in r.final] for r in records])


def filter_records(records: list[TeacherRecord], cfg: FilterConfig,
                   windows: dict[str, WindowRecord] | None = None) -> tuple[list[TeacherRecord], FilterStats]:
    """The records that pass, in input order, and the counts. ``windows`` (by id) is needed for
    ``min_gold_ndcg``."""
    if cfg.min_gold_ndcg is not None and windows is None:
        raise InputError("min_gold_ndcg needs the windows file (--windows) for the graded labels",
                         field="filter.min_gold_ndcg")
    stats = FilterStats(records=len(records))
    answered = [r for r in records if r.status == TEACHER_OK]
    for r in records:
        if r.status != TEACHER_OK:
            stats.dropped_status[r.status] += 1
    self_scores = self_consistency(answered)
    gold_scores: list[float | None] = [None] * len(answered)
    if cfg.min_gold_ndcg is not None and windows is not None and answered:
        missing = [r.id for r in answered if r.id not in windows]
        if missing:
            raise InputError(f"teacher record {missing[0]} has no window in the windows file", field="id")
        gold_scores = list(window_ndcg([windows[r.id].labels for r in answered],
                                       [[i - 1 for i in r.final] for r in answered]))
    kept = []
    for record, own, gold in zip(answered, self_scores, gold_scores, strict=True):
        if own < cfg.alpha:
            stats.dropped_self += 1
        elif gold is not None and gold < (cfg.min_gold_ndcg or 0.0):
            stats.dropped_gold += 1
        else:
            kept.append(record)
    stats.kept = len(kept)
    return kept, stats
