"""``create_app``: a rerank HTTP API over one loaded Reranker, in the shape RAG frameworks already call (Cohere's
and Jina's ``POST /v1/rerank``), plus ``GET /health``.

A listwise reranker returns a permutation, not scores: ``relevance_score`` is ``1 / (1 + rank)`` (rank 0 is the
best), so it lies in (0, 1], decreases strictly with rank, and says nothing beyond the order (the same score as
the MLflow model's, ``rearank_core.rerank.documents``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rearank_core.config import model_settings
from rearank_core.errors import BackendError
from rearank_core.rerank import Reranker
from rearank_core.serving.batcher import Batcher, BatcherClosed, DeadlineExceeded, QueueFull, Ranked
from rearank_core.serving.middleware import BearerAuth, BodyLimit
from rearank_core.serving.schema import (
    DocumentText,
    ErrorBody,
    FieldError,
    RerankBody,
    RerankMeta,
    RerankResponse,
    RerankResult,
    error_body,
    field_name,
)

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5  # what a refused client is told to wait: about one model call on the embedded model


class ApiError(Exception):
    """A refusal with its status code; ``errors`` name the fields at fault."""

    def __init__(self, status: int, message: str, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", [FieldError(field=field, message=message)])


def _check_limits(body: RerankBody, max_documents: int, max_document_chars: int) -> None:
    """The limits set when the app is made (pydantic checks the shape, which is fixed)."""
    if len(body.documents) > max_documents:
        raise _invalid("documents", f"at most {max_documents} documents per request, got {len(body.documents)}")
    if len(body.query) > max_document_chars:
        raise _invalid("query", f"longer than {max_document_chars} characters ({len(body.query)})")
    for i, text in enumerate(body.documents):
        if len(text) > max_document_chars:
            raise _invalid(f"documents[{i}]", f"longer than {max_document_chars} characters ({len(text)})")


def _validation_error(error: dict[str, Any]) -> FieldError:
    if error["type"] == "json_invalid":
        return FieldError(field="body", message=f"invalid JSON: {error.get('ctx', {}).get('error', error['msg'])}")
    return FieldError(field=field_name(error["loc"]), message=error["msg"].removeprefix("Value error, "))


async def _ranked(batcher: Batcher, query: str, documents: list[str], timeout_s: float | None) -> Ranked:
    """The request's ranking from the batcher, its failures turned into what a client may see (no traceback). Past
    ``timeout_s`` the client gets 504; a request whose call had not started is dropped unanswered."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(batcher.submit(query, documents, timeout_s)), timeout_s)
    except QueueFull as exc:
        raise ApiError(503, f"{exc}; try again later", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except (DeadlineExceeded, TimeoutError):
        raise ApiError(504, f"not answered within the server's request timeout of {timeout_s:g} s") from None
    except BatcherClosed as exc:
        raise ApiError(503, f"{exc}; try again later") from None
    except BackendError as exc:
        raise ApiError(502, f"the model backend failed: {exc}") from None
    except Exception:
        log.exception("reranking failed")
        raise ApiError(500, "internal error while reranking (details in the server log)") from None


def create_app(reranker: Reranker, *, model_name: str, api_key: str | None = None, max_documents: int = 1000,
               max_body_bytes: int = 4_000_000, max_document_chars: int = 100_000,
               max_batch_queries: int = 32, max_queue: int = 256, max_batch_windows: int | None = None,
               request_timeout_s: float | None = None) -> FastAPI:
    """The API over ``reranker``, which the app's batcher thread owns while the app runs (start to shutdown).

    ``model_name``: the name every response carries (a request's ``model`` field is ignored, so clients
    configured for a hosted model name work unchanged). ``api_key``: when set, paths under /v1/ require
    ``Authorization: Bearer KEY`` (401 otherwise); /health stays open for probes. ``max_batch_queries``: the
    most requests reranked together in one ``Reranker.rerank`` call, ``max_batch_windows`` the most windows;
    ``max_queue``: requests waiting beyond it are refused (503, Retry-After); ``request_timeout_s``: a request not
    answered by then gets 504 (dropped unanswered if its call had not started)."""
    for name, value in (("max_documents", max_documents), ("max_body_bytes", max_body_bytes),
                        ("max_document_chars", max_document_chars)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if request_timeout_s is not None and request_timeout_s <= 0:
        raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s}")
    batcher = Batcher(reranker, max_batch_queries, max_queue, max_batch_windows)
    settings = model_settings(reranker.config)  # what shapes the answers: /health and each response's meta say it

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.close)

    app = FastAPI(title="rearank", summary="Listwise LLM reranking in the Cohere / Jina rerank API shape",
                  lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)  # added last, so it runs first: no body read unauthenticated

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body([_validation_error(e) for e in exc.errors()]), 422)

    @app.exception_handler(ApiError)
    async def _on_refusal(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.errors, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _on_http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body([], str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.get("/health")
    async def health() -> JSONResponse:
        """``ok`` while the reranker's worker runs (503 otherwise); ``batcher``: calls made vs requests served."""
        running = batcher.running
        body = {"status": "ok" if running else "stopped", "model": model_name, "backend": reranker.backend.name,
                "settings": settings, "batcher": batcher.stats()}
        return JSONResponse(body, 200 if running else 503)

    refusals: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 413, 422, 502, 503, 504)}

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_unset=True, responses=refusals)
    async def rerank(body: RerankBody) -> RerankResponse:
        """The documents best first: ``index`` is each one's position in the request, ``relevance_score`` is
        1 / (1 + rank). Requests that arrive while the model is busy are reranked together."""
        started = time.perf_counter()
        _check_limits(body, max_documents, max_document_chars)
        ranked = await _ranked(batcher, body.query, body.documents, request_timeout_s)
        results = [RerankResult(index=i, relevance_score=score,
                                **({"document": DocumentText(text=body.documents[i])} if body.return_documents else {}))
                   for i, score in ranked.ranking.scored(body.top_n)]
        meta = RerankMeta(windows=ranked.ranking.windows, format_valid_rate=ranked.ranking.format_valid_rate,
                          batch_queries=ranked.batch_queries, latency_s=round(time.perf_counter() - started, 4),
                          settings=settings)
        return RerankResponse(id=uuid.uuid4().hex, model=model_name, results=results, meta=meta)

    return app
