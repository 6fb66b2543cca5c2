"""MLflow tracking for every stage (``tracking``); to come: model logging, the registry and promotion gate,
and serving. Library code only: the Prefect flows live in the top-level ``flows`` package."""
