"""``rearank registry``: register a trained reranker, promote it through the gate, roll back, show the state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rearank_core.cli.common import (
    ParamsOpt,
    QuietOpt,
    app,
    err,
    job_path,
    out,
    start,
    user_errors,
)
from rearank_core.config import RegistryConfig, field_help, override
from rearank_core.errors import InputError

registry_app = typer.Typer(help="The MLflow model registry: register, promote through the gate, roll back.",
                           no_args_is_help=True)
app.add_typer(registry_app, name="registry")

R = {k: f"{v} (default: params registry.{k})" for k, v in field_help(RegistryConfig).items()}
NameOpt = Annotated[str | None, typer.Option("--name", help=R["name"])]
StateOpt = Annotated[Path | None, typer.Option(help="also write the registry's state as JSON here")]


def state_table(state: dict[str, Any], metric: str) -> Table:
    """One row per version: aliases, the gate metric per dataset, the gate's last word."""
    datasets = sorted({k.removeprefix(metric + "_") for v in state["versions"] for k in v["metrics"]
                       if k.startswith(metric + "_")})
    table = Table(title=f"registered model {state['name']}")
    for column in ("version", "aliases", *(f"{metric} {d}" for d in datasets), "gate"):
        table.add_column(column, justify="left" if column in ("aliases", "gate") else "right")
    for v in state["versions"]:
        gate = v["gate"]
        table.add_row(v["version"], ", ".join(v["aliases"]) or "-",
                      *(v["metrics"].get(f"{metric}_{d}", "not computed") for d in datasets),
                      f"{gate['action']}: {gate['reason']}" if gate else "-")
    return table


@registry_app.command()
@user_errors
def register(
    model: Annotated[Path | None, typer.Option(help="model folder (default: params train_job.grpo_dir)")] = None,
    report: Annotated[Path | None, typer.Option(help="its evaluate-model report (default: "
                                                     "<suite.metrics>/<suite.name>/trained.json)")] = None,
    name: NameOpt = None,
    state_out: StateOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Log a reranker as an MLflow model, register it with its metrics and tags, point 'candidate' at it."""
    p = start(params, quiet)
    cfg = override(p.registry, "registry", name=name)
    model_dir = job_path(model, p, "train_job", "grpo_dir", "--model")
    report_path = report or p.suite.report("trained")
    data = {kind: getattr(p.data_job, kind) for kind in ("sft", "grpo")} if p.data_job else {}
    from rearank_core.stages.registry import register_stage

    state = register_stage(model_dir, report_path, cfg, p.rerank, p.tracking, p.path, data, state_out)
    err.print(state_table(state, "ndcg_at_10"))
    out.print(f"candidate: models:/{cfg.name}@candidate (version {state['aliases'].get('candidate')})")


@registry_app.command()
@user_errors
def promote(
    version: Annotated[str | None, typer.Option(help="the version to promote (default: the 'candidate')")] = None,
    registered: Annotated[Path | None, typer.Option(help="promote the version a `registry register --state-out` "
                                                         "file names (what the pipeline does)")] = None,
    name: NameOpt = None,
    margin: Annotated[float | None, typer.Option(help=R["margin"])] = None,
    state_out: StateOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Move 'champion' to the candidate if it passes the gate (metric, dataset and margin from params.yaml)."""
    p = start(params, quiet)
    cfg = override(p.registry, "registry", name=name, margin=margin)
    from rearank_core.stages.registry import promote_stage, registered_version

    if version is not None and registered is not None:
        raise InputError("give --version or --registered, not both", field="--registered")
    decision = promote_stage(cfg, p.tracking, registered_version(registered) if registered else version, state_out)
    verdict = "promoted" if decision.moved else "refused"
    out.print(f"{verdict} version {decision.version}: {decision.reason}; champion: "
              f"{decision.champion_after or 'none'}")


@registry_app.command()
@user_errors
def rollback(
    name: NameOpt = None,
    state_out: StateOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Give 'champion' back to the version that held it before the last promotion."""
    p = start(params, quiet)
    cfg = override(p.registry, "registry", name=name)
    from rearank_core.stages.registry import rollback_stage

    decision = rollback_stage(cfg, p.tracking, state_out)
    out.print(f"rolled back: champion is version {decision.champion_after} (was {decision.version})")


@registry_app.command()
@user_errors
def show(
    name: NameOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """Every version with its aliases, its nDCG@10 per dataset and the gate's last decision."""
    p = start(params, quiet)
    cfg = override(p.registry, "registry", name=name)
    from rearank_core.stages.registry import registry_state

    out.print(state_table(registry_state(cfg, p.tracking), "ndcg_at_10"))
