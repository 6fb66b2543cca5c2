"""What one dataset of an evaluation suite gives the reranker: its first stage's ranking with passage text (a
candidates file) and its qrels. A candidates entry is read as it is; a BRIGHT entry is built from BRIGHT's published
layout: its first queries, the first stage's ranking (a run file, or BM25 over a Lucene index of the domain's
documents) without the query's excluded ids, and the documents' text. Where BRIGHT's documents are missing the dataset
is not evaluated, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rearank_core.config import BM25Config, EvalDataset, SuiteConfig
from rearank_core.errors import InputError
from rearank_core.evaluation import remove_excluded
from rearank_core.io.bright import (
    BrightDomain,
    document_texts,
    documents_unavailable,
    load_bright_domain,
    resolve_bright_root,
)
from rearank_core.io.requests import read_candidates, write_requests
from rearank_core.io.trec import read_run, write_qrels
from rearank_core.records import Candidate, Query, Request, Run
from rearank_core.retrieval.bright import bright_bm25_run

EMPTY_DOCUMENT = "(empty document)"  # the candidates format needs text; the model is shown that there is none


@dataclass(frozen=True)
class DatasetInputs:
    candidates: Path  # what the reranker reads
    qrels: Path
    requests: list[Request]  # the queries evaluated, in first-stage order
    excluded_removed: int | None = None  # BRIGHT: excluded ids dropped from the first stage's ranking


@dataclass(frozen=True)
class NotEvaluated:
    reason: str


def dataset_inputs(dataset: EvalDataset, settings: SuiteConfig, bm25: BM25Config, work: Path,
                   show_progress: bool = True) -> DatasetInputs | NotEvaluated:
    """The inputs of ``dataset``; a BRIGHT entry's candidates and qrels are written to ``work``."""
    if dataset.bright is None:
        candidates, qrels = Path(str(dataset.candidates)), Path(str(dataset.qrels))  # both set: EvalDataset checks
        return DatasetInputs(candidates, qrels, read_candidates(candidates)[:dataset.queries])
    reason = documents_unavailable(settings.bright_root, dataset.bright)
    if reason is not None:
        return NotEvaluated(reason)
    domain = load_bright_domain(resolve_bright_root(settings.bright_root), dataset.bright)
    queries = domain.queries[:dataset.queries]
    if dataset.run is not None:
        run = _read_first_stage(Path(dataset.run), queries, dataset.bright)
    else:  # at least bm25.k deep, so the first stage's Recall@100 compares with the other datasets'
        run = bright_bm25_run(domain.documents_files, Path(settings.work) / "bright" / domain.domain, queries, bm25,
                              k=max(bm25.k, dataset.top_k), show_progress=show_progress)
    run, removed = remove_excluded(run, domain.excluded)
    requests = _with_text(run, queries, domain, dataset.run)
    candidates, qrels = work / f"{dataset.name}.candidates.jsonl", work / f"{dataset.name}.qrels.txt"
    write_requests(candidates, requests)
    write_qrels(qrels, domain.qrels)
    return DatasetInputs(candidates, qrels, requests, removed)


def _read_first_stage(path: Path, queries: list[Query], domain: str) -> Run:
    """The run's ranking of each query; a query it lacks is an error (a run of another domain, or cut short)."""
    run = read_run(path)
    missing = [q.qid for q in queries if q.qid not in run]
    if missing:
        raise InputError(f"no ranking for {len(missing)} of BRIGHT {domain}'s queries (first: {missing[0]!r})", path,
                         field="qid")
    return {q.qid: run[q.qid] for q in queries}


def _with_text(run: Run, queries: list[Query], domain: BrightDomain, source: str | None) -> list[Request]:
    texts = document_texts(domain.documents_files, {docid for ranking in run.values() for docid, _ in ranking})
    requests = []
    for query in queries:
        candidates = []
        for docid, score in run[query.qid]:
            if docid not in texts:
                raise InputError(f"document {docid!r} is not among BRIGHT {domain.domain}'s documents",
                                 source or domain.documents_files[0].parent, field="docid")
            candidates.append(Candidate(docid, score, {"contents": texts[docid].strip() or EMPTY_DOCUMENT}))
        requests.append(Request(query, candidates))
    return requests
