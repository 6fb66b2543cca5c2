"""The layering of pyproject.toml's import-linter contracts holds, and an upward import or a Prefect import in
the library breaks it (planted in a copy of the packages)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LINT = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def copy(tmp_path: Path, root: Path) -> Path:
    for name in ("rearank_core", "flows"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_hold(root: Path) -> None:
    result = lint(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def plant(copy: Path, module: str, line: str) -> None:
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize("module, line, broken", [
    ("rearank_core/records.py", "from rearank_core.config import RerankConfig", "Library layers"),
    ("rearank_core/backends/base.py", "from rearank_core.rerank import Reranker", "Library layers"),
    ("rearank_core/rerank/window.py", "import rearank_core.stages", "Library layers"),
    ("rearank_core/rerank/summary.py", "import rearank_core.mlops.tracking", "Library layers"),
    ("rearank_core/stages/rerank.py", "import prefect", "never imports a driver or Prefect"),
    ("flows/rerank_slice.py", "import rearank_core.cli", "never the CLI"),
])
def test_a_planted_import_breaks_a_contract(copy: Path, module: str, line: str, broken: str) -> None:
    assert lint(copy).returncode == 0  # the copy holds before the plant
    plant(copy, module, line)
    result = lint(copy)
    assert result.returncode == 1, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
