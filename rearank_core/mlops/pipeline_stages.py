"""What ``dvc.yaml`` declares about each stage, for the drivers that do not go through ``dvc repro``.

The Prefect pipeline keys its task cache on a stage's ``fingerprint`` (the bytes of the deps and the values of the
params that ``dvc.yaml`` lists for it), reruns a stage whose outputs are missing, and, when it ran on params.yaml
itself, ``record``s each finished stage in dvc.lock (``dvc commit``), so ``dvc repro`` afterwards finds everything
up to date. One declaration (dvc.yaml) serves both drivers: nothing here lists a stage's inputs a second time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from rearank_core.config import Params
from rearank_core.errors import InputError
from rearank_core.io.files import hash_path


@dataclass(frozen=True)
class StageSpec:
    name: str
    deps: tuple[str, ...]  # files and folders, relative to the project
    params: tuple[str, ...]  # dotted params.yaml keys (``sft``, ``rerank.model_cache``)
    outs: tuple[str, ...]  # every output, metrics and plots included


def read_stages(project: str | Path = ".") -> dict[str, StageSpec]:
    """Every stage of the project's dvc.yaml, with ``${...}`` resolved from params.yaml by DVC itself."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(project)) as repo:
            stages = repo.index.stages
            specs = {}
            for stage in stages:
                if not getattr(stage, "cmd", None):
                    continue
                deps, params = [], []
                for dep in stage.deps:
                    if hasattr(dep, "params"):
                        params.extend(dep.params)
                    else:
                        deps.append(str(dep.def_path))
                specs[stage.name] = StageSpec(stage.name, tuple(deps), tuple(params),
                                              tuple(str(out.def_path) for out in stage.outs))
            return specs
    except DvcException as exc:
        raise InputError(f"cannot read the DVC pipeline ({exc})", Path(project) / "dvc.yaml") from None


def _value(params: Params, key: str) -> Any:
    """A dotted key's value in the loaded (and possibly overridden) params, as plain data."""
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part) if is_dataclass(value) else value[part]
    return asdict(value) if is_dataclass(value) else value


def _bytecode(relative: Path) -> bool:
    """Python's compiled files beside a code dependency (.dvcignore leaves them out of DVC's hashes too)."""
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def fingerprint(spec: StageSpec, params: Params, project: str | Path = ".") -> str:
    """SHA-256 of the stage's name, its deps' bytes (the code it runs included) and its params' values: equal
    fingerprints, same outputs."""
    digest = hashlib.sha256(spec.name.encode())
    for dep in spec.deps:
        digest.update(b"\0dep\0" + dep.encode() + b"\0")
        hash_path(digest, Path(project) / dep, skip=_bytecode)
    for key in spec.params:
        digest.update(b"\0param\0" + key.encode() + b"\0")
        digest.update(json.dumps(_value(params, key), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def outputs_present(spec: StageSpec, project: str | Path = ".") -> bool:
    return all((Path(project) / out).exists() for out in spec.outs)


def record(stage: str, project: str | Path = ".") -> None:
    """``dvc commit`` one stage: dvc.lock records its deps, params and outputs as they are now."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        repo.commit(stage, force=True)
