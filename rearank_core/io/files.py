"""Atomic writes, line-numbered JSONL reading and content hashing shared by every reader and writer."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rearank_core.errors import InputError


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only when the block succeeds,
    so a crash never leaves a half-written output that a later stage would trust."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON, atomically (a metrics file is whole or absent)."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, transparently gunzipping ``*.gz``; a missing file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found" if not path.exists() else "not a file", path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@contextmanager
def decoding_errors(path: str | Path) -> Iterator[None]:
    """Turn failures while reading ``path`` as text (not UTF-8, not gzip, truncated gzip) into InputErrors naming it.
    (A truncated gzip raises EOFError, which click would otherwise report as a bare "Aborted.")"""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path) from exc
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InputError(f"not a valid gzip file ({exc})", path) from exc


def iter_lines(path: str | Path, allow_empty: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line number, stripped line) for non-blank lines; an empty file is an error unless ``allow_empty``."""
    seen = False
    with open_text(path) as handle, decoding_errors(path):
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if line:
                seen = True
                yield number, line
    if not seen and not allow_empty:
        raise InputError("file is empty", path)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each JSON line; a line that is not a JSON object is an error."""
    for number, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", path, number) from exc
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", path, number)
        yield number, obj


def require_str(obj: dict[str, Any], field: str, path: str | Path, line: int | None, allow_empty: bool = False) -> str:
    """The field as a string (ids may be numbers in the wild: they are turned into strings)."""
    if field not in obj or obj[field] is None:
        raise InputError("missing", path, line, field)
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"expected a string, got {type(value).__name__}", path, line, field)
    value = str(value)
    if not allow_empty and not value.strip():
        raise InputError("empty", path, line, field)
    return value


def write_jsonl(path: str | Path, rows: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> int:
    """Write rows atomically as JSON lines; returns the row count."""
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def hash_path(digest: Any, path: Path, skip: Callable[[Path], bool] | None = None) -> None:
    """Feed a file's bytes, or a folder's files (relative names and bytes, sorted), into ``digest``; ``skip`` leaves
    out the folder entries (relative paths) it returns True for."""
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = child.relative_to(path)
            if skip is not None and skip(relative):
                continue
            digest.update(str(relative).encode() + b"\0")
            with open(child, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    elif path.is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(b"<missing>")
