"""Reranking plain document lists, as rerank APIs and the MLflow model receive them: a query and its
documents in, each document's position and a relevance score out, best first.

A listwise reranker returns a permutation, not scores; ``relevance_score`` is 1 / (1 + rank) (rank 0 is the
best), so it decreases strictly with rank, lies in (0, 1], and means nothing beyond the order."""

from __future__ import annotations

from dataclasses import dataclass

from rearank_core.prompts.parsing import OK, REPAIRED
from rearank_core.records import Candidate, Query, Request
from rearank_core.rerank.scheduler import Reranker


@dataclass(frozen=True, slots=True)
class DocumentRanking:
    """One query's documents reranked: their positions in the request, best first, and how the windows went."""

    order: list[int]
    windows: int
    format_valid_rate: float | None  # None when no window ran (a single document) or in first mode

    def scored(self, top_n: int | None = None) -> list[tuple[int, float]]:
        """(position, relevance score) pairs, best first, the first ``top_n`` only when given."""
        return [(index, relevance_score(rank)) for rank, index in enumerate(self.order[:top_n])]


def relevance_score(rank: int) -> float:
    return 1.0 / (1 + rank)


def rerank_documents(reranker: Reranker, queries: list[tuple[str, list[str]]]) -> list[DocumentRanking]:
    """Every (query, documents) pair reranked in one scheduler call, so windows of different queries share
    generate calls. The documents' given order is the initial ranking; each pair gets its own internal qid, so
    equal query texts never share a ranking."""
    requests = [Request(Query(f"q{number}", query),
                        [Candidate(str(index), float(len(documents) - index), {"contents": text})
                         for index, text in enumerate(documents)])
                for number, (query, documents) in enumerate(queries)]
    results, _ = reranker.rerank(requests)
    rankings = []
    for result in results:
        valid = sum(t.status in (OK, REPAIRED) for t in result.traces)
        parsed = result.traces and not reranker.first  # first mode parses no answer: its rate is not computed
        rankings.append(DocumentRanking([int(c.docid) for c in result.candidates], len(result.traces),
                                        valid / len(result.traces) if parsed else None))
    return rankings
