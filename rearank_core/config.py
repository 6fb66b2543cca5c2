"""Typed views of params.yaml: one config object per stage, filled from its section."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rearank_core.errors import InputError
from rearank_core.evaluation import DEFAULT_METRICS

T = TypeVar("T")


@dataclass
class BM25Config:
    k1: float = 0.9
    b: float = 0.4
    k: int = 100
    threads: int = 2


@dataclass
class EvalConfig:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    rel_level: int = 1


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # default: SQLite under <project>/mlruns
    experiment: str = "rearank"


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml as a dict; a missing file gives the built-in defaults (empty sections)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {exc}", path, mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise InputError("expected a mapping of sections", path)
    return data


def section(params: dict[str, Any], name: str, cls: type[T], path: str | Path = "params.yaml") -> T:
    """Build ``cls`` from section ``name``; an unknown key is an error naming it (typos never pass silently)."""
    raw = params.get(name) or {}
    if not isinstance(raw, dict):
        raise InputError("expected a mapping", path, field=name)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            raise InputError(f"unknown key; known: {', '.join(known)}", path, field=f"{name}.{key}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**values)


@dataclass
class DemoConfig:
    """The main job's inputs, all carried in the repository."""

    corpus: str = "data/beir/scifact/corpus.jsonl"
    topics: str = "data/beir/scifact/queries.test.jsonl"
    qrels: str = "data/beir/scifact/qrels/test.tsv"
    rerank_candidates: str = "data/msmarco/dl19/rank_llm_BM25_retrieve_results_dl19.json"
    rerank_qrels: str = "data/msmarco/dl19/qrels.dl19-passage.txt"
    rerank_queries: int = 5  # the DL19 slice: first N queries ...
    rerank_top_k: int = 30  # ... and their top-K BM25 candidates (2 windows of 20, step 10)
