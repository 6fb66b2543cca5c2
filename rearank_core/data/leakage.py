"""The leakage guard: no training query may be an evaluation query, by id or by normalised text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rearank_core.config import EvalSet
from rearank_core.errors import InputError
from rearank_core.io.auto import read_any_topics
from rearank_core.records import Request


def normalise_query(text: str) -> str:
    """Lowercase, punctuation to spaces, whitespace collapsed: how the leakage guard compares query texts."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass(frozen=True)
class EvalQueries:
    """Every evaluation query by id and by normalised text, each mapped to its set's name."""

    by_qid: dict[str, str]
    by_text: dict[str, str]

    def find(self, qid: str, text: str) -> str | None:
        return self.by_qid.get(qid) or self.by_text.get(normalise_query(text))


def load_eval_queries(eval_sets: tuple[EvalSet, ...]) -> EvalQueries:
    by_qid: dict[str, str] = {}
    by_text: dict[str, str] = {}
    for eval_set in eval_sets:
        for query in read_any_topics(eval_set.topics):
            by_qid.setdefault(query.qid, eval_set.name)
            by_text.setdefault(normalise_query(query.text), eval_set.name)
    return EvalQueries(by_qid, by_text)


def check_leakage(requests: list[Request], source: str | Path, evals: EvalQueries,
                  eval_sets: tuple[EvalSet, ...]) -> None:
    """A training query that is an evaluation query (same id or same normalised text) is an error."""
    topics = {e.name: e.topics for e in eval_sets}
    for request in requests:
        name = evals.find(request.query.qid, request.query.text)
        if name is not None:
            raise InputError(f"query {request.query.qid} ({request.query.text!r}) is in evaluation set {name} "
                             f"({topics[name]}); remove it from the training source", source, field="query")
