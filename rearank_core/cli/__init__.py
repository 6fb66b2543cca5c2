"""The ``rearank`` command line (typer), split by area; every command is a thin call into a stage function.

Commands validate params.yaml and every option before any heavy work (index, model) starts."""

from rearank_core.cli import bm25, rerank, data, train, registry, demo, serve  # noqa: I001  (the order of --help)
from rearank_core.cli.common import app

__all__ = ["app", "bm25", "data", "demo", "main", "registry", "rerank", "serve", "train"]


def main() -> None:
    app()
