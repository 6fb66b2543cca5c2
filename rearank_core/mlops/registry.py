"""The MLflow model registry: register a reranker with its metrics, move ``champion`` through a gate, roll back.

Every registered version gets alias ``candidate``. ``champion`` moves only through ``promote``, whose decision
(promoted or refused, and why) is recorded on the version as tags and in its description. Earlier champions are
kept, newest last, in the registered model's tag ``rearank.champion_history`` so ``rollback`` can restore the
previous one. Each change of ``champion`` is a single alias call made after the history is written, and a
failure of that call restores the history tag: a promotion or rollback that fails half way leaves the aliases (and
the history) as they were; the decision is recorded once the alias has moved.

Promotions and rollbacks of one registered model run one at a time, wherever they run (``promotion_lock``): two
pipelines sharing an MLflow server each promote the version they registered, and neither decision is lost."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rearank_core.config import RegistryConfig
from rearank_core.errors import InputError
from rearank_core.mlops.tracking import metric_key

CANDIDATE = "candidate"
CHAMPION = "champion"
HISTORY_TAG = "rearank.champion_history"
GATE_TAG = "rearank.gate"
FINGERPRINT_TAG = "rearank.fingerprint"
LOCK_SUFFIX = ".promotion-lock"
STALE_LOCK_S = 600  # a lock older than this was left by a holder that died: it is broken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What the gate (or a rollback) decided, as recorded on the version."""

    action: str  # promote | rollback
    moved: bool
    version: str
    champion_before: str | None
    champion_after: str | None
    reason: str
    metric: str
    candidate_value: float | None = None
    champion_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(uri)


def gate_metric(cfg: RegistryConfig) -> str:
    """The version tag the gate reads, as the evaluation logs it: ``ndcg_at_10_dl19``."""
    return f"{metric_key(cfg.metric)}_{cfg.dataset}"


def _alias(mlflow_client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _float_tag(version: Any, key: str) -> float | None:
    value = (version.tags or {}).get(key)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # "not evaluated: ..." is recorded as text, never as a number


def _registered_model(mlflow_client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException:
        raise InputError(f"no registered model {name!r} in the tracking store", field="registry.name") from None


def _history(mlflow_client: Any, name: str) -> list[str]:
    raw = _registered_model(mlflow_client, name).tags.get(HISTORY_TAG)
    return list(json.loads(raw)) if raw else []


def find_version(mlflow_client: Any, name: str, fingerprint: str) -> Any | None:
    """The version already registered from the same model files and evaluation, if any (a rerun registers
    nothing new)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if (v.tags or {}).get(FINGERPRINT_TAG) == fingerprint), None)


# What loads a model (Hugging Face and peft conventions): weights, configs, tokenizer, chat template, the model card.
# A training folder also holds checkpoint-*/ (optimizer state included), training_args.bin and the job marker:
# none of that is the model, and at 7B the checkpoints are ~100 GB a version.
MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json",
               "adapter_model.bin", "config.json", "generation_config.json", "adapter_config.json", "tokenizer*",
               "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model", "chat_template.*",
               "README.md")


def stage_model(model_dir: Path, dest: Path) -> Path:
    """``dest`` holding exactly the files of ``model_dir`` that load the model (``MODEL_FILES``, top level only),
    hard-linked where the file system allows (no copy of the weights), else copied."""
    dest.mkdir(parents=True)
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in MODEL_FILES):
            try:
                os.link(path, dest / path.name)
            except OSError:
                shutil.copy2(path, dest / path.name)
    if not any(dest.glob("*.safetensors")) and not any(dest.glob("*.bin")):
        raise InputError("no model weights (*.safetensors or *.bin) in the model folder", model_dir, field="model")
    return dest


def _pickle_notice(record: logging.LogRecord) -> bool:
    """MLflow's notice that a ``python_model`` object is serialised with CloudPickle, left out: ours is a class of
    this package, pickled by reference (loading imports it from the installed package), so there is nothing in it
    for a user to act on."""
    return not record.getMessage().startswith("Passing a Python object as `python_model` causes it to be serialized")


def register(mlflow_module: Any, model_dir: str | Path, name: str, settings: dict[str, Any], tags: dict[str, str],
             fingerprint: str, pip_requirements: list[str]) -> Any:
    """Log ``model_dir`` as a pyfunc reranker in the active MLflow run, register it under ``name`` with ``tags``,
    and point ``candidate`` at it. Returns the model version."""
    from rearank_core.mlops.pyfunc import RerankerModel

    # The signature comes from predict's type hints; no input example, which MLflow would run through the model.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(_pickle_notice)
    try:
        info = mlflow_module.pyfunc.log_model(
            name="reranker", python_model=RerankerModel(), artifacts={"model": str(model_dir)}, model_config=settings,
            pip_requirements=pip_requirements, registered_model_name=name)
    finally:
        pyfunc_log.removeFilter(_pickle_notice)
    registry = mlflow_module.MlflowClient()
    version = str(info.registered_model_version)
    for key, value in {**tags, FINGERPRINT_TAG: fingerprint}.items():
        registry.set_model_version_tag(name, version, key, value)
    registry.set_registered_model_alias(name, CANDIDATE, version)
    return registry.get_model_version(name, version)


@contextmanager
def promotion_lock(mlflow_client: Any, name: str, wait_s: float = 300.0) -> Iterator[None]:
    """Hold the promotion lock of ``name`` across every client of the same MLflow server. MLflow offers no
    compare-and-set on tags, but creating a registered model is atomic on its server (the name is unique in its
    database), so the lock is a registered model ``<name>.promotion-lock``: created to take it, deleted to release
    it. A holder waits (backing off) up to ``wait_s``; a lock older than STALE_LOCK_S is broken, as its holder died
    without releasing it."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    deadline, pause = time.monotonic() + wait_s, 0.1
    while True:
        try:
            mlflow_client.create_registered_model(lock, description=f"held by {socket.gethostname()} pid {os.getpid()}")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            age = time.time() - mlflow_client.get_registered_model(lock).creation_timestamp / 1000
        except MlflowException:
            continue  # released in between: take it now
        if age > STALE_LOCK_S:
            log.warning("breaking %s: held for %.0f s by a promotion that never released it", lock, age)
            mlflow_client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise InputError(f"registered model {name!r}: another promotion has held {lock} for {age:.0f} s; "
                             "try again when it ends", field="registry.name")
        time.sleep(pause)
        pause = min(pause * 2, 2.0)
    try:
        yield
    finally:
        mlflow_client.delete_registered_model(lock)


def _version(mlflow_client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, version)
    except MlflowException:
        raise InputError(f"registered model {name!r} has no version {version}", field="--version") from None


def evaluation(version: Any, dataset: str) -> tuple[str | None, int | None, int | None, str]:
    """The suite, query count, first-stage top-k and reranking mode that produced a version's metrics on
    ``dataset`` (a version registered before modes existed ran in reasoning mode)."""
    tags = version.tags or {}
    queries, top_k = tags.get(f"queries_{dataset}"), tags.get(f"top_k_{dataset}")
    return (tags.get("suite"), int(queries) if queries and queries.isdigit() else None,
            int(top_k) if top_k and top_k.isdigit() else None, tags.get("mode", "reasoning"))


def _record(mlflow_client: Any, name: str, decision: Decision) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    mlflow_client.set_model_version_tag(name, decision.version, GATE_TAG, json.dumps({**decision.to_dict(), "at": stamp}))
    mlflow_client.update_model_version(name, decision.version, description=f"{stamp} {decision.action}: {decision.reason}")


def _move_champion(mlflow_client: Any, name: str, version: str, history: list[str], previous: list[str]) -> None:
    """Write the new history, then move the alias in one call; if that call fails, put the old history back."""
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    try:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    except BaseException:
        mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(previous))
        raise


def promote(mlflow_client: Any, cfg: RegistryConfig, version: str | None = None) -> Decision:
    """Move ``champion`` to ``version`` (default: the ``candidate``) if it passes the gate, under the model's
    promotion lock. The gate: the metric on the gate's dataset, from at least ``min_queries`` queries (and a
    format-valid rate of at least ``min_format_valid`` when set), at least the champion's plus ``margin``, measured
    the same way (suite, query count, top-k, mode): numbers from different evaluations are not compared. A candidate
    without the metric never passes (not computed is not zero); a champion without it is kept unless
    ``allow_missing_champion_metric``."""
    name = cfg.name
    with promotion_lock(mlflow_client, name):
        candidate = _version(mlflow_client, name, version) if version else _alias(mlflow_client, name, CANDIDATE)
        if candidate is None:
            raise InputError(f"registered model {name!r} has no '{CANDIDATE}' version to promote",
                             field="registry.name")
        champion = _alias(mlflow_client, name, CHAMPION)
        decision = _gate(cfg, candidate, champion)
        if decision.moved:
            previous = _history(mlflow_client, name)
            before = decision.champion_before
            _move_champion(mlflow_client, name, decision.version, previous + [before] if before else previous, previous)
        _record(mlflow_client, name, decision)
    return decision


def _gate(cfg: RegistryConfig, candidate: Any, champion: Any | None) -> Decision:
    version = str(candidate.version)
    before = str(champion.version) if champion else None
    key = gate_metric(cfg)
    value = _float_tag(candidate, key)
    held = _float_tag(champion, key) if champion else None
    format_valid = _float_tag(candidate, f"format_valid_{cfg.dataset}")
    measured = evaluation(candidate, cfg.dataset)
    theirs = evaluation(champion, cfg.dataset) if champion else None
    if value is None:
        moved, reason = False, f"version {version} has no {key} (not evaluated on {cfg.dataset})"
    elif measured[1] is None or measured[1] < cfg.min_queries:
        moved, reason = False, (f"version {version}'s {key} comes from {measured[1] or 'an unknown number of'} "
                                f"queries, fewer than registry.min_queries {cfg.min_queries}")
    elif cfg.min_format_valid is not None and (format_valid is None or format_valid < cfg.min_format_valid):
        moved, reason = False, (f"format-valid rate on {cfg.dataset} {format_valid} is below the required "
                                f"{cfg.min_format_valid}")
    elif champion is None:
        moved, reason = True, f"no champion yet; {key} = {value:.4f}"
    elif before == version:
        moved, reason = False, f"version {version} is already the champion"
    elif held is None:
        moved = cfg.allow_missing_champion_metric
        reason = (f"champion v{before} has no {key}; "
                  + (f"{key} = {value:.4f} (registry.allow_missing_champion_metric)" if moved else
                     "nothing to compare against, so it stays (registry.allow_missing_champion_metric: true "
                     "promotes anyway)"))
    elif theirs != measured:
        moved, reason = False, (f"not comparable: v{version}'s {key} is from suite {measured[0]} ({measured[1]} "
                                f"queries, top-{measured[2]}, {measured[3]} mode), champion v{before}'s from suite "
                                f"{theirs[0]} ({theirs[1]} queries, top-{theirs[2]}, {theirs[3]} mode)")
    elif value >= held + cfg.margin:
        moved, reason = True, f"{key} {value:.4f} >= champion v{before}'s {held:.4f} + margin {cfg.margin}"
    else:
        moved, reason = False, f"{key} {value:.4f} < champion v{before}'s {held:.4f} + margin {cfg.margin}"
    return Decision("promote", moved, version, before, version if moved else before, reason, key, value, held)


def rollback(mlflow_client: Any, cfg: RegistryConfig) -> Decision:
    """Give ``champion`` back to the version it had before the last promotion (under the promotion lock)."""
    name = cfg.name
    with promotion_lock(mlflow_client, name):
        previous = _history(mlflow_client, name)
        champion = _alias(mlflow_client, name, CHAMPION)
        if not previous or champion is None:
            raise InputError(f"registered model {name!r} has no earlier champion to roll back to",
                             field="registry.name")
        restored, current = str(previous[-1]), str(champion.version)
        decision = Decision("rollback", True, current, current, restored,
                            f"champion returned to v{restored}", gate_metric(cfg))
        _move_champion(mlflow_client, name, restored, previous[:-1], previous)
        _record(mlflow_client, name, decision)
    return decision


def state(mlflow_client: Any, name: str, metric_prefixes: tuple[str, ...] = ("ndcg_at_10_", "format_valid_")) -> dict[str, Any]:
    """Every version of ``name`` with its aliases, metric tags and the gate's last decision; plus the history."""
    model = _registered_model(mlflow_client, name)
    versions = sorted(mlflow_client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    rows = []
    for v in versions:
        tags = v.tags or {}
        rows.append({"version": str(v.version), "aliases": sorted(a for a, n in aliases.items() if n == str(v.version)),
                     "run_id": v.run_id,
                     "metrics": {k: tags[k] for k in sorted(tags) if k.startswith(metric_prefixes)},
                     "gate": json.loads(tags[GATE_TAG]) if GATE_TAG in tags else None})
    return {"name": name, "versions": rows, "aliases": aliases,
            "champion_history": json.loads(model.tags.get(HISTORY_TAG, "[]"))}
