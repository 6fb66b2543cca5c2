"""What ``dvc.yaml`` declares about each stage, for the drivers that do not go through ``dvc repro``.

The Prefect pipeline keys its task cache on a stage's ``fingerprint`` (the bytes of the deps and the values of the
params that ``dvc.yaml`` lists for it) and uses a cached result only while the stage's outputs are still the ones
that run wrote (``outputs_current``, against the record ``record_outputs`` keeps beside them): after params P1, P2,
then P1 again, the third run finds P2's files and runs. When it ran on params.yaml itself, it ``record``s each
finished stage in dvc.lock (``dvc commit``), so ``dvc repro`` afterwards finds everything up to date. One
declaration (dvc.yaml) serves both drivers: nothing here lists a stage's inputs a second time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from rearank_core.config import Params
from rearank_core.errors import InputError
from rearank_core.io.files import hash_path, write_json


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


OUTPUT_RECORDS = Path(".rearank") / "outputs"  # per stage: the fingerprint its outputs were made for, their hashes


def _output_files(spec: StageSpec, project: Path) -> list[Path] | None:
    """Every file of the stage's outputs, relative to the project; None when an output is missing."""
    files = []
    for out in spec.outs:
        path = project / out
        if path.is_file():
            files.append(Path(out))
        elif path.is_dir():
            files.extend(p.relative_to(project) for p in sorted(path.rglob("*")) if p.is_file())
        else:
            return None
    return files


def _file_hashes(project: Path, files: list[Path], known: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Size, mtime and SHA-256 per file; a file whose size and mtime are the recorded ones keeps its recorded hash,
    as DVC's state does, so a checkpoint folder is not reread on every run."""
    hashes = {}
    for relative in files:
        stat = (project / relative).stat()
        seen = known.get(str(relative))
        if seen and seen["size"] == stat.st_size and seen["mtime_ns"] == stat.st_mtime_ns:
            hashes[str(relative)] = seen
            continue
        digest = hashlib.sha256()
        hash_path(digest, project / relative)
        hashes[str(relative)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    return hashes


def _record_path(spec: StageSpec, project: Path) -> Path:
    return project / OUTPUT_RECORDS / f"{spec.name}.json"


def outputs_current(spec: StageSpec, key: str, project: str | Path = ".") -> bool:
    """Whether the stage's outputs are all present and are, file by file, what its run for fingerprint ``key``
    wrote: only then may the flow use that run's cached result."""
    project = Path(project)
    files = _output_files(spec, project)
    record_file = _record_path(spec, project)
    if files is None or not record_file.exists():
        return False
    recorded = json.loads(record_file.read_text())
    if recorded.get("fingerprint") != key:
        return False
    now = _file_hashes(project, files, recorded["files"])
    return {k: v["sha256"] for k, v in now.items()} == {k: v["sha256"] for k, v in recorded["files"].items()}


def record_outputs(spec: StageSpec, key: str, project: str | Path = ".") -> None:
    """After the stage ran for fingerprint ``key``: its outputs' hashes, for ``outputs_current``."""
    project = Path(project)
    files = _output_files(spec, project)
    if files is None:
        missing = [out for out in spec.outs if not (project / out).exists()]
        raise InputError(f"stage {spec.name!r} finished without its outputs {missing}", project / "dvc.yaml")
    write_json(_record_path(spec, project), {"fingerprint": key, "files": _file_hashes(project, files, {})})


def record(stage: str, project: str | Path = ".") -> None:
    """``dvc commit`` one stage: dvc.lock records its deps, params and outputs as they are now."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        repo.commit(stage, force=True)
