"""TREC topics (``qid<TAB>text``), qrels (``qid 0 docid rel``) and runs (``qid Q0 docid rank score tag``)."""

from __future__ import annotations

import math
from pathlib import Path

from rearank_core.errors import InputError
from rearank_core.io.files import atomic_write, iter_lines
from rearank_core.records import Qrels, Query, Run


def read_topics(path: str | Path) -> list[Query]:
    """Topics as ``qid<TAB>query text``, one per line (gzip allowed)."""
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for number, line in iter_lines(path):
        qid, sep, text = line.partition("\t")
        if not sep:
            raise InputError("expected 'qid<TAB>query text'", path, number)
        qid, text = qid.strip(), text.strip()
        if not qid:
            raise InputError("empty", path, number, "qid")
        if not text:
            raise InputError("empty", path, number, "query")
        if qid in seen:
            raise InputError(f"duplicate qid {qid!r} (first on line {seen[qid]})", path, number, "qid")
        seen[qid] = number
        queries.append(Query(qid, text))
    return queries


def write_topics(path: str | Path, queries: list[Query]) -> None:
    with atomic_write(path) as handle:
        for q in queries:
            handle.write(f"{q.qid}\t{' '.join(q.text.split())}\n")


def read_qrels(path: str | Path) -> Qrels:
    """TREC qrels: four whitespace-separated columns ``qid iter docid relevance``."""
    qrels: Qrels = {}
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) != 4:
            raise InputError(f"expected 4 columns 'qid iter docid relevance', got {len(cols)}", path, number)
        add_judgment(qrels, cols[0], cols[2], cols[3], path, number, ("docid", "relevance"))
    return qrels


def add_judgment(qrels: Qrels, qid: str, docid: str, grade: str, path: str | Path, line: int,
                 fields: tuple[str, str]) -> None:
    """Add one judgment; a non-integer grade or a second judgment of the same pair is an error naming
    ``fields`` (the docid and grade columns as the format calls them)."""
    try:
        value = int(grade)
    except ValueError as exc:
        raise InputError(f"not an integer: {grade!r}", path, line, fields[1]) from exc
    judged = qrels.setdefault(qid, {})
    if docid in judged:
        raise InputError(f"duplicate judgment for query {qid!r}, document {docid!r}", path, line, fields[0])
    judged[docid] = value


def write_qrels(path: str | Path, qrels: Qrels) -> None:
    with atomic_write(path) as handle:
        for qid, judged in qrels.items():
            for docid, grade in judged.items():
                handle.write(f"{qid} 0 {docid} {grade}\n")


def read_run(path: str | Path) -> Run:
    """A TREC run, six columns. Each query's list is returned best first (score descending, then rank),
    which is how trec_eval reads it. A docid repeated within one query's ranking is an error. A docid may hold
    spaces (BRIGHT's StackOverflow ids do): it is everything between the second column and the last three."""
    rows: dict[str, list[tuple[float, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) < 6:
            raise InputError(f"expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}", path, number)
        qid, rank_s, score_s = cols[0], cols[-3], cols[-2]
        docid = line.split(maxsplit=2)[2].rsplit(maxsplit=3)[0]
        try:
            rank = int(rank_s)
        except ValueError as exc:
            raise InputError(f"not an integer: {rank_s!r}", path, number, "rank") from exc
        try:
            score = float(score_s)
        except ValueError as exc:
            raise InputError(f"not a number: {score_s!r}", path, number, "score") from exc
        if not math.isfinite(score):
            raise InputError(f"not a finite number: {score_s!r}", path, number, "score")
        key = (qid, docid)
        if key in seen:
            raise InputError(
                f"document {docid!r} appears twice in the ranking of query {qid!r} (first on line {seen[key]})",
                path, number, "docid",
            )
        seen[key] = number
        rows.setdefault(qid, []).append((score, rank, docid))
    return {qid: [(d, s) for s, _, d in sorted(r, key=lambda t: (-t[0], t[1]))] for qid, r in rows.items()}


def write_run(path: str | Path, run: Run, tag: str = "rearank") -> None:
    """Write a run atomically; ranks are 1-based positions in each list as given."""
    with atomic_write(path) as handle:
        for qid, ranking in run.items():
            for rank, (docid, score) in enumerate(ranking, start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def check_run_queries(run: Run, queries: list[Query], run_path: str | Path, topics_path: str | Path) -> None:
    """Every query a run names must be one of the topics."""
    known = {q.qid for q in queries}
    unknown = [qid for qid in run if qid not in known]
    if unknown:
        listed = ", ".join(repr(q) for q in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InputError(f"{len(unknown)} query id(s) not in the topics {topics_path}: {listed}", run_path, field="qid")


def read_exclusions(path: str | Path) -> dict[str, set[str]]:
    """Documents to drop from each query's ranking before scoring (BRIGHT ``excluded_ids``): ``qid docid`` lines.
    An empty file is allowed (no exclusions): it is what ``write_exclusions`` writes for a domain without any."""
    excluded: dict[str, set[str]] = {}
    for number, line in iter_lines(path, allow_empty=True):
        cols = line.split()
        if len(cols) != 2:
            raise InputError(f"expected 2 columns 'qid docid', got {len(cols)}", path, number)
        excluded.setdefault(cols[0], set()).add(cols[1])
    return excluded


def write_exclusions(path: str | Path, excluded: dict[str, set[str]] | dict[str, list[str]]) -> None:
    with atomic_write(path) as handle:
        for qid, docids in excluded.items():
            for docid in docids:
                handle.write(f"{qid} {docid}\n")
