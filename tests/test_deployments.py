"""prefect.yaml's deployments against a real `prefect server` and a process worker on 127.0.0.1: a run triggered with
`prefect deployment run` completes, and so does one created through the REST call the UI's "Run" button makes
(`POST /api/deployments/{id}/create_flow_run`); the second run finds its stages cached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import BIN
from test_pipeline import make_project, project_env
from topology import Service, free_port, wait_for

pytestmark = pytest.mark.integration

BASELINE = ["index", "retrieve", "evaluate"]  # the BM25 baseline's stages: a real pipeline run in about a minute


def test_deployments_run_from_the_cli_and_from_the_ui_rest_call(tmp_path: Path, root: Path, model_cache: Path) -> None:
    project = make_project(tmp_path, root, model_cache)
    shutil.copy(root / "prefect.yaml", project / "prefect.yaml")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**project_env(project), "PREFECT_API_URL": api}
    logs = tmp_path / "logs"
    logs.mkdir()
    prefect = str(BIN / "prefect")
    server = Service("server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, project,
                     logs).start()
    worker = Service("worker", [prefect, "worker", "start", "--pool", "rearank"], env, project, logs)
    try:
        wait_for(lambda: requests.get(f"{api}/health", timeout=5).status_code == 200, 180, "the Prefect server")

        def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
            done = subprocess.run([prefect, *args], cwd=project, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            return done

        cli("work-pool", "create", "rearank", "--type", "process")
        cli("--no-prompt", "deploy", "--all")
        worker.start()
        run = cli("deployment", "run", "rearank-pipeline/embedded", "--params", json.dumps({"stages": BASELINE}),
                  "--watch", "--watch-timeout", "600", timeout=700)
        assert "Completed" in run.stdout, run.stdout[-2000:]
        assert json.loads((project / "metrics" / "scifact_bm25.json").read_text())["ndcg@10"] > 0.67

        # The UI's "Run" button: the same REST call, with the parameters the form sends.
        deployments = requests.post(f"{api}/deployments/filter", json={}, timeout=30).json()
        deployment = next(d for d in deployments if d["name"] == "embedded")
        created = requests.post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                                json={"parameters": {"stages": BASELINE}}, timeout=30)
        assert created.status_code == 201, created.text
        flow_run_id = created.json()["id"]

        def finished() -> dict | None:
            state = requests.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = wait_for(finished, 600, "the REST-created flow run")
        assert state["type"] == "COMPLETED", worker.tail()
        tasks = requests.post(f"{api}/task_runs/filter", timeout=30,
                              json={"flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
        assert sorted(t["name"].rsplit("-", 1)[0] for t in tasks) == sorted(BASELINE)
        assert all(t["state"]["name"] == "Cached" for t in tasks), [t["state"]["name"] for t in tasks]
    finally:
        worker.stop()  # workers before the server: with the server gone they ignore SIGTERM
        server.stop()
    assert "Traceback" not in (logs / "worker.log").read_text()
    assert os.path.isdir(project / ".prefect")  # the project-local Prefect home, not the user's
