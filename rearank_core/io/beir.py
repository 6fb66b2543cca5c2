"""BEIR folders: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rearank_core.errors import InputError
from rearank_core.io.files import iter_jsonl, iter_lines, require_str
from rearank_core.io.trec import add_judgment
from rearank_core.records import Qrels, Query


def read_beir_queries(path: str | Path) -> list[Query]:
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for number, obj in iter_jsonl(path):
        qid = require_str(obj, "_id", path, number)
        text = require_str(obj, "text", path, number)
        if qid in seen:
            raise InputError(f"duplicate query id {qid!r} (first on line {seen[qid]})", path, number, "_id")
        seen[qid] = number
        queries.append(Query(qid, " ".join(text.split())))
    return queries


def read_beir_qrels(path: str | Path) -> Qrels:
    """BEIR qrels TSV: ``query-id<TAB>corpus-id<TAB>score`` with an optional header line."""
    qrels: Qrels = {}
    for number, line in iter_lines(path):
        cols = line.split("\t")
        if number == 1 and cols[0] == "query-id":
            continue
        if len(cols) != 3:
            raise InputError(f"expected 3 tab-separated columns 'query-id corpus-id score', got {len(cols)}", path, number)
        qid, docid, rel = (c.strip() for c in cols)
        add_judgment(qrels, qid, docid, rel, path, number, ("corpus-id", "score"))
    return qrels


@dataclass(frozen=True)
class BeirFolder:
    corpus: Path
    queries: list[Query]
    qrels: Qrels
    qrels_path: Path


def read_beir_folder(folder: str | Path, split: str = "test") -> BeirFolder:
    """A BEIR dataset folder; the queries are those the split's qrels judge, in the queries file's order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("BEIR folder not found", folder)
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        raise InputError("missing corpus.jsonl", folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InputError(f"missing qrels/{split}.tsv", folder)
    for name in ("queries.jsonl", f"queries.{split}.jsonl"):
        if (folder / name).is_file():
            queries_path = folder / name
            break
    else:
        raise InputError(f"missing queries.jsonl (or queries.{split}.jsonl)", folder)
    qrels = read_beir_qrels(qrels_path)
    queries = [q for q in read_beir_queries(queries_path) if q.qid in qrels]
    missing = sorted(set(qrels) - {q.qid for q in queries})
    if missing:
        raise InputError(f"{len(missing)} judged query id(s) have no text in {queries_path}: {missing[:5]}", qrels_path)
    return BeirFolder(corpus, queries, qrels, qrels_path)
