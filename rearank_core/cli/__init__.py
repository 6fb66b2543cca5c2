"""The ``rearank`` command line (typer), split by area; every command is a thin call into a stage function.

Commands validate params.yaml and every option before any heavy work (index, model) starts."""

from rearank_core.cli import bm25, rerank, data, train, registry, demo, serve  # noqa: I001  (the order of --help)
from rearank_core.cli.common import app

__all__ = ["app", "bm25", "data", "demo", "main", "registry", "rerank", "serve", "train"]


def main() -> None:
    """The ``rearank`` executable. Every command but ``serve`` (a long-lived server with its own signal handling)
    runs in a supervised child, so that a stage the OOM killer ends is reported with its name and peak memory
    (``rearank_core.supervise``); the child runs the command itself."""
    import os
    import sys

    from rearank_core.supervise import SUPERVISED, supervise

    words = []  # the command's own words (``train grpo``), up to its first option
    for arg in sys.argv[1:3]:
        if arg.startswith("-"):
            break
        words.append(arg)
    if os.environ.get(SUPERVISED) == "1" or not words or words[0] == "serve":
        app(prog_name="rearank")
        return
    sys.exit(supervise([sys.executable, "-m", "rearank_core.cli", *sys.argv[1:]], " ".join(words)))
