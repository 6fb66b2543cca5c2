"""Run evaluation through ir-measures (pytrec_eval / trec_eval underneath); no metric is computed by hand."""

from __future__ import annotations

from dataclasses import dataclass, field

import ir_measures
from ir_measures import MRR, Qrel, R, ScoredDoc, nDCG

from rearank_core.config import DEFAULT_METRICS
from rearank_core.errors import InputError
from rearank_core.records import Qrels, Run


def _measure(name: str, rel_level: int):
    kind, _, cutoff = name.partition("@")
    if not cutoff.isdigit():
        raise InputError(f"metric {name!r}: expected NAME@K", field="metrics")
    k = int(cutoff)
    if kind == "ndcg":
        return nDCG @ k
    if kind == "recall":
        return R(rel=rel_level) @ k
    if kind == "mrr":
        return MRR(rel=rel_level) @ k
    raise InputError(f"unknown metric {name!r}; known kinds: ndcg, recall, mrr", field="metrics")


@dataclass
class Evaluation:
    metrics: dict[str, float]
    queries_evaluated: int
    run_queries_without_qrels: list[str] = field(default_factory=list)
    judged_queries_missing_from_run: list[str] = field(default_factory=list)
    excluded_documents_removed: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            **{k: round(v, 4) for k, v in self.metrics.items()},
            "queries_evaluated": self.queries_evaluated,
            "run_queries_without_qrels": len(self.run_queries_without_qrels),
            "judged_queries_missing_from_run": len(self.judged_queries_missing_from_run),
            "excluded_documents_removed": self.excluded_documents_removed,
        }


def remove_excluded(run: Run, excluded: dict[str, set[str]]) -> tuple[Run, int]:
    """The run without each query's excluded documents (BRIGHT), and how many were removed."""
    removed = 0
    out: Run = {}
    for qid, ranking in run.items():
        drop = excluded.get(qid, set())
        kept = [(d, s) for d, s in ranking if d not in drop]
        removed += len(ranking) - len(kept)
        out[qid] = kept
    return out, removed


def evaluate(run: Run, qrels: Qrels, metrics: tuple[str, ...] = DEFAULT_METRICS, rel_level: int = 1,
             excluded: dict[str, set[str]] | None = None) -> Evaluation:
    """Mean of each metric over the queries that are both judged and in the run (trec_eval's default).
    nDCG uses graded gains; Recall and MRR count a document relevant at grade >= ``rel_level``
    (TREC DL passage convention: 2)."""
    removed = 0
    if excluded:
        run, removed = remove_excluded(run, excluded)
    measures = {name: _measure(name, rel_level) for name in metrics}
    scored = [ScoredDoc(qid, docid, score) for qid, ranking in run.items() for docid, score in ranking]
    evaluated = [qid for qid in run if qid in qrels]
    # Only queries the run holds are averaged, as trec_eval does without -c (ir-measures would count a
    # judged query missing from the run as zero); missing ones are reported separately.
    judged = [Qrel(qid, docid, rel) for qid in evaluated for docid, rel in qrels[qid].items()]
    values: dict[str, float] = {}
    if evaluated:
        agg = ir_measures.calc_aggregate(list(measures.values()), judged, scored)
        values = {name: float(agg[m]) for name, m in measures.items()}
    return Evaluation(
        metrics=values,
        queries_evaluated=len(evaluated),
        run_queries_without_qrels=[q for q in run if q not in qrels],
        judged_queries_missing_from_run=[q for q in qrels if q not in run],
        excluded_documents_removed=removed,
    )


def window_ndcg(labels: list[list[int]], orders: list[list[int]] | None = None, k: int = 10) -> list[float]:
    """nDCG@k of each window's ranking against its own graded labels (linear gain, log2 discount: trec_eval's),
    the ideal being the window's labels sorted. ``labels[i][j]`` is the grade of window i's passage j;
    ``orders[i]`` lists window i's passages best first as 0-based positions (default: the given order).
    A window without a relevant passage scores 0. One ir-measures call for all windows."""
    if orders is not None and len(orders) != len(labels):
        raise ValueError(f"{len(orders)} orders for {len(labels)} windows")
    qrels = [Qrel(str(i), str(j), int(g)) for i, grades in enumerate(labels) for j, g in enumerate(grades)]
    scored = []
    for i, grades in enumerate(labels):
        order = orders[i] if orders is not None else list(range(len(grades)))
        scored += [ScoredDoc(str(i), str(j), float(len(order) - rank)) for rank, j in enumerate(order)]
    values = [0.0] * len(labels)
    for metric in ir_measures.iter_calc([nDCG @ k], qrels, scored):
        values[int(metric.query_id)] = float(metric.value)
    return values
