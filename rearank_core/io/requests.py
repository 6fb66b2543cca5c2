"""rank_llm Request JSONL (the candidates file) and RankGPT / rank_llm "retrieve results" JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rearank_core.errors import InputError
from rearank_core.io.files import (
    decoding_errors,
    iter_jsonl,
    open_text,
    require_str,
    write_jsonl,
)
from rearank_core.records import Candidate, Query, Request


def _score(value: Any, path: str | Path, line: int | None, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"expected a finite number, got {value!r}", path, line, field)
    return float(value)


def _check_unique(request: Request, path: str | Path, line: int | None, where: str) -> None:
    seen: set[str] = set()
    for i, cand in enumerate(request.candidates):
        if cand.docid in seen:
            raise InputError(
                f"document {cand.docid!r} appears twice in the candidates of query {request.query.qid!r}",
                path, line, f"{where}[{i}].docid",
            )
        seen.add(cand.docid)


def request_from_dict(obj: dict[str, Any], path: str | Path, line: int | None) -> Request:
    query = obj.get("query")
    if not isinstance(query, dict):
        raise InputError("missing or not an object", path, line, "query")
    try:
        qid = require_str(query, "qid", path, line)
        text = require_str(query, "text", path, line)
    except InputError as exc:
        raise InputError(exc.message, path, line, f"query.{exc.field}") from exc
    cands = obj.get("candidates")
    if not isinstance(cands, list):
        raise InputError("missing or not a list", path, line, "candidates")
    candidates = []
    for i, c in enumerate(cands):
        where = f"candidates[{i}]"
        if not isinstance(c, dict):
            raise InputError("expected an object", path, line, where)
        try:
            docid = require_str(c, "docid", path, line)
        except InputError as exc:
            raise InputError(exc.message, path, line, f"{where}.docid") from exc
        doc = c.get("doc")
        if not isinstance(doc, dict):
            raise InputError("missing or not an object", path, line, f"{where}.doc")
        cand = Candidate(docid, _score(c.get("score", 0.0), path, line, f"{where}.score"), doc)
        if not cand.contents.strip():
            raise InputError("no passage text (expected 'contents', or 'title'/'text')", path, line, f"{where}.doc")
        candidates.append(cand)
    request = Request(Query(qid, text), candidates)
    _check_unique(request, path, line, "candidates")
    return request


def read_requests(path: str | Path) -> list[Request]:
    """A candidates file: rank_llm Request JSONL, one query per line."""
    requests: list[Request] = []
    seen: dict[str, int] = {}
    for number, obj in iter_jsonl(path):
        request = request_from_dict(obj, path, number)
        qid = request.query.qid
        if qid in seen:
            raise InputError(f"duplicate query {qid!r} (first on line {seen[qid]})", path, number, "query.qid")
        seen[qid] = number
        requests.append(request)
    return requests


def write_requests(path: str | Path, requests: list[Request]) -> int:
    return write_jsonl(path, (r.to_dict() for r in requests))


def read_retrieve_results(path: str | Path) -> list[Request]:
    """RankGPT / rank_llm retrieve results: a JSON list of ``{query, hits: [{content, qid, docid, rank, score}]}``.
    Errors name the entry and hit index (the file is one JSON document)."""
    with open_text(path) as handle, decoding_errors(path):
        text = handle.read()
    if not text.strip():
        raise InputError("file is empty", path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", path, exc.lineno) from exc
    if not isinstance(data, list):
        raise InputError("expected a JSON list of {query, hits} entries", path)
    requests: list[Request] = []
    seen: set[str] = set()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise InputError("expected an object", path, field=f"[{i}]")
        if not isinstance(entry.get("query"), str) or not entry["query"].strip():
            raise InputError("missing or not a non-empty string", path, field=f"[{i}].query")
        hits = entry.get("hits")
        if not isinstance(hits, list) or not hits:
            raise InputError("missing, empty or not a list", path, field=f"[{i}].hits")
        qid = None
        candidates = []
        for j, hit in enumerate(hits):
            where = f"[{i}].hits[{j}]"
            if not isinstance(hit, dict):
                raise InputError("expected an object", path, field=where)
            for key in ("qid", "docid", "content"):
                try:
                    require_str(hit, key, path, None)
                except InputError as exc:
                    raise InputError(exc.message, path, field=f"{where}.{key}") from exc
            if qid is None:
                qid = str(hit["qid"])
            elif str(hit["qid"]) != qid:
                raise InputError(f"qid {hit['qid']!r} differs from the entry's first hit ({qid!r})", path, field=f"{where}.qid")
            candidates.append(Candidate(str(hit["docid"]), _score(hit.get("score", 0.0), path, None, f"{where}.score"),
                                        {"contents": hit["content"]}))
        assert qid is not None
        if qid in seen:
            raise InputError(f"duplicate query {qid!r}", path, field=f"[{i}].hits[0].qid")
        seen.add(qid)
        request = Request(Query(qid, entry["query"]), candidates)
        _check_unique(request, path, None, f"[{i}].hits")
        requests.append(request)
    return requests


def read_candidates(path: str | Path) -> list[Request]:
    """Either candidates format, told apart by the first non-blank character: '[' is retrieve-results JSON."""
    with open_text(path) as handle, decoding_errors(path):
        head = handle.read(4096).lstrip()
    if head.startswith("["):
        return read_retrieve_results(path)
    return read_requests(path)
