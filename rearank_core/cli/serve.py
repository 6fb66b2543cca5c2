"""The ``serve`` command: the rerank HTTP API (``POST /v1/rerank``) over one reranker, loaded once at start."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated

import typer

from rearank_core.cli.common import ParamsOpt, QuietOpt, app, err, start, user_errors
from rearank_core.cli.options import (
    BackendOpt,
    BaseUrlOpt,
    BatchSizeOpt,
    ConcurrencyOpt,
    DtypeOpt,
    FirstPromptOpt,
    MaxNewTokensOpt,
    ModeOpt,
    ModelOpt,
    PromptOpt,
    ReasoningModelOpt,
    RetriesOpt,
    StepOpt,
    TimeoutOpt,
    TopKOpt,
    TruncateLengthOpt,
    TruncateUnitOpt,
    WindowOpt,
    rerank_config,
)
from rearank_core.errors import InputError

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command()
@user_errors
def serve(
    host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 opens the API to the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="REARANK_API_KEY", show_default=False,
        help="require 'Authorization: Bearer KEY' on /v1/; prefer the environment variable, a command line is "
             "visible to others")] = None,
    max_documents: Annotated[int, typer.Option(help="most documents per request")] = 1000,
    max_document_chars: Annotated[int, typer.Option(help="longest document (and query) in characters")] = 100_000,
    max_body_bytes: Annotated[int, typer.Option(help="largest request body in bytes (413 beyond)")] = 4_000_000,
    max_batch_queries: Annotated[int, typer.Option(help="most requests reranked together in one call")] = 32,
    max_batch_windows: Annotated[int | None, typer.Option(help="most windows in one call (a larger request goes "
                                                               "alone; default: no limit)")] = None,
    max_queue: Annotated[int, typer.Option(help="most requests waiting for the model (503 with Retry-After "
                                                "beyond)")] = 256,
    request_timeout: Annotated[float | None, typer.Option(help="seconds a request may take, queueing included (504 "
                                                               "beyond; default: no limit)")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="the model name responses carry (default: "
                                                                "the model)")] = None,
    window: WindowOpt = None,
    step: StepOpt = None,
    top_k: TopKOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    mode: ModeOpt = None,
    prompt: PromptOpt = None,
    first_prompt: FirstPromptOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    batch_size: BatchSizeOpt = None,
    dtype: DtypeOpt = None,
    truncate_unit: TruncateUnitOpt = None,
    truncate_length: TruncateLengthOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    reasoning_model: ReasoningModelOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Serve a rerank HTTP API (POST /v1/rerank, the Cohere / Jina shape) until Ctrl-C."""
    p = start(params, quiet)
    cfg = rerank_config(p.rerank, window=window, step=step, top_k=top_k, backend=backend, model=model, mode=mode,
                        prompt=prompt, first_prompt=first_prompt, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        dtype=dtype, truncate_unit=truncate_unit, truncate_length=truncate_length, base_url=base_url,
                        concurrency=concurrency, timeout=timeout, retries=retries, reasoning_model=reasoning_model)
    for option, value in (("--max-documents", max_documents), ("--max-document-chars", max_document_chars),
                          ("--max-body-bytes", max_body_bytes), ("--max-batch-queries", max_batch_queries),
                          ("--max-queue", max_queue), ("--max-batch-windows", max_batch_windows)):
        if value is not None and value < 1:
            raise InputError(f"must be at least 1, got {value}", field=option)
    if request_timeout is not None and request_timeout <= 0:
        raise InputError(f"must be positive, got {request_timeout:g}", field="--request-timeout")
    if api_key is not None and not api_key.strip():
        raise InputError("must not be empty (unset REARANK_API_KEY to serve without a key)", field="--api-key")
    from rearank_core.rerank import Reranker
    from rearank_core.serving import base_url as url_of
    from rearank_core.serving import bind_socket, create_app
    from rearank_core.serving import serve as run_server

    sock = bind_socket(host, port)  # before the model loads: a taken port fails in a second, not after minutes
    try:
        reranker = Reranker(cfg)
        try:
            api = create_app(reranker, model_name=served_model_name or cfg.model, api_key=api_key,
                             max_documents=max_documents, max_body_bytes=max_body_bytes,
                             max_document_chars=max_document_chars, max_batch_queries=max_batch_queries,
                             max_queue=max_queue, max_batch_windows=max_batch_windows,
                             request_timeout_s=request_timeout)
            if not api_key and not _is_loopback(host):
                log.warning("listening on %s without an API key: anyone who reaches this port can use the model", host)
            err.print(f"serving {served_model_name or cfg.model} ({cfg.backend} backend) at {url_of(sock)}/v1/rerank"
                      f"{' (API key required)' if api_key else ''}", highlight=False)
            run_server(api, sock, log_level="warning" if quiet else "info")
        finally:
            reranker.backend.close()
    finally:
        sock.close()
