"""The rerank options, defined once for every command that reranks (``rerank``, ``evaluate-model``, ``serve``).

Each defaults to None, meaning params.yaml's ``rerank`` section decides; ``rerank_config`` lays the given ones
over that section with the same checks as on load, before any model loads. A registered model (``models:/...``)
brings the settings it was evaluated with, which take the place of params.yaml's; options still win."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from rearank_core.config import MODEL_SETTINGS, RerankConfig, field_help, override, validated
from rearank_core.io.mlflow_store import is_registry_uri, pinned_registry_uri, registered_settings

log = logging.getLogger(__name__)

H = {key: f"{text} (default: params rerank.{key})" for key, text in field_help(RerankConfig).items()}

WindowOpt = Annotated[int | None, typer.Option(help=H["window"])]
StepOpt = Annotated[int | None, typer.Option(help=H["step"])]
TopKOpt = Annotated[int | None, typer.Option(help=H["top_k"])]
BackendOpt = Annotated[str | None, typer.Option(help=H["backend"])]
ModelOpt = Annotated[str | None, typer.Option(help=H["model"])]
PromptOpt = Annotated[str | None, typer.Option(help=H["prompt"])]
ModeOpt = Annotated[str | None, typer.Option(help=H["mode"])]
FirstPromptOpt = Annotated[str | None, typer.Option(help=H["first_prompt"])]
MaxNewTokensOpt = Annotated[int | None, typer.Option(help=H["max_new_tokens"])]
BatchSizeOpt = Annotated[int | None, typer.Option(help=H["batch_size"])]
DtypeOpt = Annotated[str | None, typer.Option(help=H["dtype"])]
TruncateUnitOpt = Annotated[str | None, typer.Option(help=H["truncate_unit"])]
TruncateLengthOpt = Annotated[int | None, typer.Option(help=H["truncate_length"])]
BaseUrlOpt = Annotated[str | None, typer.Option(help=H["base_url"])]
ConcurrencyOpt = Annotated[int | None, typer.Option(help=H["concurrency"])]
TimeoutOpt = Annotated[float | None, typer.Option(help=H["timeout_s"])]
RetriesOpt = Annotated[int | None, typer.Option(help=H["max_retries"])]
ReasoningModelOpt = Annotated[bool | None, typer.Option("--reasoning-model/--no-reasoning-model",
                                                        help=H["reasoning_model"])]


def rerank_config(base: RerankConfig, *, timeout: float | None = None, retries: int | None = None,
                  **options: Any) -> RerankConfig:
    """``base`` with every option that was given; ``timeout`` and ``retries`` are the options' names for
    ``timeout_s`` and ``max_retries``. When the model is a registry URI, the settings its version was evaluated
    with replace ``base``'s (an option that differs from one of them is logged)."""
    model = options.get("model") or base.model
    if is_registry_uri(model):
        pinned = pinned_registry_uri(model)  # the settings and the weights of one version, whatever the alias does
        registered = {k: v for k, v in registered_settings(pinned, Path(base.model_cache)).items()
                      if k in MODEL_SETTINGS}
        for key, value in registered.items():
            if options.get(key) is not None and options[key] != value:
                log.warning("%s (%s) was evaluated with %s %s; running it with --%s %s as asked", model, pinned, key,
                            value, key.replace("_", "-"), options[key])
        base = validated(replace(base, **registered, model=pinned), "rerank")
        options["model"] = pinned
    return override(base, "rerank", **options, timeout_s=timeout, max_retries=retries)
