"""Document collections to index: BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) or pyserini
JsonCollection (``id``, ``contents``) JSONL, as one file or a folder of files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rearank_core.errors import InputError
from rearank_core.io.files import iter_jsonl, require_str

_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


@dataclass(frozen=True, slots=True)
class Document:
    docid: str
    contents: str


def corpus_files(path: str | Path) -> list[Path]:
    """The JSONL files a corpus path stands for: the file itself, a BEIR folder's corpus.jsonl,
    or every JSONL file of a JsonCollection folder in name order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise InputError("corpus not found", path)
    beir = path / "corpus.jsonl"
    if beir.is_file():
        return [beir]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))
    if not files:
        raise InputError("folder holds no corpus.jsonl and no *.jsonl/*.json files", path)
    return files


def _document(obj: dict, path: Path, line: int) -> Document:
    if "_id" in obj:  # BEIR: title and text are joined, as pyserini's BEIR "flat" indexes do
        docid = require_str(obj, "_id", path, line)
        text = require_str(obj, "text", path, line, allow_empty=True)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise InputError(f"expected a string, got {type(title).__name__}", path, line, "title")
        contents = f"{title} {text}".strip()
        if not contents:
            raise InputError("both title and text are empty", path, line, "text")
        return Document(docid, contents)
    if "id" in obj:
        return Document(require_str(obj, "id", path, line), require_str(obj, "contents", path, line))
    raise InputError("missing: expected '_id' (BEIR corpus) or 'id' (JsonCollection)", path, line, "id")


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """Every document of the corpus, validated; a docid seen twice is an error naming both lines."""
    seen: dict[str, tuple[Path, int]] = {}
    for file in corpus_files(path):
        for number, obj in iter_jsonl(file):
            doc = _document(obj, file, number)
            if doc.docid in seen:
                first_file, first_line = seen[doc.docid]
                raise InputError(f"duplicate docid {doc.docid!r} (first at {first_file}:{first_line})", file, number, "id")
            seen[doc.docid] = (file, number)
            yield doc
