#!/usr/bin/env bash
# The shared MLflow tracking server and model registry: runs and registry in PostgreSQL, basic auth on, artifacts
# proxied (clients upload through the server to MLFLOW_ARTIFACTS_DESTINATION: s3://BUCKET/PREFIX or a folder).
# Every setting comes from the environment:
#   PGHOST PGPORT PGUSER PGPASSWORD   the PostgreSQL server (libpq's own variables)
#   MLFLOW_AUTH_ADMIN_PASSWORD        the first admin's password (user MLFLOW_AUTH_ADMIN_USERNAME, default admin)
#   MLFLOW_FLASK_SERVER_SECRET_KEY    signs the auth app's CSRF tokens
#   MLFLOW_ARTIFACTS_DESTINATION      where artifacts live; for S3 also MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#                                     AWS_SECRET_ACCESS_KEY
#   MLFLOW_HOST (127.0.0.1) MLFLOW_PORT (5000) MLFLOW_WORKERS (2)
set -euo pipefail
infra="$(cd "$(dirname "$0")/.." && pwd)"
: "${PGHOST:?}" "${PGUSER:?}" "${PGPASSWORD:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?}"
export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$infra/mlflow/basic_auth.ini}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server --app-name basic-auth \
  --backend-store-uri "postgresql+psycopg2:///${MLFLOW_DATABASE:-mlflow}" \
  --serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-2}"
