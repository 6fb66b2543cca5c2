-- The three databases of the shared topology, owned by the connecting role (POSTGRES_USER in the container).
-- Run once by the postgres image (/docker-entrypoint-initdb.d) or by `psql -f` against a new server.
CREATE DATABASE mlflow;       -- MLflow runs, metrics, model registry
CREATE DATABASE mlflow_auth;  -- MLflow basic-auth users and permissions
CREATE DATABASE prefect;      -- Prefect flows, deployments, runs
