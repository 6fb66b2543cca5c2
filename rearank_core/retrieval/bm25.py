"""BM25 with Lucene through pyserini: index building and batched search.

Indexing uses pyserini's ``LuceneIndexer``. Search calls Anserini's ``SimpleSearcher`` from pyserini's
bundled jar directly, the same Java class ``pyserini.search.lucene.LuceneSearcher`` wraps: importing that
Python module also imports pyserini's neural encoders (torch, transformers, onnxruntime), about 24 s on
this CPU, for nothing a BM25 search needs. ``tests/test_retrieval.py`` checks both give identical runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rearank_core.errors import InputError
from rearank_core.io.collection import Document
from rearank_core.progress import progress_bar
from rearank_core.records import Candidate, Query, Request, Run
from rearank_core.retrieval.jvm import start_jvm

INDEX_META = "rearank-index.json"


@dataclass(frozen=True)
class IndexStats:
    documents: int
    seconds: float


def _quiet_java_logging() -> None:
    from jnius import autoclass

    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(
        autoclass("org.apache.logging.log4j.Level").WARN
    )


def build_index(docs: Iterable[Document], index_dir: str | Path, threads: int = 2, batch_size: int = 2000,
                total: int | None = None, show_progress: bool = True) -> IndexStats:
    """Build a Lucene index (Porter stemming, stopwords removed, raw JSON stored) from documents.

    The index is written to a temporary folder beside ``index_dir`` and moved into place only when complete,
    so an interrupted build never leaves something that looks like an index."""
    start_jvm()
    _quiet_java_logging()
    from pyserini.index.lucene import LuceneIndexer

    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.", dir=index_dir.parent))
    started = time.perf_counter()
    count = 0
    try:
        indexer = LuceneIndexer(args=["-index", str(tmp / "index"), "-storeRaw"], threads=threads)
        batch: list[dict[str, str]] = []
        with progress_bar("indexing", total=total, unit="docs", enabled=show_progress) as bar:
            for doc in docs:
                batch.append({"id": doc.docid, "contents": doc.contents})
                if len(batch) >= batch_size:
                    indexer.add_batch_dict(batch)
                    count += len(batch)
                    bar.update(len(batch))
                    batch = []
            if batch:
                indexer.add_batch_dict(batch)
                count += len(batch)
                bar.update(len(batch))
        indexer.close()
        if count == 0:
            raise InputError("the corpus holds no documents")
        seconds = time.perf_counter() - started
        (tmp / "index" / INDEX_META).write_text(json.dumps({"documents": count, "seconds": round(seconds, 3)}))
        if index_dir.exists():
            shutil.rmtree(index_dir)
        (tmp / "index").rename(index_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return IndexStats(count, seconds)


def check_index(index_dir: str | Path) -> Path:
    """An existing Lucene index folder, or an InputError saying why not."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise InputError("index folder not found", index_dir)
    if not any(index_dir.glob("segments_*")):
        raise InputError("not a Lucene index (no segments_N file); build one with 'rearank index'", index_dir)
    return index_dir


class BM25Searcher:
    """Batched BM25 search over a Lucene index, returning passage text with each hit."""

    def __init__(self, index_dir: str | Path, k1: float = 0.9, b: float = 0.4):
        self.index_dir = check_index(index_dir)
        start_jvm()
        _quiet_java_logging()
        from jnius import autoclass

        self._lists = autoclass("java.util.ArrayList")
        try:
            self._searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.index_dir))
        except Exception as exc:  # jnius raises JavaException for a corrupt index
            raise InputError(f"cannot open Lucene index: {exc}", index_dir) from exc
        self._searcher.set_bm25(float(k1), float(b))

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def _batch(self, queries: list[Query], k: int, threads: int) -> dict[str, list]:
        texts, qids = self._lists(), self._lists()
        for q in queries:
            texts.add(q.text)
            qids.add(q.qid)
        results = self._searcher.batch_search(texts, qids, int(k), int(threads))
        return {entry.getKey(): entry.getValue() for entry in results.entrySet().toArray()}

    def search(self, queries: list[Query], k: int = 100, threads: int = 2, batch_size: int = 64,
               with_text: bool = False, show_progress: bool = True) -> Iterator[tuple[Query, list[Candidate]]]:
        """Yield each query with its top-k hits, in the order of ``queries``."""
        with progress_bar("retrieving", total=len(queries), unit="queries", enabled=show_progress) as bar:
            for i in range(0, len(queries), batch_size):
                chunk = queries[i:i + batch_size]
                hits = self._batch(chunk, k, threads)
                for q in chunk:
                    cands = []
                    for hit in hits.get(q.qid, []):
                        doc: dict[str, str] = {}
                        if with_text:
                            raw = hit.lucene_document.get("raw")
                            doc = {"contents": json.loads(raw)["contents"] if raw else ""}
                        cands.append(Candidate(hit.docid, float(hit.score), doc))
                    yield q, cands
                bar.update(len(chunk))


def bm25_run(index_dir: str | Path, queries: list[Query], k: int = 100, k1: float = 0.9, b: float = 0.4,
             threads: int = 2, with_text: bool = False, show_progress: bool = True) -> tuple[Run, list[Request]]:
    """The BM25 run for the queries and, when ``with_text``, the candidates (requests) carrying passage text."""
    searcher = BM25Searcher(index_dir, k1, b)
    run: Run = {}
    requests: list[Request] = []
    for query, cands in searcher.search(queries, k, threads, with_text=with_text, show_progress=show_progress):
        run[query.qid] = [(c.docid, c.score) for c in cands]
        if with_text:
            requests.append(Request(query, cands))
    return run, requests
