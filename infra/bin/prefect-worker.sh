#!/usr/bin/env bash
# A Prefect process worker for the pipeline's deployments (prefect.yaml, pool "rearank"), run from the project
# folder: each flow run is a subprocess there that inherits this environment. Settings from the environment:
#   PREFECT_API_URL, PREFECT_API_AUTH_STRING      the shared Prefect server
#   MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   the shared MLflow server
#   OPENAI_API_KEY (teacher or an OpenAI-compatible backend), AWS_* (an S3 DVC remote), as the stages need them
#   PREFECT_WORK_POOL (rearank)
set -euo pipefail
: "${PREFECT_API_URL:?}" "${PREFECT_API_AUTH_STRING:?}" "${MLFLOW_TRACKING_URI:?}"
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
# Heartbeats let infra/prefect/crash-zombie-flow-runs.yaml mark a run Crashed when its process dies with the worker.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
exec prefect worker start --pool "${PREFECT_WORK_POOL:-rearank}" --type process
