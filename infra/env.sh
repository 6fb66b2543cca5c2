# Sourced by the scripts: keep every tool offline-friendly and its state inside the project.
export MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DVC_NO_ANALYTICS=1
export GX_ANALYTICS_ENABLED=false
export HF_HUB_DISABLE_TELEMETRY=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"   # Prefect state in the project, not the home folder
