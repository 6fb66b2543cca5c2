"""Typed records passed between stages, in rank_llm's shapes (Query, Candidate, Request, Result).

A candidates file is JSONL with one Request per line:
``{"query": {"qid", "text"}, "candidates": [{"docid", "score", "doc": {"contents": ...}}]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
