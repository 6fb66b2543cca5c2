"""BRIGHT in its published Hugging Face layout (dataset ``xlangai/BRIGHT``): configs ``examples`` and
``documents`` (``long_documents`` for the long setting), one parquet split per domain, e.g.
``examples/biology-00000-of-00001.parquet``. Read from a local copy of that folder or from the HF cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rearank_core.config import BRIGHT_DOMAINS
from rearank_core.errors import InputError
from rearank_core.io.collection import Document
from rearank_core.records import Qrels, Query

BRIGHT_REPO = "xlangai/BRIGHT"
DOMAINS = BRIGHT_DOMAINS  # defined in config, which checks a suite entry's domain on load
_NONE = "N/A"  # BRIGHT's marker for an empty id list


@dataclass(frozen=True)
class BrightDomain:
    domain: str
    queries: list[Query]
    qrels: Qrels
    excluded: dict[str, set[str]]
    documents_files: list[Path]


def resolve_bright_root(source: str | Path | None, allow_download: bool = False) -> Path:
    """A folder holding ``examples/`` and ``documents/``: ``source`` itself, or the HF cache snapshot of
    xlangai/BRIGHT (downloaded only when ``allow_download`` and a hub is reachable)."""
    if source is not None:
        root = Path(source)
        if not (root / "examples").is_dir():
            raise InputError("not a BRIGHT folder: expected an 'examples/' subfolder (Hugging Face layout)", root)
        return root
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(BRIGHT_REPO, repo_type="dataset", local_files_only=not allow_download))
    except LocalEntryNotFoundError as exc:
        raise InputError(f"{BRIGHT_REPO} is not in the Hugging Face cache; pass a local folder or allow downloading") from exc


def documents_unavailable(source: str | Path | None, domain: str) -> str | None:
    """Why the examples and documents of ``domain`` cannot be read from ``source`` (a local folder, or None for the
    HF cache of xlangai/BRIGHT, never downloaded), naming where it looked; None when they can."""
    if source is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        where = f"the Hugging Face cache of {BRIGHT_REPO} ({HF_HUB_CACHE})"
    else:
        where = f"folder {source}"
    try:
        root = resolve_bright_root(source)
    except InputError:
        return f"BRIGHT is not in {where}: expected its Hugging Face layout (examples/, documents/)"
    for config in ("examples", "documents"):
        if not any((root / config).glob(f"{domain}-*.parquet")):
            return f"no {config}/{domain}-*.parquet in {where}"
    return None


def _split_files(root: Path, config: str, domain: str) -> list[Path]:
    files = sorted((root / config).glob(f"{domain}-*.parquet"))
    if not files:
        raise InputError(f"no parquet files for split '{domain}' (expected {config}/{domain}-00000-of-0000N.parquet)", root / config)
    return files


def _open_parquet(file: Path, read_table: bool):
    """The parquet table (or, for streaming, the ParquetFile); a file that is not parquet is an InputError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(file) if read_table else pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read parquet ({exc})", file) from exc


def _id_list(value: object, path: Path, row: int, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError("expected a list of strings", path, row, field)
    return [v for v in value if v != _NONE]


def load_bright_domain(root: str | Path, domain: str, long: bool = False) -> BrightDomain:
    """Queries, qrels (``gold_ids``, or ``gold_ids_long`` in the long setting) and exclusions of one domain.
    Row numbers in errors are 1-based rows of the parquet split."""
    if domain not in DOMAINS:
        raise InputError(f"unknown BRIGHT domain {domain!r}; one of {', '.join(DOMAINS)}")
    root = Path(root)
    gold_field = "gold_ids_long" if long else "gold_ids"
    queries: list[Query] = []
    qrels: Qrels = {}
    excluded: dict[str, set[str]] = {}
    for file in _split_files(root, "examples", domain):
        table = _open_parquet(file, read_table=True)
        for column in ("id", "query", "excluded_ids", gold_field):
            if column not in table.column_names:
                raise InputError("missing column", file, field=column)
        for row, ex in enumerate(table.to_pylist(), start=1):
            qid, text = ex["id"], ex["query"]
            if not isinstance(qid, str) or not qid:
                raise InputError("missing or empty", file, row, "id")
            if not isinstance(text, str) or not text.strip():
                raise InputError("missing or empty", file, row, "query")
            if qid in qrels:
                raise InputError(f"duplicate query id {qid!r}", file, row, "id")
            queries.append(Query(qid, text))
            gold = _id_list(ex[gold_field], file, row, gold_field)
            if not gold:
                raise InputError("no relevant documents listed", file, row, gold_field)
            qrels[qid] = {docid: 1 for docid in gold}
            excluded[qid] = set(_id_list(ex["excluded_ids"], file, row, "excluded_ids"))
    documents = _split_files(root, "long_documents" if long else "documents", domain)
    return BrightDomain(domain, queries, qrels, excluded, documents)


def iter_bright_documents(files: list[Path]) -> Iterator[Document]:
    """Documents of a domain (columns ``id`` and ``content``), streamed in record batches."""
    seen: set[str] = set()
    for file in files:
        parquet = _open_parquet(file, read_table=False)
        for column in ("id", "content"):
            if column not in parquet.schema_arrow.names:
                raise InputError("missing column", file, field=column)
        row = 0
        for batch in parquet.iter_batches(columns=["id", "content"], batch_size=4096):
            for docid, content in zip(batch.column("id").to_pylist(), batch.column("content").to_pylist()):
                row += 1
                if not isinstance(docid, str) or not docid:
                    raise InputError("missing or empty", file, row, "id")
                if not isinstance(content, str):
                    raise InputError("missing", file, row, "content")
                if docid in seen:
                    raise InputError(f"duplicate document id {docid!r}", file, row, "id")
                seen.add(docid)
                yield Document(docid, content)


def document_texts(files: list[Path], wanted: set[str]) -> dict[str, str]:
    """The content of each document in ``wanted`` (one streaming pass over a domain's documents)."""
    return {doc.docid: doc.contents for doc in iter_bright_documents(files) if doc.docid in wanted}
