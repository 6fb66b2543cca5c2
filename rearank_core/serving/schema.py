"""Request and response bodies of ``POST /v1/rerank``, in the shape of the Cohere and Jina rerank APIs, and the
one error body every refusal uses: ``{"message": ..., "errors": [{"field": "documents[3]", "message": ...}]}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainValidator, field_validator

DOCUMENT_SHAPE = 'must be a string or an object {"text": string}'


class DocumentText(BaseModel):
    text: str


def _document_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    raise ValueError(DOCUMENT_SHAPE)


# One error per bad document at ``documents[i]``, where a plain union would report one per member type.
Document = Annotated[str, PlainValidator(_document_text, json_schema_input_type=str | DocumentText)]


class RerankBody(BaseModel):
    """Fields other APIs add (``rank_fields``, ``max_chunks_per_doc``...) are accepted and ignored."""

    query: str
    documents: list[Document] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1, description="return the best N only (default: all)")
    return_documents: bool = False
    model: str | None = Field(None, description="ignored: the server answers with the model it loaded")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class RerankResult(BaseModel):
    index: int = Field(description="the document's position in the request")
    relevance_score: float = Field(description="1 / (1 + rank): a listwise reranker orders, it does not score")
    document: DocumentText | None = None


class RerankMeta(BaseModel):
    windows: int = Field(description="windows the model ranked for this request")
    format_valid_rate: float | None = Field(description="share of those windows whose answer parsed (or was "
                                                        "repaired); null when no window ran, and in first mode (no answer to parse)")
    batch_queries: int = Field(description="requests reranked in the same model call, this one included")
    latency_s: float = Field(description="seconds from arrival to answer, queueing included")
    settings: dict[str, Any] = Field(description="the rerank settings the model runs with (prompt, window, step, "
                                                 "top_k, max_new_tokens, truncation): a registered model's own")


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: RerankMeta


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    message: str
    errors: list[FieldError] = []


def field_name(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a client reads it: ``("body", "documents", 3)`` -> ``documents[3]``."""
    name = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


def error_body(errors: list[FieldError], message: str | None = None) -> dict[str, Any]:
    summary = message or "; ".join(f"{e.field}: {e.message}" for e in errors)
    return ErrorBody(message=summary, errors=errors).model_dump()
