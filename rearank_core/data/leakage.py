"""The leakage guard: no training query may be an evaluation query.

Two rules. A query leaks when its normalised text equals an evaluation query's: text is the test that holds across
every collection. Its id alone says so only when the source and the evaluation set declare the same id namespace
(MS MARCO's qids across DL19, DL20 and DL21, say): elsewhere ids are numbers that collections reuse (SciFact has a
query "1", and so does a user's own set numbered 1..N)."""

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
class Leak:
    """The evaluation set a training query belongs to, and the rule that matched."""

    eval_set: str
    rule: str


@dataclass(frozen=True)
class EvalQueries:
    """Every evaluation query by normalised text, and by (id namespace, id) for the sets that declare one."""

    by_text: dict[str, str]
    by_id: dict[tuple[str, str], str]

    def find(self, qid: str, text: str | None, namespace: str | None) -> Leak | None:
        """The leak of a training query (``text`` None: the id rule alone), or None."""
        if text is not None and (name := self.by_text.get(normalise_query(text))):
            return Leak(name, "the same query text (normalised)")
        if namespace is not None and (name := self.by_id.get((namespace, qid))):
            return Leak(name, f"the same query id in id namespace {namespace!r}")
        return None


def load_eval_queries(eval_sets: tuple[EvalSet, ...]) -> EvalQueries:
    by_text: dict[str, str] = {}
    by_id: dict[tuple[str, str], str] = {}
    for eval_set in eval_sets:
        for query in read_any_topics(eval_set.topics):
            by_text.setdefault(normalise_query(query.text), eval_set.name)
            if eval_set.id_namespace is not None:
                by_id.setdefault((eval_set.id_namespace, query.qid), eval_set.name)
    return EvalQueries(by_text, by_id)


def check_leakage(requests: list[Request], source: str | Path, evals: EvalQueries, eval_sets: tuple[EvalSet, ...],
                  namespace: str | None = None) -> None:
    """A training query of ``source`` (its ids in ``namespace``) that is an evaluation query is an error naming the
    evaluation set and the rule that matched."""
    topics = {e.name: e.topics for e in eval_sets}
    for request in requests:
        leak = evals.find(request.query.qid, request.query.text, namespace)
        if leak is not None:
            raise InputError(f"query {request.query.qid} ({request.query.text!r}) is in evaluation set "
                             f"{leak.eval_set} ({topics[leak.eval_set]}): {leak.rule}; remove it from the training "
                             "source", source, field="query")
