"""BM25 over a BRIGHT domain: one Lucene index of the domain's documents, built on first use and reused while the
documents it was built from are unchanged (BRIGHT's larger domains take minutes to index)."""

from __future__ import annotations

import json
from pathlib import Path

from rearank_core.config import BM25Config
from rearank_core.io.bright import iter_bright_documents
from rearank_core.io.files import write_json
from rearank_core.records import Query, Run
from rearank_core.retrieval.bm25 import bm25_run, build_index


def domain_index(files: list[Path], folder: str | Path, threads: int = 2, show_progress: bool = True) -> Path:
    """``<folder>/index``, the Lucene index of the documents in ``files``; built when missing or when the files
    (names and sizes, in ``<folder>/index.source.json``) differ from those it was built from."""
    folder = Path(folder)
    index, source = folder / "index", folder / "index.source.json"
    stamp = [{"file": f.name, "bytes": f.stat().st_size} for f in files]
    if index.is_dir() and source.is_file() and json.loads(source.read_text(encoding="utf-8")) == stamp:
        return index
    build_index(iter_bright_documents(files), index, threads=threads, show_progress=show_progress)
    write_json(source, stamp)
    return index


def bright_bm25_run(files: list[Path], folder: str | Path, queries: list[Query], cfg: BM25Config, k: int,
                    show_progress: bool = True) -> Run:
    """BM25's top-``k`` for each query over the domain's documents (the index in ``folder``, built once)."""
    index = domain_index(files, folder, cfg.threads, show_progress)
    run, _ = bm25_run(index, queries, k=k, k1=cfg.k1, b=cfg.b, threads=cfg.threads, show_progress=show_progress)
    return run
