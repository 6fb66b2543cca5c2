#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml (run after changing dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
find_links="${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}"
.venv/bin/uv pip compile pyproject.toml --extra test --extra server --python-version 3.11 ${find_links:+--find-links "$find_links"} \
  --no-header -o requirements.lock
