#!/usr/bin/env bash
# The shared Prefect server (API + UI) on PostgreSQL with basic auth. Every setting comes from the environment:
#   PGHOST PGPORT PGUSER PGPASSWORD    the PostgreSQL server, as for mlflow-server.sh (database PREFECT_DATABASE,
#                                      default prefect)
#   PREFECT_SERVER_API_AUTH_STRING     "user:password"; clients send the same as PREFECT_API_AUTH_STRING
#   PREFECT_HOST (127.0.0.1) PREFECT_PORT (4200)
set -euo pipefail
: "${PGHOST:?}" "${PGUSER:?}" "${PGPASSWORD:?}" "${PREFECT_SERVER_API_AUTH_STRING:?}"
export PREFECT_SERVER_DATABASE_DRIVER=postgresql+asyncpg
export PREFECT_SERVER_DATABASE_HOST="$PGHOST" PREFECT_SERVER_DATABASE_PORT="${PGPORT:-5432}"
export PREFECT_SERVER_DATABASE_USER="$PGUSER" PREFECT_SERVER_DATABASE_PASSWORD="$PGPASSWORD"
export PREFECT_SERVER_DATABASE_NAME="${PREFECT_DATABASE:-prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec prefect server start --host "${PREFECT_HOST:-127.0.0.1}" --port "${PREFECT_PORT:-4200}"
