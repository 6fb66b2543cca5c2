"""Typed records passed between stages, in rank_llm's shapes (Query, Candidate, Request, Result).

A leaf module: it imports nothing of this project, so every layer can use it.

A candidates file is JSONL with one Request per line:
``{"query": {"qid", "text"}, "candidates": [{"docid", "score", "doc": {"contents": ...}}]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A chat prompt: [{"role": "system"|"user"|"assistant", "content": str}, ...]
Messages = list[dict[str, str]]
# qid -> docid -> graded relevance
Qrels = dict[str, dict[str, int]]
# qid -> [(docid, score)] in rank order (best first)
Run = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str


@dataclass(slots=True)
class Candidate:
    docid: str
    score: float
    doc: dict[str, Any]

    @property
    def contents(self) -> str:
        """The passage text: ``contents`` if present, else title and text joined (BEIR / MS MARCO shapes)."""
        if self.doc.get("contents"):
            return str(self.doc["contents"])
        parts = [str(self.doc[key]) for key in ("title", "text", "segment", "body") if self.doc.get(key)]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"docid": self.docid, "score": self.score, "doc": self.doc}


@dataclass(slots=True)
class Request:
    """A query and its first-stage candidates, best first."""

    query: Query
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": {"qid": self.query.qid, "text": self.query.text}, "candidates": [c.to_dict() for c in self.candidates]}


def requests_to_run(requests: list[Request]) -> Run:
    """The ranking that a list of requests encodes, keeping each request's candidate order."""
    return {r.query.qid: [(c.docid, c.score) for c in r.candidates] for r in requests}


@dataclass(slots=True)
class WindowTrace:
    """What happened in one window: its span, prompt/completion sizes, the raw completion, the parsed order
    and the parser's diagnostics."""

    qid: str
    window: int  # 0-based index of the window within its query, in processing order
    start: int  # span [start, end) in the query's ranking when the window ran
    end: int
    docids: list[str]  # the window's passages in input order
    order: list[int]  # 0-based output order over ``docids``
    status: str
    duplicates: int
    out_of_range: int
    missing: int
    strict_format: bool
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_s: float
    completion: str
    logprobs: list[float | None] | None = None  # first mode: each identifier's, in window order (None: not returned)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class Result:
    """A reranked request: the candidates in their new order and the trace of every window."""

    query: Query
    candidates: list[Candidate]
    traces: list[WindowTrace] = field(default_factory=list)


def results_to_run(results: list[Result]) -> Run:
    """Reranked order as a run; scores are descending integers so trec_eval keeps the order."""
    return {r.query.qid: [(c.docid, float(len(r.candidates) - i)) for i, c in enumerate(r.candidates)] for r in results}
