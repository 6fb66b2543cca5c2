"""The end-to-end pipeline as one Prefect flow, the README's main job: BM25 baseline -> training data (augment,
teacher, filter, build, validate) -> SFT -> GRPO -> evaluate (untrained and trained) -> register -> promote; the
flow's default run (as `dvc repro`) also trains the FIRST model and evaluates it in first mode, which the main job
leaves out for time.

Each task calls the stage function its dvc.yaml stage's command calls, on the same paths, in a child process of
its own (a stage the OOM killer ends is reported with its name and peak memory; its memory is freed when it
ends). A task's cache key is the stage's fingerprint (the bytes of its dvc.yaml deps and the values of its
params), so a rerun skips finished stages; a stage whose outputs are missing or are not the ones that run wrote
(another run's, with other params, or edited) runs again. On params.yaml itself (no
overrides), each stage that ran is recorded in dvc.lock, so ``dvc repro`` afterwards reports everything up to
date. Everything nests under one MLflow run, ``pipeline``, which also holds each stage's peak memory and wall time
(``peak_rss_gib/<stage>``, ``wall_s/<stage>``); each evaluation and the registry's state are Prefect artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.server import temporary_server
from rearank_core.config import Params, load_params, with_overrides
from rearank_core.io.reports import report_markdown
from rearank_core.memory import GIB
from rearank_core.mlops.pipeline_stages import (
    StageSpec,
    fingerprint,
    outputs_current,
    read_stages,
    record,
    record_outputs,
)
from rearank_core.mlops.tracking import PARENT_RUN, log_run_metrics, stage_run, tracking_uri
from rearank_core.stages.pipeline import FIRST_STAGES, STAGES, run_named_stage
from rearank_core.stages.registry import registry_state
from rearank_core.supervise import StageKilled, run_in_child


# README command 1: every stage but the FIRST model's (stages.pipeline.FIRST_STAGES), which `dvc repro` adds.
MAIN_JOB = [name for name in STAGES if name not in FIRST_STAGES]


@task(persist_result=True, retries=1, retry_delay_seconds=10,  # a retry resumes: trainers from checkpoints,
      retry_condition_fn=lambda _task, _run, state: not isinstance(state.result(raise_on_failure=False), StageKilled))
def stage_task(name: str, params: Params, parent_run: str | None) -> Any:  # evaluations from their traces
    """The stage in its own process (``run_in_child``): its memory is the kernel's again when it ends, and a stage
    the OOM killer ends is reported with its name and peak memory instead of taking the flow with it (no retry:
    it would be killed again)."""
    finished = run_in_child(run_named_stage, name, params, stage=name,
                            env={PARENT_RUN: parent_run} if parent_run else None)
    result = finished.value
    peak = finished.peak_bytes / GIB
    get_run_logger().info("%s: %.0f s, peak memory %.2f GiB resident (its process tree)", name, finished.seconds, peak)
    if parent_run:  # the pipeline run holds every stage's cost: the memory budget is per stage
        log_run_metrics(params.tracking, parent_run, {f"peak_rss_gib/{name}": peak, f"wall_s/{name}": finished.seconds})
    if name.startswith("evaluate_"):  # Prefect's API is this process's: the child runs the library only
        label = name.removeprefix("evaluate_")
        create_markdown_artifact(key=f"evaluation-{label}", markdown=report_markdown(result),
                                 description=f"{label} vs BM25 on the {params.suite.name} suite")
    return result


def run_stage(name: str, spec: StageSpec, params: Params, record_in_dvc: bool, parent_run: str | None) -> Any:
    """One stage as a Prefect task keyed on its fingerprint, its cached result used only while its outputs are the
    ones that run wrote; recorded in dvc.lock when it ran on params.yaml."""
    key = fingerprint(spec, params)
    runner = stage_task.with_options(name=name, cache_key_fn=lambda *_: key,
                                     refresh_cache=not outputs_current(spec, key))
    state = runner(name, params, parent_run, return_state=True)
    result = state.result()
    if state.name != "Cached":
        record_outputs(spec, key)
        if record_in_dvc:
            record(name)
    get_run_logger().info("%s: %s", name, "cached (inputs and params unchanged)" if state.name == "Cached" else "done")
    return result


@flow(name="rearank-pipeline")
def pipeline(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None,
             stages: list[str] | None = None) -> dict[str, Any]:
    """The whole pipeline on ``params_path`` (a profile works too), with ``overrides`` as ``{"section.key": value}``
    (any params.yaml key; a Prefect deployment's parameters), and optionally only the named ``stages``."""
    params = with_overrides(load_params(params_path), overrides or {})
    specs = read_stages(".")
    chosen = stages or list(STAGES)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; the pipeline's stages are {list(STAGES)}")
    record_in_dvc = Path(params_path).resolve() == Path("params.yaml").resolve() and not overrides
    results: dict[str, Any] = {}
    with stage_run(params.tracking, "pipeline") as parent:
        for name in (s for s in STAGES if s in chosen):
            results[name] = run_stage(name, specs[name], params, record_in_dvc, parent.run_id)
    if parent.run_id:
        experiment = params.tracking.experiment
        create_link_artifact(key="mlflow-pipeline-run", link=f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{parent.run_id}",
                             link_text=f"MLflow run {parent.run_id} ({tracking_uri(params.tracking)})",
                             description="the pipeline's MLflow run, once `mlflow ui` serves the store")
    if "register" in results or "promote" in results:
        create_markdown_artifact(key="registry", markdown=_registry_markdown(registry_state(params.registry,
                                                                                            params.tracking)))
    return results


def _registry_markdown(state: dict[str, Any]) -> str:
    lines = [f"### {state['name']}", "", "| version | aliases | nDCG@10 per dataset | gate |", "|---|---|---|---|"]
    for v in state["versions"]:
        ndcg = {k.removeprefix("ndcg_at_10_"): str(val) for k, val in v["metrics"].items()
                if k.startswith("ndcg_at_10_")}
        missing = sum(val.startswith("not evaluated") for val in ndcg.values())
        metrics = ", ".join(f"{name} {val}" for name, val in ndcg.items() if not val.startswith("not evaluated"))
        metrics += f" ({missing} not evaluated)" if missing else ""
        gate = f"{v['gate']['action']}: {v['gate']['reason']}" if v["gate"] else "-"
        lines.append(f"| {v['version']} | {', '.join(v['aliases']) or '-'} | {metrics} | {gate} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """README command 1: the pipeline on params.yaml, then what it produced and where to look."""
    from rich.console import Console
    from rich.table import Table

    params = load_params("params.yaml")
    with temporary_server():
        results = pipeline(stages=MAIN_JOB)
    console = Console(soft_wrap=True)
    reports = {label: results.get(f"evaluate_{label}") or {} for label in ("untrained", "trained")}
    table = Table(title=f"nDCG@10 on the {params.suite.name} suite (format-valid rate)")
    for column in ("dataset", "queries", "BM25", "untrained", "trained"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    not_evaluated: dict[str, list[str]] = {}  # reason -> datasets: one line each below the table
    for name, row in reports["trained"].get("datasets", {}).items():
        if row.get("status") == "not evaluated":
            not_evaluated.setdefault(row.get("reason", ""), []).append(name)
            continue
        cells = []
        for label in ("untrained", "trained"):
            other = reports[label].get("datasets", {}).get(name, {})
            rate = other.get("format_valid_rate")
            cells.append(f"{other['reranked']['ndcg@10']:.4f} ({'n/a' if rate is None else f'{rate:.0%}'})"
                         if "reranked" in other else "not computed")
        table.add_row(name, str(row["queries"]), f"{row['bm25']['ndcg@10']:.4f}", *cells)
    console.print(table)
    for reason, names in not_evaluated.items():
        console.print(f"not evaluated ({len(names)}: {', '.join(names)}): {reason}")
    console.print(_registry_markdown(registry_state(params.registry, params.tracking)))
    store = tracking_uri(params.tracking)
    console.print(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {store} --port 5000  ->  http://127.0.0.1:5000")
    console.print("Prefect UI: PREFECT_HOME=.prefect .venv/bin/prefect server start  ->  http://127.0.0.1:4200 "
                  "(this run is in .prefect/)")
    console.print(f"Serve the champion: .venv/bin/rearank serve --model models:/{params.registry.name}@champion")


if __name__ == "__main__":
    main()
