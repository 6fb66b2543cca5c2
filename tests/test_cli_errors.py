"""The real ``rearank`` command line (in process, and as a subprocess once per command): bad input ends with exit
code 2 and one message on stderr that names the file (and ``:line``), never a traceback, and leaves no output file
behind."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rearank_core.cli import app as cli

REPO = Path(__file__).resolve().parents[1]
DL = REPO / "data" / "msmarco"


def rearank(*args: str | Path, cwd: Path, timeout: float = 180,
            in_process: bool = True) -> subprocess.CompletedProcess[str]:
    """``rearank ARGS`` with built-in defaults (no params.yaml): in this process (Typer's runner), or through the
    installed entry point's module as a subprocess (one test per command: a Python start-up for each case would
    prove nothing more)."""
    args = (*map(str, args), "--params", str(cwd / "no-params.yaml"))
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "NO_COLOR": "1", "COLUMNS": "200"}
    if in_process:
        with contextlib.chdir(cwd):
            done = CliRunner().invoke(cli, args, env={**env, "MLFLOW_TRACKING_URI": None})
        return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)
    env = {**os.environ, **env}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "rearank_core.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess[str], name: str, line: int | None = None,
                      says: str | None = None) -> None:
    where = f"{name}:{line}" if line is not None else name
    detail = f"stdout={result.stdout!r}\nstderr={result.stderr!r}"
    assert result.returncode == 2, detail
    assert "Traceback" not in result.stderr, detail
    assert "error:" in result.stderr, detail
    assert where in result.stderr, detail
    if says is not None:
        assert says in result.stderr, detail
    assert result.stdout == "", detail


def qrels_file(tmp_path: Path) -> Path:
    path = tmp_path / "qrels.txt"
    path.write_text("1 0 d1 1\n1 0 d2 0\n2 0 d3 2\n")
    return path


GOOD_RUN = "1 Q0 d1 1 2.0 t\n1 Q0 d2 2 1.0 t\n2 Q0 d3 1 5.0 t\n"


@pytest.mark.parametrize("body, line, says", [
    ("1 Q0 d1 1 2.0 t\n1 Q0 d2 2 1.0\n", 2, "expected 6 columns"),
    ("1 Q0 d1 1 2.0 t\n2 Q0 d3 1 5.0 t\n1 Q0 d1 3 0.5 t\n", 3, "appears twice"),
    ("1 Q0 d1 1 2.0 t\n1 Q0 d2 2 high t\n", 2, "not a number"),
    ("\n\n", None, "file is empty"),
])
def test_evaluate_malformed_run(tmp_path: Path, body: str, line: int | None, says: str) -> None:
    run = tmp_path / "bad.trec"
    run.write_text(body)
    metrics = tmp_path / "metrics.json"
    result = rearank("evaluate", "--run", run, "--qrels", qrels_file(tmp_path), "--json", "--no-track",
                     "--metrics-out", metrics, cwd=tmp_path)
    assert_user_error(result, "bad.trec", line, says)
    assert not metrics.exists()


def test_evaluate_missing_run_file(tmp_path: Path) -> None:
    result = rearank("evaluate", "--run", tmp_path / "absent.trec", "--qrels", qrels_file(tmp_path), "--json",
                     "--no-track", cwd=tmp_path, in_process=False)
    assert_user_error(result, "absent.trec", says="file not found")


@pytest.mark.parametrize("body, line, says", [
    ("1 0 d1 1\n1 0 d2\n", 2, "expected 4 columns"),
    ("1 0 d1 1\n1 0 d2 maybe\n", 2, "field 'relevance'"),
])
def test_evaluate_malformed_qrels(tmp_path: Path, body: str, line: int, says: str) -> None:
    run = tmp_path / "run.trec"
    run.write_text(GOOD_RUN)
    qrels = tmp_path / "badqrels.txt"
    qrels.write_text(body)
    result = rearank("evaluate", "--run", run, "--qrels", qrels, "--json", "--no-track", cwd=tmp_path)
    assert_user_error(result, "badqrels.txt", line, says)


@pytest.mark.parametrize("kind", ["not gzip", "truncated"])
def test_evaluate_broken_gzip_run(tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run.trec.gz"
    if kind == "not gzip":
        run.write_text(GOOD_RUN)
    else:
        data = gzip.compress((DL / "dl19" / "rank_llm_BM25_trec_results_dl19.txt").read_bytes())
        run.write_bytes(data[: len(data) // 2])
    result = rearank("evaluate", "--run", run, "--qrels", qrels_file(tmp_path), "--json", "--no-track", cwd=tmp_path)
    assert_user_error(result, "run.trec.gz", says="not a valid gzip file")


def test_evaluate_run_query_missing_from_topics(tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text(GOOD_RUN + "77 Q0 d9 1 1.0 t\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tfirst\n2\tsecond\n")
    result = rearank("evaluate", "--run", run, "--qrels", qrels_file(tmp_path), "--topics", topics, "--json",
                     "--no-track", cwd=tmp_path)
    assert_user_error(result, "run.trec", says="'77'")
    assert "topics.tsv" in result.stderr
    assert "field 'qid'" in result.stderr


def test_evaluate_with_exclusions_and_topics(tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text(GOOD_RUN)
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tfirst\n2\tsecond\n")
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("1 d1\n")
    result = rearank("evaluate", "--run", run, "--qrels", qrels_file(tmp_path), "--topics", topics, "--exclude",
                     exclude, "--json", "--no-track", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["excluded_documents_removed"] == 1
    assert metrics["queries_evaluated"] == 2
    assert metrics["mrr@10"] == 0.5  # query 1 lost its only relevant document, query 2 has it first


@pytest.mark.parametrize("name, ndcg10, queries", [("dl19", 0.5058, 43), ("dl20", 0.4796, 54), ("dl21", 0.4458, 53)])
def test_evaluate_bm25_baseline_trec_dl(tmp_path: Path, name: str, ndcg10: float, queries: int) -> None:
    folder = DL / name
    qrels = next(folder.glob("qrels.*.txt"))
    topics = next(folder.glob("topics.*.txt"))
    result = rearank("evaluate", "--run", folder / f"rank_llm_BM25_trec_results_{name}.txt", "--qrels", qrels,
                     "--topics", topics, "--json", "--no-track", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    metrics = json.loads(lines[0])
    assert metrics["ndcg@10"] == ndcg10
    assert metrics["queries_evaluated"] == queries
    assert metrics["run_queries_without_qrels"] == 0
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlruns").exists(), "--no-track must not create a tracking store"


def test_retrieve_from_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    not_index = tmp_path / "not_an_index"
    not_index.mkdir()
    (not_index / "notes.txt").write_text("hello\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tdo goldfish grow\n")
    out = tmp_path / "out" / "run.trec"
    cands = tmp_path / "out" / "cands.jsonl"
    result = rearank("retrieve", "--index", not_index, "--topics", topics, "--run", out, "--candidates", cands, "-q",
                     cwd=tmp_path, in_process=False)
    assert_user_error(result, "not_an_index", says="not a Lucene index")
    assert not out.exists()
    assert not cands.exists()


def test_retrieve_with_bad_topics(tmp_path: Path) -> None:
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tfine\n2 no tab\n")
    out = tmp_path / "run.trec"
    result = rearank("retrieve", "--index", tmp_path / "absent_index", "--topics", topics, "--run", out, "-q",
                     cwd=tmp_path)
    assert_user_error(result, "topics.tsv", 2, "qid<TAB>query text")
    assert not out.exists()


def test_index_corpus_with_bad_json_line(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": "a", "contents": "alpha"}\n{"id": "b", "contents": \n{"id": "c", "contents": "c"}\n')
    index = tmp_path / "out_index"
    result = rearank("index", "--corpus", corpus, "--index", index, "-q", cwd=tmp_path, in_process=False)
    assert_user_error(result, "bad.jsonl", 2, "invalid JSON")
    assert not index.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"], "a failed build left files behind"


def test_error_message_keeps_brackets_in_file_names(tmp_path: Path) -> None:
    """Paths and ids with [brackets] are printed as they are, not eaten as console markup."""
    run = tmp_path / "run[x].trec"
    run.write_text("1 Q0 d1 1 2.0\n")
    result = rearank("evaluate", "--run", run, "--qrels", qrels_file(tmp_path), "--json", "--no-track", cwd=tmp_path)
    assert_user_error(result, "run[x].trec", line=1)
