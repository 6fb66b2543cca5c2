"""README command 1 on a fresh clone, in float32 and in the machine's own dtype: exit code, wall time, peak
resident memory of the whole run, and the peak of every stage; then `rearank serve` under 8 concurrent requests.

For each dtype: `git clone` of this repository's HEAD into a scratch folder, params.yaml's sft/grpo/rerank.dtype
set to it (what `dtype: auto` picks on the CPU in question: float32 on one without AMX/AVX512-BF16, where bf16 is
emulated), then command 1 itself, `bash infra/install.sh && .venv/bin/python -m flows.pipeline`, its whole process
tree (installer, flow, temporary Prefect server, each stage's child) sampled every 50 ms from /proc: what the
kernel's OOM killer counts. The flow runs every stage in a child process of its own and records that child's
peak and wall time on the pipeline's MLflow run (`peak_rss_gib/<stage>`, `wall_s/<stage>`); they are read back
from the clone's MLflow store. Last, `rearank serve` with the trained model answers 8 requests from 8 concurrent
clients (DL19 queries, BM25 top 10) and its tree's peak is taken likewise. On a CPU whose own dtype is float32
the two runs are one.

    .venv/bin/python bench/bench_memory.py [--dtypes float32 bfloat16] [--budget-gib 6] [--work DIR]

Writes bench/results/memory.json and memory.md after every run; exits 1 when a run failed or a stage went over
the budget."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_serve import bodies, run_load, start_serve, stop  # noqa: E402
from bench_train import cpu_name  # noqa: E402

from rearank_core.backends.transformers_engine import cpu_has_fast_bf16  # noqa: E402
from rearank_core.memory import GIB, PeakSampler  # noqa: E402

COMMAND_1 = "bash infra/install.sh && .venv/bin/python -m flows.pipeline"
SERVE_REQUESTS = 8


def fresh_clone(dest: Path, dtype: str) -> Path:
    """A clone of HEAD (what a user gets) with the rerankers' dtype forced to ``dtype``."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section in ("sft", "grpo", "rerank"):
        params[section]["dtype"] = dtype
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def clean_env() -> dict[str, str]:
    """This shell's environment less what would point the clone at this checkout's venv or MLflow store."""
    return {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "PREFECT_API_URL",
                                                             "PREFECT_HOME", "PYTHONPATH"}}


def run_command_1(clone: Path, log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(COMMAND_1, shell=True, cwd=clone, env=clean_env(), stdout=out,
                                   stderr=subprocess.STDOUT)
        with PeakSampler(process.pid) as sampler:
            code = process.wait()
    return {"exit": code, "wall_s": round(time.perf_counter() - started, 1), "peak_gib": round(sampler.peak / GIB, 2)}


def stage_costs(clone: Path) -> list[dict[str, Any]]:
    """Each stage's peak and wall time from the latest pipeline run in the clone's MLflow store."""
    from mlflow import MlflowClient

    params = yaml.safe_load((clone / "params.yaml").read_text())
    client = MlflowClient(f"sqlite:///{clone / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(params["tracking"]["experiment"])
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = 'pipeline'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    metrics = runs[0].data.metrics if runs else {}
    names = [key.removeprefix("peak_rss_gib/") for key in metrics if key.startswith("peak_rss_gib/")]
    order = list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    return [{"stage": name, "peak_gib": round(metrics[f"peak_rss_gib/{name}"], 2),
             "wall_s": round(metrics[f"wall_s/{name}"], 1)} for name in sorted(names, key=order.index)]


def run_serve(clone: Path, log: Path) -> dict[str, Any]:
    """`rearank serve` on the trained model, 8 requests from 8 concurrent clients; peak RSS of its tree."""
    started = time.perf_counter()
    process, base_url = start_serve(["--params", str(clone / "params.yaml"), "--model",
                                     str(clone / "work" / "train" / "grpo")], log)
    try:
        with PeakSampler(process.pid) as sampler:
            load = run_load(base_url, bodies(SERVE_REQUESTS, 10), SERVE_REQUESTS)
    finally:
        stop(process)
    ok = load.answered - sum(load.errors.values())
    return {"stage": f"rearank serve ({SERVE_REQUESTS} concurrent)", "peak_gib": round(sampler.peak / GIB, 2),
            "wall_s": round(time.perf_counter() - started, 1), "answered_ok": ok}


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    dtypes = list(runs)
    lines = [f"README command 1 on a fresh clone, {result['cpu']}, {result['cores']} cores; peak RSS of the whole "
             f"process tree sampled every 50 ms; budget {result['budget_gib']} GiB per stage.", "",
             "| | " + " | ".join(dtypes) + " |", "|---|" + "---:|" * len(dtypes)]
    lines.append("| command 1: exit, wall, whole-run peak | " + " | ".join(
        f"exit {r['command_1']['exit']}, {r['command_1']['wall_s'] / 60:.1f} min, {r['command_1']['peak_gib']:.2f} GiB"
        for r in runs.values()) + " |")
    names = list(dict.fromkeys(row["stage"] for r in runs.values() for row in r["stages"]))
    for name in names:
        cells = []
        for r in runs.values():
            row = next((s for s in r["stages"] if s["stage"] == name), None)
            cells.append("not measured" if row is None else f"{row['peak_gib']:.2f} GiB ({row['wall_s']:.0f} s)"
                         + (f", {row['answered_ok']}/{SERVE_REQUESTS} answered" if "answered_ok" in row else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for dtype, r in runs.items():
        if r["stages"]:
            worst = max(r["stages"], key=lambda s: s["peak_gib"])
            verdict = "every stage under" if r["within_budget"] else "NOT every stage under"
            lines.append(f"\n{dtype}: largest {worst['stage']} {worst['peak_gib']:.2f} GiB; {verdict} the budget.")
    return "\n".join(lines) + "\n"


def main() -> None:
    own = "bfloat16" if cpu_has_fast_bf16() else "float32"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=sorted({"float32", own}, key=["float32", "bfloat16"].index),
                        choices=["float32", "bfloat16"])
    parser.add_argument("--budget-gib", type=float, default=6.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rearank-bench-memory"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    out = ROOT / "bench" / "results"
    result: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "own_dtype": own,
                              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                                       capture_output=True, check=True).stdout.strip(),
                              "budget_gib": args.budget_gib, "runs": {}}
    print(f"{result['cpu']}: dtypes {args.dtypes}", flush=True)
    for dtype in args.dtypes:
        clone = fresh_clone(args.work / dtype, dtype)
        run: dict[str, Any] = {"command_1": run_command_1(clone, args.work / f"{dtype}-command-1.log")}
        print(f"  {dtype} command 1: {run['command_1']}", flush=True)
        run["stages"] = stage_costs(clone)
        if run["command_1"]["exit"] == 0:
            run["stages"].append(run_serve(clone, args.work / f"{dtype}-serve.log"))
        run["within_budget"] = run["command_1"]["exit"] == 0 and all(
            s["peak_gib"] < args.budget_gib and s.get("answered_ok", SERVE_REQUESTS) == SERVE_REQUESTS
            for s in run["stages"])
        for row in run["stages"]:
            print(f"    {row}", flush=True)
        result["runs"][dtype] = run
        (out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "memory.md").write_text(markdown(result))
    print(markdown(result))
    sys.exit(0 if all(r["within_budget"] for r in result["runs"].values()) else 1)


if __name__ == "__main__":
    main()
