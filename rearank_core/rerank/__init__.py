"""Listwise reranking: sliding windows (``window``), the cross-query
scheduler behind ``Reranker`` (``scheduler``) and the run's figures (``summary``)."""

from rearank_core.rerank.scheduler import Reranker
from rearank_core.rerank.summary import RerankSummary

__all__ = ["Reranker", "RerankSummary"]
