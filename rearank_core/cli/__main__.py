"""``python -m rearank_core.cli``: the same as the ``rearank`` command."""

from rearank_core.cli import main

main()
