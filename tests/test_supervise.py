"""A stage ended by a signal (the OOM killer's SIGKILL) is reported with its name and peak memory, by the CLI that
`dvc repro` runs and by the pipeline's child processes, and the next run resumes at that stage; the temporary
Prefect server a flow starts does not outlive the flow's process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, DATA, ROOT

from rearank_core.errors import InputError
from rearank_core.memory import child_pids, tree_rss
from rearank_core.supervise import StageKilled, run_in_child

SCIFACT = DATA / "beir" / "scifact"


def _answer(value: int) -> dict[str, int]:
    return {"answer": value * 2}


def _refuse(path: str) -> None:
    raise InputError("no such file", path, 3, "docid")


def _killed_by_the_oom_killer() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_stage_in_a_child_returns_raises_or_is_reported_killed() -> None:
    answered = run_in_child(_answer, 21, stage="double")
    assert answered.value == {"answer": 42}
    assert answered.peak_bytes > 10 * 2**20 and answered.seconds > 0  # a Python process holds more than 10 MiB
    with pytest.raises(InputError, match="no such file") as raised:
        run_in_child(_refuse, "runs.trec", stage="evaluate")
    assert (raised.value.path, raised.value.line, raised.value.field) == ("runs.trec", 3, "docid")
    with pytest.raises(StageKilled, match=r"stage 'grpo' killed by signal 9 \(SIGKILL\) \(out of memory\?\); "
                                          r"peak memory seen \d+\.\d\d GiB"):
        run_in_child(_killed_by_the_oom_killer, stage="grpo")


def _wait_for(condition, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _supervised(pid: int, word: str) -> int | None:
    """The process under ``pid`` that runs the rearank command with argument ``word`` itself (the supervised
    child)."""
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            environ = Path(f"/proc/{current}/environ").read_bytes()
            cmdline = Path(f"/proc/{current}/cmdline").read_bytes().split(b"\0")
            stack.extend(child_pids(current))
        except OSError:
            continue
        if b"REARANK_SUPERVISED=1" in environ.split(b"\0") and word.encode() in cmdline:
            return current
    return None


@pytest.mark.integration
def test_dvc_repro_reports_a_stage_killed_by_signal_9_and_the_rerun_resumes_there(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "small.jsonl").write_text("".join(
        f'{{"_id": "d{i}", "title": "", "text": "passage {i} about memory"}}\n' for i in range(3)))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "small": {"cmd": "rearank index --corpus small.jsonl --index small -q", "deps": ["small.jsonl"],
                  "outs": ["small"]},
        "index": {"cmd": f"rearank index --corpus {SCIFACT / 'corpus.jsonl'} --index index -q",
                  "deps": ["small"], "outs": ["index"]}}}))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    repro = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    child = _wait_for(lambda: _supervised(repro.pid, str(SCIFACT / "corpus.jsonl")), 120, "the index stage's process")
    observed = _wait_for(lambda: tree_rss(child) > 100 * 2 ** 20 and tree_rss(child), 60, "the JVM to start")
    time.sleep(0.5)  # the supervisor samples every 50 ms: let it see at least what this test saw
    os.kill(child, signal.SIGKILL)
    output = repro.communicate(timeout=120)[0]
    assert repro.returncode != 0
    assert "error: stage 'index' killed by signal 9 (SIGKILL) (out of memory?); peak memory seen" in output, output
    seen = float(output.split("peak memory seen ")[1].split(" GiB")[0])
    assert seen >= observed / 2 ** 30 - 0.05  # at least what this test saw before the kill (a JVM starting grows)
    rerun = subprocess.run([str(BIN / "dvc"), "repro"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Stage 'small' didn't change, skipping" in rerun.stdout
    assert "Running stage 'index'" in rerun.stdout and (tmp_path / "index").is_dir()


@pytest.mark.integration
def test_the_temporary_prefect_server_ends_with_a_flow_process_killed_by_sigkill(tmp_path: Path) -> None:
    script = ("import time\nfrom flows.server import temporary_server\n"
              "with temporary_server() as url:\n    print(url, flush=True)\n    time.sleep(600)\n")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    flow = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            env={**env, "PREFECT_HOME": str(tmp_path / ".prefect")})
    url = flow.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    servers = child_pids(flow.pid)
    assert servers, "no server process under the flow's process"
    os.kill(flow.pid, signal.SIGKILL)
    flow.wait()
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in servers), 60,
              "the server to stop")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return "Z"
