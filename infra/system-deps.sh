#!/usr/bin/env bash
# The Debian packages the tests use beyond Python: PostgreSQL's server (tests/test_topology.py starts its own
# cluster) and docker-compose (validates infra/compose.yaml; no Docker engine needed). Installs only what is
# missing; needs root or sudo when something is.
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
