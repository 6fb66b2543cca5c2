"""The MLflow model registry: registration with metrics and provenance tags, the promotion gate (promote, refuse,
roll back, a failure half way), ``models:/`` URIs wherever a model is accepted, and the registered model served by
``mlflow models serve`` over real HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import requests
import yaml
from conftest import BIN, DL19_CANDIDATES
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.cli.options import rerank_config
from rearank_core.config import RegistryConfig, RerankConfig, TrackingConfig, load_params
from rearank_core.errors import InputError
from rearank_core.mlops import registry
from rearank_core.rerank import Reranker
from rearank_core.serving import create_app
from rearank_core.stages.registry import (
    promote_stage,
    register_stage,
    registry_state,
    rollback_stage,
)

SETTINGS = RerankConfig(window=3, step=2, max_new_tokens=8, truncate_unit="words", truncate_length=20)


def report(path: Path, dl19: float | None, format_valid: float = 1.0, suite: str = "tiny", queries: int = 3,
           mode: str | None = None) -> Path:
    """An evaluate-model report with the given nDCG@10 on dl19 (None: dl19 not evaluated) from ``queries`` queries
    of ``suite`` (in ``mode``; None: a report from before modes), and a BRIGHT domain that could not be
    evaluated."""
    datasets: dict = {"bright_biology": {"status": "not evaluated", "reason": "BRIGHT documents not found"}}
    if dl19 is not None:
        datasets["dl19"] = {"queries": queries, "top_k": 10, "format_valid_rate": format_valid, "windows": 6,
                            "bm25": {"ndcg@10": 0.5}, "reranked": {"ndcg@10": dl19, "recall@10": 0.2}}
    path.write_text(json.dumps({"label": "trained", "suite": suite, "datasets": datasets,
                                **({"mode": mode} if mode else {})}))
    return path


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrackingConfig:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return TrackingConfig()


def register(tiny_dir: Path, tmp_path: Path, tracking: TrackingConfig, dl19: float | None, cfg: RegistryConfig,
             format_valid: float = 1.0, suite: str = "tiny", queries: int = 3, mode: str | None = None) -> str:
    path = report(tmp_path / f"report-{dl19}-{format_valid}-{suite}-{queries}-{mode}.json", dl19, format_valid, suite,
                  queries, mode)
    state = register_stage(tiny_dir, path, cfg, SETTINGS, tracking, "params.yaml", {"sft": path})
    assert state["registered"] == state["aliases"]["candidate"]
    return state["registered"]


def test_register_tags_the_version_and_a_rerun_registers_nothing_new(tiny_dir: Path, tmp_path: Path,
                                                                     store: TrackingConfig) -> None:
    cfg = RegistryConfig(name="tiny-reranker")
    path = report(tmp_path / "report.json", 0.61)
    trained = tmp_path / "train" / "grpo"  # a training folder: the model, its checkpoints and the trainer's state
    shutil.copytree(tiny_dir, trained)
    (trained / "checkpoint-1").mkdir()
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "model.safetensors"):
        (trained / "checkpoint-1" / name).write_bytes(b"training state")
    (trained / "training_args.bin").write_bytes(b"trainer arguments")
    (trained / "rearank-job.txt").write_text("job fingerprint")
    state = register_stage(trained, path, cfg, SETTINGS, store, "profiles/x.yaml", {"sft": path}, tmp_path / "state.json")
    assert state["aliases"] == {"candidate": "1"}
    assert json.loads((tmp_path / "state.json").read_text())["aliases"] == {"candidate": "1"}
    version = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_model_version("tiny-reranker", "1")
    tags = version.tags
    assert float(tags["ndcg_at_10_dl19"]) == 0.61 and float(tags["format_valid_dl19"]) == 1.0
    assert float(tags["bm25_ndcg_at_10_dl19"]) == 0.5
    assert tags["ndcg_at_10_bright_biology"] == "not evaluated: BRIGHT documents not found"
    assert tags["profile"] == "profiles/x.yaml" and tags["model_format"] == "full"
    assert tags["data_md5_sft"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert len(tags["git_commit"].removesuffix("-dirty")) == 40 or tags["git_commit"] == "unknown"
    run = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(version.run_id)
    assert run.data.tags["rearank.stage"] == "register" and run.data.metrics["ndcg_at_10_dl19"] == 0.61
    # The version holds the model, not the training folder: no checkpoint, no optimizer state, no trainer files.
    stored = Path(mlflow.artifacts.download_artifacts("models:/tiny-reranker/1", dst_path=str(tmp_path / "stored")))
    files = {p.name for p in (stored / "artifacts" / "model").iterdir()}
    assert files == {p.name for p in tiny_dir.iterdir()}, files
    assert not [p for p in stored.rglob("*") if "checkpoint" in p.name or p.name in ("optimizer.pt",
                                                                                      "training_args.bin")]
    assert not list(trained.parent.glob(".grpo.register-*"))  # the staging folder is gone
    (trained / "checkpoint-2").mkdir()  # a new checkpoint is not a new model: the rerun registers nothing new
    (trained / "checkpoint-2" / "optimizer.pt").write_bytes(b"more training state")
    again = register_stage(trained, path, cfg, SETTINGS, store, "profiles/x.yaml", {"sft": path})
    assert [v["version"] for v in again["versions"]] == ["1"]


def test_gate_promotes_refuses_and_rolls_back(tiny_dir: Path, tmp_path: Path, store: TrackingConfig) -> None:
    cfg = RegistryConfig(name="gated", margin=0.01)
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    first = register(tiny_dir, tmp_path, store, 0.50, cfg)
    decision = promote_stage(cfg, store)
    assert decision.moved and decision.champion_after == first and "no champion yet" in decision.reason
    assert "promote" in client.get_model_version("gated", first).description

    worse = register(tiny_dir, tmp_path, store, 0.505, cfg)  # better, but not by the margin
    decision = promote_stage(cfg, store)
    assert not decision.moved and decision.champion_after == first and "margin 0.01" in decision.reason
    assert json.loads(client.get_model_version("gated", worse).tags[registry.GATE_TAG])["moved"] is False
    assert str(client.get_model_version_by_alias("gated", "candidate").version) == worse

    better = register(tiny_dir, tmp_path, store, 0.60, cfg)
    assert promote_stage(cfg, store).moved
    state = registry_state(cfg, store)
    assert state["aliases"] == {"candidate": better, "champion": better} and state["champion_history"] == [first]

    decision = rollback_stage(cfg, store)
    assert decision.champion_after == first
    assert str(client.get_model_version_by_alias("gated", "champion").version) == first
    with pytest.raises(InputError, match="no earlier champion"):
        rollback_stage(cfg, store)
    # The old champion can win its title back only through the gate: promoting it again is refused (already champion).
    assert not promote_stage(cfg, store, version=first).moved


def test_gate_refuses_what_was_not_evaluated_or_writes_no_answers(tiny_dir: Path, tmp_path: Path,
                                                                 store: TrackingConfig) -> None:
    cfg = RegistryConfig(name="strict", min_format_valid=0.9)
    register(tiny_dir, tmp_path, store, None, cfg)
    decision = promote_stage(cfg, store)
    assert not decision.moved and "not evaluated on dl19" in decision.reason
    register(tiny_dir, tmp_path, store, 0.9, cfg, format_valid=0.5)
    decision = promote_stage(cfg, store)
    assert not decision.moved and "format-valid rate" in decision.reason
    assert registry_state(cfg, store)["aliases"].get("champion") is None


def test_gate_compares_like_with_like_and_fails_closed(tiny_dir: Path, tmp_path: Path, store: TrackingConfig) -> None:
    cfg = RegistryConfig(name="fair", min_queries=3)
    assert not promote_stage(cfg, store, register(tiny_dir, tmp_path, store, 0.9, cfg, queries=2)).moved
    champion = register(tiny_dir, tmp_path, store, 0.5, cfg)
    assert promote_stage(cfg, store, champion).moved
    other_suite = register(tiny_dir, tmp_path, store, 0.9, cfg, suite="embedded", queries=43)
    decision = promote_stage(cfg, store, other_suite)
    assert not decision.moved and decision.reason == (
        f"not comparable: v{other_suite}'s ndcg_at_10_dl19 is from suite embedded (43 queries, top-10, reasoning "
        f"mode), champion v{champion}'s from suite tiny (3 queries, top-10, reasoning mode)")
    # The same suite in first mode is another measurement: a FIRST model does not replace a reasoning champion on it.
    first = register(tiny_dir, tmp_path, store, 0.95, cfg, mode="first")
    refused = promote_stage(cfg, store, first)
    assert not refused.moved and "top-10, first mode), champion" in refused.reason
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_model_version("fair", first)
    assert version.tags["mode"] == "first" and client.get_model_version("fair", champion).tags["mode"] == "reasoning"
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert json.loads(client.get_model_version("fair", other_suite).tags[registry.GATE_TAG])["reason"] == decision.reason
    # A champion without the gate metric is kept unless the profile says otherwise.
    blind = RegistryConfig(name="blind", min_queries=1)
    unmeasured = register(tiny_dir, tmp_path, store, 0.5, blind)
    client.set_model_version_tag("blind", unmeasured, "ndcg_at_10_dl19", "not evaluated: lost")
    client.set_registered_model_alias("blind", "champion", unmeasured)
    better = register(tiny_dir, tmp_path, store, 0.7, blind, suite="other")
    refused = promote_stage(blind, store, better)
    assert not refused.moved and f"champion v{unmeasured} has no ndcg_at_10_dl19" in refused.reason
    allowed = promote_stage(RegistryConfig(name="blind", allow_missing_champion_metric=True), store, better)
    assert allowed.moved and allowed.champion_after == better
    # An unknown version or model is one line, not a traceback.
    with pytest.raises(InputError, match="registered model 'fair' has no version 999"):
        promote_stage(cfg, store, "999")
    with pytest.raises(InputError, match="no registered model 'nobody'"):
        rollback_stage(RegistryConfig(name="nobody"), store)


def test_a_promotion_that_fails_half_way_leaves_the_aliases_as_they_were(tiny_dir: Path, tmp_path: Path,
                                                                          store: TrackingConfig,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RegistryConfig(name="atomic")
    first = register(tiny_dir, tmp_path, store, 0.5, cfg)
    promote_stage(cfg, store)
    second = register(tiny_dir, tmp_path, store, 0.7, cfg)
    before = registry_state(cfg, store)
    real = mlflow.MlflowClient.set_registered_model_alias

    def failing(self: mlflow.MlflowClient, name: str, alias: str, version: str) -> None:
        if alias == registry.CHAMPION:
            raise ConnectionError("tracking server went away")
        real(self, name, alias, version)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", failing)
    with pytest.raises(ConnectionError):
        promote_stage(cfg, store)
    after = registry_state(cfg, store)
    assert after["aliases"] == before["aliases"] == {"candidate": second, "champion": first}
    assert after["champion_history"] == before["champion_history"] == []
    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", real)
    assert promote_stage(cfg, store).champion_after == second


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_registry_cli_and_models_uri_wherever_a_model_is_accepted(tiny_dir: Path, tmp_path: Path, root: Path,
                                                                  model_cache: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["registry"] = {"name": "cli-reranker"}
    params["rerank"].update(model_cache=str(model_cache))
    local = tmp_path / "local.yaml"  # what another machine's params.yaml says: not what the model was evaluated with
    local.write_text(yaml.safe_dump(params, sort_keys=False))
    params["rerank"].update(window=3, step=1, max_new_tokens=4)  # what it was evaluated (and registered) with
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The default store, as a user has it: no MLFLOW_TRACKING_URI, params.yaml's tracking.uri null (mlruns/ here).
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "NO_COLOR": "1", "COLUMNS": "160"}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)

    def rearank(*args: str) -> subprocess.CompletedProcess:
        """The command in this process (Typer's runner): a Python start-up with torch each would prove nothing
        more than the one `rearank registry register` below."""
        done = CliRunner().invoke(cli, [*args, "--params", str(tmp_path / "params.yaml")],
                                  env={"NO_COLOR": "1", "COLUMNS": "160"})
        return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)

    # The installed entry point once, as a subprocess.
    done = subprocess.run([str(BIN / "rearank"), "registry", "register", "--model", str(tiny_dir), "--report",
                           str(report(tmp_path / "r.json", 0.55)), "--params", str(tmp_path / "params.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "models:/cli-reranker@candidate (version 1)" in done.stdout
    done = rearank("registry", "promote")
    assert done.returncode == 0 and "promoted version 1" in done.stdout, done.stderr[-2000:]
    done = rearank("registry", "show")
    assert "champion" in done.stdout and "0.55" in done.stdout
    refused = rearank("registry", "rollback")
    assert refused.returncode == 2 and "no earlier champion" in refused.stderr
    unknown = rearank("registry", "promote", "--version", "999")
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "error: field '--version': registered model 'cli-reranker' has no version 999"], unknown.stderr
    missing = rearank("registry", "register", "--model", str(tmp_path / "nowhere"), "--report", str(tmp_path / "r.json"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr

    # The champion runs with the settings it was evaluated with (window 3, step 1: 4 windows over a top-6), not
    # with the local params.yaml's (window 10, step 5: 1 window); an option still wins, and says so.
    run, summary = tmp_path / "champion.trec", tmp_path / "summary.json"
    uri = "models:/cli-reranker@champion"
    common = ("rerank", "--candidates", str(DL19_CANDIDATES), "--run", str(run), "--model", uri, "--limit", "1",
              "--top-k", "6", "--summary-out", str(summary), "--no-track")
    done = CliRunner().invoke(cli, [*common, "--params", str(local)], env={"NO_COLOR": "1", "COLUMNS": "160"})
    assert done.exit_code == 0, done.stderr[-2000:]
    assert len(run.read_text().splitlines()) == 100  # the query's whole list, its top-6 reranked
    assert json.loads(summary.read_text())["windows"] == 4
    done = CliRunner().invoke(cli, [*common, "--window", "6", "--params", str(local)],
                              env={"NO_COLOR": "1", "COLUMNS": "160"})
    assert done.exit_code == 0 and json.loads(summary.read_text())["windows"] == 1, done.stderr[-2000:]
    logged = " ".join(done.stderr.split())  # the log's lines wrap at the console's width
    assert f"{uri} (models:/cli-reranker/1) was evaluated with window 3; running it with --window 6 as asked" in logged
    pinned = rerank_config(load_params(local).rerank, model=uri)
    assert pinned.model == "models:/cli-reranker/1"  # settings and weights of one version, should the alias move
    served = Reranker(pinned)
    with TestClient(create_app(served, model_name=uri)) as api:
        health = api.get("/health").json()
        assert health["settings"] == {"mode": "reasoning", "prompt": "rearank", "first_prompt": "first", "window": 3,
                                      "step": 1, "top_k": params["rerank"]["top_k"], "max_new_tokens": 4, "truncate_unit": params["rerank"]["truncate_unit"],
                                      "truncate_length": params["rerank"]["truncate_length"]}
        answer = api.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]}).json()
        assert answer["meta"]["settings"] == health["settings"] and answer["meta"]["windows"] == 2
    unknown = rearank("rerank", "--candidates", str(DL19_CANDIDATES), "--run", str(run), "--model",
                      "models:/cli-reranker@nobody", "--limit", "1", "--no-track", "-q")
    assert unknown.returncode == 2 and "models:/cli-reranker@nobody" in unknown.stderr
    assert (tmp_path / "mlruns" / "mlflow.db").is_file() and not (tmp_path / "mlflow.db").exists()  # one store


@pytest.mark.integration
def test_mlflow_models_serve_answers_rankings(tiny_dir: Path, tmp_path: Path, store: TrackingConfig) -> None:
    cfg = RegistryConfig(name="served")
    register(tiny_dir, tmp_path, store, 0.5, cfg)
    promote_stage(cfg, store)
    port = free_port()
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/served@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "-w", "1"],
                              cwd=tmp_path, env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # it runs `uvicorn` from PATH
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not start"
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        documents = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany.",
                     "France borders Spain.", "The Seine flows through Paris."]
        answer = requests.post(f"{url}/invocations", timeout=120, json={"inputs": [
            {"query": "capital of France", "documents": documents, "top_n": 3},
            {"query": "fruit colours", "documents": documents[:2]}]})
        assert answer.status_code == 200, answer.text
        first, second = answer.json()["predictions"]
        assert len(first["results"]) == 3 and len({r["index"] for r in first["results"]}) == 3
        assert all(0 <= r["index"] < len(documents) for r in first["results"])
        scores = [r["relevance_score"] for r in first["results"]]
        assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
        assert sorted(r["index"] for r in second["results"]) == [0, 1]
        bad = requests.post(f"{url}/invocations", timeout=60, json={"inputs": [{"query": "no documents"}]})
        assert 400 <= bad.status_code < 500 and "documents" in bad.text
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
