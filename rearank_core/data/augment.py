"""REARANK augmentation: K random window-sized subsets per labelled query, in random order, kept when they hold
a relevant passage and their initial nDCG@10 reaches a threshold. ``draw: sliding`` takes the reranker's own
windows instead (consecutive candidates in first-stage order), for a model that should learn on what it will see.

Each query draws from its own random stream, seeded by (seed, source, qid): the same seed and inputs give
byte-identical windows, and adding a query or a source leaves every other query's windows unchanged."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from rearank_core.config import DataConfig
from rearank_core.evaluation import window_ndcg
from rearank_core.io.training_data import WindowRecord
from rearank_core.prompts import clean_passage
from rearank_core.records import Qrels, Request


def _truncate(text: str, unit: str | None, length: int | None) -> str:
    if unit is None or length is None:
        return text
    return text[:length] if unit == "chars" else " ".join(text.split()[:length])


def _draws(pool: list, cfg: DataConfig, seed: str) -> list[list]:
    """The windows of one query's candidates: random subsets in random order, or the sliding windows over the
    first ``top_n`` in first-stage order (the last one ends at the pool's end, so every candidate is in one)."""
    if cfg.draw == "sliding":
        starts = list(range(0, len(pool) - cfg.window + 1, cfg.step))
        if starts[-1] + cfg.window < len(pool):
            starts.append(len(pool) - cfg.window)
        return [pool[start:start + cfg.window] for start in starts]
    rng = random.Random(seed)
    return [[pool[i] for i in rng.sample(range(len(pool)), cfg.window)] for _ in range(cfg.per_query)]


@dataclass
class AugmentStats:
    queries: int = 0
    queries_without_qrels: list[str] = field(default_factory=list)
    queries_too_short: list[str] = field(default_factory=list)  # fewer candidates than the window
    drawn: int = 0
    dropped_no_relevant: int = 0
    dropped_low_ndcg: int = 0
    kept: int = 0
    kept_ideal: int = 0  # kept windows already in ideal order: REARANK's gain has no room there (rewards.gain_floor)
    labels: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, object]:
        return {"queries": self.queries, "queries_without_qrels": len(self.queries_without_qrels),
                "queries_too_short": len(self.queries_too_short), "windows_drawn": self.drawn,
                "dropped_no_relevant": self.dropped_no_relevant, "dropped_low_ndcg": self.dropped_low_ndcg,
                "windows_kept": self.kept, "windows_kept_ideal_order": self.kept_ideal, "pass_rate": round(self.kept / self.drawn, 4) if self.drawn else None,
                "label_distribution": {str(k): v for k, v in sorted(self.labels.items())}}


def augment(requests: list[Request], qrels: Qrels, source: str, cfg: DataConfig,
            stats: AugmentStats | None = None) -> list[WindowRecord]:
    """Windows of one source, in query order then draw order; ``stats`` (if given) accumulates the counts."""
    stats = stats if stats is not None else AugmentStats()
    drawn: list[WindowRecord] = []
    for request in requests:
        qid = request.query.qid
        stats.queries += 1
        if qid not in qrels:
            stats.queries_without_qrels.append(qid)
            continue
        pool = request.candidates[: cfg.top_n]
        if len(pool) < cfg.window:
            stats.queries_too_short.append(qid)
            continue
        for draw, picked in enumerate(_draws(pool, cfg, f"{cfg.seed}/{source}/{qid}")):
            drawn.append(WindowRecord(
                id=f"{source}/{qid}/{draw:03d}", source=source, qid=qid, query=request.query.text,
                docids=[c.docid for c in picked],
                passages=[_truncate(clean_passage(c.contents), cfg.truncate_unit, cfg.truncate_length) for c in picked],
                labels=[int(qrels[qid].get(c.docid, 0)) for c in picked], initial_ndcg10=0.0))
    stats.drawn += len(drawn)
    for record, ndcg in zip(drawn, window_ndcg([w.labels for w in drawn]), strict=True):
        record.initial_ndcg10 = round(ndcg, 6)
    kept = []
    for record in drawn:
        if not any(record.labels):
            stats.dropped_no_relevant += 1
        elif record.initial_ndcg10 < cfg.min_ndcg:
            stats.dropped_low_ndcg += 1
        else:
            kept.append(record)
            stats.labels.update(record.labels)
            stats.kept_ideal += record.initial_ndcg10 >= 1.0
    stats.kept += len(kept)
    return kept
