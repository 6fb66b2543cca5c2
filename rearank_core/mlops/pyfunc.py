"""The reranker as an MLflow pyfunc model, so ``mlflow models serve -m models:/NAME@champion`` answers rankings.

Input: one row per query with columns ``query`` (string), ``documents`` (list of strings) and optionally
``top_n``; output: per row ``{"results": [{"index": i, "relevance_score": s}, ...]}`` best first (see
``rearank_core.rerank.documents`` for what the score means). The model's ``model_config`` holds the rerank
settings it was evaluated with (window, step, prompt, truncation, generation limit); its ``model`` artifact
is the reranker's folder (a LoRA adapter or full weights). Loading needs this package installed."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import mlflow.pyfunc
import pydantic

from rearank_core.config import RerankConfig, validated
from rearank_core.rerank import Reranker
from rearank_core.rerank.documents import rerank_documents


class RerankInput(pydantic.BaseModel):
    """One query to rerank (MLflow validates each row against this type hint before ``predict`` runs)."""

    query: str = pydantic.Field(min_length=1)
    documents: list[str] = pydantic.Field(min_length=1)
    top_n: int | None = pydantic.Field(default=None, ge=1)


class RankedResult(pydantic.BaseModel):
    index: int
    relevance_score: float


class RerankOutput(pydantic.BaseModel):
    results: list[RankedResult]


class RerankerModel(mlflow.pyfunc.PythonModel):
    """Loads the reranker once; every ``predict`` call reranks all its rows together."""

    def load_context(self, context: Any) -> None:
        known = {f.name for f in fields(RerankConfig)}
        settings = {k: v for k, v in (context.model_config or {}).items() if k in known}
        self.reranker = Reranker(validated(RerankConfig(**{**settings, "model": context.artifacts["model"]}), "rerank"))

    def predict(self, model_input: list[RerankInput], params: dict[str, Any] | None = None) -> list[RerankOutput]:
        rankings = rerank_documents(self.reranker, [(row.query, row.documents) for row in model_input])
        return [RerankOutput(results=[RankedResult(index=index, relevance_score=score)
                                      for index, score in ranking.scored(row.top_n)])
                for row, ranking in zip(model_input, rankings)]
