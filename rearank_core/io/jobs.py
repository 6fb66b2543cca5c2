"""Partial work is resumed only by the job that made it.

Training checkpoints and evaluation traces stay between runs so that an interrupted run resumes (DVC keeps them,
``persist: true``, and so does the Prefect flow). A rerun after a change must not continue them: SFT with a new
learning rate would resume the old run's last checkpoint and train no step at all, and a retrained model's
evaluation would replay the old model's traces. So each resumable output carries a marker with its job's identity
(the settings, and the bytes of the inputs and of a local model); a run with the same identity resumes, any other
starts fresh."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rearank_core.io.files import atomic_write, hash_path

log = logging.getLogger(__name__)


def _not_a_checkpoint(relative: Path) -> bool:
    return relative.parts[0].startswith("checkpoint-")


def _stat_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of what ``_content_digest`` would read: cheap to take every time."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                           and not _not_a_checkpoint(p.relative_to(path))]
    return tuple(sorted((str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=64)
def _content_digest(path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    """The bytes' digest, read once per process while ``signature`` holds: an evaluation suite reranks each of its
    datasets with the same model, and a full model is gigabytes."""
    digest = hashlib.sha256()
    hash_path(digest, Path(path), skip=_not_a_checkpoint)
    return digest.hexdigest()


def job_identity(settings: Mapping[str, Any], inputs: Iterable[str | Path] = ()) -> str:
    """SHA-256 of the settings (as JSON) and of each input's bytes; a folder's ``checkpoint-*`` subfolders are left
    out (a model folder is its final weights, not its training history)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in map(Path, inputs):
        digest.update(b"\0input\0" + str(path).encode() + b"\0")
        digest.update(_content_digest(str(path), _stat_signature(path)).encode())
    return digest.hexdigest()


def local_inputs(*candidates: str | Path | None) -> list[Path]:
    """The candidates that are files or folders here (a hub id or an unset option is settings, not an input)."""
    return [Path(c) for c in candidates if c and Path(c).exists()]


def claim(marker: str | Path, identity: str, partial: Iterable[str | Path]) -> bool:
    """True when ``marker`` records ``identity``: the partial work is this job's, resume it. Otherwise remove the
    ``partial`` files and folders (another job's work), record ``identity`` and return False: start fresh."""
    marker = Path(marker)
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == identity:
        return True
    for path in map(Path, partial):
        if not path.exists():
            continue
        log.warning("%s was written by another job (settings, inputs or model changed): starting afresh", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    marker.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(marker) as handle:
        handle.write(identity + "\n")
    return False
