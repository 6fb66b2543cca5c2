"""What every command shares: the typer app, the error boundary, logging set-up and output helpers."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from rearank_core.config import Params, load_params
from rearank_core.errors import BackendError, InputError

app = typer.Typer(help="Listwise reasoning rerankers: BM25, reranking, evaluation and MLOps.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True, soft_wrap=True)  # closing lines stay whole in logs and pipes
out = Console(soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read defaults from")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars, warnings and errors only")]
TrackOpt = Annotated[bool | None, typer.Option("--track/--no-track",
                                               help="log to MLflow (default: params tracking.enabled)")]


def user_errors(fn: F) -> F:
    """Bad input ends the command with a one-line message and exit code 2, a backend that failed for good
    (after its retries) with exit code 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except BackendError as exc:
            err.print(f"[bold red]backend error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def start(params: Path, quiet: bool) -> Params:
    """Every command's first step: logging to stderr (INFO, or WARNING with -q), then params.yaml validated."""
    logger = logging.getLogger("rearank_core")
    logger.handlers[:] = [RichHandler(console=err, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    loaded = load_params(params)
    if loaded.tracking.uri:  # so models:/ URIs resolve against the same store; the environment variable still wins
        os.environ.setdefault("MLFLOW_TRACKING_URI", loaded.tracking.uri)
    return loaded


def job_path(given: Path | None, params: Params, job: str, key: str, option: str) -> Path:
    """An option's path, or the entry of params.yaml's job section it defaults to."""
    if given is not None:
        return given
    section = getattr(params, job)
    if section is None:
        raise InputError(f"give {option} (params.yaml has no {job} section to default to)", params.path, field=job)
    return Path(getattr(section, key))


def metrics_table(title: str, columns: dict[str, dict[str, float]]) -> Table:
    """One row per metric, one column per run: narrow enough for an 80-column terminal."""
    names = list(dict.fromkeys(k for c in columns.values() for k in c))
    table = Table(title=title)
    table.add_column("metric")
    for label in columns:
        table.add_column(label, justify="right")
    for name in names:
        table.add_row(name, *(f"{c[name]:.4f}" if name in c else "not computed" for c in columns.values()))
    return table


def percent(rate: float | None) -> str:
    """A rate for a closing line; None (nothing run) is "not computed", never 0 %."""
    return "not computed" if rate is None else f"{rate:.1%}"
