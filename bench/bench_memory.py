"""Peak resident memory of every stage of the main job, in float32 and in the machine's own dtype.

Each stage runs as `dvc repro` runs it: its dvc.yaml command (resolved by DVC from params.yaml) in its own shell,
in a fresh copy of the project; the peak is the resident size of that whole process tree, sampled every 50 ms
from /proc (what the kernel's OOM killer counts). The stages that do not touch the model's weights (index,
retrieve, evaluate, the data stages) run once; sft, grpo, both evaluations, register and promote run once per
dtype (params.yaml's sft/grpo/rerank.dtype set to it); then `rearank serve` with the trained model answers 8
concurrent requests (DL19 queries with their BM25 top 10 passages) and its peak is taken likewise. Float32 is
what `dtype: auto` picks on a CPU without AMX/AVX512-BF16 and doubles every tensor; on such a CPU it is also the
machine's own dtype, so it runs once.

    .venv/bin/python bench/bench_memory.py [--dtypes float32 bfloat16] [--budget-gib 6] [--work DIR]

Writes bench/results/memory.json and memory.md; exits 1 when a stage failed or went over the budget."""

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

SHARED = ("index", "retrieve", "evaluate", "augment", "teacher", "filter", "build", "validate")
PER_DTYPE = ("sft", "grpo", "evaluate_untrained", "evaluate_trained", "register", "promote")
SERVE_REQUESTS = 8


def make_project(dest: Path) -> Path:
    """A git + DVC copy of the project's pipeline files, data and shipped reranker (as a clone has them)."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "params.yaml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    for folder in ("data", "models"):
        shutil.copytree(ROOT / folder, dest / folder)
    (dest / ".gitignore").write_text("work/\nmlruns/\n.prefect/\ndvc-remote/\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], cwd=dest, check=True)
    return dest


def set_dtype(project: Path, dtype: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section in ("sft", "grpo", "rerank"):
        params[section]["dtype"] = dtype
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commands(project: Path) -> dict[str, str]:
    """Each stage's command as DVC resolves it from dvc.yaml and params.yaml."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {stage.name: stage.cmd for stage in repo.index.stages if getattr(stage, "cmd", None)}


def env() -> dict[str, str]:
    out = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def run_stage(name: str, command: str, project: Path, logs: Path) -> dict[str, Any]:
    log = logs / f"{name}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, shell=True, cwd=project, env=env(), stdout=out, stderr=subprocess.STDOUT)
        with PeakSampler(process.pid) as sampler:
            code = process.wait()
    row = {"stage": name, "peak_gib": round(sampler.peak / GIB, 2), "wall_s": round(time.perf_counter() - started, 1),
           "exit": code}
    print(f"  {name}: peak {row['peak_gib']} GiB, {row['wall_s']} s, exit {code}", flush=True)
    return row


def run_serve(project: Path, logs: Path) -> dict[str, Any]:
    """`rearank serve` on the trained model, 8 requests from 8 concurrent clients; peak RSS of its tree."""
    started = time.perf_counter()
    process, base_url = start_serve(["--params", str(project / "params.yaml"), "--model",
                                     str(project / "work" / "train" / "grpo")], logs / "serve.log")
    try:
        with PeakSampler(process.pid) as sampler:
            load = run_load(base_url, bodies(SERVE_REQUESTS, 10), SERVE_REQUESTS)
    finally:
        stop(process)
    ok = load.answered - sum(load.errors.values())
    row = {"stage": f"serve ({SERVE_REQUESTS} concurrent)", "peak_gib": round(sampler.peak / GIB, 2),
           "wall_s": round(time.perf_counter() - started, 1), "exit": 0 if ok == SERVE_REQUESTS else 1,
           "answered_ok": ok}
    print(f"  serve: peak {row['peak_gib']} GiB, {ok}/{SERVE_REQUESTS} ok", flush=True)
    return row


def markdown(result: dict[str, Any]) -> str:
    dtypes = result["dtypes"]
    lines = [f"Peak RSS per stage of the main job (whole process tree, sampled every 50 ms), {result['cpu']}, "
             f"{result['cores']} cores; budget {result['budget_gib']} GiB per stage."
             + ("" if result["complete"] else " **Partial: the run had not finished.**"), "",
             "| stage | " + " | ".join(f"{d} peak GiB (wall s)" for d in dtypes) + " |",
             "|---|" + "---:|" * len(dtypes)]
    names = list(dict.fromkeys(row["stage"] for rows in result["runs"].values() for row in rows))
    for name in names:
        cells = []
        for dtype in dtypes:
            row = next((r for r in result["runs"][dtype] if r["stage"] == name), None)
            if row is None:
                cells.append("not measured")
                continue
            flag = "" if row["exit"] == 0 else f" exit {row['exit']}"
            shared = " (same run)" if name in SHARED and dtype != dtypes[0] else ""
            cells.append(f"{row['peak_gib']:.2f} ({row['wall_s']:.0f}){shared}{flag}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for dtype in dtypes:
        rows = result["runs"][dtype]
        if rows:
            worst = max(rows, key=lambda r: r["peak_gib"])
            verdict = "all under" if result["within_budget"][dtype] else "NOT all under"
            lines.append(f"\n{dtype}: largest {worst['stage']} {worst['peak_gib']:.2f} GiB; {verdict} the budget"
                         f"{'' if result['complete'] else ' so far'}.")
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
    project = make_project(args.work / "project")
    logs = args.work / "logs"
    logs.mkdir()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rerank"]["model_cache"] = str(args.work / "models")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmds = commands(project)
    own_cpu = cpu_name()
    print(f"{own_cpu}: dtypes {args.dtypes}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {dtype: [] for dtype in args.dtypes}
    out = ROOT / "bench" / "results"

    def write(complete: bool) -> dict[str, Any]:
        """The results so far (after every stage, so an interrupted run keeps what it measured)."""
        within = {d: all(r["exit"] == 0 and r["peak_gib"] < args.budget_gib for r in rows) for d, rows in runs.items()}
        result = {"cpu": own_cpu, "cores": os.cpu_count(), "own_dtype": own, "dtypes": args.dtypes,
                  "budget_gib": args.budget_gib, "complete": complete, "runs": runs, "within_budget": within}
        (out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "memory.md").write_text(markdown(result))
        return result

    for name in SHARED:
        row = run_stage(name, cmds[name], project, logs)
        for rows in runs.values():
            rows.append(row)
        write(False)
    for dtype in args.dtypes:
        print(dtype, flush=True)
        set_dtype(project, dtype)
        for folder in ("work/train", "work/eval", "metrics/eval"):
            shutil.rmtree(project / folder, ignore_errors=True)
        dtype_logs = logs / dtype
        dtype_logs.mkdir()
        for name in PER_DTYPE:
            runs[dtype].append(run_stage(name, commands(project)[name], project, dtype_logs))
            write(False)
        runs[dtype].append(run_serve(project, dtype_logs))
        write(False)
    result = write(True)
    print(markdown(result))
    sys.exit(0 if all(result["within_budget"].values()) else 1)

if __name__ == "__main__":
    main()
