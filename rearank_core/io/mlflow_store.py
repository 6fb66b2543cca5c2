"""Where MLflow's store is, and how a registered model's files reach a local folder.

``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are accepted wherever a model is (``--model``): the
version's files are downloaded once into the model cache and the reranker's model folder inside them is
what the backends load. A version's files never change, so a folder per tracking store, name and version
is a safe cache."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from rearank_core.errors import InputError

REGISTRY_SCHEME = "models:/"
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))")
_DONE = "rearank_download.json"  # written last: its presence means the download is complete


def tracking_uri(configured: str | None = None, project: str | Path = ".") -> str:
    """MLflow's convention first: MLFLOW_TRACKING_URI, when set, wins over params.yaml's ``tracking.uri``
    (``configured``); without either, SQLite at ``<project>/mlruns/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    store = Path(project).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def sqlite_artifact_root(uri: str) -> str | None:
    """The artifact folder next to a SQLite store (``mlruns/artifacts``); None for other stores."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return None


def is_registry_uri(model: str) -> bool:
    return model.startswith(REGISTRY_SCHEME)


def parse_registry_uri(uri: str) -> tuple[str, str | None, int | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/3`` -> (NAME, None, 3)."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise InputError(f"not a registered model URI: {uri!r}; expected models:/NAME@ALIAS or models:/NAME/VERSION",
                         field="model")
    version = match["version"]
    return match["name"], match["alias"], int(version) if version else None


def reranker_folder(model_dir: Path) -> Path:
    """The reranker's own model folder inside a downloaded pyfunc model (its ``model`` artifact)."""
    mlmodel = model_dir / "MLmodel"
    try:
        flavor = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))["flavors"]["python_function"]
        return model_dir / flavor["artifacts"]["model"]["path"]
    except (OSError, KeyError, TypeError) as exc:
        raise InputError(f"not a rearank reranker model: no 'model' artifact in its MLmodel ({exc})", mlmodel) from None


def download_registered_model(uri: str, cache_dir: Path) -> Path:
    """The local folder of the reranker a registry URI names (downloaded on first use)."""
    return reranker_folder(download_registered_version(uri, cache_dir))


def registered_settings(uri: str, cache_dir: Path) -> dict[str, Any]:
    """The rerank settings the version a registry URI names was registered with: what it was evaluated with (its
    pyfunc's ``model_config``; empty for a model registered without them)."""
    mlmodel = download_registered_version(uri, cache_dir) / "MLmodel"
    try:
        flavor = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))["flavors"]["python_function"]
    except (OSError, KeyError, TypeError) as exc:
        raise InputError(f"not a rearank reranker model ({exc})", mlmodel) from None
    return dict(flavor.get("config") or {})  # where MLflow keeps log_model's model_config (pyfunc.MODEL_CONFIG)


def pinned_registry_uri(uri: str) -> str:
    """``models:/NAME@ALIAS`` as ``models:/NAME/N``, the version the alias names now: settings and weights are then
    read from one version even if the alias moves in between (a promotion during start-up)."""
    name, alias, _ = parse_registry_uri(uri)
    return uri if alias is None else f"models:/{name}/{_registered_version(uri).version}"


def _registered_version(uri: str) -> Any:
    """The registry's ModelVersion a URI names; an unknown model, alias or version is an InputError."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_registry_uri(uri)
    store = tracking_uri()
    client = MlflowClient(store)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise InputError(f"{uri}: {exc.message} (tracking store {store})", field="model") from None


def download_registered_version(uri: str, cache_dir: Path) -> Path:
    """The local folder of the whole pyfunc model a registry URI names (downloaded once per version)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    found = _registered_version(uri)
    name, store = found.name, tracking_uri()
    client = MlflowClient(store)
    store_key = hashlib.sha256(store.encode()).hexdigest()[:12]
    target = Path(cache_dir) / "registry" / store_key / name / f"v{found.version}"
    if not (target / _DONE).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            # The version's own artifact location, not models:/ (which MLflow resolves against the registry URI
            # of the process: its default store when MLFLOW_TRACKING_URI is unset, not this project's).
            local = Path(download_artifacts(
                artifact_uri=client.get_model_version_download_uri(name, str(found.version)),
                dst_path=str(staging), tracking_uri=store))  # staging/<the location's last folder name>
            (local / _DONE).write_text(f'{{"uri": "models:/{name}/{found.version}"}}\n', encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            local.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
