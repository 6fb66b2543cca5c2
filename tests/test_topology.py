"""The shared topology run for real on 127.0.0.1: PostgreSQL (Debian's server), `mlflow server` on it with basic auth
and a proxied artifact store, `prefect server` on it with an auth string, and a process worker, each started by the
infra/bin script compose uses. The pipeline's deployment runs on the tiny profile through the Prefect API; the
checks read the APIs and PostgreSQL itself. Then the faults: PostgreSQL restarted between two runs, MLflow down
during a run, the worker SIGKILLed in the middle of training; and no secret stored or logged anywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import Any

import pytest
import requests
import yaml
from conftest import BIN
from test_mlops_pipeline import MAIN_JOB, tiny_project
from test_pipeline import project_env
from test_registry import SETTINGS, report
from topology import INFRA_BIN, ROOT, Postgres, Service, free_port, wait_for

from rearank_core.config import RegistryConfig, TrackingConfig
from rearank_core.stages.registry import promote_stage, register_stage

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
MODEL = "tiny-reranker"  # tiny_project's registry name
# The deployment runs README command 1's stages: the FIRST model's two add nothing to what the shared servers are
# tested for (test_mlops_pipeline runs them through the flow).
MAIN = {"stages": sorted(MAIN_JOB)}

pytestmark = pytest.mark.integration


@dataclass
class Topology:
    postgres: Postgres
    mlflow: Service
    prefect: Service
    worker: Service
    project: Path
    secrets: dict[str, str]
    folder: Path
    mlflow_url: str
    prefect_api: str
    client_env: dict[str, str]

    @property
    def mlflow_auth(self) -> tuple[str, str]:
        return ("admin", self.secrets["mlflow"])

    @property
    def prefect_auth(self) -> tuple[str, str]:
        return ("admin", self.secrets["prefect"])

    def prefect_call(self, method: str, path: str, body: object | None = None) -> Any:
        response = requests.request(method, f"{self.prefect_api}{path}", json=body, auth=self.prefect_auth,
                                    timeout=60)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def mlflow_call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.mlflow_url}/api/2.0/mlflow/{path}", auth=self.mlflow_auth,
                                    timeout=60, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def trigger(self, deployment: str, parameters: dict[str, Any]) -> str:
        """What the UI's Run button sends: POST /api/deployments/{id}/create_flow_run."""
        found = self.prefect_call("POST", "/deployments/filter",
                                  {"deployments": {"name": {"any_": [deployment]}}})
        return self.prefect_call("POST", f"/deployments/{found[0]['id']}/create_flow_run",
                                 {"parameters": parameters})["id"]

    def state(self, flow_run_id: str) -> dict[str, Any]:
        return self.prefect_call("GET", f"/flow_runs/{flow_run_id}")["state"]

    def wait(self, flow_run_id: str, seconds: float = 1200) -> dict[str, Any]:
        state = wait_for(lambda: (s := self.state(flow_run_id))["type"] in FINAL and s, seconds,
                         f"flow run {flow_run_id}")
        return state  # type: ignore[return-value]

    def tasks(self, flow_run_id: str) -> dict[str, str]:
        """Stage name -> its task run's state name (Completed, Cached, Running, ...)."""
        runs = self.prefect_call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        return {run["name"].rsplit("-", 1)[0]: run["state"]["name"] for run in runs if run["state"]}

    def prefect_cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], cwd=self.project, env=env or self.client_env,
                              capture_output=True, text=True, timeout=300)

    def stage_runs(self, stage: str) -> list[dict[str, Any]]:
        """The MLflow runs of one stage, newest first."""
        experiment = self.mlflow_call("GET", "experiments/get-by-name", params={"experiment_name": "rearank"})
        found = self.mlflow_call("POST", "runs/search", json={
            "experiment_ids": [experiment["experiment"]["experiment_id"]],
            "filter": f"tags.`rearank.stage` = '{stage}'", "order_by": ["attributes.start_time DESC"]})
        return found.get("runs", [])


def health(url: str) -> bool:
    return requests.get(url, timeout=5).status_code == 200


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, root: Path, model_cache: Path,
             tiny_dir: Path) -> Iterator[Topology]:
    folder = tmp_path_factory.mktemp("topology")
    logs = folder / "logs"
    logs.mkdir()
    secrets = {name: f"{name}-secret-{token_hex(8)}" for name in ("postgres", "mlflow", "prefect", "openai", "s3")}
    postgres = Postgres(secrets["postgres"])
    started: list[Service] = []
    try:
        postgres.start()
        postgres.psql("postgres", "-f", str(ROOT / "infra" / "postgres" / "create-databases.sql"))
        (folder / "server").mkdir()
        base = {**project_env(folder / "server"), **postgres.env()}
        mlflow_port, prefect_port = free_port(), free_port()
        mlflow = Service("mlflow", [str(INFRA_BIN / "mlflow-server.sh")], {
            **base, "MLFLOW_PORT": str(mlflow_port), "MLFLOW_WORKERS": "1",
            "MLFLOW_AUTH_ADMIN_PASSWORD": secrets["mlflow"], "MLFLOW_FLASK_SERVER_SECRET_KEY": token_hex(16),
            "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts")}, folder / "server", logs)
        prefect = Service("prefect-server", [str(INFRA_BIN / "prefect-server.sh")], {
            **base, "PREFECT_PORT": str(prefect_port),
            "PREFECT_SERVER_API_AUTH_STRING": f"admin:{secrets['prefect']}"}, folder / "server", logs)
        started += [mlflow.start(), prefect.start()]
        mlflow_url, prefect_api = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
        wait_for(lambda: health(f"{mlflow_url}/health"), 240, "the MLflow server")
        wait_for(lambda: health(f"{prefect_api}/health"), 240, "the Prefect server")

        project = tiny_project(folder, root, model_cache, tiny_dir)
        shutil.copy(root / "prefect.yaml", project / "prefect.yaml")
        client_env = {
            **project_env(project), "PREFECT_API_URL": prefect_api,
            "PREFECT_API_AUTH_STRING": f"admin:{secrets['prefect']}", "MLFLOW_TRACKING_URI": mlflow_url,
            "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": secrets["mlflow"],
            "OPENAI_API_KEY": secrets["openai"], "AWS_ACCESS_KEY_ID": "rearank", "AWS_SECRET_ACCESS_KEY": secrets["s3"],
        }
        worker = Service("worker", [str(INFRA_BIN / "prefect-worker.sh")], client_env, project, logs)
        top = Topology(postgres, mlflow, prefect, worker, project, secrets, folder, mlflow_url, prefect_api,
                       client_env)
        # The shipped automation with a shorter wait: the worker's runs beat every 30 s (Prefect's minimum), so 60 s
        # without one still means a dead run, and the killed worker's run is marked Crashed half a minute sooner.
        automation = yaml.safe_load((ROOT / "infra/prefect/crash-zombie-flow-runs.yaml").read_text())
        automation["trigger"]["within"] = 60
        (folder / "automation.yaml").write_text(yaml.safe_dump(automation))
        for args in (("work-pool", "create", "rearank", "--type", "process"), ("--no-prompt", "deploy", "--all"),
                     ("automation", "create", "--from-file", str(folder / "automation.yaml"))):
            done = top.prefect_cli(*args)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        started.append(worker.start())
        yield top
    finally:
        for service in reversed(started):  # the worker before the servers: with the server gone it ignores SIGTERM
            service.stop()
        postgres.remove()


def test_servers_refuse_requests_without_the_right_credentials(topology: Topology) -> None:
    search = f"{topology.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    for auth in (None, ("admin", "wrong-password"), ("nobody", topology.secrets["mlflow"])):
        assert requests.get(search, auth=auth, timeout=30).status_code == 401
    assert requests.get(search, auth=topology.mlflow_auth, timeout=30).status_code == 200

    flows = f"{topology.prefect_api}/flows/filter"
    for auth in (None, ("admin", "wrong-password")):
        assert requests.post(flows, json={}, auth=auth, timeout=30).status_code == 401
    assert requests.post(flows, json={}, auth=topology.prefect_auth, timeout=30).status_code == 200
    refused = topology.prefect_cli("deployment", "ls",
                                   env={**topology.client_env, "PREFECT_API_AUTH_STRING": "admin:wrong-password"})
    assert refused.returncode != 0

    # PostgreSQL itself takes no connection without the password.
    no_password = subprocess.run(["psql", "-X", "-d", "mlflow", "-c", "select 1"], capture_output=True, text=True,
                                 env={**topology.client_env, **topology.postgres.env(), "PGPASSWORD": "wrong"})
    assert no_password.returncode != 0 and "password authentication failed" in no_password.stderr


def test_the_pipeline_deployment_runs_on_the_shared_servers(topology: Topology) -> None:
    flow_run = topology.trigger("embedded", MAIN)
    state = topology.wait(flow_run)
    assert state["type"] == "COMPLETED", topology.worker.tail()
    tasks = topology.tasks(flow_run)
    assert set(tasks) == MAIN_JOB and set(tasks.values()) == {"Completed"}, tasks

    champion = topology.mlflow_call("GET", "registered-models/alias",
                                    params={"name": MODEL, "alias": "champion"})["model_version"]
    tags = {tag["key"]: tag["value"] for tag in champion["tags"]}
    assert float(tags["ndcg_at_10_dl19"]) >= 0 and tags["ndcg_at_10_bright_biology_reasonir"].startswith("not eval")
    evaluation = topology.stage_runs("evaluate-model-trained")[0]
    assert {m["key"] for m in evaluation["data"]["metrics"]} >= {"ndcg_at_10_dl19"}

    # What the APIs said is what PostgreSQL holds.
    pg = topology.postgres
    assert pg.psql("mlflow", "-c", f"select version from registered_model_aliases where name = '{MODEL}' "
                             "and alias = 'champion'").strip() == str(champion["version"])
    assert int(pg.psql("mlflow", "-c", "select count(*) from runs where status = 'FINISHED'")) >= len(MAIN_JOB)
    assert pg.psql("prefect", "-c", f"select state_type from flow_run where id = '{flow_run}'").strip() == "COMPLETED"
    assert int(pg.psql("prefect", "-c", f"select count(*) from task_run where flow_run_id = '{flow_run}' "
                                        "and state_type = 'COMPLETED'")) == len(MAIN_JOB)


def test_a_postgres_restart_between_two_runs(topology: Topology) -> None:
    topology.postgres.restart()
    flow_run = topology.trigger("embedded", MAIN)
    state = topology.wait(flow_run)
    assert state["type"] == "COMPLETED", topology.worker.tail()
    assert set(topology.tasks(flow_run).values()) == {"Cached"}
    assert topology.mlflow_call("GET", "registered-models/alias", params={"name": MODEL, "alias": "champion"})


def test_mlflow_down_during_a_run(topology: Topology) -> None:
    before = topology.stage_runs("evaluate-model-trained")
    # New evaluation settings: the evaluations, register and promote run again, and log while MLflow is away.
    flow_run = topology.trigger("evaluate-and-register", {"overrides": {"rerank.max_new_tokens": 12}})
    wait_for(lambda: topology.state(flow_run)["type"] == "RUNNING", 300, "the run to start")
    topology.mlflow.stop()
    down_at = time.monotonic()
    time.sleep(10)
    topology.mlflow.start()
    wait_for(lambda: health(f"{topology.mlflow_url}/health"), 240, "the MLflow server back")
    print(f"MLflow was down for {time.monotonic() - down_at:.0f} s during the run")
    state = topology.wait(flow_run)
    assert state["type"] == "COMPLETED", topology.worker.tail()
    assert set(topology.tasks(flow_run).values()) == {"Completed"}

    after = topology.stage_runs("evaluate-model-trained")
    assert len(after) == len(before) + 1
    new, old = after[0], before[0]
    assert new["info"]["status"] == "FINISHED"
    assert {m["key"] for m in new["data"]["metrics"]} == {m["key"] for m in old["data"]["metrics"]}


def test_a_worker_killed_in_the_middle_of_training(topology: Topology) -> None:
    """SIGKILL the worker and its flow-run process during training (the machine is gone): the automation marks the
    run Crashed when its heartbeats stop; a new worker takes the rerun, which finds every finished stage cached, runs
    the killed one again (resuming from its checkpoint when one was written) and completes; the finished stages'
    outputs are untouched and nothing is registered twice."""
    project = topology.project
    # The outputs of the stages before training (the BM25 baseline, the training data's cards and reports); the
    # training, evaluation and registry stages rerun under the new SFT setting.
    finished = {path: path.read_bytes() for path in sorted((project / "metrics").rglob("*.json"))
                if not {"train", "eval", "registry"} & set(path.relative_to(project / "metrics").parts)}
    assert finished

    def versions() -> list[dict[str, Any]]:
        return topology.mlflow_call("GET", "model-versions/search", params={"filter": f"name = '{MODEL}'"})[
            "model_versions"]

    registered = len(versions())
    overrides = {**MAIN, "overrides": {"sft.max_steps": 3}}  # a new SFT job: sft and all after it run again
    flow_run = topology.trigger("embedded", overrides)
    training = wait_for(lambda: next((stage for stage in ("sft", "grpo")
                                      if topology.tasks(flow_run).get(stage) == "Running"), None),
                        900, "training to start")
    time.sleep(3)
    topology.worker.kill()
    killed_at = time.monotonic()

    crashed = wait_for(lambda: (s := topology.state(flow_run))["type"] != "RUNNING" and s, 300,
                       "the automation to mark the run Crashed")
    assert crashed["type"] == "CRASHED", crashed  # type: ignore[index]
    detected = time.monotonic() - killed_at

    topology.worker.start()
    rerun = topology.trigger("embedded", overrides)
    state = topology.wait(rerun)
    assert state["type"] == "COMPLETED", topology.worker.tail()
    tasks = topology.tasks(rerun)
    order = ["index", "retrieve", "evaluate", "augment", "teacher", "filter", "build", "validate", "sft", "grpo"]
    finished_before = order[:order.index(training)]  # type: ignore[arg-type]
    assert all(tasks[stage] == "Cached" for stage in finished_before), tasks
    assert tasks[training] == "Completed", tasks  # type: ignore[index]
    assert {path: path.read_bytes() for path in finished} == finished
    assert len(versions()) <= registered + 1
    assert json.loads((project / "metrics" / "train" / "sft.json").read_text())["steps"] == 3
    print(f"worker SIGKILLed during {training}: marked Crashed after {detected:.0f} s; the rerun completed")


def test_two_promotions_at_once_keep_one_history(topology: Topology, tiny_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pipelines promote the versions they registered at the same moment, through the shared MLflow server
    (PostgreSQL behind it): the promotion lock runs them one after the other, so the second decides against the
    first's outcome, each version carries its decision and the champion history loses neither."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, topology.client_env[key])
    cfg, tracking = RegistryConfig(name="race-reranker"), TrackingConfig()

    def registered(ndcg: float) -> str:
        path = report(tmp_path / f"{ndcg}.json", ndcg)
        return register_stage(tiny_dir, path, cfg, SETTINGS, tracking, "params.yaml")["registered"]

    first = registered(0.5)
    assert promote_stage(cfg, tracking, first).moved
    second, third = registered(0.6), registered(0.7)
    promotions = [subprocess.Popen([str(BIN / "rearank"), "registry", "promote", "--name", "race-reranker", "--version",
                                    version, "-q"], cwd=topology.project, env=topology.client_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for version in (second, third)]
    for promotion in promotions:
        _, err = promotion.communicate(timeout=300)
        assert promotion.returncode == 0, err[-2000:]
    def decision(version: str) -> dict[str, Any]:
        tags = topology.mlflow_call("GET", "model-versions/get", params={"name": "race-reranker", "version": version})[
            "model_version"]["tags"]
        return json.loads(next(t["value"] for t in tags if t["key"] == "rearank.gate"))

    gate = {version: decision(version) for version in (second, third)}
    model = topology.mlflow_call("GET", "registered-models/get", params={"name": "race-reranker"})["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model["aliases"]}
    history = json.loads(next(t["value"] for t in model["tags"] if t["key"] == "rearank.champion_history"))
    assert aliases["champion"] == third  # 0.7 wins whichever ran first
    if gate[second]["moved"]:  # 0.6 first: promoted over v1, then 0.7 over it
        assert gate[third]["champion_before"] == second and history == [first, second]
    else:  # 0.7 first: 0.6 is then refused against it
        assert gate[second]["champion_before"] == third and history == [first]
    locks = topology.mlflow_call("GET", "registered-models/search", params={"filter": "name LIKE '%promotion-lock%'"})
    assert not locks.get("registered_models"), locks


def test_no_secret_is_stored_or_logged(topology: Topology) -> None:
    """Everything the runs left: the three databases, the artifact store, the project folder, every log."""
    stored = {f"pg_dump {db}": topology.postgres.dump(db).encode() for db in ("mlflow", "mlflow_auth", "prefect")}
    for folder in (topology.folder, topology.postgres.folder):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    stored[str(path)] = path.read_bytes()
                except PermissionError:  # the cluster's own files, readable by postgres only
                    continue
    # The right places are searched: the runs' parameters and metrics are there.
    assert b"sft.max_steps" in stored["pg_dump prefect"] and b"ndcg_at_10_dl19" in stored["pg_dump mlflow"]
    for name, secret in topology.secrets.items():
        leaks = [where for where, text in stored.items() if secret.encode() in text]
        assert not leaks, f"the {name} secret is stored in {leaks}"
