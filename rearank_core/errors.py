"""The one error type for bad user input: it always names the file, and the line and field when known."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input supplied by the user (a file, a folder or an option). The CLI prints it without a traceback."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __reduce__(self) -> tuple[type, tuple[str, str | None, int | None, str | None]]:
        return type(self), (self.message, self.path, self.line, self.field)  # whole across processes (a stage's child)

    def __str__(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
        prefix = f"{where}: " if where else ""
        field = f"field '{self.field}': " if self.field else ""
        return f"{prefix}{field}{self.message}"


class BackendError(RuntimeError):
    """A generation backend failed for good (after its retries) or broke its contract; the message says what
    and where. The CLI prints it without a traceback and exits with code 1."""
